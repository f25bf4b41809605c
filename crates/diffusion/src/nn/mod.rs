//! Building blocks shared by the UNet and the VAE, with diffusers' module and weight names.

pub mod attention;
pub mod resnet;
pub mod sampling;

use candle_core::Result;
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};

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
    candle_nn::conv2d(in_channels, out_channels, kernel, cfg, vb)
}

/// An affine `torch.nn.GroupNorm(groups, channels, eps)`.
pub fn group_norm(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
    candle_nn::group_norm(groups, channels, eps, vb)
}
