//! Merging the shards of one collection into a whole store.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::manifest::{self, Manifest};
use super::Store;
use crate::fsutil::{create_dir_durable, remove_stale_temps, write_atomic, DirLock};

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSummary {
    pub manifest: Manifest,
    pub shards: usize,
    pub units: usize,
}

/// Merge the shard stores `shards` (all `count` shards of one collection, any order) into a new
/// store at `out`, byte-identical to the store an unsharded collect would have written.
///
/// Checks first, writes nothing on failure: every input is a shard of the same collection (same
/// fingerprint, seed, N, chunking, pairs and shard count; a different fingerprint is refused
/// with the differing fields), every shard index appears exactly once, every shard is complete,
/// and all shards hold identical noise. `out` must be new or empty, or an interrupted merge of
/// the same shards (which is then finished).
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<MergeSummary> {
    if shards.is_empty() {
        bail!("merge needs the shard stores to merge");
    }
    let stores: Vec<Store> = shards
        .iter()
        .map(|d| Store::open(d).with_context(|| format!("shard {}", d.display())))
        .collect::<Result<_>>()?;
    let first = &stores[0];
    let Some(first_shard) = first.manifest().shard else {
        bail!(
            "{} is not a shard store (it was collected without --shard); only shards can be merged",
            first.dir().display()
        );
    };
    let count = first_shard.count;
    let mut owner: Vec<Option<usize>> = vec![None; count];
    for (i, s) in stores.iter().enumerate() {
        let m = s.manifest();
        let name = s.dir().display();
        let Some(shard) = m.shard else {
            bail!("{name} is not a shard store; only shards can be merged");
        };
        first.fingerprint().ensure_same(
            s.fingerprint(),
            &format!("the shards {} and {name}", first.dir().display()),
        )?;
        let same = |what: &str, a: String, b: String| -> Result<()> {
            if a != b {
                bail!(
                    "the shards {} and {name} are not from the same collection ({what}: {a} vs {b})",
                    first.dir().display()
                );
            }
            Ok(())
        };
        let fm = first.manifest();
        same("seed", fm.seed.to_string(), m.seed.to_string())?;
        same("N", fm.n_images.to_string(), m.n_images.to_string())?;
        same(
            "chunk size",
            fm.chunk_images.to_string(),
            m.chunk_images.to_string(),
        )?;
        same("shard count", count.to_string(), shard.count.to_string())?;
        same(
            "categories",
            fm.categories.join(","),
            m.categories.join(","),
        )?;
        if fm.pairs != m.pairs {
            bail!(
                "the shards {} and {name} are not from the same collection (different pairs)",
                first.dir().display()
            );
        }
        if let Some(prev) = owner[shard.index] {
            bail!(
                "shard {shard} is given twice ({} and {name})",
                stores[prev].dir().display()
            );
        }
        owner[shard.index] = Some(i);
    }
    let missing: Vec<String> = (0..count)
        .filter(|&i| owner[i].is_none())
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        bail!("cannot merge: shard(s) {} missing", missing.join(", "));
    }
    for s in &stores {
        let status = s.status()?;
        if !status.is_complete() {
            let (pair, range) = &status.missing[0];
            bail!(
                "shard {} at {} is incomplete: {} of {} units missing (first: pair {pair}, images \
                 {}..{}); rerun its collect",
                s.manifest().shard.expect("shard"),
                s.dir().display(),
                status.units_total - status.units_done,
                status.units_total,
                range.start,
                range.end
            );
        }
    }
    let merged = first.manifest().unsharded();
    // Files may run on into an unfinished extension: only the manifest's prefix is merged.
    let noise_bytes = |dir: &Path, c: usize| {
        prefix(
            &manifest::noise_path(dir, c),
            merged.chunk_range(c).len() * merged.noise_image_bytes(),
        )
    };
    for c in 0..merged.n_chunks() {
        let bytes = noise_bytes(first.dir(), c)?;
        for s in &stores[1..] {
            if noise_bytes(s.dir(), c)? != bytes {
                bail!(
                    "noise chunk {c} differs between {} and {}; one of them is damaged",
                    first.dir().display(),
                    s.dir().display()
                );
            }
        }
    }

    // Output directory: new, empty, or an interrupted merge of the same shards.
    create_dir_durable(out)?;
    let _lock = DirLock::acquire(out)?;
    if manifest::manifest_path(out).exists() {
        let existing = Manifest::read(out)?;
        if existing != merged {
            bail!(
                "{} already holds a different store; merge into a new directory",
                out.display()
            );
        }
    } else if std::fs::read_dir(out)?.filter_map(|e| e.ok()).any(|e| {
        !e.file_name()
            .to_string_lossy()
            .starts_with(crate::fsutil::TEMP_PREFIX)
    }) {
        bail!(
            "{} is not empty; merge into a new or empty directory",
            out.display()
        );
    }
    remove_stale_temps(out)?;
    write_atomic(&manifest::manifest_path(out), &merged.to_bytes())?;
    create_dir_durable(&manifest::noise_dir(out))?;
    create_dir_durable(&manifest::scores_dir(out))?;
    for c in 0..merged.n_chunks() {
        write_atomic(&manifest::noise_path(out, c), &noise_bytes(first.dir(), c)?)?;
    }
    let units = merged.units();
    for (u, unit) in units.iter().enumerate() {
        let src_store = &stores[owner[u % count].expect("checked")];
        let pair = &merged.pairs[unit.pair];
        let src = manifest::score_path(src_store.dir(), pair, unit.chunk);
        let dst = manifest::score_path(out, pair, unit.chunk);
        let bytes = prefix(
            &src,
            merged.chunk_range(unit.chunk).len() * merged.score_row_bytes(),
        )?;
        create_dir_durable(dst.parent().expect("score dir"))?;
        write_atomic(&dst, &bytes)?;
    }
    Ok(MergeSummary {
        manifest: merged,
        shards: count,
        units: units.len(),
    })
}

/// The first `len` bytes of `path` (checked complete before a merge).
fn prefix(path: &Path, len: usize) -> Result<Vec<u8>> {
    let mut bytes =
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() < len {
        bail!(
            "{} has {} bytes, expected {len}; the store is damaged",
            path.display(),
            bytes.len()
        );
    }
    bytes.truncate(len);
    Ok(bytes)
}
