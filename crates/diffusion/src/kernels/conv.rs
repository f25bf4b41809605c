//! Convolutions: the weights in the layout their device's kernel wants, prepared once at load
//! ([`ConvWeights::prepare`]), and one dispatch per call shape (plain, after a 2x nearest
//! upsampling, with a fused epilogue).

use candle_core::{Module, Result, Tensor};
use candle_nn::Conv2dConfig;

use crate::cpu;
use crate::precision::widen;

/// Additions fused into a convolution's output pass where a kernel can: `channel_add` `[b, out]`
/// broadcast over the pixels, then `residual` shaped like the output.
pub use crate::cpu::conv::Epilogue;

/// A square convolution's weights (bias included) in its kernel's layout. The weights may be
/// stored narrower than the activations ([`crate::precision`]); they are widened per call.
#[derive(Debug, Clone)]
pub enum ConvWeights {
    /// candle's convolution: any device, dtype, size, stride and padding.
    Generic(candle_nn::Conv2d),
    /// CPU, f32 compute, 3x3 stride 1 padding 1: tap-major weights for [`cpu::conv::conv3x3`].
    CpuTaps3x3 { taps: Tensor, bias: Tensor },
    /// CPU, f32 compute, 1x1 stride 1: the kernel as an `[out, in]` matrix.
    CpuMatrix1x1 { weight: Tensor, bias: Tensor },
    /// CPU, f32 compute, any other square convolution with a bias: `[out, in*k*k]` for
    /// [`cpu::im2col::conv`].
    CpuIm2col {
        weight: Tensor,
        bias: Tensor,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
}

impl ConvWeights {
    /// The layout for `conv` (loaded by candle as `[out, in, k, k]`): a device kernel's when one
    /// applies to this shape and to the compute dtype (the bias is in the compute dtype even
    /// when the weight is stored narrower), else candle's.
    pub fn prepare(
        conv: candle_nn::Conv2d,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<ConvWeights> {
        match conv.bias().cloned() {
            Some(bias)
                if (kernel, stride, padding) == (3, 1, 1)
                    && cpu::use_kernel("conv3x3", &[&bias]) =>
            {
                Ok(ConvWeights::CpuTaps3x3 {
                    taps: cpu::conv::taps_from_oihw(conv.weight())?,
                    bias,
                })
            }
            Some(bias)
                if (kernel, stride, padding) == (1, 1, 0)
                    && cpu::use_kernel("conv1x1", &[&bias]) =>
            {
                Ok(ConvWeights::CpuMatrix1x1 {
                    weight: conv.weight().squeeze(3)?.squeeze(2)?,
                    bias,
                })
            }
            _ => Ok(ConvWeights::Generic(conv)),
        }
    }

    /// [`ConvWeights::prepare`], and for the shapes it leaves to candle (a stride of 2, other
    /// kernel sizes) the CPU im2col kernel where it applies. The UNet and VAE keep candle's
    /// convolution for those shapes (their downsamplers), so that their committed reference
    /// outputs stay byte for byte; YOLOv8 (`semi-detect`) takes this.
    pub fn prepare_any(
        conv: candle_nn::Conv2d,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<ConvWeights> {
        let plain = conv.config().dilation == 1 && conv.config().groups == 1;
        match (Self::prepare(conv, kernel, stride, padding)?, plain) {
            (ConvWeights::Generic(conv), true) => match conv.bias() {
                Some(bias) if cpu::use_kernel("im2col", &[bias]) => {
                    let (co, ci, _, _) = conv.weight().dims4()?;
                    Ok(ConvWeights::CpuIm2col {
                        weight: conv.weight().reshape((co, ci * kernel * kernel))?,
                        bias: bias.clone(),
                        kernel,
                        stride,
                        padding,
                    })
                }
                _ => Ok(ConvWeights::Generic(conv)),
            },
            (weights, _) => Ok(weights),
        }
    }

    /// The weight in torch's `[out, in, kh, kw]` layout, in its storage dtype.
    pub fn weight(&self) -> Result<Tensor> {
        match self {
            ConvWeights::Generic(c) => Ok(c.weight().clone()),
            ConvWeights::CpuTaps3x3 { taps, .. } => cpu::conv::oihw_from_taps(taps),
            ConvWeights::CpuMatrix1x1 { weight, .. } => weight.unsqueeze(2)?.unsqueeze(3),
            ConvWeights::CpuIm2col { weight, kernel, .. } => {
                let (co, kk) = weight.dims2()?;
                weight.reshape((co, kk / (kernel * kernel), *kernel, *kernel))
            }
        }
    }

    /// The convolution of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            ConvWeights::Generic(c) => generic(c, x),
            ConvWeights::CpuTaps3x3 { taps, bias } => {
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
            ConvWeights::CpuMatrix1x1 { weight, bias } => {
                let weight = widen(weight, x.dtype())?;
                if cpu::use_kernel("conv1x1", &[x, &weight, bias]) {
                    cpu::linear::conv1x1(x, &weight, bias, false)
                } else {
                    let w = weight.unsqueeze(2)?.unsqueeze(3)?;
                    candle_nn::Conv2d::new(w, Some(bias.clone()), Default::default()).forward(x)
                }
            }
            ConvWeights::CpuIm2col {
                weight,
                bias,
                kernel,
                stride,
                padding,
            } => {
                let weight = widen(weight, x.dtype())?;
                if cpu::use_kernel("im2col", &[x, &weight, bias]) {
                    cpu::im2col::conv(x, &weight, bias, (*kernel, *stride, *padding), false)
                } else {
                    let (co, kk) = weight.dims2()?;
                    let w = weight.reshape((co, kk / (kernel * kernel), *kernel, *kernel))?;
                    let cfg = Conv2dConfig {
                        padding: *padding,
                        stride: *stride,
                        ..Default::default()
                    };
                    candle_nn::Conv2d::new(w, Some(bias.clone()), cfg).forward(x)
                }
            }
        }
    }

    /// `forward(upsample_nearest2d(x, 2h, 2w))`, fused into one kernel where one applies.
    pub fn forward_upsampled2x(&self, x: &Tensor) -> Result<Tensor> {
        if let ConvWeights::CpuTaps3x3 { taps, bias } = self {
            let taps = widen(taps, x.dtype())?;
            if cpu::use_kernel("conv3x3", &[x, &taps, bias]) {
                return cpu::conv::upsample2x_conv3x3(x, &taps, Some(bias));
            }
        }
        let (_, _, h, w) = x.dims4()?;
        self.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)
    }

