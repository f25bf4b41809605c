//! The store manifest: what was collected, how, and how it is laid out on disk.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fingerprint::ProbeFingerprint;
use crate::names::{categories_of, Pair};
use crate::shard::Shard;

/// The manifest's `format` value; bumped on any incompatible layout change.
pub const FORMAT: &str = "semi-tickets-store/1";

/// The most noise images a store may have (a COCO-scale store has thousands; this bounds
/// what a damaged or hostile manifest can make a reader allocate).
pub const MAX_IMAGES: usize = 1_000_000;

/// Images per work unit when the request does not say (see [`Manifest::chunk_images`]).
pub const DEFAULT_CHUNK_IMAGES: usize = 25;

/// `manifest.json`. It holds no timestamps or progress, so two stores with the same content
/// have byte-identical manifests whatever the order in which they were built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    pub fingerprint: ProbeFingerprint,
    /// Noise image k is `torch.randn((1, C, h, w), generator=torch.Generator().manual_seed(seed + k))`
    /// (torch uses the low 32 bits of the seed).
    pub seed: u64,
    /// N, the number of noise images; every pair is scored on all of them.
    pub n_images: usize,
    /// Images per chunk: noise and scores are stored per chunk of this many images, and one work
    /// unit is (chunk, pair). A crash loses at most the unit(s) in flight.
    pub chunk_images: usize,
    /// The categories of `pairs`, sorted (redundant, for readers).
    pub categories: Vec<String>,
    /// The unordered pairs, canonical and sorted.
    #[serde(serialize_with = "ser_pairs", deserialize_with = "de_pairs")]
    pub pairs: Vec<Pair>,
    /// `Some` for a shard store (it holds only its units), `None` for a whole store.
    pub shard: Option<Shard>,
}

/// One work unit: a pair's scores on one chunk of noise images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Unit {
    pub chunk: usize,
    /// Index into [`Manifest::pairs`].
    pub pair: usize,
}

fn ser_pairs<S: Serializer>(pairs: &[Pair], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(pairs.iter().map(|p| [p.a(), p.b()]))
}

fn de_pairs<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<Pair>, D::Error> {
    let raw: Vec<[String; 2]> = Vec::deserialize(d)?;
    raw.iter()
        .map(|[a, b]| Pair::stored(a, b).map_err(serde::de::Error::custom))
        .collect()
}

