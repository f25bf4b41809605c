//! Filling a store: the `collect` driver (create, resume, extend, shard).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use super::manifest::{self, Manifest, Unit, DEFAULT_CHUNK_IMAGES};
use super::{image_to_blocks, noise_values};
use crate::fsutil::{create_dir_durable, f32_bytes, remove_stale_temps, write_atomic, DirLock};
use crate::names::Pair;
use crate::prober::Prober;
use crate::shard::Shard;

/// What to collect.
#[derive(Debug, Clone)]
pub struct CollectRequest {
    /// Pairs to score (see [`crate::names::all_pairs`] for "every pair of these categories").
    pub pairs: Vec<Pair>,
    /// N. An existing store keeps its N if larger; new pairs are scored on all its images.
    pub n_images: usize,
    pub seed: u64,
    pub shard: Option<Shard>,
    /// Images per chunk for a new store (default [`DEFAULT_CHUNK_IMAGES`]); an existing store
    /// keeps its own.
    pub chunk_images: Option<usize>,
    /// While another process collects into the store, wait this long for it (saying so on
    /// stderr); `None`: fail at once.
    pub wait_for_lock: Option<std::time::Duration>,
}

/// Progress of a collect, reported after every probe call and every finished unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Units (pair, chunk) of this shard finished, including those done before this run.
    pub units_done: usize,
    pub units_total: usize,
    /// Probe passes (image x pair) of this shard done, including those done before this run.
    pub passes_done: usize,
    pub passes_total: usize,
    /// Passes already done when this run started (for a rate/ETA from this run's passes only).
    pub passes_at_start: usize,
}

/// What a collect did.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectSummary {
    pub manifest: Manifest,
    pub units_total: usize,
    /// Units found complete and skipped.
    pub units_skipped: usize,
    /// Units computed (or completed) by this run.
    pub units_computed: usize,
    /// Probe passes run by this run.
    pub passes: usize,
    /// Stale temporary files of a killed run that were deleted.
    pub stale_temps_removed: usize,
    /// Pairs of the store that could not be probed and had no scores, dropped from it, each
    /// with the reason.
    pub dropped_pairs: Vec<(Pair, String)>,
}

