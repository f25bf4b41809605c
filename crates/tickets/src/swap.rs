//! Swap (Mao, Wang, Aizawa, "Guided image synthesis via initial image editing in diffusion
//! model", ACM MM 2023; docs/design.md 1.5): rearrange the blocks of the user's own initial noise so
//! each object's region receives the blocks that attend most to that object. A permutation of
//! whole blocks keeps the noise exactly Gaussian (every value is one of the i.i.d. draws).
//!
//! As implemented:
//! 1. Probe ([`object_maps`]): one truncated UNet pass of the noise with the user's prompt, the
//!    ticket probe's machinery ([`SdProber::attention_maps`]): same layer plan, first timestep of
//!    the generation schedule, conditional branch, head- and layer-averaged cross-attention
//!    probabilities. Object `k`'s map is the sum of its phrase's token columns; one value per
//!    cell of the probe grid (a cell = one latent block, 4x4 for SD 1.x at 512x512).
//! 2. Normalise each map ([`SwapNorm`], default: divide by its mean) so objects compete on
//!    relative preference, and assign each block to the object whose normalised map is highest
//!    there (ties: the earlier object).
//! 3. Regions: the layout's boxes on the probe grid by the rule SemI uses
//!    ([`Layout::region_map`]: centre rule, the smaller box keeps an overlap).
//! 4. [`plan_swap`], objects in layout order: rank the blocks not yet placed by (assigned to this
//!    object first, then its normalised score, then index) and take as many as its region has
//!    cells. Chosen blocks already in the region stay where they are; each other chosen block
//!    (best first) is exchanged with the block of the next region cell (raster order) that was
//!    not chosen, so the displaced block goes where the chosen one came from. Placed regions are
//!    then fixed. The background keeps everything else, including the displaced blocks: the
//!    result is a product of transpositions, i.e. an exact permutation.
//!
//! Where this follows and departs from the paper: Mao et al. swap regions of the initial noise
//! towards the target box guided by the first step's cross-attention of the object's token, on
//! the single noise image the user has; we do it block-wise on the probe grid (so it combines
//! with SemI's grid and with the ticket probe), exchange rather than copy (no duplicated noise),
//! and use mean-normalised maps for assigning contested blocks.

use std::collections::HashSet;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use semi_diffusion::pipeline::StableDiffusion;
use semi_layout::{Grid, Layout};

use crate::probe::{LayerChoice, ProbeOptions, SdProber};

/// How each object's attention map is normalised before blocks are assigned to objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SwapNorm {
    /// Divide by the map's mean (docs/design.md 1.5): objects whose words draw less attention overall
    /// still win the blocks they prefer most.
    #[default]
    Mean,
    /// Min-max to [0, 1], as the ticket probe does.
    MinMax,
}

impl SwapNorm {
    pub fn name(self) -> &'static str {
        match self {
            SwapNorm::Mean => "mean",
            SwapNorm::MinMax => "min-max",
        }
    }
}

/// Swap settings; `Default` = probe the ticket probe's default layer, mean-normalised maps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SwapOptions {
    /// Probed cross-attention layers (the ticket probe's layer plan).
    pub layers: LayerChoice,
    pub normalize: SwapNorm,
}

/// What Swap did for one layout object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectSwap {
    /// Cells of the object's region on the probe grid.
    pub cells: usize,
    /// Blocks (anywhere) whose normalised attention is highest for this object.
    pub preferred: usize,
    /// Blocks moved into the region from elsewhere.
    pub moved_in: usize,
    /// Mean normalised attention of the object over its region, before and after.
    pub mean_before: f32,
    pub mean_after: f32,
}

/// A block permutation on a grid: output cell `i` receives input block `source[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SwapPlan {
    pub source: Vec<usize>,
    pub objects: Vec<ObjectSwap>,
}

impl SwapPlan {
    /// Cells whose block changed.
    pub fn moved(&self) -> usize {
        self.source
            .iter()
            .enumerate()
            .filter(|(i, s)| i != *s)
            .count()
    }
}

