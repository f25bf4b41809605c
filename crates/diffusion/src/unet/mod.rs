//! UNet2DConditionModel with an attention-controller hook and early stop.
//!
//! A diffusers-exact SD 1.x/2.x/XL UNet (weights load under diffusers' key names). Every attention
//! layer knows its diffusers path, fixed at construction; on each call it asks the controller
//! (if any) whether it wants the layer, and only then materialises logits and probabilities.
//! `stop_after` ends the pass right after a given layer's probabilities were handed over.

/// Unwraps a layer result that is `None` when the pass stopped early, returning `Ok(None)` from
/// the enclosing function so the stop propagates up without computing anything more.
macro_rules! or_stop {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

mod blocks;
mod control;
pub mod embeddings;
mod transformer;

pub use control::LayerInfo;
pub use embeddings::AddedCond;

use crate::config::{MidKind, UNetConfig};
use crate::controller::AttentionController;
use crate::nn::{Conv2d, GroupNorm};
use blocks::{Common, DownBlock, MidBlock, UpBlock};
use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};
use control::{CallState, LayerRegistry};
use embeddings::{TextTimeEmbedding, TimestepEmbedding};

/// The conditional UNet of Stable Diffusion.
pub struct UNet2DConditionModel {
    cfg: UNetConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    /// SDXL's `add_embedding` (`addition_embed_type: text_time`).
    add_embedding: Option<TextTimeEmbedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    layers: LayerRegistry,
    /// Width of the sinusoidal timestep projection (`block_out_channels[0]`).
    time_proj_dim: usize,
    /// The text-embedding width the cross-attention layers expect.
    context_dim: usize,
}

/// Per-call options of the UNet forward pass.
#[derive(Default)]
pub struct ForwardOptions<'a> {
    pub controller: Option<&'a mut dyn AttentionController>,
    /// Denoising step index reported to the controller.
    pub step: usize,
    /// Per batch row: is it a conditional row? Default: all rows conditional.
    pub conditional_rows: Option<Vec<bool>>,
    /// Stop right after the attention layer with this path (or the last attention layer under this
    /// path prefix) and return `UNetOutput::Stopped`. The layer's probabilities still reach the
    /// controller when it wants the layer; its output (`probs @ V`) and everything after it is
    /// never computed. An unknown path is an error that lists valid ones.
    pub stop_after: Option<&'a str>,
    /// diffusers' `added_cond_kwargs`: what a `text_time` UNet (SDXL) adds to the time
    /// embedding, one row per batch row. Required by such a UNet, refused by others.
    pub added: Option<&'a AddedCond>,
}

/// The result of [`UNet2DConditionModel::forward_with`].
#[derive(Debug)]
pub enum UNetOutput {
    /// The model output (noise, v or sample prediction), shaped like the input sample.
    Full(Tensor),
    /// The pass ended at `stop_after`; what was wanted went to the controller.
    Stopped,
}

fn config_error(e: anyhow::Error) -> candle_core::Error {
    candle_core::Error::msg(format!("{e:#}"))
}

impl UNet2DConditionModel {
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        cfg.validate("unet config").map_err(config_error)?;
        let down_specs = cfg.down_blocks().map_err(config_error)?;
        let up_specs = cfg.up_blocks().map_err(config_error)?;
        let channels = &cfg.block_out_channels;
        let n = channels.len();
        let c0 = channels[0];
        let temb_channels = cfg.time_embedding_dim.unwrap_or(4 * c0);
        let common = Common {
            temb_channels,
            groups: cfg.norm_groups(),
            eps: cfg.norm_eps,
            linear_projection: cfg.use_linear_projection,
            upcast_attention: cfg.upcasts_attention(),
        };
        let mut layers = LayerRegistry::default();

