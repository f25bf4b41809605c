//! `Downsample2D` and `Upsample2D` (diffusers `downsampling.py` / `upsampling.py`), conv variants.

use super::{conv2d, Conv2d};
use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};

/// A stride-2 3x3 convolution (`downsamplers.0.conv`). With padding 0 (the VAE) diffusers first
/// pads the input asymmetrically by one pixel on the right and bottom.
#[derive(Debug)]
pub struct Downsample2D {
    conv: Conv2d,
    asymmetric_pad: bool,
}

impl Downsample2D {
    pub fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(vb.pp("conv"), channels, channels, 3, 2, padding)?,
            asymmetric_pad: padding == 0,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.asymmetric_pad {
            let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Nearest-neighbour upsampling followed by a 3x3 convolution (`upsamplers.0.conv`).
#[derive(Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(vb.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    /// Upsamples to `size` (height, width) when given, else by 2. The UNet passes the size of
    /// the skip connection it will concatenate next, which is what diffusers does for inputs whose
    /// size is not a multiple of the total downsampling (nearest indexing `floor(i * in / out)`,
    /// identical to x2 otherwise).
    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        if (th, tw) == (2 * h, 2 * w) {
            return self.conv.forward_upsampled2x(x);
        }
        let x = x.upsample_nearest2d(th, tw)?;
        self.conv.forward(&x)
    }
}