/// The plan and the probe it came from, for metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct SwapReport {
    /// `[rows, cols]` of the probe grid (cell = one latent block).
    pub grid: [usize; 2],
    pub plan: SwapPlan,
    /// The probed layers and timestep.
    pub layers: Vec<String>,
    pub timestep: f64,
    pub normalize: SwapNorm,
}

impl SwapReport {
    /// Cells whose block changed.
    pub fn moved(&self) -> usize {
        self.plan.moved()
    }

    /// A compact JSON summary for image metadata: grid, probe, blocks moved, per object the
    /// region size, blocks moved in and mean normalised attention before/after, and the
    /// permutation itself (`source[i]` = input block of output cell `i`).
    pub fn to_json(&self) -> serde_json::Value {
        let round = |v: f32| (v as f64 * 1e4).round() / 1e4;
        let objects: Vec<serde_json::Value> = self
            .plan
            .objects
            .iter()
            .map(|o| {
                serde_json::json!({
                    "cells": o.cells,
                    "preferred": o.preferred,
                    "moved_in": o.moved_in,
                    "mean_before": round(o.mean_before),
                    "mean_after": round(o.mean_after),
                })
            })
            .collect();
        serde_json::json!({
            "grid": self.grid,
            "layers": self.layers,
            "timestep": self.timestep,
            "normalize": self.normalize.name(),
            "moved": self.moved(),
            "objects": objects,
            "source": self.plan.source,
        })
    }
}

/// Normalise one attention map in place (errors on non-finite values). A map with zero mean
/// (no attention anywhere) stays all zero under [`SwapNorm::Mean`].
pub fn normalize_map(map: &mut [f32], norm: SwapNorm) -> Result<()> {
    match norm {
        SwapNorm::MinMax => crate::prober::min_max_normalize(map),
        SwapNorm::Mean => {
            if let Some(v) = map.iter().find(|v| !v.is_finite()) {
                bail!("attention map contains a non-finite value ({v})");
            }
            let mean = map.iter().map(|&v| v as f64).sum::<f64>() / map.len().max(1) as f64;
            for v in map.iter_mut() {
                *v = if mean > 0.0 {
                    (*v as f64 / mean) as f32
                } else {
                    0.0
                };
            }
            Ok(())
        }
    }
}

/// The pure permutation (module docs, step 2-4): `maps[k][cell]` = normalised attention of
/// object `k`, `owners[cell]` = the object whose region the cell belongs to (None =
/// background). Errors: maps of the wrong length, non-finite values, an owner without a map.
pub fn plan_swap(maps: &[Vec<f32>], owners: &[Option<usize>]) -> Result<SwapPlan> {
    let n = owners.len();
    for (k, m) in maps.iter().enumerate() {
        ensure!(
            m.len() == n,
            "swap: the attention map of object {k} has {} cells, the grid {n}",
            m.len()
        );
        ensure!(
            m.iter().all(|v| v.is_finite()),
            "swap: the attention map of object {k} has a non-finite value"
        );
    }
    if let Some(o) = owners.iter().flatten().find(|&&o| o >= maps.len()) {
        bail!(
            "swap: a cell belongs to object {o}, but there are only {} attention maps",
            maps.len()
        );
    }
    // Preferred object of each block (ties: the earlier object).
    let preferred: Vec<Option<usize>> = (0..n)
        .map(|b| {
            (0..maps.len()).fold(None, |best: Option<usize>, k| match best {
                Some(j) if maps[j][b] >= maps[k][b] => Some(j),
                _ => Some(k),
            })
        })
        .collect();
    // at[cell] = block now at the cell; pos[block] = its cell.
    let mut at: Vec<usize> = (0..n).collect();
    let mut pos: Vec<usize> = (0..n).collect();
    let mut fixed = vec![false; n];
    let mut objects = Vec::with_capacity(maps.len());
    for (k, map) in maps.iter().enumerate() {
        let region: Vec<usize> = (0..n).filter(|&c| owners[c] == Some(k)).collect();
        let mean_at = |at: &[usize]| -> f32 {
            if region.is_empty() {
                0.0
            } else {
                region.iter().map(|&c| map[at[c]]).sum::<f32>() / region.len() as f32
            }
        };
        let mean_before = mean_at(&at);
        // Blocks not in a placed region, best first for this object.
        let mut free: Vec<usize> = (0..n).filter(|&b| !fixed[pos[b]]).collect();
        free.sort_by(|&a, &b| {
            let pa = preferred[a] == Some(k);
            let pb = preferred[b] == Some(k);
            pb.cmp(&pa).then(map[b].total_cmp(&map[a])).then(a.cmp(&b))
        });
        let chosen: Vec<usize> = free.into_iter().take(region.len()).collect();
        let chosen_set: HashSet<usize> = chosen.iter().copied().collect();
        let in_region: HashSet<usize> = region.iter().copied().collect();
        let incoming: Vec<usize> = chosen
            .iter()
            .copied()
            .filter(|&b| !in_region.contains(&pos[b]))
            .collect();
        let vacant: Vec<usize> = region
            .iter()
            .copied()
            .filter(|&c| !chosen_set.contains(&at[c]))
            .collect();
        let mut moved_in = 0;
        for (&b, &cell) in incoming.iter().zip(&vacant) {
            let (from, displaced) = (pos[b], at[cell]);
            at.swap(from, cell);
            pos[b] = cell;
            pos[displaced] = from;
            moved_in += 1;
        }
        for &c in &region {
            fixed[c] = true;
        }
        objects.push(ObjectSwap {
            cells: region.len(),
            preferred: preferred.iter().filter(|&&p| p == Some(k)).count(),
            moved_in,
            mean_before,
            mean_after: mean_at(&at),
        });
    }
    Ok(SwapPlan {
        source: at,
        objects,
    })
}

