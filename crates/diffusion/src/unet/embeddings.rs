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

/// diffusers' `added_cond_kwargs` for `addition_embed_type: text_time` (SDXL): per batch row,
/// the pooled projected text embedding and the micro-conditioning time ids (original height
/// and width, crop top and left, target height and width).
#[derive(Debug, Clone)]
pub struct AddedCond {
    /// `[batch, pooled width]`.
    pub text_embeds: Tensor,
    /// One list of time ids per batch row (kept on the host: they are constants of a run).
    pub time_ids: Vec<Vec<f64>>,
}

impl AddedCond {
    /// The rows of several conditions, in order (as `torch.cat` along the batch).
    pub fn concat(parts: &[&AddedCond]) -> Result<AddedCond> {
        let embeds: Vec<&Tensor> = parts.iter().map(|p| &p.text_embeds).collect();
        Ok(AddedCond {
            text_embeds: Tensor::cat(&embeds, 0)?,
            time_ids: parts.iter().flat_map(|p| p.time_ids.clone()).collect(),
        })
    }

    /// Batch rows.
    pub fn rows(&self) -> usize {
        self.time_ids.len()
    }
}

/// `add_time_proj` (the sinusoid of each time id) and `add_embedding` (linear_1 -> SiLU ->
/// linear_2) of a `text_time` UNet; the result is added to the time embedding.
#[derive(Debug)]
pub struct TextTimeEmbedding {
    embedding: TimestepEmbedding,
    time_dim: usize,
    input_dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl TextTimeEmbedding {
    pub fn new(
        vb: VarBuilder,
        time_dim: usize,
        input_dim: usize,
        out_dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f64,
    ) -> Result<Self> {
        Ok(Self {
            embedding: TimestepEmbedding::new(vb, input_dim, out_dim)?,
            time_dim,
            input_dim,
            flip_sin_to_cos,
            freq_shift,
        })
    }

    /// Errors unless `added` has `batch` rows whose widths add up to `add_embedding`'s input.
    pub fn check(&self, added: &AddedCond, batch: usize) -> Result<()> {
        let (rows, pooled) = added.text_embeds.dims2()?;
        if rows != batch || added.rows() != batch {
            candle_core::bail!(
                "UNet: added conditions have {rows} text embeddings and {} time-id rows for a \
                 batch of {batch}",
                added.rows()
            );
        }
        for ids in &added.time_ids {
            let width = pooled + ids.len() * self.time_dim;
            if width != self.input_dim {
                candle_core::bail!(
                    "UNet: the pooled text embedding ({pooled}) and {} time ids x {} give {width} \
                     values, but add_embedding takes {} (projection_class_embeddings_input_dim): \
                     the text encoder and the UNet do not belong together",
                    ids.len(),
                    self.time_dim,
                    self.input_dim
                );
            }
        }
        Ok(())
    }

    /// `[batch, temb]` to add to the time embedding, in `dtype`.
    pub fn forward(&self, added: &AddedCond, dtype: DType) -> Result<Tensor> {
        let device = added.text_embeds.device();
        let rows: Vec<f32> = added
            .time_ids
            .iter()
            .flat_map(|ids| {
                ids.iter().flat_map(|&v| {
                    sinusoidal(v, self.time_dim, self.flip_sin_to_cos, self.freq_shift)
                })
            })
            .collect();
        let n = added.rows();
        let width = rows.len() / n.max(1);
        let time = Tensor::from_vec(rows, (n, width), device)?.to_dtype(dtype)?;
        let input = Tensor::cat(&[&added.text_embeds.to_dtype(dtype)?, &time], 1)?;
        self.embedding.forward(&input)
    }
}
