//! The embedded default model: the toy text-to-image model of `models/toy`, compiled into the
//! binary so `semi generate` works on a fresh machine with no download and from any folder.
//!
//! The runtime loads diffusers folders, so on first use the files are written once to
//! `<cache>/models/toy-<digest>` (the cache of `semi_tickets::cache::cache_dir`, else the
//! system's temporary folder); the digest covers every embedded byte, so a new build never
//! reads an old copy. The folder appears whole or not at all (written aside, then renamed).

use anyhow::{Context, Result};
use include_dir::{include_dir, Dir, DirEntry};
use semi_diffusion::loading::resolve_model;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

static TOY: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../models/toy");

/// The `--model` value that names the embedded model (also the default).
pub const TOY_MODEL: &str = "toy";

/// Resolves a `--model` argument: `toy` is the embedded model, anything else a diffusers folder
/// or a Hugging Face repo id in the local cache. Also says whether it is the embedded model.
pub fn resolve_model_arg(spec: &str) -> Result<(PathBuf, bool)> {
    if spec == TOY_MODEL && !Path::new(spec).is_dir() {
        Ok((toy_model_dir()?, true))
    } else {
        Ok((resolve_model(spec)?, false))
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

/// The folder holding the embedded model's files, written on first use.
pub fn toy_model_dir() -> Result<PathBuf> {
    let mut all = Vec::new();
    files(&TOY, &mut all);
    all.sort_by_key(|f| f.path());
    let mut h = Sha256::new();
    for f in &all {
        h.update(f.path().to_string_lossy().as_bytes());
        h.update((f.contents().len() as u64).to_le_bytes());
        h.update(f.contents());
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
    let dir = root.join(format!("toy-{digest}"));
    if dir.join("model_index.json").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let tmp = root.join(format!(".tmp.toy-{digest}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for f in &all {
        let path = tmp.join(f.path());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, f.contents())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process got there first: its copy is identical.
        Err(_) if dir.join("model_index.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot move the embedded model into {}", dir.display()))
        }
    }
}
