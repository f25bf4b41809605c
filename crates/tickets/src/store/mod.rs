//! The lottery-ticket store: N seeded noise images cut into blocks, and per pair of categories
//! the two score maps of every image (docs/design.md 1.2).
//!
//! # On disk
//!
//! ```text
//! DIR/manifest.json                 what, how, layout (Manifest)
//! DIR/noise/c00000.f32              chunk 0's noise images, block-major
//! DIR/scores/car+dog/c00000.f32     pair {car, dog} on chunk 0's images
//! ```
//! All numbers are little-endian f32. Images are grouped in chunks of
//! [`Manifest::chunk_images`]; chunk c holds images `c*chunk .. min((c+1)*chunk, N)`.
//! - A noise file holds, per image, per grid cell in raster order, the block's values in
//!   `(channel, y, x)` order: `[images][cells][C][bh][bw]`, so block (k, cell) is one contiguous
//!   run of `C*bh*bw` floats. Image k is `torch.randn((1,C,h,w), manual_seed(seed + k))`.
//! - A score file holds, per image, `S_{a,(b)}` then `S_{b,(a)}` (a < b the canonical pair
//!   order), each one value per cell in raster order: `[images][2][cells]`.
//!
//! Every file is written atomically (temp + fsync + rename, [`crate::fsutil`]), one file per
//! work unit (pair, chunk), so a killed collect loses only the units in flight and a resumed one
//! writes exactly the files an uninterrupted one would. Adding pairs adds directories; adding
//! images grows the last chunk and adds chunks. Reads are memory-mapped.

pub mod collect;
pub mod manifest;
pub mod merge;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

use crate::fingerprint::ProbeFingerprint;
use crate::names::{normalize_category, Pair};
pub use manifest::{Manifest, Unit, DEFAULT_CHUNK_IMAGES, FORMAT};

#[cfg(target_endian = "big")]
compile_error!(
    "the ticket store maps little-endian f32 files directly; big-endian hosts are not supported"
);

/// An open store: manifest plus memory-mapped noise; score files are mapped on first use.
pub struct Store {
    dir: PathBuf,
    manifest: Manifest,
    noise: Vec<Mmap>,
    pairs: Mutex<HashMap<usize, Arc<Vec<Mmap>>>>,
}

/// How far a store's collection has got.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreStatus {
    /// Units (pair, chunk) the store should hold: all of them, or its shard's.
    pub units_total: usize,
    pub units_done: usize,
    /// Missing or partial units (pair, images) in canonical order.
    pub missing: Vec<(Pair, std::ops::Range<usize>)>,
}

impl StoreStatus {
    pub fn is_complete(&self) -> bool {
        self.units_done == self.units_total
    }
}

