//! AutoencoderKL: the VAE encoder and decoder (diffusers `AutoencoderKL`, key names included).

mod blocks;

use crate::config::VaeConfig;
use crate::nn::{Conv2d, GroupNorm};
use blocks::{DecoderBlock, EncoderBlock, MidBlock, Norm};
use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};

/// Image -> latent moments: conv_in, encoder blocks, mid block, norm, SiLU, conv_out.
#[derive(Debug)]
struct Encoder {
    conv_in: Conv2d,
    blocks: Vec<EncoderBlock>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(vb: VarBuilder, cfg: &VaeConfig, norm: Norm) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let conv_in = crate::nn::conv2d(vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?;
        let blocks = (0..n)
            .map(|i| {
                let cin = if i == 0 { ch[0] } else { ch[i - 1] };
                EncoderBlock::new(
                    vb.pp("down_blocks").pp(i),
                    norm,
                    cfg.layers_per_block,
                    cin,
                    ch[i],
                    i + 1 < n,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let last = ch[n - 1];
        Ok(Self {
            conv_in,
            blocks,
            mid: MidBlock::new(vb.pp("mid_block"), norm, last, cfg.mid_block_add_attention)?,
            norm_out: crate::nn::group_norm(vb.pp("conv_norm_out"), norm.groups, last, norm.eps)?,
            conv_out: crate::nn::conv2d(vb.pp("conv_out"), last, 2 * cfg.latent_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        let h = self.mid.forward(&h)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

/// Latents -> image: conv_in, mid block, decoder blocks (deepest first), norm, SiLU, conv_out.
#[derive(Debug)]
struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    blocks: Vec<DecoderBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(vb: VarBuilder, cfg: &VaeConfig, norm: Norm) -> Result<Self> {
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let conv_in = crate::nn::conv2d(vb.pp("conv_in"), cfg.latent_channels, rev[0], 3, 1, 1)?;
        let mid = MidBlock::new(
            vb.pp("mid_block"),
            norm,
            rev[0],
            cfg.mid_block_add_attention,
        )?;
        let blocks = (0..n)
            .map(|i| {
                DecoderBlock::new(
                    vb.pp("up_blocks").pp(i),
                    norm,
                    cfg.layers_per_block + 1,
                    rev[i.saturating_sub(1)],
                    rev[i],
                    i + 1 < n,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let first = rev[n - 1];
        Ok(Self {
            conv_in,
            mid,
            blocks,
            norm_out: crate::nn::group_norm(vb.pp("conv_norm_out"), norm.groups, first, norm.eps)?,
            conv_out: crate::nn::conv2d(vb.pp("conv_out"), first, cfg.out_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.mid.forward(&self.conv_in.forward(z)?)?;
        for b in &self.blocks {
            h = b.forward(&h)?;
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

/// The KL autoencoder of Stable Diffusion.
pub struct AutoencoderKL {
    cfg: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
}

impl AutoencoderKL {
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        cfg.validate("vae config")
            .map_err(|e| candle_core::Error::msg(format!("{e:#}")))?;
        let norm = Norm {
            groups: cfg.norm_num_groups,
            eps: 1e-6,
        };
        let lc = cfg.latent_channels;
        let quant_conv = if cfg.use_quant_conv {
            Some(crate::nn::conv2d(
                vb.pp("quant_conv"),
                2 * lc,
                2 * lc,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        let post_quant_conv = if cfg.use_post_quant_conv {
            Some(crate::nn::conv2d(
                vb.pp("post_quant_conv"),
                lc,
                lc,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            encoder: Encoder::new(vb.pp("encoder"), cfg, norm)?,
            decoder: Decoder::new(vb.pp("decoder"), cfg, norm)?,
            quant_conv,
            post_quant_conv,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// Latents (already divided by `scaling_factor`) -> image in about [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = latents.dims4()?;
        if c != self.cfg.latent_channels {
            candle_core::bail!(
                "VAE decode: latents have {c} channels, the model expects {}",
                self.cfg.latent_channels
            );
        }
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents)?,
            None => latents.clone(),
        };
        self.decoder.forward(&z)
    }

    /// Image in [-1, 1] -> (mean, logvar) of the latent posterior (not scaled).
    pub fn encode(&self, image: &Tensor) -> Result<(Tensor, Tensor)> {
        let (_, c, _, _) = image.dims4()?;
        if c != self.cfg.in_channels {
            candle_core::bail!(
                "VAE encode: image has {c} channels, the model expects {}",
                self.cfg.in_channels
            );
        }
        let h = self.encoder.forward(image)?;
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(&h)?,
            None => h,
        };
        let parts = moments.chunk(2, 1)?;
        let logvar = parts[1].clamp(-30f32, 20f32)?;
        Ok((parts[0].contiguous()?, logvar))
    }
}