        let k_in = cfg.conv_in_kernel;
        let conv_in = crate::nn::conv2d(vb.pp("conv_in"), cfg.in_channels, c0, k_in, 1, k_in / 2)?;
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), c0, temb_channels)?;
        let add_embedding = match cfg.text_time() {
            Some((time_dim, input_dim)) => Some(TextTimeEmbedding::new(
                vb.pp("add_embedding"),
                time_dim,
                input_dim,
                temb_channels,
                cfg.flip_sin_to_cos,
                cfg.freq_shift,
            )?),
            None => None,
        };

        let mut down_blocks = Vec::with_capacity(n);
        for (i, spec) in down_specs.iter().enumerate() {
            let cin = if i == 0 { c0 } else { channels[i - 1] };
            down_blocks.push(DownBlock::new(
                vb.pp("down_blocks").pp(i),
                &mut layers,
                &common,
                spec,
                cin,
                channels[i],
                i + 1 < n,
                cfg.downsample_padding,
            )?);
        }

        let mid_depth = cfg.mid_depth().map_err(config_error)?;
        let mid_block = match cfg.mid_kind("unet config").map_err(config_error)? {
            MidKind::None => None,
            kind => Some(MidBlock::new(
                vb.pp("mid_block"),
                &mut layers,
                &common,
                &down_specs[n - 1],
                channels[n - 1],
                cfg.mid_block_scale_factor,
                (kind == MidKind::CrossAttn).then_some(mid_depth),
            )?),
        };

        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        for (i, spec) in up_specs.iter().enumerate() {
            let prev = reversed[i.saturating_sub(1)];
            let skip_in = reversed[(i + 1).min(n - 1)];
            up_blocks.push(UpBlock::new(
                vb.pp("up_blocks").pp(i),
                &mut layers,
                &common,
                spec,
                prev,
                skip_in,
                reversed[i],
                i + 1 < n,
            )?);
        }

        let conv_norm_out =
            crate::nn::group_norm(vb.pp("conv_norm_out"), common.groups, c0, cfg.norm_eps)?;
        let k_out = cfg.conv_out_kernel;
        let conv_out =
            crate::nn::conv2d(vb.pp("conv_out"), c0, cfg.out_channels, k_out, 1, k_out / 2)?;
        Ok(Self {
            cfg: cfg.clone(),
            conv_in,
            time_embedding,
            add_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            layers,
            time_proj_dim: c0,
            context_dim: down_specs[n - 1].cross_attention_dim,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The width of the text states the cross-attention layers read (`encoder_hidden_states`).
    pub fn context_dim(&self) -> usize {
        self.context_dim
    }

    /// Whether the UNet takes added conditions (SDXL's `text_time`): [`ForwardOptions::added`].
    pub fn takes_added_conditions(&self) -> bool {
        self.add_embedding.is_some()
    }

    /// sample `[b, c, h, w]`, timestep, encoder states `[b, seq, dim]` -> noise prediction.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        match self.forward_with(
            sample,
            timestep,
            encoder_hidden_states,
            ForwardOptions::default(),
        )? {
            UNetOutput::Full(t) => Ok(t),
            UNetOutput::Stopped => candle_core::bail!("UNet stopped without stop_after"),
        }
    }

    pub fn forward_with(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        opts: ForwardOptions,
    ) -> Result<UNetOutput> {
        let (b, c, _, _) = sample.dims4()?;
        if c != self.cfg.in_channels {
            candle_core::bail!(
                "UNet: sample has {c} channels, the model expects {}",
                self.cfg.in_channels
            );
        }
        let (eb, _, ed) = encoder_hidden_states.dims3()?;
        if eb != b || ed != self.context_dim {
            candle_core::bail!(
                "UNet: encoder states are [{eb}, _, {ed}], expected [{b}, _, {}]",
                self.context_dim
            );
        }
        if !timestep.is_finite() {
            candle_core::bail!("UNet: timestep {timestep} is not finite");
        }
        let conditional_rows = opts.conditional_rows.unwrap_or_else(|| vec![true; b]);
        if conditional_rows.len() != b {
            candle_core::bail!(
                "UNet: {} conditional_rows entries for a batch of {b}",
                conditional_rows.len()
            );
        }
        match (&self.add_embedding, opts.added) {
            (Some(_), None) => candle_core::bail!(
                "UNet: this UNet (addition_embed_type text_time, SDXL) needs the pooled text \
                 embedding and the time ids"
            ),
            (None, Some(_)) => {
                candle_core::bail!("UNet: added conditions given to a UNet that takes none")
            }
            (Some(e), Some(added)) => e.check(added, b)?,
            (None, None) => {}
        }
        let stop_at = match opts.stop_after {
            Some(path) => Some(self.layers.resolve(path)?),
            None => None,
        };
        let mut state = CallState {
            controller: opts.controller,
            step: opts.step,
            timestep,
            conditional_rows,
            stop_at,
        };
        Ok(
            match self.run(
                sample,
                timestep,
                encoder_hidden_states,
                opts.added,
                &mut state,
            )? {
                Some(t) => UNetOutput::Full(t),
                None => UNetOutput::Stopped,
            },
        )
    }

    fn run(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&AddedCond>,
        state: &mut CallState,
    ) -> Result<Option<Tensor>> {
        let b = sample.dim(0)?;
        let t_proj = embeddings::timestep_rows(
            timestep,
            self.time_proj_dim,
            self.cfg.flip_sin_to_cos,
            self.cfg.freq_shift,
            b,
            sample.dtype(),
            sample.device(),
        )?;
        let temb = self.time_embedding.forward(&t_proj)?;
        let temb = match (&self.add_embedding, added) {
            (Some(e), Some(added)) => (temb + e.forward(added, sample.dtype())?)?,
            _ => temb,
        };

        let mut h = self.conv_in.forward(sample)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            let (out, res) = or_stop!(block.forward(&h, &temb, context, state)?);
            h = out;
            skips.extend(res);
        }
        if let Some(mid) = &self.mid_block {
            h = or_stop!(mid.forward(&h, &temb, context, state)?);
        }
        for block in &self.up_blocks {
            let n = block.num_skips();
            if skips.len() < n {
                candle_core::bail!("UNet: not enough skip connections for an up block");
            }
            let own = skips.split_off(skips.len() - n);
            let upsample_to = match (block.has_upsampler(), skips.last()) {
                (true, Some(next)) => {
                    let (_, _, sh, sw) = next.dims4()?;
                    Some((sh, sw))
                }
                _ => None,
            };
            h = or_stop!(block.forward(&h, own, &temb, context, upsample_to, state)?);
        }
        let h = self.conv_norm_out.forward_silu(&h)?;
        Ok(Some(self.conv_out.forward(&h)?))
    }

    /// The diffusers paths of all attention layers, in execution order.
    pub fn attention_layer_paths(&self) -> Vec<String> {
        self.layers.layers.iter().map(|l| l.path.clone()).collect()
    }

    /// All attention layers (path, place, kind, heads), in execution order.
    pub fn attention_layers(&self) -> &[LayerInfo] {
        &self.layers.layers
    }

    /// The exact layer path a `stop_after` value resolves to (a path or a block prefix).
    pub fn resolve_attention_path(&self, path: &str) -> Result<&str> {
        let i = self.layers.resolve(path)?;
        Ok(&self.layers.layers[i].path)
    }
}