impl Store {
    /// Open the store in `dir`: validate the manifest, map the noise, and check that the stored
    /// noise equals `torch.randn` for a sample of images (first, middle, last).
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::read(&dir)?;
        let mut noise = Vec::with_capacity(manifest.n_chunks());
        for c in 0..manifest.n_chunks() {
            let path = manifest::noise_path(&dir, c);
            let want = manifest.chunk_range(c).len() * manifest.noise_image_bytes();
            let map = map_file(&path)?;
            // Longer is fine: an unfinished extension to more images grew the file, and this
            // manifest's images are its prefix.
            if map.len() < want || map.len() % manifest.noise_image_bytes() != 0 {
                bail!(
                    "store {}: noise file {} has {} bytes, expected {want}; the store is damaged \
                     or its collect never started; rerun collect",
                    dir.display(),
                    path.display(),
                    map.len()
                );
            }
            noise.push(map);
        }
        let store = Store {
            dir,
            manifest,
            noise,
            pairs: Mutex::new(HashMap::new()),
        };
        store.verify_noise_sample()?;
        Ok(store)
    }

    /// [`Store::open`], then refuse a store made with another model or probe settings.
    pub fn open_for(dir: impl AsRef<Path>, fingerprint: &ProbeFingerprint) -> Result<Store> {
        let store = Store::open(&dir)?;
        store.manifest.fingerprint.ensure_same(
            fingerprint,
            &format!("the store {} and this model", dir.as_ref().display()),
        )?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn fingerprint(&self) -> &ProbeFingerprint {
        &self.manifest.fingerprint
    }

    /// The store's categories, sorted.
    pub fn categories(&self) -> &[String] {
        &self.manifest.categories
    }

    pub fn pairs(&self) -> &[Pair] {
        &self.manifest.pairs
    }

    /// N, the number of noise images.
    pub fn n_images(&self) -> usize {
        self.manifest.n_images
    }

    /// Grid cells per image.
    pub fn cells(&self) -> usize {
        self.manifest.fingerprint.cells()
    }

    /// Blocks in the store: N x cells. Block (image k, cell) has flat index `k * cells + cell`.
    pub fn n_blocks(&self) -> usize {
        self.n_images() * self.cells()
    }

    /// Floats per block (C x bh x bw).
    pub fn block_len(&self) -> usize {
        self.manifest.fingerprint.block_len()
    }

    /// The values of block (image, cell) in `(channel, y, x)` order.
    pub fn block(&self, image: usize, cell: usize) -> Result<&[f32]> {
        if image >= self.n_images() || cell >= self.cells() {
            bail!(
                "block (image {image}, cell {cell}) is outside the store ({} images x {} cells)",
                self.n_images(),
                self.cells()
            );
        }
        let chunk = image / self.manifest.chunk_images;
        let within = image - chunk * self.manifest.chunk_images;
        let len = self.block_len();
        let start = (within * self.cells() + cell) * len;
        Ok(&as_f32(&self.noise[chunk])[start..start + len])
    }

    /// Block by flat index (`image * cells + cell`).
    pub fn block_flat(&self, flat: usize) -> Result<&[f32]> {
        self.block(flat / self.cells(), flat % self.cells())
    }

    /// Noise image k rebuilt from its blocks, `(C, h, w)` row-major.
    pub fn noise_image(&self, image: usize) -> Result<Vec<f32>> {
        let f = &self.manifest.fingerprint;
        let mut blocks = Vec::with_capacity(f.image_len());
        for cell in 0..self.cells() {
            blocks.extend_from_slice(self.block(image, cell)?);
        }
        Ok(blocks_to_image(f, &blocks))
    }

    fn verify_noise_sample(&self) -> Result<()> {
        let n = self.n_images();
        let mut sample = vec![0, n / 2, n - 1];
        sample.dedup();
        let f = &self.manifest.fingerprint;
        for k in sample {
            let want = image_to_blocks(f, &noise_values(f, self.manifest.seed, k));
            let mut got = Vec::with_capacity(want.len());
            for cell in 0..self.cells() {
                got.extend_from_slice(self.block(k, cell)?);
            }
            if got
                .iter()
                .zip(&want)
                .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                bail!(
                    "store {}: noise image {k} differs from torch.randn with seed {} + {k}; the \
                     store is damaged",
                    self.dir.display(),
                    self.manifest.seed
                );
            }
        }
        Ok(())
    }

    /// Whether a collect that adds pairs or images to the store was started and did not finish
    /// (the store is usable as its manifest says meanwhile).
    pub fn has_unfinished_change(&self) -> bool {
        manifest::next_manifest_path(&self.dir).exists()
    }

    /// Which units are done (scanning file sizes; no data read).
    pub fn status(&self) -> Result<StoreStatus> {
        let m = &self.manifest;
        let units = m.units_of(m.shard);
        let mut missing = Vec::new();
        for u in &units {
            let pair = &m.pairs[u.pair];
            let have = collect::unit_images_done(&self.dir, m, *u)?;
            let range = m.chunk_range(u.chunk);
            if have < range.len() {
                missing.push((pair.clone(), range.start + have..range.end));
            }
        }
        Ok(StoreStatus {
            units_total: units.len(),
            units_done: units.len() - missing.len(),
            missing,
        })
    }

    /// Normalise `name` and check the store has it; the error names the store's categories.
    pub fn resolve_category(&self, name: &str) -> Result<String> {
        let norm = normalize_category(name)?;
        if self.manifest.categories.binary_search(&norm).is_err() {
            bail!(
                "category {norm:?} is not in the store {} (it has {}: {}); collect it first, \
                 e.g. `semi tickets collect --categories ...` on this store",
                self.dir.display(),
                self.manifest.categories.len(),
                list_names(&self.manifest.categories)
            );
        }
        Ok(norm)
    }

    /// The partners of category `name` in the store (categories it was paired with), sorted.
    pub fn partners(&self, name: &str) -> Vec<&str> {
        self.manifest
            .pairs
            .iter()
            .filter_map(|p| p.partner(name))
            .collect()
    }

    fn pair_maps(&self, index: usize) -> Result<Arc<Vec<Mmap>>> {
        let mut cache = self.pairs.lock().expect("pair cache lock");
        if let Some(maps) = cache.get(&index) {
            return Ok(maps.clone());
        }
        let m = &self.manifest;
        let pair = &m.pairs[index];
        let mut maps = Vec::with_capacity(m.n_chunks());
        for c in 0..m.n_chunks() {
            let path = manifest::score_path(&self.dir, pair, c);
            let want = m.chunk_range(c).len() * m.score_row_bytes();
            let len = std::fs::metadata(&path)
                .map(|md| md.len() as usize)
                .unwrap_or(0);
            if len < want {
                let range = m.chunk_range(c);
                bail!(
                    "the store {} is incomplete: pair {pair} has no scores for images {}..{}; \
                     finish it with `semi tickets collect` (or merge all its shards)",
                    self.dir.display(),
                    range.start + len / m.score_row_bytes(),
                    range.end
                );
            }
            let map = map_file(&path)?;
            // Scores are min-max normalised: anything else is damage, not data.
            if let Some(v) = as_f32(&map)[..want / 4]
                .iter()
                .find(|v| !(0.0..=1.0).contains(*v))
            {
                bail!(
                    "the store {} is damaged: {} holds the score {v}, outside [0, 1]; delete \
                     that file and rerun `semi tickets collect` to score it again",
                    self.dir.display(),
                    path.display()
                );
            }
            maps.push(map);
        }
        let maps = Arc::new(maps);
        cache.insert(index, maps.clone());
        Ok(maps)
    }

    /// Add `S_{i,(j)}(b)` to `out[b]` for every block b (flat index); `i`, `j` normalised names.
    pub fn add_scores(&self, i: &str, j: &str, out: &mut [f32]) -> Result<()> {
        let pair = Pair::new(i, j)?;
        let index = self.manifest.pair_index(&pair).with_context(|| {
            format!(
                "the store {} has no pair {pair}; collect it (its categories are {})",
                self.dir.display(),
                list_names(&self.manifest.categories)
            )
        })?;
        if out.len() != self.n_blocks() {
            bail!(
                "score buffer has {} entries, the store {} blocks",
                out.len(),
                self.n_blocks()
            );
        }
        let row = if pair.a() == i { 0 } else { 1 };
        let cells = self.cells();
        let maps = self.pair_maps(index)?;
        let mut block = 0;
        for (c, map) in maps.iter().enumerate() {
            // Only this manifest's images (a file may run on into an unfinished extension).
            let data = &as_f32(map)[..self.manifest.chunk_range(c).len() * 2 * cells];
            for image in data.chunks_exact(2 * cells) {
                let src = &image[row * cells..(row + 1) * cells];
                for (o, s) in out[block..block + cells].iter_mut().zip(src) {
                    *o += *s;
                }
                block += cells;
            }
        }
        Ok(())
    }

    /// `S_{i,(j)}` for every block (flat index).
    pub fn scores(&self, i: &str, j: &str) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.n_blocks()];
        self.add_scores(i, j, &mut out)?;
        Ok(out)
    }

    /// Paper Eq. 2: `Average_i(b)`, the mean of `S_{i,(j)}(b)` over the partners j of i present
    /// in the store, and the number of partners.
    pub fn average_scores(&self, i: &str) -> Result<(Vec<f32>, usize)> {
        let partners = self.partners(i);
        if partners.is_empty() {
            bail!(
                "category {i:?} has no partner in the store {}",
                self.dir.display()
            );
        }
        let mut out = vec![0f32; self.n_blocks()];
        for j in &partners {
            self.add_scores(i, j, &mut out)?;
        }
        let inv = 1.0 / partners.len() as f32;
        for v in &mut out {
            *v *= inv;
        }
        Ok((out, partners.len()))
    }
}

