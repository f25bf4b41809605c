//! `vae/config.json` of an `AutoencoderKL`.

use anyhow::{bail, Result};
use serde_json::Value;
use std::path::Path;

use super::{config, parse_validated, read_validated, require};

config! {
    /// `vae/config.json` of an `AutoencoderKL`.
    pub struct VaeConfig {
        in_channels: usize = 3,
        out_channels: usize = 3,
        down_block_types: Vec<String> = vec!["DownEncoderBlock2D".to_string()],
        up_block_types: Vec<String> = vec!["UpDecoderBlock2D".to_string()],
        block_out_channels: Vec<usize> = vec![64],
        layers_per_block: usize = 1,
        act_fn: String = "silu".to_string(),
        latent_channels: usize = 4,
        norm_num_groups: usize = 32,
        sample_size: Option<usize> = None,
        scaling_factor: f64 = 0.18215,
        shift_factor: Option<f64> = None,
        latents_mean: Option<Value> = None,
        latents_std: Option<Value> = None,
        force_upcast: bool = true,
        use_quant_conv: bool = true,
        use_post_quant_conv: bool = true,
        mid_block_add_attention: bool = true,
    }
}

impl VaeConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        read_validated(path, Self::FIELDS, &[], Self::validate)
    }

    pub fn parse(text: &str) -> Result<Self> {
        parse_validated(text, "vae config", Self::FIELDS, &[], Self::validate)
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            bail!("{what}: `down_block_types`, `up_block_types` and `block_out_channels` must be non-empty and of the same length");
        }
        for t in &self.down_block_types {
            require(t == "DownEncoderBlock2D", what, "down_block_types", t)?;
        }
        for t in &self.up_block_types {
            require(t == "UpDecoderBlock2D", what, "up_block_types", t)?;
        }
        require(self.act_fn == "silu", what, "act_fn", &self.act_fn)?;
        require(
            self.shift_factor.unwrap_or(0.0) == 0.0,
            what,
            "shift_factor",
            self.shift_factor,
        )?;
        require(
            self.latents_mean.is_none(),
            what,
            "latents_mean",
            &self.latents_mean,
        )?;
        require(
            self.latents_std.is_none(),
            what,
            "latents_std",
            &self.latents_std,
        )?;
        for &c in &self.block_out_channels {
            if !c.is_multiple_of(self.norm_num_groups) {
                bail!(
                    "{what}: block_out_channels {c} is not divisible by norm_num_groups {}",
                    self.norm_num_groups
                );
            }
        }
        Ok(())
    }

    /// Pixels per latent pixel: 2^(len(block_out_channels) - 1), as diffusers computes it.
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_fields_are_named() {
        let err = VaeConfig::parse(
            r#"{"down_block_types":["Foo"],"up_block_types":["UpDecoderBlock2D"]}"#,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("down_block_types"), "{err:#}");
    }
}