/// Collect scores into the store at `dir`, creating it, resuming it or extending it (new pairs,
/// more images) as needed. Units are done in canonical order ([`Manifest::units`]), skipping
/// finished ones; each unit's file is written atomically when it completes. `progress` is called
/// at the start, after each probe call and after each unit.
///
/// Refuses (with an error naming the difference) a store made with another fingerprint, seed or
/// shard, and a directory that holds something else.
pub fn collect(
    dir: &Path,
    prober: &mut dyn Prober,
    request: &CollectRequest,
    progress: &mut dyn FnMut(&Progress),
) -> Result<CollectSummary> {
    if request.n_images == 0 {
        bail!("N must be at least 1 noise image");
    }
    if request.pairs.is_empty() {
        bail!("nothing to collect: no pairs of categories given");
    }
    if request.chunk_images == Some(0) {
        bail!("chunk size must be at least 1 image");
    }
    let fingerprint = prober.fingerprint();
    fingerprint
        .validate()
        .context("the prober's fingerprint is invalid")?;
    // Every new pair must be probeable before anything is written for it.
    for pair in &request.pairs {
        prober
            .check_pair(pair.as_strs())
            .with_context(|| format!("cannot collect pair {pair}"))?;
    }

    create_dir_durable(dir)?;
    let _lock = match request.wait_for_lock {
        Some(timeout) => DirLock::wait(dir, timeout, &mut |line| eprintln!("{line}"))?,
        None => DirLock::acquire(dir)?,
    };
    let manifest_path = manifest::manifest_path(dir);
    let next_path = manifest::next_manifest_path(dir);
    let existing = if manifest_path.exists() {
        Some(Manifest::read(dir)?)
    } else {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                // A crash before the first manifest write leaves at most its temp file; noise or
                // scores without a manifest belong to some other collection: never reuse them.
                !name.starts_with(crate::fsutil::TEMP_PREFIX)
            });
        if let Some(e) = entries.next() {
            bail!(
                "{} is not empty and has no manifest.json (found {:?}); give an empty or new \
                 directory for a new store",
                dir.display(),
                e.file_name()
            );
        }
        None
    };
    let stale_temps_removed = remove_stale_temps(dir)?;

    let mut dropped_pairs = Vec::new();
    let manifest = match &existing {
        None => Manifest::new(
            fingerprint,
            request.seed,
            request.n_images,
            request.chunk_images.unwrap_or(DEFAULT_CHUNK_IMAGES),
            request.pairs.clone(),
            request.shard,
        )?,
        Some(old) => {
            old.fingerprint.ensure_same(
                &fingerprint,
                &format!("the store {} and this probe", dir.display()),
            )?;
            if old.seed != request.seed {
                bail!(
                    "the store {} was collected with seed {}, not {}; use its seed or another store",
                    dir.display(),
                    old.seed,
                    request.seed
                );
            }
            if old.shard != request.shard {
                let show =
                    |s: Option<Shard>| s.map_or("no shard".to_string(), |s| format!("shard {s}"));
                bail!(
                    "the store {} was collected as {}, this run is {}; a store continues only as \
                     the same shard",
                    dir.display(),
                    show(old.shard),
                    show(request.shard)
                );
            }
            // Repair: a pair that can never be probed and has no scores (a store written before
            // names were checked) is dropped instead of failing every later collect.
            let mut pairs = Vec::with_capacity(old.pairs.len() + request.pairs.len());
            for (index, pair) in old.pairs.iter().enumerate() {
                match prober.check_pair(pair.as_strs()) {
                    Err(why) if !has_scores(dir, old, index)? => {
                        dropped_pairs.push((pair.clone(), format!("{why:#}")))
                    }
                    _ => pairs.push(pair.clone()),
                }
            }
            pairs.extend(request.pairs.iter().cloned());
            Manifest::new(
                old.fingerprint.clone(),
                old.seed,
                old.n_images.max(request.n_images),
                old.chunk_images,
                pairs,
                old.shard,
            )?
        }
    };
    ensure_room(dir, &manifest)?;
    // A new store's manifest is its plan (`tickets status` follows it). A change to an existing
    // store is staged in manifest.next.json and committed only once its data is complete, so
    // the store stays usable as it was if this run fails or is killed.
    let staged = match &existing {
        None => {
            write_atomic(&manifest_path, &manifest.to_bytes())?;
            false
        }
        Some(old) if *old == manifest => {
            remove_if_present(&next_path)?;
            false
        }
        Some(_) => {
            write_atomic(&next_path, &manifest.to_bytes())?;
            true
        }
    };
    write_noise(dir, &manifest)?;

    // Plan: this shard's units and how far each got.
    let units = manifest.units_of(manifest.shard);
    let mut done_before = Vec::with_capacity(units.len());
    for u in &units {
        done_before.push(valid_images_done(dir, &manifest, *u)?);
    }
    let mut p = Progress {
        units_done: 0,
        units_total: units.len(),
        passes_done: 0,
        passes_total: 0,
        passes_at_start: 0,
    };
    for (u, have) in units.iter().zip(&done_before) {
        let len = manifest.chunk_range(u.chunk).len();
        p.passes_total += len;
        p.passes_done += have;
        if *have == len {
            p.units_done += 1;
        }
    }
    p.passes_at_start = p.passes_done;
    let units_skipped = p.units_done;
    progress(&p);

    let f = &manifest.fingerprint;
    let shape = [1, f.latent[0], f.latent[1], f.latent[2]];
    let batch = prober.pairs_per_pass().max(1);
    let images_per_pass = prober.images_per_pass().max(1);
    let mut passes = 0;
    let mut units_computed = 0;
    let mut i = 0;
    while i < units.len() {
        // The pending units of one chunk, grouped by how many images they already have.
        let chunk = units[i].chunk;
        let mut j = i;
        while j < units.len() && units[j].chunk == chunk {
            j += 1;
        }
        let range = manifest.chunk_range(chunk);
        let mut pending: Vec<(Unit, usize)> = (i..j)
            .filter(|&k| done_before[k] < range.len())
            .map(|k| (units[k], done_before[k]))
            .collect();
        pending.sort_by_key(|(u, have)| (*have, u.pair));
        let mut noise: Vec<Option<Tensor>> = vec![None; range.len()];
        for group in pending.chunk_by(|a, b| a.1 == b.1) {
            for batch_units in group.chunks(batch) {
                let have = batch_units[0].1;
                let pairs: Vec<(&str, &str)> = batch_units
                    .iter()
                    .map(|(u, _)| manifest.pairs[u.pair].as_strs())
                    .collect();
                let mut rows: Vec<Vec<f32>> = vec![Vec::new(); batch_units.len()];
                let todo: Vec<usize> = (range.start + have..range.end).collect();
                for images in todo.chunks(images_per_pass) {
                    for &k in images {
                        let slot = &mut noise[k - range.start];
                        if slot.is_none() {
                            let values = noise_values(f, manifest.seed, k);
                            *slot = Some(Tensor::from_vec(values, &shape, &Device::Cpu)?);
                        }
                    }
                    let tensors: Vec<&Tensor> = images
                        .iter()
                        .map(|&k| noise[k - range.start].as_ref().expect("noise filled"))
                        .collect();
                    let per_image = prober.probe_images(&tensors, &pairs)?;
                    if per_image.len() != images.len() {
                        bail!(
                            "the prober returned results for {} images, not {}",
                            per_image.len(),
                            images.len()
                        );
                    }
                    for (&k, maps) in images.iter().zip(&per_image) {
                        if maps.len() != pairs.len() {
                            bail!(
                                "the prober returned {} results for {} pairs",
                                maps.len(),
                                pairs.len()
                            );
                        }
                        for ((s1, s2), (row, pair)) in maps.iter().zip(rows.iter_mut().zip(&pairs))
                        {
                            check_map(s1, f.cells(), pair.0, *pair, k)?;
                            check_map(s2, f.cells(), pair.1, *pair, k)?;
                            row.extend_from_slice(s1);
                            row.extend_from_slice(s2);
                        }
                        passes += pairs.len();
                        p.passes_done += pairs.len();
                    }
                    progress(&p);
                }
                for ((u, have), row) in batch_units.iter().zip(&rows) {
                    let path = manifest::score_path(dir, &manifest.pairs[u.pair], u.chunk);
                    let mut bytes = if *have > 0 {
                        let old = std::fs::read(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?;
                        old[..have * manifest.score_row_bytes()].to_vec()
                    } else {
                        Vec::new()
                    };
                    bytes.extend_from_slice(&f32_bytes(row));
                    create_dir_durable(path.parent().expect("score dir"))?;
                    write_atomic(&path, &bytes)?;
                    units_computed += 1;
                    p.units_done += 1;
                    progress(&p);
                }
            }
        }
        i = j;
    }
    if staged {
        write_atomic(&manifest_path, &manifest.to_bytes())?;
        remove_if_present(&next_path)?;
    }
    Ok(CollectSummary {
        manifest,
        dropped_pairs,
        units_total: units.len(),
        units_skipped,
        units_computed,
        passes,
        stale_temps_removed,
    })
}

