//! The UNet's down, mid and up blocks (`CrossAttnDownBlock2D`/`DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`/`UpBlock2D`). A block without cross-attention
//! is the same structure with no `attentions`.

use super::control::{CallState, LayerRegistry};
use super::transformer::{Transformer2DModel, TransformerSpec};
use crate::config::BlockSpec;
use crate::nn::resnet::{ResnetBlock2D, ResnetSpec};
use crate::nn::sampling::{Downsample2D, Upsample2D};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// Model-wide settings every block needs.
#[derive(Debug, Clone, Copy)]
pub struct Common {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub linear_projection: bool,
    pub upcast_attention: bool,
}

impl Common {
    fn resnet(&self, vb: VarBuilder, cin: usize, cout: usize, scale: f64) -> Result<ResnetBlock2D> {
        ResnetBlock2D::new(
            vb,
            ResnetSpec {
                in_channels: cin,
                out_channels: cout,
                temb_channels: Some(self.temb_channels),
                groups: self.groups,
                eps: self.eps,
                output_scale_factor: scale,
            },
        )
    }

    /// The transformer after resnet `j` of a block with cross-attention (`None` without).
    fn attention(
        &self,
        vb: VarBuilder,
        registry: &mut LayerRegistry,
        channels: usize,
        spec: &BlockSpec,
        j: usize,
    ) -> Result<Option<Transformer2DModel>> {
        if !spec.has_cross_attention {
            return Ok(None);
        }
        let depth = spec.transformer_layers[j];
        self.transformer(vb, registry, channels, spec, depth)
            .map(Some)
    }

    fn transformer(
        &self,
        vb: VarBuilder,
        registry: &mut LayerRegistry,
        channels: usize,
        spec: &BlockSpec,
        depth: usize,
    ) -> Result<Transformer2DModel> {
        Transformer2DModel::new(
            vb,
            registry,
            TransformerSpec {
                channels,
                heads: spec.heads,
                layers: depth,
                context_dim: spec.cross_attention_dim,
                groups: self.groups,
                linear_projection: self.linear_projection,
                upcast_attention: self.upcast_attention,
            },
        )
    }
}

/// A down block: resnets (each followed by a transformer when the block has cross-attention),
/// then an optional stride-2 downsampler.
#[derive(Debug)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        registry: &mut LayerRegistry,
        common: &Common,
        spec: &BlockSpec,
        in_channels: usize,
        out_channels: usize,
        add_downsample: bool,
        downsample_padding: usize,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(spec.layers);
        let mut attentions = Vec::new();
        for j in 0..spec.layers {
            let cin = if j == 0 { in_channels } else { out_channels };
            resnets.push(common.resnet(vb.pp("resnets").pp(j), cin, out_channels, 1.0)?);
            if let Some(t) =
                common.attention(vb.pp("attentions").pp(j), registry, out_channels, spec, j)?
            {
                attentions.push(t);
            }
        }
        let downsampler = if add_downsample {
            Some(Downsample2D::new(
                vb.pp("downsamplers").pp(0),
                out_channels,
                downsample_padding,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Returns the block output and the skip connections it contributes, in order.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        state: &mut CallState,
    ) -> Result<Option<(Tensor, Vec<Tensor>)>> {
        let mut h = x.clone();
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, Some(temb))?;
            if let Some(attn) = self.attentions.get(j) {
                h = or_stop!(attn.forward(&h, context, state)?);
            }
            skips.push(h.clone());
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(&h)?;
            skips.push(h.clone());
        }
        Ok(Some((h, skips)))
    }
}

/// The mid block: `UNetMidBlock2DCrossAttn` (resnet, then transformer and resnet once), or
/// `UNetMidBlock2D` as the conditional UNet builds it (one resnet, no attention).
#[derive(Debug)]
pub struct MidBlock {
    first: ResnetBlock2D,
    /// `None` for the resnet-only mid block.
    attention: Option<(Transformer2DModel, ResnetBlock2D)>,
}

impl MidBlock {
    /// `depth`: the transformer layers of the attention, `None` for a resnet-only block.
    pub fn new(
        vb: VarBuilder,
        registry: &mut LayerRegistry,
        common: &Common,
        spec: &BlockSpec,
        channels: usize,
        output_scale_factor: f64,
        depth: Option<usize>,
    ) -> Result<Self> {
        let first = common.resnet(
            vb.pp("resnets").pp(0),
            channels,
            channels,
            output_scale_factor,
        )?;
        let attention = match depth {
            Some(depth) => Some((
                common.transformer(vb.pp("attentions").pp(0), registry, channels, spec, depth)?,
                common.resnet(
                    vb.pp("resnets").pp(1),
                    channels,
                    channels,
                    output_scale_factor,
                )?,
            )),
            None => None,
        };
        Ok(Self { first, attention })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        state: &mut CallState,
    ) -> Result<Option<Tensor>> {
        let h = self.first.forward(x, Some(temb))?;
        match &self.attention {
            Some((attention, second)) => {
                let h = or_stop!(attention.forward(&h, context, state)?);
                Ok(Some(second.forward(&h, Some(temb))?))
            }
            None => Ok(Some(h)),
        }
    }
}

/// An up block: for each resnet, concatenate the next skip connection (popped from the end),
/// resnet, transformer when the block has cross-attention; then an optional upsampler.
#[derive(Debug)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// `prev_channels`: channels coming from the block below; `skip_in_channels`: channels of
    /// the last (deepest-level) skip, diffusers' `in_channels`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        registry: &mut LayerRegistry,
        common: &Common,
        spec: &BlockSpec,
        prev_channels: usize,
        skip_in_channels: usize,
        out_channels: usize,
        add_upsample: bool,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(spec.layers);
        let mut attentions = Vec::new();
        for j in 0..spec.layers {
            let skip = if j + 1 == spec.layers {
                skip_in_channels
            } else {
                out_channels
            };
            let cin = if j == 0 { prev_channels } else { out_channels };
            resnets.push(common.resnet(vb.pp("resnets").pp(j), cin + skip, out_channels, 1.0)?);
            if let Some(t) =
                common.attention(vb.pp("attentions").pp(j), registry, out_channels, spec, j)?
            {
                attentions.push(t);
            }
        }
        let upsampler = if add_upsample {
            Some(Upsample2D::new(vb.pp("upsamplers").pp(0), out_channels)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// How many skip connections this block consumes.
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    pub fn has_upsampler(&self) -> bool {
        self.upsampler.is_some()
    }

    /// `skips` are this block's skip connections in the order they were produced; `upsample_to`
    /// is the spatial size of the next block's first skip.
    pub fn forward(
        &self,
        x: &Tensor,
        mut skips: Vec<Tensor>,
        temb: &Tensor,
        context: &Tensor,
        upsample_to: Option<(usize, usize)>,
        state: &mut CallState,
    ) -> Result<Option<Tensor>> {
        let mut h = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            let Some(skip) = skips.pop() else {
                candle_core::bail!("up block: ran out of skip connections");
            };
            h = Tensor::cat(&[&h, &skip], 1)?;
            h = resnet.forward(&h, Some(temb))?;
            if let Some(attn) = self.attentions.get(j) {
                h = or_stop!(attn.forward(&h, context, state)?);
            }
        }
        if let Some(up) = &self.upsampler {
            h = up.forward(&h, upsample_to)?;
        }
        Ok(Some(h))
    }
}
