//! How much memory one generation of a size needs, estimated from the configs before anything
//! is allocated, so an impossible size is a one-line refusal instead of an abort in the
//! allocator.
//!
//! The estimate is a lower bound of the peak, which is the point: a size it refuses cannot run.
//! It counts the largest activations, which every kernel holds whole: at each UNet level,
//! batch x channels x latent pixels of that level, and for the VAE decoder, channels x image
//! pixels, each four times over (a ResNet block's input, normalised input, convolution output
//! and residual). Attention maps are not counted: the CPU kernel never materialises them.

use anyhow::{bail, Result};

use crate::loading::ModelFiles;

/// The largest image side accepted at all, in pixels (beyond any model's training sizes by far;
/// it also keeps the estimate's arithmetic far from overflow).
pub const MAX_SIDE: usize = 16384;

/// Bytes of f32 values.
const F32: u128 = 4;

impl ModelFiles {
    /// At least the peak bytes of one generation of `height` x `width` with `batch` UNet rows
    /// (2 with classifier-free guidance); see the module docs.
    pub fn generation_bytes(&self, height: usize, width: usize, batch: usize) -> Result<u128> {
        let s = self.vae_scale_factor();
        let (lh, lw) = ((height / s) as u128, (width / s) as u128);
        let unet = &self.unet.config;
        let unet_peak = unet
            .block_out_channels
            .iter()
            .enumerate()
            .map(|(level, &c)| batch as u128 * c as u128 * ((lh >> level) * (lw >> level)))
            .max()
            .unwrap_or(0);
        let vae_peak = match &self.vae {
            Some(v) => {
                let c = *v.config.block_out_channels.first().unwrap_or(&128) as u128;
                c * (height * width) as u128
            }
            None => 0,
        };
        Ok(4 * F32 * unet_peak.max(vae_peak))
    }

    /// Refuse a size this machine cannot generate: a side over [`MAX_SIDE`], or more than
    /// `available` bytes by [`Self::generation_bytes`].
    pub fn check_size(
        &self,
        height: usize,
        width: usize,
        batch: usize,
        available: Option<u64>,
    ) -> Result<()> {
        if height > MAX_SIDE || width > MAX_SIDE {
            bail!(
                "{width}x{height} is too large: sides are limited to {MAX_SIDE} pixels (this \
                 model's native size is {})",
                self.native_size_text()
            );
        }
        let need = self.generation_bytes(height, width, batch)?;
        if let Some(have) = available {
            if need > have as u128 {
                bail!(
                    "a {width}x{height} image needs at least {} of memory with this model, and \
                     this machine has {} available: choose a smaller size (native: {})",
                    gib(need),
                    gib(have as u128),
                    self.native_size_text()
                );
            }
        }
        Ok(())
    }

    fn native_size_text(&self) -> String {
        match self.default_size() {
            Some((h, w)) => format!("{w}x{h}"),
            None => "unknown".to_string(),
        }
    }
}

fn gib(bytes: u128) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Memory this machine can give a new allocation: `MemAvailable` of `/proc/meminfo` (Linux),
/// else `None` (no check beyond [`MAX_SIDE`]).
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
