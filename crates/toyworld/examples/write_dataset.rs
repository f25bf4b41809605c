//! Writes a training dataset: `cargo run --release -p semi-toyworld --example write_dataset --
//! OUT.safetensors N [SEED] [--allow-duplicates] [--latent]` (captions go to OUT.jsonl; `--latent`:
//! the latent world of `WorldConfig::latent`). The training scripts read both.
//! `--allow-duplicates` draws every object's category independently, so some scenes
//! hold several objects of one category, captioned with a count ("two circles and a square").

use anyhow::{bail, Context, Result};
use semi_toyworld::{write_dataset, WorldConfig};
use std::path::PathBuf;

fn main() -> Result<()> {
    let usage = "usage: write_dataset OUT.safetensors N [SEED] [--allow-duplicates] [--latent]";
    let mut cfg = WorldConfig::default();
    let mut positional = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--allow-duplicates" => cfg.allow_duplicates = true,
            // The latent world (WorldConfig::latent: 64x64, shared palette, 1-2 objects).
            "--latent" => cfg = WorldConfig::latent(),
            s if s.starts_with("--") => bail!("unknown option {s}; {usage}"),
            _ => positional.push(arg),
        }
    }
    if positional.len() > 3 {
        bail!("too many arguments; {usage}");
    }
    let out = PathBuf::from(positional.first().context(usage)?);
    let n: usize = positional.get(1).context(usage)?.parse().context("N")?;
    let seed: u64 = positional
        .get(2)
        .map_or(Ok(0), |s| s.parse())
        .context("SEED")?;
    let start = std::time::Instant::now();
    let summary = write_dataset(&out, n, seed, &cfg)?;
    println!(
        "wrote {} scenes to {} and {} in {:.2?}; scenes by object count {:?}",
        summary.n,
        summary.safetensors.display(),
        summary.jsonl.display(),
        start.elapsed(),
        summary.objects_histogram
    );
    Ok(())
}
