//! The VAE's building blocks: the single-head spatial self-attention, the mid block, and the
//! encoder/decoder resolution blocks (`DownEncoderBlock2D`, `UpDecoderBlock2D`).

use crate::nn::linear::Linear;
use crate::nn::resnet::{ResnetBlock2D, ResnetSpec};
use crate::nn::sampling::{Downsample2D, Upsample2D};
use crate::nn::{attention, group_norm, GroupNorm};
use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};

/// Group norm and epsilon of every VAE norm layer (diffusers builds the VAE with eps 1e-6).
#[derive(Debug, Clone, Copy)]
pub struct Norm {
    pub groups: usize,
    pub eps: f64,
}

fn resnet(vb: VarBuilder, norm: Norm, cin: usize, cout: usize) -> Result<ResnetBlock2D> {
    ResnetBlock2D::new(
        vb,
        ResnetSpec {
            in_channels: cin,
            out_channels: cout,
            temb_channels: None,
            groups: norm.groups,
            eps: norm.eps,
            output_scale_factor: 1.0,
        },
    )
}

/// A biased `channels x channels` projection under `name`, or its legacy name (pre-0.14 diffusers
/// checkpoints: `query`/`key`/`value`/`proj_attn`), stored either as linear or 1x1 conv weights.
fn projection(vb: &VarBuilder, name: &str, legacy: &str, channels: usize) -> Result<Linear> {
    let vb = if vb.contains_tensor(&format!("{name}.weight"))
        || !vb.contains_tensor(&format!("{legacy}.weight"))
    {
        vb.pp(name)
    } else {
        vb.pp(legacy)
    };
    let weight = match vb.get((channels, channels), "weight") {
        Ok(w) => w,
        Err(_) => vb
            .get((channels, channels, 1, 1), "weight")?
            .reshape((channels, channels))?,
    };
    let bias = vb.get(channels, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

/// Single-head self-attention over the feature map with a residual (`attentions.0`).
#[derive(Debug)]
pub struct SpatialAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl SpatialAttention {
    pub fn new(vb: VarBuilder, norm: Norm, channels: usize) -> Result<Self> {
        Ok(Self {
            group_norm: group_norm(vb.pp("group_norm"), norm.groups, channels, norm.eps)?,
            to_q: projection(&vb, "to_q", "query", channels)?,
            to_k: projection(&vb, "to_k", "key", channels)?,
            to_v: projection(&vb, "to_v", "value", channels)?,
            to_out: projection(&vb, "to_out.0", "proj_attn", channels)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = self
            .group_norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.to_q.forward(&tokens)?;
        let k = self.to_k.forward(&tokens)?;
        let v = self.to_v.forward(&tokens)?;
        // diffusers upcasts the VAE's softmax.
        let out = self
            .to_out
            .forward(&attention::attend(&q, &k, &v, 1, true)?)?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        out + x
    }
}

/// `UNetMidBlock2D` without time embedding: resnet, (attention,) resnet.
#[derive(Debug)]
pub struct MidBlock {
    first: ResnetBlock2D,
    attention: Option<SpatialAttention>,
    second: ResnetBlock2D,
}

impl MidBlock {
    pub fn new(vb: VarBuilder, norm: Norm, channels: usize, add_attention: bool) -> Result<Self> {
        let attention = if add_attention {
            Some(SpatialAttention::new(
                vb.pp("attentions").pp(0),
                norm,
                channels,
            )?)
        } else {
            None
        };
        Ok(Self {
            first: resnet(vb.pp("resnets").pp(0), norm, channels, channels)?,
            attention,
            second: resnet(vb.pp("resnets").pp(1), norm, channels, channels)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.first.forward(x, None)?;
        if let Some(attn) = &self.attention {
            h = attn.forward(&h)?;
        }
        self.second.forward(&h, None)
    }
}

/// `DownEncoderBlock2D`: resnets, then an optional padding-0 downsampler.
#[derive(Debug)]
pub struct EncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

impl EncoderBlock {
    pub fn new(
        vb: VarBuilder,
        norm: Norm,
        layers: usize,
        cin: usize,
        cout: usize,
        add_downsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|j| {
                let i = if j == 0 { cin } else { cout };
                resnet(vb.pp("resnets").pp(j), norm, i, cout)
            })
            .collect::<Result<Vec<_>>>()?;
        let downsampler = if add_downsample {
            Some(Downsample2D::new(vb.pp("downsamplers").pp(0), cout, 0)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            downsampler,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(&h, None)?;
        }
        match &self.downsampler {
            Some(d) => d.forward(&h),
            None => Ok(h),
        }
    }
}

/// `UpDecoderBlock2D`: resnets, then an optional x2 upsampler.
#[derive(Debug)]
pub struct DecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

impl DecoderBlock {
    pub fn new(
        vb: VarBuilder,
        norm: Norm,
        layers: usize,
        cin: usize,
        cout: usize,
        add_upsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|j| {
                let i = if j == 0 { cin } else { cout };
                resnet(vb.pp("resnets").pp(j), norm, i, cout)
            })
            .collect::<Result<Vec<_>>>()?;
        let upsampler = if add_upsample {
            Some(Upsample2D::new(vb.pp("upsamplers").pp(0), cout)?)
        } else {
            None
        };
        Ok(Self { resnets, upsampler })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(&h, None)?;
        }
        match &self.upsampler {
            Some(u) => u.forward(&h, None),
            None => Ok(h),
        }
    }
}