fn check_map(
    map: &[f32],
    cells: usize,
    category: &str,
    pair: (&str, &str),
    image: usize,
) -> Result<()> {
    if map.len() != cells {
        bail!(
            "the prober returned {} scores for {category:?} (pair {},{} image {image}); the grid has {cells} cells",
            map.len(),
            pair.0,
            pair.1
        );
    }
    if let Some(v) = map.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        bail!(
            "the prober returned score {v} for {category:?} (pair {},{} image {image}); scores \
             must be min-max normalised to [0, 1]",
            pair.0,
            pair.1
        );
    }
    Ok(())
}

/// Refuse a collect whose files would not fit on the disk (sizes only, before anything is
/// written).
fn ensure_room(dir: &Path, m: &Manifest) -> Result<()> {
    let shards = m.shard.map_or(1, |s| s.count) as u128;
    let target = m.n_images as u128 * m.noise_image_bytes() as u128
        + m.pairs.len() as u128 * m.n_images as u128 * m.score_row_bytes() as u128 / shards;
    let have = dir_bytes(dir) as u128;
    let bytes = u64::try_from(target.saturating_sub(have)).unwrap_or(u64::MAX);
    crate::fsutil::ensure_free(
        dir,
        bytes,
        &format!(
            "collecting {} pairs x {} images into {}",
            m.pairs.len(),
            m.n_images,
            dir.display()
        ),
    )
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map_or(0, |m| m.len()),
                Err(_) => {}
            }
        }
    }
    total
}

