//! Building blocks shared by the UNet and the VAE, with diffusers' module and weight names.
//!
//! Every operation goes through its dispatch point in [`crate::kernels`], which picks the
//! device's kernel (the fused f32 CPU kernels today) or candle's own ops; nothing here branches
//! on the device.

pub mod attention;
pub mod linear;
pub mod resnet;
pub mod sampling;

use crate::kernels::{self, ConvWeights, Epilogue};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

/// A square convolution with bias, as `torch.nn.Conv2d(in, out, kernel, stride, padding)`; its
/// weights are kept in the layout of the kernel that runs it ([`ConvWeights`], chosen at load).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weights: ConvWeights,
}

impl Conv2d {
    /// The weight in torch's `[out, in, kh, kw]` layout, in its storage dtype.
    pub fn weight(&self) -> Result<Tensor> {
        self.weights.weight()
    }

    /// The weights in their kernel's layout.
    pub fn weights(&self) -> &ConvWeights {
        &self.weights
    }

    /// `forward(upsample_nearest2d(x, 2h, 2w))`, fused where a kernel can.
    pub fn forward_upsampled2x(&self, x: &Tensor) -> Result<Tensor> {
        self.weights.forward_upsampled2x(x)
    }

    /// `(forward(x) + channel_add[:, :, None, None]) + residual`, the additions fused into the
    /// convolution's output pass where a kernel can (`channel_add` `[b, out]`, `residual`
    /// shaped like the output).
    pub fn forward_then(
        &self,
        x: &Tensor,
        channel_add: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.weights.forward_then(
            x,
            Epilogue {
                channel_add,
                residual,
                silu: false,
            },
        )
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.weights.forward(x)
    }
}

/// A square convolution with bias, as `torch.nn.Conv2d(in, out, kernel, stride, padding)`.
pub fn conv2d(
    vb: VarBuilder,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    let conv = candle_nn::conv2d(in_channels, out_channels, kernel, cfg, vb)?;
    Ok(Conv2d {
        weights: ConvWeights::prepare(conv, kernel, stride, padding)?,
    })
}

/// diffusers' `GEGLU` activation on an already projected `x` `[.., 2n]`: `x[.., :n] *
/// gelu_erf(x[.., n:])`.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    kernels::geglu(x)
}

/// An affine `torch.nn.GroupNorm(groups, channels, eps)`, with a fused SiLU variant.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// `silu(group_norm(x))`, one kernel where one applies.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        kernels::group_norm(x, self.groups, &self.weight, &self.bias, self.eps, true)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::group_norm(x, self.groups, &self.weight, &self.bias, self.eps, false)
    }
}

/// An affine `torch.nn.GroupNorm(groups, channels, eps)`.
pub fn group_norm(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
    if groups == 0 || !channels.is_multiple_of(groups) {
        candle_core::bail!("group norm: {channels} channels cannot form {groups} groups");
    }
    Ok(GroupNorm {
        weight,
        bias,
        groups,
        eps,
    })
}