    /// `forward(x)` then the epilogue's additions and SiLU, fused into the output pass where a
    /// kernel applies.
    pub fn forward_then(&self, x: &Tensor, epilogue: Epilogue) -> Result<Tensor> {
        let Epilogue {
            channel_add,
            residual,
            silu,
        } = epilogue;
        let additions = channel_add.is_some() || residual.is_some();
        match self {
            ConvWeights::CpuTaps3x3 { taps, bias } => {
                let taps = widen(taps, x.dtype())?;
                let (b, co) = (x.dim(0)?, bias.dim(0)?);
                let mut inputs = vec![x, &taps, bias];
                inputs.extend(channel_add.iter().chain(residual.iter()).copied());
                let per_batch = channel_add.is_none_or(|t| t.dims() == [b, co]);
                if per_batch && cpu::use_kernel("conv3x3", &inputs) {
                    return cpu::conv::conv3x3_then(x, &taps, Some(bias), epilogue);
                }
            }
            ConvWeights::CpuMatrix1x1 { weight, bias } if !additions => {
                let weight = widen(weight, x.dtype())?;
                if cpu::use_kernel("conv1x1", &[x, &weight, bias]) {
                    return cpu::linear::conv1x1(x, &weight, bias, silu);
                }
            }
            ConvWeights::CpuIm2col {
                weight,
                bias,
                kernel,
                stride,
                padding,
            } if !additions => {
                let weight = widen(weight, x.dtype())?;
                if cpu::use_kernel("im2col", &[x, &weight, bias]) {
                    let shape = (*kernel, *stride, *padding);
                    return cpu::im2col::conv(x, &weight, bias, shape, silu);
                }
            }
            _ => {}
        }
        let mut h = self.forward(x)?;
        if let Some(t) = channel_add {
            h = h.broadcast_add(&t.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        if let Some(r) = residual {
            h = (h + r)?;
        }
        if silu {
            super::silu(&h)
        } else {
            Ok(h)
        }
    }
}

/// candle's convolution with the weights in `x`'s dtype.
fn generic(c: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    if c.weight().dtype() == x.dtype() {
        return c.forward(x);
    }
    let bias = c.bias().map(|b| widen(b, x.dtype())).transpose()?;
    candle_nn::Conv2d::new(widen(c.weight(), x.dtype())?, bias, *c.config()).forward(x)
}
