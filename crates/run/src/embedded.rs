//! The built-in models: the toy text-to-image model of `models/toy` (the default) and the latent
//! toy model of `models/toy-latent`, compiled into the binary so `semi generate` works on a fresh
//! machine with no download and from any folder; and the standard configs and CLIP tokenizer of
//! `models/standard`, which a lone single-file checkpoint needs.
//!
//! The runtime loads diffusers folders, so on first use the files are written once to
//! `<cache>/models/<name>-<digest>` (the cache of `semi_tickets::cache::cache_dir`, else the
//! system's temporary folder); the digest covers every embedded byte, so a new build never
//! reads an old copy. The folder appears whole or not at all (written aside, then renamed).

use anyhow::{Context, Result};
use include_dir::{include_dir, Dir, DirEntry};
use semi_diffusion::loading::resolve_model;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

static TOY: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../models/toy");
static TOY_LATENT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../models/toy-latent");

/// The `--model` value that names the embedded default model.
pub const TOY_MODEL: &str = "toy";

/// The built-in models by `--model` name. Both are toy-world models: their categories are the
/// toy world's shapes. Adding one is a folder under `models/` and a row here.
static BUILT_IN: [(&str, &Dir<'static>); 2] = [(TOY_MODEL, &TOY), ("toy-latent", &TOY_LATENT)];

/// Resolves a `--model` argument: `toy` and `toy-latent` are the built-in models (unless a
/// folder of that name exists here), anything else a diffusers folder or a Hugging Face repo id
/// in the local cache. Also says whether it is a built-in toy-world model.
pub fn resolve_model_arg(spec: &str) -> Result<(PathBuf, bool)> {
    match BUILT_IN.iter().find(|(name, _)| *name == spec) {
        Some((name, dir)) if !Path::new(spec).is_dir() => Ok((built_in_dir(name, dir)?, true)),
        _ => Ok((resolve_model(spec)?, false)),
    }
}

fn files(dir: &'static Dir<'static>, out: &mut Vec<&'static include_dir::File<'static>>) {
    for entry in dir.entries() {
        match entry {
            DirEntry::Dir(d) => files(d, out),
            DirEntry::File(f) => out.push(f),
        }
    }
}

/// The folder holding a built-in model's files, written on first use.
fn built_in_dir(name: &str, dir: &'static Dir<'static>) -> Result<PathBuf> {
    let mut all = Vec::new();
    files(dir, &mut all);
    let entries = all
        .iter()
        .map(|f| (f.path().to_path_buf(), f.contents()))
        .collect();
    unpack(name, entries)
}

/// The standard configs and tokenizers of the published checkpoints (tools/make_standard_configs.py).
static STANDARD: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../models/standard");

/// The diffusers folder of configs and tokenizers that a single-file checkpoint of a family
/// uses without `--config` (`sd1`, `sd2`, `sd2-base`, `sdxl`: see
/// `semi_diffusion::single_file::Kind::standard_config`), written on first use. The CLIP BPE
/// vocabulary is stored once in the binary and written into each tokenizer folder.
pub fn standard_config_dir(name: &str) -> Result<PathBuf> {
    let dir = STANDARD
        .get_dir(name)
        .with_context(|| format!("no standard config {name:?}"))?;
    let mut all = Vec::new();
    files(dir, &mut all);
    let mut entries: Vec<(PathBuf, &'static [u8])> = all
        .iter()
        .map(|f| {
            let rel = f.path().strip_prefix(name).unwrap_or(f.path());
            (rel.to_path_buf(), f.contents())
        })
        .collect();
    let tokenizers: std::collections::BTreeSet<PathBuf> = entries
        .iter()
        .filter_map(|(p, _)| p.parent().map(Path::to_path_buf))
        .filter(|d| d.to_string_lossy().starts_with("tokenizer"))
        .collect();
    for t in tokenizers {
        for f in ["vocab.json", "merges.txt"] {
            let file = STANDARD
                .get_file(format!("clip-vocab/{f}"))
                .context("the embedded CLIP vocabulary is missing")?;
            entries.push((t.join(f), file.contents()));
        }
    }
    unpack(&format!("standard-{name}"), entries)
}

/// Writes `entries` (relative path, bytes) once to `<cache>/models/<label>-<digest>` and returns
/// that folder; the digest covers every byte, so a new build never reads an old copy. The
/// folder appears whole or not at all (written aside, then renamed).
fn unpack(label: &str, mut entries: Vec<(PathBuf, &'static [u8])>) -> Result<PathBuf> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (path, bytes) in &entries {
        h.update(path.to_string_lossy().as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let digest: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = semi_tickets::cache::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("models");
    let dir = root.join(format!("{label}-{digest}"));
    if dir.join("model_index.json").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let tmp = root.join(format!(".tmp.{label}-{digest}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for (rel, bytes) in &entries {
        let path = tmp.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process got there first: its copy is identical.
        Err(_) if dir.join("model_index.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(e).with_context(|| format!("cannot move {label} into {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use semi_diffusion::family::Family;
    use semi_diffusion::loading::{ModelFiles, WeightsFrom};

    /// Every standard config folder checks as a diffusers folder of its family, with the sizes
    /// of the published model.
    #[test]
    fn standard_configs_are_the_published_models() {
        let tmp = tempfile::tempdir().unwrap();
        std::env::set_var("SEMI_CACHE", tmp.path());
        let weights = tmp.path().join("weights.safetensors");
        // (name, family, cross_attention_dim, text widths, sample_size, prediction)
        let cases = [
            ("sd1", Family::Sd, 768, vec![768], 64, "epsilon"),
            ("sd2", Family::Sd, 1024, vec![1024], 96, "v_prediction"),
            ("sd2-base", Family::Sd, 1024, vec![1024], 64, "epsilon"),
            ("sdxl", Family::Sdxl, 2048, vec![768, 1280], 128, "epsilon"),
        ];
        for (name, family, cross, widths, sample, prediction) in cases {
            let dir = standard_config_dir(name).unwrap();
            let f = ModelFiles::check_with(&dir, WeightsFrom::SingleFile(&weights)).unwrap();
            assert_eq!(f.family, family, "{name}");
            let blocks = f.unet.config.down_blocks().unwrap();
            assert_eq!(blocks.last().unwrap().cross_attention_dim, cross, "{name}");
            let mut w = vec![f.text_encoder.config.hidden_size];
            w.extend(f.text_2.as_ref().map(|t| t.encoder.config.hidden_size));
            assert_eq!(w, widths, "{name}");
            assert_eq!(f.default_size(), Some((8 * sample, 8 * sample)), "{name}");
            assert_eq!(f.scheduler.prediction_type, prediction, "{name}");
            // The shipped vocabulary is CLIP's.
            let tok = semi_diffusion::tokenizer::ClipTokenizer::from_dir(&f.tokenizer_dir).unwrap();
            assert_eq!(tok.vocab_size(), 49408, "{name}");
        }
    }
}