fn list_names(names: &[String]) -> String {
    const MAX: usize = 20;
    let mut s = names
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX {
        s.push_str(&format!(", ... ({} more)", names.len() - MAX));
    }
    s
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // Safety: store files are only ever replaced by rename, never modified in place, so the
    // mapped bytes cannot change under us.
    unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))
}

fn as_f32(map: &Mmap) -> &[f32] {
    bytemuck::cast_slice(&map[..])
}

/// Noise image k of a store with `seed`: `torch.randn((1,C,h,w), manual_seed(seed + k))`,
/// `(C, h, w)` row-major.
pub fn noise_values(f: &ProbeFingerprint, seed: u64, k: usize) -> Vec<f32> {
    semi_diffusion::noise::TorchGenerator::manual_seed(seed.wrapping_add(k as u64))
        .randn_vec(f.image_len())
}

/// `(C, h, w)` image -> `[cells][C][bh][bw]` blocks.
pub fn image_to_blocks(f: &ProbeFingerprint, image: &[f32]) -> Vec<f32> {
    let [c, h, w] = f.latent;
    let [rows, cols] = f.grid;
    let (bh, bw) = f.block_hw();
    let mut out = Vec::with_capacity(image.len());
    for r in 0..rows {
        for col in 0..cols {
            for ch in 0..c {
                for y in r * bh..(r + 1) * bh {
                    let row = (ch * h + y) * w;
                    out.extend_from_slice(&image[row + col * bw..row + (col + 1) * bw]);
                }
            }
        }
    }
    out
}

