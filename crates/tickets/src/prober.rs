//! The probe contract: one noise image and one contrastive pair in, two normalised score maps
//! out. The real probe (a truncated UNet pass) lives elsewhere; [`FakeProber`] is a fast,
//! deterministic stand-in for tests and benchmarks.

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::fingerprint::ProbeFingerprint;

/// The two score maps of one (noise image, pair): `(S_{1,(2)}, S_{2,(1)})`.
pub type PairMaps = (Vec<f32>, Vec<f32>);

/// Scores noise images against contrastive pairs (docs/design.md 1.1).
pub trait Prober {
    /// What the scores depend on; the store records it and refuses to mix.
    fn fingerprint(&self) -> ProbeFingerprint;

    /// Score one noise image `(1, C, h, w)` (f32, CPU, unscaled `torch.randn` values) for the
    /// pair `(c1, c2)` (normalised names, canonical order; prompt `a {c1} and a {c2}`). Returns
    /// `(S_{1,(2)}, S_{2,(1)})`: one value per grid cell in raster order, each map min-max
    /// normalised to [0, 1] (see [`min_max_normalize`]).
    fn probe(&mut self, noise: &Tensor, pair: (&str, &str)) -> Result<(Vec<f32>, Vec<f32>)>;

    /// Whether `pair` can be probed at all (its prompt fits the text encoder, say), checked
    /// before a collect writes anything for it. The default accepts every pair.
    fn check_pair(&self, pair: (&str, &str)) -> Result<()> {
        let _ = pair;
        Ok(())
    }

    /// Score one noise image for several pairs; override to batch prompts in one pass.
    /// The default calls [`Prober::probe`] per pair.
    fn probe_pairs(
        &mut self,
        noise: &Tensor,
        pairs: &[(&str, &str)],
    ) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        pairs.iter().map(|&p| self.probe(noise, p)).collect()
    }

    /// How many pairs [`Prober::probe_pairs`] should get per call (1 = no batching). Larger
    /// batches put more work in flight (lost on a crash) in exchange for throughput.
    fn pairs_per_pass(&self) -> usize {
        1
    }

    /// Score several noise images for several pairs: `result[image][pair]`, each exactly what
    /// [`Prober::probe_pairs`] gives for that image (a store is byte-identical for any batch).
    /// Override to run the images in one pass; the default calls `probe_pairs` per image.
    fn probe_images(
        &mut self,
        noises: &[&Tensor],
        pairs: &[(&str, &str)],
    ) -> Result<Vec<Vec<PairMaps>>> {
        noises.iter().map(|n| self.probe_pairs(n, pairs)).collect()
    }

    /// How many noise images [`Prober::probe_images`] should get per call (1 = one per pass).
    fn images_per_pass(&self) -> usize {
        1
    }
}

