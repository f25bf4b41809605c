//! Timestep conditioning: the sinusoidal projection (`time_proj`) and its MLP (`time_embedding`).

use crate::nn::linear::{linear, Linear};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Module, VarBuilder};

/// diffusers' `get_timestep_embedding` for one timestep, `[dim]`, computed step by step in f32
/// exactly as torch does (f32 exponents, f32 product with the timestep).
pub fn sinusoidal(timestep: f64, dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Vec<f32> {
    let half = dim / 2;
    let log_period = -(10000f64.ln() as f32);
    let denom = (half as f64 - freq_shift) as f32;
    let t = timestep as f32;
    let args: Vec<f32> = (0..half)
        .map(|i| t * ((log_period * i as f32) / denom).exp())
        .collect();
    let sin = args.iter().map(|a| a.sin());
    let cos = args.iter().map(|a| a.cos());
    let mut out: Vec<f32> = if flip_sin_to_cos {
        cos.chain(sin).collect()
    } else {
        sin.chain(cos).collect()
    };
    out.resize(dim, 0.0);
    out
}

/// `time_embedding`: linear_1 -> SiLU -> linear_2.
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: linear(in_dim, out_dim, vb.pp("linear_1"))?,
            linear_2: linear(out_dim, out_dim, vb.pp("linear_2"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)
    }
}

/// The projected timestep repeated for `batch` rows, `[batch, dim]`, in `dtype`.
pub fn timestep_rows(
    timestep: f64,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    batch: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let row = sinusoidal(timestep, dim, flip_sin_to_cos, freq_shift);
    Tensor::from_vec(row, (1, dim), device)?
        .repeat((batch, 1))?
        .to_dtype(dtype)
}