/// `[cells][C][bh][bw]` blocks -> `(C, h, w)` image (inverse of [`image_to_blocks`]).
pub fn blocks_to_image(f: &ProbeFingerprint, blocks: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; blocks.len()];
    let len = f.block_len();
    for (cell, block) in blocks.chunks_exact(len).enumerate() {
        put_block(f, &mut out, cell, block);
    }
    out
}

/// Write one block into a `(C, h, w)` image at grid cell `cell` (raster index).
pub fn put_block(f: &ProbeFingerprint, image: &mut [f32], cell: usize, block: &[f32]) {
    let [c, h, w] = f.latent;
    let cols = f.grid[1];
    let (bh, bw) = f.block_hw();
    let (r, col) = (cell / cols, cell % cols);
    let mut src = block.chunks_exact(bw);
    for ch in 0..c {
        for y in r * bh..(r + 1) * bh {
            let row = (ch * h + y) * w;
            image[row + col * bw..row + (col + 1) * bw]
                .copy_from_slice(src.next().expect("block length"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prober::FakeProber;

    #[test]
    fn blocks_round_trip() {
        let f = FakeProber::small_fingerprint("m");
        let img: Vec<f32> = (0..f.image_len()).map(|v| v as f32).collect();
        let blocks = image_to_blocks(&f, &img);
        // Cell 1 = row 0, col 1: x 4..8 of rows 0..4, channel 0 first.
        assert_eq!(&blocks[64..68], &[4.0, 5.0, 6.0, 7.0]);
        assert_eq!(&blocks[68..72], &[20.0, 21.0, 22.0, 23.0]);
        assert_eq!(blocks_to_image(&f, &blocks), img);
    }
}
