//! Writes a training dataset: `cargo run --release -p semi-toyworld --example write_dataset --
//! OUT.safetensors N [SEED]` (captions go to OUT.jsonl). The training script reads both.

use anyhow::{Context, Result};
use semi_toyworld::{write_dataset, WorldConfig};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: write_dataset OUT.safetensors N [SEED]";
    let out = PathBuf::from(args.first().context(usage)?);
    let n: usize = args.get(1).context(usage)?.parse().context("N")?;
    let seed: u64 = args.get(2).map_or(Ok(0), |s| s.parse()).context("SEED")?;
    let start = std::time::Instant::now();
    let summary = write_dataset(&out, n, seed, &WorldConfig::default())?;
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
