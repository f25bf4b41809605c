//! Building blocks shared by the UNet and the VAE, with diffusers' module and weight names.
//!
//! [`Conv2d`] and [`GroupNorm`] run the fused kernels of [`crate::cpu`] for f32 tensors on the
//! CPU and candle's own ops everywhere else (CUDA, Metal, half precision).

pub mod attention;
pub mod linear;
pub mod resnet;
pub mod sampling;

use crate::cpu;
use crate::precision::widen;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

/// A square convolution with bias, as `torch.nn.Conv2d(in, out, kernel, stride, padding)`.
///
/// 3x3 stride-1 padding-1 convolutions computing in f32 on the CPU keep their weights in the
/// tap-major layout of [`cpu::conv::conv3x3`] (converted once, at load) and run that kernel.
/// The weights may be stored narrower than the activations ([`crate::precision`]); they are
/// widened per call.
#[derive(Debug, Clone)]
pub enum Conv2d {
    Candle(candle_nn::Conv2d),
    Cpu3x3 {
        taps: Tensor,
        bias: Tensor,
    },
    /// A 1x1 stride-1 convolution with its kernel as a `[out, in]` matrix.
    Cpu1x1 {
        weight: Tensor,
        bias: Tensor,
    },
}

impl Conv2d {
    /// The weight in torch's `[out, in, kh, kw]` layout, in its storage dtype.
    pub fn weight(&self) -> Result<Tensor> {
        match self {
            Conv2d::Candle(c) => Ok(c.weight().clone()),
            Conv2d::Cpu3x3 { taps, .. } => cpu::conv::oihw_from_taps(taps),
            Conv2d::Cpu1x1 { weight, .. } => weight.unsqueeze(2)?.unsqueeze(3),
        }
    }

    /// candle's convolution with the weights in `x`'s dtype.
    fn candle_forward(c: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
        if c.weight().dtype() == x.dtype() {
            return c.forward(x);
        }
        let bias = c.bias().map(|b| widen(b, x.dtype())).transpose()?;
        candle_nn::Conv2d::new(widen(c.weight(), x.dtype())?, bias, *c.config()).forward(x)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Conv2d::Candle(c) => Self::candle_forward(c, x),
            Conv2d::Cpu3x3 { taps, bias } => {
                let taps = widen(taps, x.dtype())?;
                if cpu::use_kernel("conv3x3", &[x, &taps, bias]) {
                    cpu::conv::conv3x3(x, &taps, Some(bias))
                } else {
                    // Input of another dtype than the weights: let candle report or handle it.
                    let w = cpu::conv::oihw_from_taps(&taps)?;
                    let cfg = Conv2dConfig {
                        padding: 1,
                        ..Default::default()
                    };
                    candle_nn::Conv2d::new(w, Some(bias.clone()), cfg).forward(x)
                }
            }
            Conv2d::Cpu1x1 { weight, bias } => {
                let weight = widen(weight, x.dtype())?;
                if cpu::use_kernel("conv1x1", &[x, &weight, bias]) {
                    cpu::linear::conv1x1(x, &weight, bias)
                } else {
                    let w = weight.unsqueeze(2)?.unsqueeze(3)?;
                    candle_nn::Conv2d::new(w, Some(bias.clone()), Default::default()).forward(x)
                }
            }
        }
    }
}

impl Conv2d {
    /// `forward(upsample_nearest2d(x, 2h, 2w))`, fused into one kernel where the CPU one runs.
    pub fn forward_upsampled2x(&self, x: &Tensor) -> Result<Tensor> {
        if let Conv2d::Cpu3x3 { taps, bias } = self {
            let taps = widen(taps, x.dtype())?;
            if cpu::use_kernel("conv3x3", &[x, &taps, bias]) {
                return cpu::conv::upsample2x_conv3x3(x, &taps, Some(bias));
            }
        }
        let (_, _, h, w) = x.dims4()?;
        self.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)
    }

    /// `(forward(x) + channel_add[:, :, None, None]) + residual`, the additions fused into the
    /// convolution's output pass where the CPU kernel runs (`channel_add` `[b, out]`, `residual`
    /// shaped like the output).
    pub fn forward_then(
        &self,
        x: &Tensor,
        channel_add: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        if let Conv2d::Cpu3x3 { taps, bias } = self {
            let taps = widen(taps, x.dtype())?;
            let (b, co) = (x.dim(0)?, bias.dim(0)?);
            let mut inputs = vec![x, &taps, bias];
            inputs.extend(channel_add.iter().chain(residual.iter()).copied());
            let per_batch = channel_add.is_none_or(|t| t.dims() == [b, co]);
            if per_batch && cpu::use_kernel("conv3x3", &inputs) {
                let epilogue = cpu::conv::Epilogue {
                    channel_add,
                    residual,
                };
                return cpu::conv::conv3x3_then(x, &taps, Some(bias), epilogue);
            }
        }
        let mut h = self.forward(x)?;
        if let Some(t) = channel_add {
            h = h.broadcast_add(&t.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        match residual {
            Some(r) => h + r,
            None => Ok(h),
        }
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
    let bias = conv.bias().cloned();
    match bias {
        // The bias is in the compute dtype even when the weight is stored narrower.
        Some(bias)
            if kernel == 3
                && stride == 1
                && padding == 1
                && cpu::use_kernel("conv3x3", &[&bias]) =>
        {
            Ok(Conv2d::Cpu3x3 {
                taps: cpu::conv::taps_from_oihw(conv.weight())?,
                bias,
            })
        }
        Some(bias)
            if kernel == 1
                && stride == 1
                && padding == 0
                && cpu::use_kernel("conv1x1", &[&bias]) =>
        {
            Ok(Conv2d::Cpu1x1 {
                weight: conv.weight().squeeze(3)?.squeeze(2)?,
                bias,
            })
        }
        _ => Ok(Conv2d::Candle(conv)),
    }
}

/// diffusers' `GEGLU` activation on an already projected `x` `[.., 2n]`: `x[.., :n] *
/// gelu_erf(x[.., n:])`, one kernel on the CPU.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    if cpu::use_kernel("geglu", &[x]) {
        return cpu::elementwise::geglu(x);
    }
    let parts = x.chunk(2, candle_core::D::Minus1)?;
    &parts[0] * parts[1].gelu_erf()?
}

/// An affine `torch.nn.GroupNorm(groups, channels, eps)`, with a fused SiLU variant.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// `silu(group_norm(x))` in one kernel on the CPU.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        if cpu::use_kernel("group_norm", &[x, &self.weight]) {
            cpu::group_norm::group_norm(x, self.groups, &self.weight, &self.bias, self.eps, true)
        } else {
            self.inner.forward(x)?.silu()
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if cpu::use_kernel("group_norm", &[x, &self.weight]) {
            cpu::group_norm::group_norm(x, self.groups, &self.weight, &self.bias, self.eps, false)
        } else {
            self.inner.forward(x)
        }
    }
}

/// An affine `torch.nn.GroupNorm(groups, channels, eps)`.
pub fn group_norm(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
    Ok(GroupNorm {
        inner: candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?,
        weight,
        bias,
        groups,
        eps,
    })
}
