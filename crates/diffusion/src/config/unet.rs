//! `unet/config.json` of a `UNet2DConditionModel`.

use anyhow::{bail, Result};
use serde_json::Value;
use std::path::Path;

use super::{config, parse_validated, read_validated, require, PerBlock};

config! {
    /// `unet/config.json` of a `UNet2DConditionModel`.
    pub struct UNetConfig {
        sample_size: Option<PerBlock<usize>> = None,
        in_channels: usize = 4,
        out_channels: usize = 4,
        center_input_sample: bool = false,
        flip_sin_to_cos: bool = true,
        freq_shift: f64 = 0.0,
        down_block_types: Vec<String> = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"].map(String::from).to_vec(),
        mid_block_type: Option<String> = Some("UNetMidBlock2DCrossAttn".to_string()),
        up_block_types: Vec<String> = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"].map(String::from).to_vec(),
        only_cross_attention: PerBlock<bool> = PerBlock::One(false),
        block_out_channels: Vec<usize> = vec![320, 640, 1280, 1280],
        layers_per_block: PerBlock<usize> = PerBlock::One(2),
        downsample_padding: usize = 1,
        mid_block_scale_factor: f64 = 1.0,
        dropout: f64 = 0.0,
        act_fn: String = "silu".to_string(),
        norm_num_groups: Option<usize> = Some(32),
        norm_eps: f64 = 1e-5,
        cross_attention_dim: PerBlock<usize> = PerBlock::One(1280),
        transformer_layers_per_block: PerBlock<usize> = PerBlock::One(1),
        reverse_transformer_layers_per_block: Option<Value> = None,
        encoder_hid_dim: Option<Value> = None,
        encoder_hid_dim_type: Option<Value> = None,
        /// Despite the name, diffusers uses this as the number of heads when `num_attention_heads` is
        /// unset (a historical naming bug that every SD 1.x/2.x config relies on).
        attention_head_dim: PerBlock<usize> = PerBlock::One(8),
        num_attention_heads: Option<PerBlock<usize>> = None,
        dual_cross_attention: bool = false,
        use_linear_projection: bool = false,
        class_embed_type: Option<Value> = None,
        addition_embed_type: Option<Value> = None,
        addition_time_embed_dim: Option<Value> = None,
        num_class_embeds: Option<Value> = None,
        upcast_attention: bool = false,
        resnet_time_scale_shift: String = "default".to_string(),
        resnet_skip_time_act: bool = false,
        resnet_out_scale_factor: f64 = 1.0,
        time_embedding_type: String = "positional".to_string(),
        time_embedding_dim: Option<usize> = None,
        time_embedding_act_fn: Option<Value> = None,
        timestep_post_act: Option<Value> = None,
        time_cond_proj_dim: Option<Value> = None,
        conv_in_kernel: usize = 3,
        conv_out_kernel: usize = 3,
        projection_class_embeddings_input_dim: Option<Value> = None,
        attention_type: String = "default".to_string(),
        class_embeddings_concat: bool = false,
        mid_block_only_cross_attention: Option<Value> = None,
        cross_attention_norm: Option<Value> = None,
        addition_embed_type_num_heads: Option<Value> = None,
    }
}

/// One down or up block of the UNet, with every per-block field resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpec {
    /// `CrossAttnDownBlock2D`, `DownBlock2D`, `CrossAttnUpBlock2D` or `UpBlock2D`.
    pub kind: String,
    pub has_cross_attention: bool,
    pub layers: usize,
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub transformer_layers: usize,
}