/// Move whole `[C, bh, bw]` blocks of a `[C, h, w]` latent (row-major): output cell `i` of the
/// `[rows, cols]` grid gets input block `source[i]`. Errors unless `source` is a permutation of
/// the cells and the grid cuts the latent into equal blocks.
pub fn permute_blocks(
    latents: &[f32],
    chw: [usize; 3],
    grid: [usize; 2],
    source: &[usize],
) -> Result<Vec<f32>> {
    let [c, h, w] = chw;
    let [rows, cols] = grid;
    ensure!(
        latents.len() == c * h * w,
        "swap: the latent has {} values, a {chw:?} latent {}",
        latents.len(),
        c * h * w
    );
    ensure!(
        rows > 0 && cols > 0 && h % rows == 0 && w % cols == 0,
        "swap: a {rows}x{cols} grid does not cut the {h}x{w} latent into equal blocks"
    );
    ensure!(
        source.len() == rows * cols,
        "swap: the permutation has {} entries for {} cells",
        source.len(),
        rows * cols
    );
    let mut seen = vec![false; source.len()];
    for &s in source {
        ensure!(
            s < seen.len() && !std::mem::replace(&mut seen[s], true),
            "swap: the block order is not a permutation (block {s} repeated or out of range)"
        );
    }
    let (bh, bw) = (h / rows, w / cols);
    let mut out = vec![0f32; latents.len()];
    for (dst, &src) in source.iter().enumerate() {
        let (dr, dc) = (dst / cols, dst % cols);
        let (sr, sc) = (src / cols, src % cols);
        for ch in 0..c {
            for y in 0..bh {
                let d = (ch * h + dr * bh + y) * w + dc * bw;
                let s = (ch * h + sr * bh + y) * w + sc * bw;
                out[d..d + bw].copy_from_slice(&latents[s..s + bw]);
            }
        }
    }
    Ok(out)
}