impl Manifest {
    /// A manifest for `pairs` (sorted and deduplicated here).
    pub fn new(
        fingerprint: ProbeFingerprint,
        seed: u64,
        n_images: usize,
        chunk_images: usize,
        mut pairs: Vec<Pair>,
        shard: Option<Shard>,
    ) -> Result<Manifest> {
        pairs.sort();
        pairs.dedup();
        let m = Manifest {
            format: FORMAT.to_string(),
            fingerprint,
            seed,
            n_images,
            chunk_images,
            categories: categories_of(&pairs),
            pairs,
            shard,
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks every invariant the rest of the crate relies on.
    pub fn validate(&self) -> Result<()> {
        if self.format != FORMAT {
            bail!(
                "unsupported store format {:?} (this version reads {FORMAT:?})",
                self.format
            );
        }
        self.fingerprint.validate()?;
        if self.n_images == 0 {
            bail!("N (number of noise images) must be at least 1");
        }
        if self.n_images > MAX_IMAGES {
            bail!(
                "N = {} noise images is more than a store may have ({MAX_IMAGES})",
                self.n_images
            );
        }
        // Tickets are block indices (u32): image x cell must fit.
        if (self.n_images as u64).saturating_mul(self.fingerprint.cells() as u64) > u32::MAX as u64
        {
            bail!(
                "N = {} noise images of {} cells is more blocks than a store can index ({})",
                self.n_images,
                self.fingerprint.cells(),
                u32::MAX
            );
        }
        if self.chunk_images == 0 {
            bail!("chunk size must be at least 1 image");
        }
        if self.pairs.is_empty() {
            bail!("a store needs at least one pair of categories");
        }
        if !self.pairs.windows(2).all(|w| w[0] < w[1]) {
            bail!("manifest pairs are not sorted and distinct");
        }
        if self.categories != categories_of(&self.pairs) {
            bail!("manifest categories do not match its pairs");
        }
        if let Some(s) = self.shard {
            Shard::new(s.index, s.count)?;
        }
        Ok(())
    }

    /// Read and validate `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = manifest_path(dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is not a ticket store (cannot read {})",
                dir.display(),
                path.display()
            )
        })?;
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("malformed store manifest {}", path.display()))?;
        m.validate()
            .with_context(|| format!("invalid store manifest {}", path.display()))?;
        Ok(m)
    }

    /// The manifest as written to disk (pretty JSON and a newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = serde_json::to_string_pretty(self).expect("manifest serialises");
        s.push('\n');
        s.into_bytes()
    }

    pub fn n_chunks(&self) -> usize {
        self.n_images.div_ceil(self.chunk_images)
    }

    /// The images of chunk `c`.
    pub fn chunk_range(&self, c: usize) -> Range<usize> {
        let start = c * self.chunk_images;
        start..(start + self.chunk_images).min(self.n_images)
    }

    /// All work units in their canonical order: chunk by chunk, pairs in manifest order within a
    /// chunk. Unit number `u` (its position here) belongs to shard `u % count`.
    pub fn units(&self) -> Vec<Unit> {
        (0..self.n_chunks())
            .flat_map(|chunk| (0..self.pairs.len()).map(move |pair| Unit { chunk, pair }))
            .collect()
    }

    /// The units `shard` owns (all units for `None`).
    pub fn units_of(&self, shard: Option<Shard>) -> Vec<Unit> {
        self.units()
            .into_iter()
            .enumerate()
            .filter(|(u, _)| shard.is_none_or(|s| s.owns(*u)))
            .map(|(_, unit)| unit)
            .collect()
    }

    /// Index of `pair` in [`Manifest::pairs`].
    pub fn pair_index(&self, pair: &Pair) -> Option<usize> {
        self.pairs.binary_search(pair).ok()
    }

    /// Bytes of one image's rows in a score file: 2 maps x cells x f32.
    pub fn score_row_bytes(&self) -> usize {
        2 * self.fingerprint.cells() * 4
    }

    /// Bytes of one image in a noise file.
    pub fn noise_image_bytes(&self) -> usize {
        self.fingerprint.image_len() * 4
    }

    /// This manifest minus its shard (what a merge of its shards has).
    pub fn unsharded(&self) -> Manifest {
        Manifest {
            shard: None,
            ..self.clone()
        }
    }
}

pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join("manifest.json")
}

/// `manifest.next.json`: a change to the store that a collect is making (more pairs or images),
/// committed to `manifest.json` when its data is complete.
pub fn next_manifest_path(dir: &Path) -> PathBuf {
    dir.join("manifest.next.json")
}

pub fn noise_dir(dir: &Path) -> PathBuf {
    dir.join("noise")
}

pub fn scores_dir(dir: &Path) -> PathBuf {
    dir.join("scores")
}

/// `noise/c00000.f32`: the chunk's images, block-major (see [`crate::store`]).
pub fn noise_path(dir: &Path, chunk: usize) -> PathBuf {
    noise_dir(dir).join(format!("c{chunk:05}.f32"))
}

/// `scores/<pair>/c00000.f32`: per image of the chunk, `S_{a,(b)}` then `S_{b,(a)}` per cell.
pub fn score_path(dir: &Path, pair: &Pair, chunk: usize) -> PathBuf {
    pair_dir(dir, pair).join(format!("c{chunk:05}.f32"))
}

/// `scores/<pair>`: [`Pair::dir_name`], or the longer name an older store used if it has it.
pub fn pair_dir(dir: &Path, pair: &Pair) -> PathBuf {
    let scores = scores_dir(dir);
    if let Some(legacy) = pair.legacy_dir_name() {
        let old = scores.join(legacy);
        // A name too long for this file system is simply not there.
        if old.is_dir() {
            return old;
        }
    }
    scores.join(pair.dir_name())
}
