//! Swap (Mao, Wang, Aizawa, "Guided image synthesis via initial image editing in diffusion
//! model", ACM MM 2023; DESIGN.md 1.5): rearrange the blocks of the user's own initial noise so
//! each object's region receives the blocks that attend most to that object.
//!
//! Todo: filled in by the next commits.

use anyhow::Result;
use candle_core::Tensor;
use semi_diffusion::pipeline::StableDiffusion;
use semi_layout::Layout;

use crate::probe::LayerChoice;

/// How each object's attention map is normalised before cells are assigned to objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SwapNorm {
    /// Divide by the map's mean (DESIGN.md 1.5): objects whose words draw less attention overall
    /// still win the cells they prefer most.
    #[default]
    Mean,
    /// Min-max to [0, 1], as the ticket probe does.
    MinMax,
}

/// Swap settings; `Default` = probe the default layer, mean-normalised maps.
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

/// The plan and the grid it ran on, for metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct SwapReport {
    /// `[rows, cols]` of the probe grid (cell = one latent block).
    pub grid: [usize; 2],
    pub plan: SwapPlan,
    /// The probed layers and timestep.
    pub layers: Vec<String>,
    pub timestep: f64,
}

impl SwapReport {
    /// Cells whose block changed.
    pub fn moved(&self) -> usize {
        todo!()
    }

    /// A compact JSON summary for image metadata.
    pub fn to_json(&self) -> serde_json::Value {
        todo!()
    }
}

/// Normalise one attention map in place.
pub fn normalize_map(_map: &mut [f32], _norm: SwapNorm) -> Result<()> {
    todo!()
}

/// The pure permutation: `maps[k][cell]` = normalised attention of object `k`, `owners[cell]` =
/// the object whose region the cell belongs to (None = background).
pub fn plan_swap(_maps: &[Vec<f32>], _owners: &[Option<usize>]) -> Result<SwapPlan> {
    todo!()
}

/// Move whole `[C, bh, bw]` blocks of a `[C, h, w]` latent: output cell `i` gets input block
/// `source[i]` on a `grid` of `[rows, cols]` cells.
pub fn permute_blocks(
    _latents: &[f32],
    _chw: [usize; 3],
    _grid: [usize; 2],
    _source: &[usize],
) -> Result<Vec<f32>> {
    todo!()
}

/// The raw (head- and layer-averaged) attention of each object on `noise` for `prompt`, with
/// `object_tokens[k]` the token positions of object `k`'s phrase: `(grid, maps)`.
pub fn object_maps(
    _sd: &StableDiffusion,
    _noise: &Tensor,
    _prompt: &str,
    _object_tokens: &[Vec<usize>],
    _steps: usize,
    _layers: &LayerChoice,
) -> Result<([usize; 2], Vec<Vec<f32>>)> {
    todo!()
}

/// Swap `noise` (`[1, C, h, w]`) for `layout`: probe with the layout's prompt at the first of
/// `steps` timesteps, plan, permute.
pub fn swap_noise(
    _sd: &StableDiffusion,
    _noise: &Tensor,
    _layout: &Layout,
    _object_tokens: &[Vec<usize>],
    _steps: usize,
    _options: &SwapOptions,
) -> Result<(Tensor, SwapReport)> {
    todo!()
}
