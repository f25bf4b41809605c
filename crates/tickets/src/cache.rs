//! semi's cache folder (on-the-fly ticket stores, model fingerprints): `$SEMI_CACHE` when set,
//! else `$XDG_CACHE_HOME/semi`, else `~/.cache/semi`.
//!
//! The model fingerprint hashes the UNet and text-encoder weights (about 4 GB for SD 1.5 in f32,
//! tens of seconds); [`model_fingerprint`] remembers it across processes in
//! `<cache>/fingerprints.json`, keyed by each hashed file's canonical path, size and modification
//! time, so it is recomputed only when a file changes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use semi_diffusion::loading::ModelFiles;
use serde::{Deserialize, Serialize};

/// The cache root (see the module docs); `None` when no home folder is known.
pub fn cache_dir() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = nonempty("SEMI_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = nonempty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(p).join("semi"));
    }
    nonempty("HOME").map(|h| PathBuf::from(h).join(".cache/semi"))
}

/// The on-the-fly store for a probe fingerprint digest: `<cache>/stores/<digest>`.
pub fn store_dir(digest: &str) -> Result<PathBuf> {
    let root =
        cache_dir().context("no cache folder: set SEMI_CACHE (or HOME) or pass --store DIR")?;
    Ok(root.join("stores").join(digest))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    path: String,
    len: u64,
    mtime_ns: u128,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FingerprintCache {
    /// Model root (canonical) -> stamps of the hashed files and the digest.
    entries: BTreeMap<String, (Vec<FileStamp>, String)>,
}

fn stamps(files: &[PathBuf]) -> Result<Vec<FileStamp>> {
    files
        .iter()
        .map(|f| {
            let canon =
                std::fs::canonicalize(f).with_context(|| format!("cannot read {}", f.display()))?;
            let md = std::fs::metadata(&canon)?;
            let mtime_ns = md
                .modified()?
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            Ok(FileStamp {
                path: canon.display().to_string(),
                len: md.len(),
                mtime_ns,
            })
        })
        .collect()
}

/// [`ModelFiles::fingerprint`], remembered in `cache` (a JSON file; `None` = no disk cache).
/// A missing, unreadable or stale cache only costs the hashing; failing to write it is ignored.
pub fn model_fingerprint_cached(files: &ModelFiles, cache: Option<&Path>) -> Result<String> {
    let list = files.fingerprint_files();
    let now = stamps(&list)?;
    // A single file shares its config folder with every other file of its family.
    let key = files.single_file.as_ref().unwrap_or(&files.root);
    let root = std::fs::canonicalize(key)
        .unwrap_or_else(|_| key.clone())
        .display()
        .to_string();
    let mut db: FingerprintCache = cache
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some((old, digest)) = db.entries.get(&root) {
        if *old == now {
            return files.with_additions(digest.clone());
        }
    }
    let digest = files.base_fingerprint()?;
    if let Some(path) = cache {
        db.entries.insert(root, (now, digest.clone()));
        let bytes = serde_json::to_vec_pretty(&db).expect("cache serialises");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = semi_diffusion::image::write_atomic(path, |f| Ok(f.write_all(&bytes)?));
    }
    // LoRAs and a replaced VAE are hashed on top, outside the cache (their weights are no file).
    files.with_additions(digest)
}

/// [`model_fingerprint_cached`] with `<cache>/fingerprints.json`.
pub fn model_fingerprint(files: &ModelFiles) -> Result<String> {
    let cache = cache_dir().map(|d| d.join("fingerprints.json"));
    model_fingerprint_cached(files, cache.as_deref())
}