/// The probe behind Swap (module docs, step 1): `(grid, maps, layers, timestep)`, with
/// `maps[k]` the raw attention of object `k` (sum of the columns `object_tokens[k]`) per grid
/// cell, for `noise` (`[1, C, h, w]`, unit variance) and `prompt` at the first of `steps`
/// timesteps.
pub fn object_maps(
    sd: &StableDiffusion,
    noise: &Tensor,
    prompt: &str,
    object_tokens: &[Vec<usize>],
    steps: usize,
    layers: &LayerChoice,
) -> Result<ObjectMaps> {
    let dims = noise.dims();
    ensure!(
        dims.len() == 4 && dims[0] == 1,
        "swap: the noise has shape {dims:?}, expected [1, C, h, w]"
    );
    let f = sd.vae_scale_factor();
    let mut options = ProbeOptions::new(dims[2] * f, dims[3] * f);
    options.layers = layers.clone();
    options.steps = steps;
    // The fingerprint is only bookkeeping for stores; Swap stores nothing.
    let mut prober = SdProber::new(sd, "swap".to_string(), &options)?;
    let raw = prober.attention_maps(noise, &[prompt.to_string()])?;
    let map = &raw[0];
    let keys = map.first().map_or(0, |r| r.len());
    let mut maps = Vec::with_capacity(object_tokens.len());
    for (k, tokens) in object_tokens.iter().enumerate() {
        ensure!(
            !tokens.is_empty(),
            "swap: object {k} has no token positions in the prompt"
        );
        if let Some(t) = tokens.iter().find(|&&t| t >= keys) {
            bail!("swap: object {k}'s token position {t} is outside the {keys} text tokens");
        }
        let mut unique = tokens.clone();
        unique.sort_unstable();
        unique.dedup();
        maps.push(
            map.iter()
                .map(|row| unique.iter().map(|&t| row[t]).sum())
                .collect(),
        );
    }
    Ok(ObjectMaps {
        grid: prober.plan().grid,
        maps,
        layers: prober.plan().layers.clone(),
        timestep: prober.timestep(),
    })
}

/// Raw per-object attention maps on the probe grid ([`object_maps`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectMaps {
    pub grid: [usize; 2],
    /// Per object, one value per grid cell in raster order.
    pub maps: Vec<Vec<f32>>,
    pub layers: Vec<String>,
    pub timestep: f64,
}

