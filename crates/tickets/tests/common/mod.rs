//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Result};
use candle_core::Tensor;
use semi_tickets::store::noise_values;
use semi_tickets::{Pair, ProbeFingerprint, Prober};

/// Every file under `dir` (relative path -> bytes), to compare stores byte for byte.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// A prober that returns given scores: `table[(pair, image)] = (S_a, S_b)`. It recognises the
/// image by its noise (the store's noise image k for `seed`).
pub struct TableProber {
    pub fingerprint: ProbeFingerprint,
    pub table: HashMap<(Pair, usize), (Vec<f32>, Vec<f32>)>,
    by_first_value: HashMap<u32, usize>,
}

impl TableProber {
    pub fn new(fingerprint: ProbeFingerprint, seed: u64, n_images: usize) -> Self {
        let by_first_value = (0..n_images)
            .map(|k| (noise_values(&fingerprint, seed, k)[0].to_bits(), k))
            .collect();
        TableProber {
            fingerprint,
            table: HashMap::new(),
            by_first_value,
        }
    }

    /// Set the scores of `S_{x,(y)}` over all blocks (flat: image * cells + cell).
    pub fn set(&mut self, x: &str, y: &str, scores: &[f32]) {
        let cells = self.fingerprint.cells();
        let pair = Pair::new(x, y).unwrap();
        for (k, chunk) in scores.chunks(cells).enumerate() {
            let entry = self
                .table
                .entry((pair.clone(), k))
                .or_insert_with(|| (vec![0.0; cells], vec![0.0; cells]));
            if pair.a() == x {
                entry.0 = chunk.to_vec();
            } else {
                entry.1 = chunk.to_vec();
            }
        }
    }
}

impl Prober for TableProber {
    fn fingerprint(&self) -> ProbeFingerprint {
        self.fingerprint.clone()
    }

    fn probe(&mut self, noise: &Tensor, pair: (&str, &str)) -> Result<(Vec<f32>, Vec<f32>)> {
        let first: f32 = noise.flatten_all()?.get(0)?.to_scalar()?;
        let Some(&k) = self.by_first_value.get(&first.to_bits()) else {
            bail!("unknown noise image");
        };
        let key = (Pair::new(pair.0, pair.1)?, k);
        match self.table.get(&key) {
            Some(v) => Ok(v.clone()),
            None => bail!("no scores for {:?} image {k}", pair),
        }
    }
}

/// A fingerprint with a 1x2 grid over a 4x2x4 latent: 2 cells per image, blocks of 4x2x2.
pub fn tiny_fingerprint() -> ProbeFingerprint {
    ProbeFingerprint {
        model: "table".into(),
        family: "sd".into(),
        layers: vec!["table.attn2".into()],
        timestep: 981,
        input_scale: 1.0,
        prompt_template: "a {c1} and a {c2}".into(),
        height: 16,
        width: 32,
        latent: [4, 2, 4],
        grid: [1, 2],
    }
}
