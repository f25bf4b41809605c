//! `ResnetBlock2D` (diffusers `resnet.py`) with the default time-embedding handling.

use super::linear::{linear, Linear};
use super::{conv2d, group_norm, Conv2d, GroupNorm};
use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};

/// Shape parameters of one residual block.
#[derive(Debug, Clone, Copy)]
pub struct ResnetSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the time embedding; `None` for the VAE's blocks, which have no `time_emb_proj`.
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    /// The block's output is divided by this (`output_scale_factor`; 1 except in exotic configs).
    pub output_scale_factor: f64,
}

/// norm1 -> SiLU -> conv1 (+ projected time embedding) -> norm2 -> SiLU -> conv2, plus the
/// (1x1-projected when the channel count changes) input.
#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(vb: VarBuilder, spec: ResnetSpec) -> Result<Self> {
        let (cin, cout) = (spec.in_channels, spec.out_channels);
        let time_emb_proj = match spec.temb_channels {
            Some(t) => Some(linear(t, cout, vb.pp("time_emb_proj"))?),
            None => None,
        };
        let conv_shortcut = if cin != cout {
            Some(conv2d(vb.pp("conv_shortcut"), cin, cout, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(vb.pp("norm1"), spec.groups, cin, spec.eps)?,
            conv1: conv2d(vb.pp("conv1"), cin, cout, 3, 1, 1)?,
            time_emb_proj,
            norm2: group_norm(vb.pp("norm2"), spec.groups, cout, spec.eps)?,
            conv2: conv2d(vb.pp("conv2"), cout, cout, 3, 1, 1)?,
            conv_shortcut,
            output_scale_factor: spec.output_scale_factor,
        })
    }

    /// `x` is `[b, c, h, w]`; `temb` is `[b, temb_channels]` (ignored by blocks without one).
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let temb = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => Some(proj.forward(&t.silu()?)?),
            (Some(_), None) => candle_core::bail!("ResnetBlock2D: missing time embedding"),
            (None, _) => None,
        };
        let h = self
            .conv1
            .forward_then(&self.norm1.forward_silu(x)?, temb.as_ref(), None)?;
        let h = self.norm2.forward_silu(&h)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        if self.output_scale_factor == 1.0 {
            // (h + shortcut), fused into conv2's output pass on the CPU.
            self.conv2.forward_then(&h, None, Some(&shortcut))
        } else {
            (shortcut + self.conv2.forward(&h)?)? / self.output_scale_factor
        }
    }
}