impl UNetConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        read_validated(path, Self::FIELDS, &[], Self::validate)
    }

    pub fn parse(text: &str) -> Result<Self> {
        parse_validated(text, "unet config", Self::FIELDS, &[], Self::validate)
    }

    /// Rejects every setting that SD 1.x/2.x never use and that we therefore do not implement.
    pub fn validate(&self, what: &str) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            bail!("{what}: `block_out_channels` is empty");
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            bail!("{what}: `down_block_types`, `up_block_types` and `block_out_channels` must have the same length");
        }
        for t in &self.down_block_types {
            require(
                matches!(t.as_str(), "CrossAttnDownBlock2D" | "DownBlock2D"),
                what,
                "down_block_types",
                t,
            )?;
        }
        for t in &self.up_block_types {
            require(
                matches!(t.as_str(), "CrossAttnUpBlock2D" | "UpBlock2D"),
                what,
                "up_block_types",
                t,
            )?;
        }
        require(
            matches!(
                self.mid_block_type.as_deref(),
                Some("UNetMidBlock2DCrossAttn")
            ),
            what,
            "mid_block_type",
            &self.mid_block_type,
        )?;
        require(
            !self.center_input_sample,
            what,
            "center_input_sample",
            self.center_input_sample,
        )?;
        require(self.act_fn == "silu", what, "act_fn", &self.act_fn)?;
        require(
            self.norm_num_groups.is_some(),
            what,
            "norm_num_groups",
            self.norm_num_groups,
        )?;
        let only_cross = self
            .only_cross_attention
            .resolve(n, "only_cross_attention")?;
        require(
            only_cross.iter().all(|b| !b),
            what,
            "only_cross_attention",
            &self.only_cross_attention,
        )?;
        require(
            self.reverse_transformer_layers_per_block.is_none(),
            what,
            "reverse_transformer_layers_per_block",
            &self.reverse_transformer_layers_per_block,
        )?;
        require(
            self.encoder_hid_dim.is_none(),
            what,
            "encoder_hid_dim",
            &self.encoder_hid_dim,
        )?;
        require(
            self.encoder_hid_dim_type.is_none(),
            what,
            "encoder_hid_dim_type",
            &self.encoder_hid_dim_type,
        )?;
        require(
            !self.dual_cross_attention,
            what,
            "dual_cross_attention",
            self.dual_cross_attention,
        )?;
        require(
            self.class_embed_type.is_none(),
            what,
            "class_embed_type",
            &self.class_embed_type,
        )?;
        require(
            self.addition_embed_type.is_none(),
            what,
            "addition_embed_type",
            &self.addition_embed_type,
        )?;
        require(
            self.num_class_embeds.is_none(),
            what,
            "num_class_embeds",
            &self.num_class_embeds,
        )?;
        require(
            self.resnet_time_scale_shift == "default",
            what,
            "resnet_time_scale_shift",
            &self.resnet_time_scale_shift,
        )?;
        require(
            !self.resnet_skip_time_act,
            what,
            "resnet_skip_time_act",
            self.resnet_skip_time_act,
        )?;
        require(
            self.resnet_out_scale_factor == 1.0,
            what,
            "resnet_out_scale_factor",
            self.resnet_out_scale_factor,
        )?;
        require(
            self.time_embedding_type == "positional",
            what,
            "time_embedding_type",
            &self.time_embedding_type,
        )?;
        require(
            self.time_embedding_act_fn.is_none(),
            what,
            "time_embedding_act_fn",
            &self.time_embedding_act_fn,
        )?;
        require(
            self.timestep_post_act.is_none(),
            what,
            "timestep_post_act",
            &self.timestep_post_act,
        )?;
        require(
            self.time_cond_proj_dim.is_none(),
            what,
            "time_cond_proj_dim",
            &self.time_cond_proj_dim,
        )?;
        require(
            self.conv_in_kernel % 2 == 1,
            what,
            "conv_in_kernel",
            self.conv_in_kernel,
        )?;
        require(
            self.conv_out_kernel % 2 == 1,
            what,
            "conv_out_kernel",
            self.conv_out_kernel,
        )?;
        require(
            self.attention_type == "default",
            what,
            "attention_type",
            &self.attention_type,
        )?;
        require(
            !self.class_embeddings_concat,
            what,
            "class_embeddings_concat",
            self.class_embeddings_concat,
        )?;
        require(
            matches!(
                self.mid_block_only_cross_attention,
                None | Some(Value::Bool(false))
            ),
            what,
            "mid_block_only_cross_attention",
            &self.mid_block_only_cross_attention,
        )?;
        require(
            self.cross_attention_norm.is_none(),
            what,
            "cross_attention_norm",
            &self.cross_attention_norm,
        )?;
        // Resolving the per-block lists checks their lengths.
        self.down_blocks()?;
        let groups = self.norm_num_groups.unwrap_or(32);
        for &c in &self.block_out_channels {
            if !c.is_multiple_of(groups) {
                bail!(
                    "{what}: block_out_channels {c} is not divisible by norm_num_groups {groups}"
                );
            }
        }
        Ok(())
    }

    /// Heads per block: `num_attention_heads`, else `attention_head_dim` (diffusers' convention).
    pub fn heads(&self) -> Result<Vec<usize>> {
        let n = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(h) => h.resolve(n, "num_attention_heads"),
            None => self.attention_head_dim.resolve(n, "attention_head_dim"),
        }
    }

    /// The down path, block by block, in order.
    pub fn down_blocks(&self) -> Result<Vec<BlockSpec>> {
        let n = self.block_out_channels.len();
        let layers = self.layers_per_block.resolve(n, "layers_per_block")?;
        let heads = self.heads()?;
        let cross = self.cross_attention_dim.resolve(n, "cross_attention_dim")?;
        let tl = self
            .transformer_layers_per_block
            .resolve(n, "transformer_layers_per_block")?;
        Ok((0..n)
            .map(|i| BlockSpec {
                kind: self.down_block_types[i].clone(),
                has_cross_attention: self.down_block_types[i] == "CrossAttnDownBlock2D",
                layers: layers[i],
                heads: heads[i],
                cross_attention_dim: cross[i],
                transformer_layers: tl[i],
            })
            .collect())
    }

    /// The up path in execution order; per-block lists are reversed as diffusers does, and each up
    /// block has `layers + 1` resnets.
    pub fn up_blocks(&self) -> Result<Vec<BlockSpec>> {
        let down = self.down_blocks()?;
        Ok(down
            .iter()
            .rev()
            .zip(&self.up_block_types)
            .map(|(d, kind)| BlockSpec {
                kind: kind.clone(),
                has_cross_attention: kind == "CrossAttnUpBlock2D",
                layers: d.layers + 1,
                heads: d.heads,
                cross_attention_dim: d.cross_attention_dim,
                transformer_layers: d.transformer_layers,
            })
            .collect())
    }

    pub fn norm_groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }

    /// Total spatial downsampling of the UNet (2^(blocks-1)); image latents must be multiples.
    pub fn downsampling_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// The model's native image size `sample_size * vae_scale` as (height, width), diffusers'
    /// default, when the config has a (square or per-axis) sample size.
    pub fn default_image_size(&self, vae_scale: usize) -> Option<(usize, usize)> {
        match self.sample_size.as_ref()? {
            PerBlock::One(s) => Some((s * vae_scale, s * vae_scale)),
            PerBlock::Each(v) if v.len() == 2 => Some((v[0] * vae_scale, v[1] * vae_scale)),
            PerBlock::Each(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sd15_unet_config_resolves_blocks() {
        let text = r#"{"_class_name":"UNet2DConditionModel","_diffusers_version":"0.6.0",
            "act_fn":"silu","attention_head_dim":8,"block_out_channels":[320,640,1280,1280],
            "center_input_sample":false,"cross_attention_dim":768,
            "down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
            "downsample_padding":1,"flip_sin_to_cos":true,"freq_shift":0,"in_channels":4,"layers_per_block":2,
            "mid_block_scale_factor":1,"norm_eps":1e-05,"norm_num_groups":32,"out_channels":4,"sample_size":64,
            "up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"]}"#;
        let cfg = UNetConfig::parse(text).unwrap();
        let down = cfg.down_blocks().unwrap();
        assert_eq!(down[2].heads, 8);
        assert!(down[2].has_cross_attention && !down[3].has_cross_attention);
        let up = cfg.up_blocks().unwrap();
        assert_eq!(up[0].kind, "UpBlock2D");
        assert_eq!(up[1].layers, 3);
    }

    #[test]
    fn sd2_head_list_is_reversed_for_up_blocks() {
        let text = r#"{"attention_head_dim":[5,10,20,20],"use_linear_projection":true,"cross_attention_dim":1024}"#;
        let cfg = UNetConfig::parse(text).unwrap();
        assert_eq!(
            cfg.down_blocks()
                .unwrap()
                .iter()
                .map(|b| b.heads)
                .collect::<Vec<_>>(),
            vec![5, 10, 20, 20]
        );
        assert_eq!(
            cfg.up_blocks()
                .unwrap()
                .iter()
                .map(|b| b.heads)
                .collect::<Vec<_>>(),
            vec![20, 20, 10, 5]
        );
    }

    #[test]
    fn unsupported_fields_are_named() {
        let err = UNetConfig::parse(r#"{"class_embed_type":"timestep"}"#).unwrap_err();
        assert!(format!("{err:#}").contains("class_embed_type"), "{err:#}");
        let err = UNetConfig::parse(r#"{"frobnicate":1}"#).unwrap_err();
        assert!(format!("{err:#}").contains("frobnicate"), "{err:#}");
        let err = UNetConfig::parse(r#"{"attention_head_dim":[1,2]}"#).unwrap_err();
        assert!(format!("{err:#}").contains("attention_head_dim"), "{err:#}");
    }

    #[test]
    fn default_size_uses_the_vae_scale() {
        let cfg = UNetConfig::parse(r#"{"sample_size": 64}"#).unwrap();
        assert_eq!(cfg.default_image_size(8), Some((512, 512)));
        let cfg = UNetConfig::parse("{}").unwrap();
        assert_eq!(cfg.default_image_size(8), None);
    }
}