/// Whether any image of pair `index` has scores in the store.
fn has_scores(dir: &Path, m: &Manifest, index: usize) -> Result<bool> {
    for chunk in 0..m.n_chunks() {
        if unit_images_done(dir, m, Unit { chunk, pair: index })? > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Write (or grow) every noise chunk file that is missing or short. A longer file (an
/// extension to more images that did not finish) holds this manifest's images as its prefix.
fn write_noise(dir: &Path, m: &Manifest) -> Result<()> {
    create_dir_durable(&manifest::noise_dir(dir))?;
    create_dir_durable(&manifest::scores_dir(dir))?;
    for c in 0..m.n_chunks() {
        let path = manifest::noise_path(dir, c);
        let range = m.chunk_range(c);
        let want = range.len() * m.noise_image_bytes();
        let len = std::fs::metadata(&path).map(|md| md.len() as usize).ok();
        if let Some(len) = len {
            if len % m.noise_image_bytes() != 0 {
                bail!(
                    "noise file {} has {len} bytes, not whole images of {} bytes; the store is \
                     damaged",
                    path.display(),
                    m.noise_image_bytes()
                );
            }
            if len >= want {
                continue;
            }
        }
        let mut values = Vec::with_capacity(range.len() * m.fingerprint.image_len());
        for k in range {
            values.extend(image_to_blocks(
                &m.fingerprint,
                &noise_values(&m.fingerprint, m.seed, k),
            ));
        }
        write_atomic(&path, &f32_bytes(&values))?;
    }
    Ok(())
}

/// [`unit_images_done`], reading the scores: images from the first one with a score outside
/// [0, 1] (NaN included) on count as not done, so a resumed collect scores them again.
fn valid_images_done(dir: &Path, m: &Manifest, u: Unit) -> Result<usize> {
    let have = unit_images_done(dir, m, u)?;
    if have == 0 {
        return Ok(0);
    }
    let path = manifest::score_path(dir, &m.pairs[u.pair], u.chunk);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let row = m.score_row_bytes();
    let good = bytes[..have * row]
        .chunks_exact(row)
        .take_while(|image| {
            image.chunks_exact(4).all(|b| {
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                (0.0..=1.0).contains(&v)
            })
        })
        .count();
    Ok(good)
}

/// How many images of unit `u` are stored (0 if its file is missing; at most the chunk's, as a
/// file may run on into images of an unfinished extension). Errors on a file whose size is not
/// a whole number of images.
pub(crate) fn unit_images_done(dir: &Path, m: &Manifest, u: Unit) -> Result<usize> {
    let path = manifest::score_path(dir, &m.pairs[u.pair], u.chunk);
    let len = match std::fs::metadata(&path) {
        Ok(md) => md.len() as usize,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    let row = m.score_row_bytes();
    let max = m.chunk_range(u.chunk).len();
    if len % row != 0 {
        bail!(
            "score file {} has {len} bytes, not a whole number of images of {row} bytes; the \
             store is damaged (delete the file and rerun collect)",
            path.display()
        );
    }
    Ok((len / row).min(max))
}