/// Swap `noise` (`[1, C, h, w]`) for `layout`: probe with the layout's prompt at the first of
/// `steps` timesteps, plan on the layout's regions, permute (module docs). `object_tokens[k]`
/// are the positions of object `k`'s phrase in the encoded prompt. Returns the permuted noise
/// (f32, CPU) and the report.
pub fn swap_noise(
    sd: &StableDiffusion,
    noise: &Tensor,
    layout: &Layout,
    object_tokens: &[Vec<usize>],
    steps: usize,
    options: &SwapOptions,
) -> Result<(Tensor, SwapReport)> {
    ensure!(
        !layout.objects.is_empty(),
        "swap needs a layout with at least one object"
    );
    ensure!(
        object_tokens.len() == layout.objects.len(),
        "swap: {} token lists for {} layout objects",
        object_tokens.len(),
        layout.objects.len()
    );
    let want = sd.latent_shape(layout.height as usize, layout.width as usize);
    ensure!(
        noise.dims() == want.as_slice(),
        "swap: the noise has shape {:?}, but the {}x{} layout needs {want:?}",
        noise.dims(),
        layout.width,
        layout.height
    );
    let probed = object_maps(
        sd,
        noise,
        &layout.prompt,
        object_tokens,
        steps,
        &options.layers,
    )
    .context("swap: probing the noise failed")?;
    let mut maps = probed.maps;
    for m in maps.iter_mut() {
        normalize_map(m, options.normalize)?;
    }
    let grid = Grid::new(probed.grid[0], probed.grid[1]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let regions = layout.region_map(grid);
    let plan = plan_swap(&maps, regions.owners())?;
    let values: Vec<f32> = noise
        .to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let chw = [want[1], want[2], want[3]];
    let permuted = permute_blocks(&values, chw, probed.grid, &plan.source)?;
    let tensor = Tensor::from_vec(permuted, want, &Device::Cpu)?;
    Ok((
        tensor,
        SwapReport {
            grid: probed.grid,
            plan,
            layers: probed.layers,
            timestep: probed.timestep,
            normalize: options.normalize,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_normalisation() {
        let mut m = vec![1.0, 3.0];
        normalize_map(&mut m, SwapNorm::Mean).unwrap();
        assert_eq!(m, [0.5, 1.5]);
        let mut z = vec![0.0, 0.0];
        normalize_map(&mut z, SwapNorm::Mean).unwrap();
        assert_eq!(z, [0.0, 0.0]);
        assert!(normalize_map(&mut [f32::NAN], SwapNorm::Mean).is_err());
        let mut m = vec![1.0, 3.0, 2.0];
        normalize_map(&mut m, SwapNorm::MinMax).unwrap();
        assert_eq!(m, [0.0, 1.0, 0.5]);
    }

    #[test]
    fn one_object_gets_its_best_blocks() {
        // 4 cells, the object owns cells 0 and 1; it attends most to blocks 3 and 2.
        let maps = vec![vec![0.1, 0.2, 0.9, 1.0]];
        let owners = [Some(0), Some(0), None, None];
        let plan = plan_swap(&maps, &owners).unwrap();
        // Block 3 (best) goes to the first vacant cell 0, block 2 to cell 1; the displaced
        // blocks 0 and 1 take their places.
        assert_eq!(plan.source, [3, 2, 1, 0]);
        let o = &plan.objects[0];
        assert_eq!((o.cells, o.moved_in, o.preferred), (2, 2, 4));
        assert!((o.mean_before - 0.15).abs() < 1e-6 && (o.mean_after - 0.95).abs() < 1e-6);
        assert_eq!(plan.moved(), 4);
    }

    #[test]
    fn blocks_already_in_place_stay() {
        let maps = vec![vec![1.0, 0.0, 0.9, 0.0]];
        let owners = [Some(0), Some(0), None, None];
        let plan = plan_swap(&maps, &owners).unwrap();
        assert_eq!(plan.source, [0, 2, 1, 3]);
    }

    #[test]
    fn preferred_blocks_win_over_raw_score_and_regions_stay_fixed() {
        // Block 2 scores high for both, but prefers object 1; object 0 then takes block 3.
        let maps = vec![vec![0.0, 0.0, 0.8, 0.5, 0.0], vec![0.0, 0.0, 0.9, 0.1, 0.0]];
        let owners = [Some(0), Some(1), None, None, None];
        let plan = plan_swap(&maps, &owners).unwrap();
        assert_eq!(plan.source[0], 3);
        assert_eq!(plan.source[1], 2);
        let mut sorted = plan.source.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn bad_plans_and_permutations_error() {
        assert!(plan_swap(&[vec![0.0; 3]], &[None; 4]).is_err());
        assert!(plan_swap(&[vec![0.0; 2]], &[Some(1), None]).is_err());
        assert!(plan_swap(&[vec![f32::INFINITY, 0.0]], &[None, None]).is_err());
        let x = vec![0f32; 16];
        assert!(permute_blocks(&x, [1, 4, 4], [2, 2], &[0, 1, 2, 2]).is_err());
        assert!(permute_blocks(&x, [1, 4, 4], [2, 2], &[0, 1, 2]).is_err());
        assert!(permute_blocks(&x, [1, 4, 4], [3, 2], &[0, 1, 2, 3, 4, 5]).is_err());
        assert!(permute_blocks(&x[..15], [1, 4, 4], [2, 2], &[0, 1, 2, 3]).is_err());
    }

    #[test]
    fn permute_moves_whole_blocks() {
        // [2, 4, 4] latent, 2x2 grid: value = 100 * channel + 10 * cell + offset in block.
        let (c, h, w) = (2, 4, 4);
        let mut x = vec![0f32; c * h * w];
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let cell = (y / 2) * 2 + xx / 2;
                    x[(ch * h + y) * w + xx] = (100 * ch + 10 * cell + (y % 2) * 2 + xx % 2) as f32;
                }
            }
        }
        let source = [3, 0, 2, 1];
        let out = permute_blocks(&x, [c, h, w], [2, 2], &source).unwrap();
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let cell = (y / 2) * 2 + xx / 2;
                    let want = (100 * ch + 10 * source[cell] + (y % 2) * 2 + xx % 2) as f32;
                    assert_eq!(out[(ch * h + y) * w + xx], want);
                }
            }
        }
    }
}