/// Min-max normalise a map in place to [0, 1] (docs/design.md 1.1). A constant map becomes all zeros
/// (it carries no preference for any cell). Errors on non-finite values.
pub fn min_max_normalize(map: &mut [f32]) -> Result<()> {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for &v in map.iter() {
        if !v.is_finite() {
            bail!("attention map contains a non-finite value ({v})");
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let range = hi - lo;
    for v in map.iter_mut() {
        *v = if range > 0.0 { (*v - lo) / range } else { 0.0 };
    }
    Ok(())
}

/// A deterministic prober for tests and benchmarks: a cell's score for category `x` against `y`
/// is the dot product of the cell's per-channel block means with a direction derived from the
/// two names (`d(x) - 0.5 d(y)`, `d` a hash of the name), min-max normalised. So scores depend on
/// the noise the way real ones do (through the block), differ between partners, and cost
/// microseconds. Optionally fails after a number of probe calls, to simulate a crash.
#[derive(Debug, Clone)]
pub struct FakeProber {
    fingerprint: ProbeFingerprint,
    calls: usize,
    fail_after: Option<usize>,
    pairs_per_pass: usize,
}

impl FakeProber {
    pub fn new(fingerprint: ProbeFingerprint) -> Self {
        FakeProber {
            fingerprint,
            calls: 0,
            fail_after: None,
            pairs_per_pass: 1,
        }
    }

    /// A small SD-like fingerprint: `model` names the fake model, latent `[4, 16, 16]`, grid 4x4
    /// (blocks of 4x4x4 as in SD 1.x), image 128x128.
    pub fn small_fingerprint(model: &str) -> ProbeFingerprint {
        ProbeFingerprint {
            model: model.to_string(),
            family: "sd".into(),
            layers: vec!["fake.attn2".to_string()],
            timestep: 981,
            input_scale: 1.0,
            prompt_template: "a {c1} and a {c2}".to_string(),
            height: 128,
            width: 128,
            latent: [4, 16, 16],
            grid: [4, 4],
        }
    }

    /// The SD 1.x at 512x512 shapes (latent `[4, 64, 64]`, grid 16x16), model `model`.
    pub fn sd_fingerprint(model: &str) -> ProbeFingerprint {
        ProbeFingerprint {
            height: 512,
            width: 512,
            latent: [4, 64, 64],
            grid: [16, 16],
            ..Self::small_fingerprint(model)
        }
    }

    /// Fail (return an error) on every probe call after the first `calls` succeeded.
    pub fn fail_after(mut self, calls: usize) -> Self {
        self.fail_after = Some(calls);
        self
    }

    /// Ask the driver for batches of `n` pairs per call.
    pub fn with_pairs_per_pass(mut self, n: usize) -> Self {
        self.pairs_per_pass = n;
        self
    }

    /// Probe calls so far (one per pair and image).
    pub fn calls(&self) -> usize {
        self.calls
    }

    fn direction(name: &str, channels: usize) -> Vec<f32> {
        // FNV-1a of the name seeds a tiny LCG; values in [-1, 1].
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (0..channels)
            .map(|_| {
                h = h
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }
}

impl Prober for FakeProber {
    fn fingerprint(&self) -> ProbeFingerprint {
        self.fingerprint.clone()
    }

    /// Like a text encoder of 16 tokens: the prompt `a {c1} and a {c2}` may have at most 14
    /// words (plus start and end tokens), and a name at most 64 characters.
    fn check_pair(&self, (c1, c2): (&str, &str)) -> Result<()> {
        let words = 3 + c1.split_whitespace().count() + c2.split_whitespace().count();
        if words > 14 || c1.chars().count().max(c2.chars().count()) > 64 {
            bail!("fake prober: the prompt for {c1:?} and {c2:?} does not fit the text encoder");
        }
        Ok(())
    }

    fn probe(&mut self, noise: &Tensor, pair: (&str, &str)) -> Result<(Vec<f32>, Vec<f32>)> {
        if let Some(limit) = self.fail_after {
            if self.calls >= limit {
                bail!("fake prober: simulated failure after {limit} calls");
            }
        }
        self.calls += 1;
        let f = &self.fingerprint;
        let [c, h, w] = f.latent;
        if noise.dims() != [1, c, h, w] {
            bail!(
                "fake prober: noise has shape {:?}, expected [1, {c}, {h}, {w}]",
                noise.dims()
            );
        }
        let data: Vec<f32> = noise.flatten_all()?.to_vec1()?;
        let [rows, cols] = f.grid;
        let (bh, bw) = f.block_hw();
        let mut means = vec![0f32; rows * cols * c];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let cell = (y / bh) * cols + x / bw;
                    means[cell * c + ch] += data[(ch * h + y) * w + x];
                }
            }
        }
        let (d1, d2) = (Self::direction(pair.0, c), Self::direction(pair.1, c));
        let score = |own: &[f32], other: &[f32]| -> Result<Vec<f32>> {
            let mut map: Vec<f32> = (0..rows * cols)
                .map(|cell| {
                    (0..c)
                        .map(|ch| means[cell * c + ch] * (own[ch] - 0.5 * other[ch]))
                        .sum()
                })
                .collect();
            min_max_normalize(&mut map)?;
            Ok(map)
        };
        Ok((score(&d1, &d2)?, score(&d2, &d1)?))
    }

    fn pairs_per_pass(&self) -> usize {
        self.pairs_per_pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn normalise() {
        let mut m = vec![2.0, 4.0, 3.0];
        min_max_normalize(&mut m).unwrap();
        assert_eq!(m, [0.0, 1.0, 0.5]);
        let mut m = vec![1.0, 1.0];
        min_max_normalize(&mut m).unwrap();
        assert_eq!(m, [0.0, 0.0]);
        assert!(min_max_normalize(&mut [f32::NAN]).is_err());
    }

    #[test]
    fn fake_is_deterministic_and_normalised() {
        let f = FakeProber::small_fingerprint("fake");
        let mut p = FakeProber::new(f);
        let noise = semi_diffusion::noise::randn(3, &[1, 4, 16, 16], &Device::Cpu).unwrap();
        let (a, b) = p.probe(&noise, ("car", "dog")).unwrap();
        let (a2, b2) = p.probe(&noise, ("car", "dog")).unwrap();
        assert_eq!((&a, &b), (&a2, &b2));
        assert_eq!(a.len(), 16);
        for v in a.iter().chain(&b) {
            assert!((0.0..=1.0).contains(v));
        }
        assert!(a.contains(&0.0) && a.contains(&1.0));
        assert_ne!(a, b);
        let mut p = p.fail_after(2);
        assert!(p.probe(&noise, ("car", "dog")).is_err());
    }
}
