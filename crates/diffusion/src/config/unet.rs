//! `unet/config.json` of a `UNet2DConditionModel`.

use anyhow::{bail, Context, Result};
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
        /// Transformer layers of each attention: one number for all, one entry per block, and
        /// an entry may list one number per layer of its block (SSD-1B: `[[1], [2, 2], [4, 4]]`).
        transformer_layers_per_block: Depths = Depths::All(1),
        /// The up path's depths, one entry per up block in execution order (required when a
        /// down block lists per-layer depths); `None`: the down path's, reversed.
        reverse_transformer_layers_per_block: Option<Vec<PerBlock<usize>>> = None,
        encoder_hid_dim: Option<Value> = None,
        encoder_hid_dim_type: Option<Value> = None,
        /// Despite the name, diffusers uses this as the number of heads when `num_attention_heads` is
        /// unset (a historical naming bug that every SD 1.x/2.x config relies on).
        attention_head_dim: PerBlock<usize> = PerBlock::One(8),
        num_attention_heads: Option<PerBlock<usize>> = None,
        dual_cross_attention: bool = false,
        use_linear_projection: bool = false,
        class_embed_type: Option<Value> = None,
        /// `text_time` (SDXL): the pooled text embedding and the micro-conditioning time ids
        /// (original size, crop, target size) are embedded and added to the time embedding.
        addition_embed_type: Option<String> = None,
        /// Width of the sinusoidal projection of each time id (`text_time`).
        addition_time_embed_dim: Option<usize> = None,
        num_class_embeds: Option<Value> = None,
        /// `null` in SDXL's config means false.
        upcast_attention: Option<bool> = None,
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
        /// Input width of `add_embedding` (`text_time`: pooled width + 6 x addition_time_embed_dim).
        projection_class_embeddings_input_dim: Option<usize> = None,
        attention_type: String = "default".to_string(),
        class_embeddings_concat: bool = false,
        mid_block_only_cross_attention: Option<Value> = None,
        cross_attention_norm: Option<Value> = None,
        /// Only read by the `text` addition type, which we do not implement.
        addition_embed_type_num_heads: Option<Value> = None,
    }
}

/// `transformer_layers_per_block`: one depth for every attention, or one entry per block.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Depths {
    All(usize),
    /// Per block: one depth for the block's attentions, or one per attention (layer).
    Blocks(Vec<PerBlock<usize>>),
}

/// The mid block between the down and up paths (`mid_block_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MidKind {
    /// `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet (SD, SDXL).
    CrossAttn,
    /// `UNetMidBlock2D` as the conditional UNet builds it: one resnet, no attention (SSD-1B).
    ResnetOnly,
    /// `null`: no mid block.
    None,
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
    /// Transformer layers of each attention of the block (one entry per layer; empty without
    /// cross-attention).
    pub transformer_layers: Vec<usize>,
}

/// One block's depths for `layers` attentions: a number for all, or a list with at least one
/// entry per layer (diffusers indexes it by layer).
fn block_depths(
    entry: &PerBlock<usize>,
    layers: usize,
    field: &str,
    block: usize,
) -> Result<Vec<usize>> {
    match entry {
        PerBlock::One(d) => Ok(vec![*d; layers]),
        PerBlock::Each(v) if v.len() >= layers => Ok(v[..layers].to_vec()),
        PerBlock::Each(v) => bail!(
            "`{field}` gives {} depth(s) for block {block}, which has {layers} attention layers",
            v.len()
        ),
    }
}

impl UNetConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        read_validated(path, Self::FIELDS, &[], Self::validate)
    }

    pub fn parse(text: &str) -> Result<Self> {
        parse_validated(text, "unet config", Self::FIELDS, &[], Self::validate)
    }

    /// Rejects every setting that SD 1.x/2.x/XL never use and that we therefore do not implement.
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
        self.mid_kind(what)?;
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
        match self.addition_embed_type.as_deref() {
            None => {}
            Some("text_time") => {
                for (field, v) in [
                    ("addition_time_embed_dim", self.addition_time_embed_dim),
                    (
                        "projection_class_embeddings_input_dim",
                        self.projection_class_embeddings_input_dim,
                    ),
                ] {
                    if v.is_none_or(|v| v == 0) {
                        bail!("{what}: `addition_embed_type` \"text_time\" needs `{field}`");
                    }
                }
                if !self.addition_time_embed_dim.unwrap_or(0).is_multiple_of(2) {
                    bail!("{what}: `addition_time_embed_dim` must be even");
                }
            }
            Some(other) => require(false, what, "addition_embed_type", other)?,
        }
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
        self.down_blocks()
            .and_then(|_| self.up_blocks())
            .and_then(|_| self.mid_depth())
            .map_err(|e| anyhow::anyhow!("{what}: {e:#}"))?;
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
        let depths = self.down_depths()?;
        (0..n)
            .map(|i| {
                let has_cross_attention = self.down_block_types[i] == "CrossAttnDownBlock2D";
                let transformer_layers = if has_cross_attention {
                    block_depths(&depths[i], layers[i], "transformer_layers_per_block", i)?
                } else {
                    Vec::new()
                };
                Ok(BlockSpec {
                    kind: self.down_block_types[i].clone(),
                    has_cross_attention,
                    layers: layers[i],
                    heads: heads[i],
                    cross_attention_dim: cross[i],
                    transformer_layers,
                })
            })
            .collect()
    }

    /// `transformer_layers_per_block` with one entry per down block.
    fn down_depths(&self) -> Result<Vec<PerBlock<usize>>> {
        let n = self.block_out_channels.len();
        match &self.transformer_layers_per_block {
            Depths::All(d) => Ok(vec![PerBlock::One(*d); n]),
            Depths::Blocks(v) if v.len() == n => Ok(v.clone()),
            Depths::Blocks(v) => bail!(
                "`transformer_layers_per_block` has {} entries but the model has {n} blocks",
                v.len()
            ),
        }
    }

    /// The up path in execution order; per-block lists are reversed as diffusers does (or taken
    /// from `reverse_transformer_layers_per_block`), and each up block has `layers + 1` resnets.
    pub fn up_blocks(&self) -> Result<Vec<BlockSpec>> {
        let down = self.down_blocks()?;
        let n = down.len();
        let depths: Vec<PerBlock<usize>> = match &self.reverse_transformer_layers_per_block {
            Some(r) if r.len() == n => r.clone(),
            Some(r) => bail!(
                "`reverse_transformer_layers_per_block` has {} entries but the model has {n} blocks",
                r.len()
            ),
            None => {
                let down_depths = self.down_depths()?;
                if down_depths.iter().any(|d| matches!(d, PerBlock::Each(_))) {
                    bail!(
                        "`transformer_layers_per_block` lists depths per layer, so \
                         `reverse_transformer_layers_per_block` is required (as diffusers requires it)"
                    );
                }
                down_depths.into_iter().rev().collect()
            }
        };
        down.iter()
            .rev()
            .zip(&self.up_block_types)
            .zip(&depths)
            .enumerate()
            .map(|(i, ((d, kind), depth))| {
                let has_cross_attention = kind == "CrossAttnUpBlock2D";
                let layers = d.layers + 1;
                let transformer_layers = if has_cross_attention {
                    block_depths(depth, layers, "reverse_transformer_layers_per_block", i)?
                } else {
                    Vec::new()
                };
                Ok(BlockSpec {
                    kind: kind.clone(),
                    has_cross_attention,
                    layers,
                    heads: d.heads,
                    cross_attention_dim: d.cross_attention_dim,
                    transformer_layers,
                })
            })
            .collect()
    }

    /// The mid block's kind; any other `mid_block_type` is an error naming it.
    pub fn mid_kind(&self, what: &str) -> Result<MidKind> {
        Ok(match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => MidKind::CrossAttn,
            Some("UNetMidBlock2D") => MidKind::ResnetOnly,
            None => MidKind::None,
            Some(other) => {
                require(false, what, "mid_block_type", other)?;
                unreachable!("require fails")
            }
        })
    }

    /// Transformer layers of the mid block's attention: the last down block's depth (its first
    /// entry when it lists one per layer), as diffusers builds it.
    pub fn mid_depth(&self) -> Result<usize> {
        let depths = self.down_depths()?;
        Ok(match depths.last() {
            Some(PerBlock::One(d)) => *d,
            Some(PerBlock::Each(v)) => *v
                .first()
                .context("`transformer_layers_per_block` has an empty list for the last block")?,
            None => bail!("`block_out_channels` is empty"),
        })
    }

    /// Whether the attention layers upcast their logits to f32 (`null` = false).
    pub fn upcasts_attention(&self) -> bool {
        self.upcast_attention.unwrap_or(false)
    }

    /// `(addition_time_embed_dim, projection_class_embeddings_input_dim)` for `text_time`.
    pub fn text_time(&self) -> Option<(usize, usize)> {
        match self.addition_embed_type.as_deref() {
            Some("text_time") => Some((
                self.addition_time_embed_dim?,
                self.projection_class_embeddings_input_dim?,
            )),
            _ => None,
        }
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

    /// SDXL base 1.0's `unet/config.json` as published.
    const SDXL_BASE: &str = r#"{"_class_name":"UNet2DConditionModel","_diffusers_version":"0.19.0.dev0",
        "act_fn":"silu","addition_embed_type":"text_time","addition_embed_type_num_heads":64,
        "addition_time_embed_dim":256,"attention_head_dim":[5,10,20],"block_out_channels":[320,640,1280],
        "center_input_sample":false,"class_embed_type":null,"class_embeddings_concat":false,
        "conv_in_kernel":3,"conv_out_kernel":3,"cross_attention_dim":2048,"cross_attention_norm":null,
        "down_block_types":["DownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D"],
        "downsample_padding":1,"dual_cross_attention":false,"encoder_hid_dim":null,
        "encoder_hid_dim_type":null,"flip_sin_to_cos":true,"freq_shift":0,"in_channels":4,
        "layers_per_block":2,"mid_block_only_cross_attention":null,"mid_block_scale_factor":1,
        "mid_block_type":"UNetMidBlock2DCrossAttn","norm_eps":1e-05,"norm_num_groups":32,
        "num_attention_heads":null,"num_class_embeds":null,"only_cross_attention":false,
        "out_channels":4,"projection_class_embeddings_input_dim":2816,"resnet_out_scale_factor":1.0,
        "resnet_skip_time_act":false,"resnet_time_scale_shift":"default","sample_size":128,
        "time_cond_proj_dim":null,"time_embedding_act_fn":null,"time_embedding_dim":null,
        "time_embedding_type":"positional","timestep_post_act":null,
        "transformer_layers_per_block":[1,2,10],
        "up_block_types":["CrossAttnUpBlock2D","CrossAttnUpBlock2D","UpBlock2D"],
        "upcast_attention":null,"use_linear_projection":true}"#;

    #[test]
    fn sdxl_base_config_resolves() {
        let cfg = UNetConfig::parse(SDXL_BASE).unwrap();
        assert_eq!(cfg.text_time(), Some((256, 2816)));
        assert!(!cfg.upcasts_attention());
        let down = cfg.down_blocks().unwrap();
        assert!(down[0].transformer_layers.is_empty());
        assert_eq!(down[2].transformer_layers, vec![10, 10]);
        let up = cfg.up_blocks().unwrap();
        assert_eq!(up[0].transformer_layers, vec![10, 10, 10]);
        assert_eq!(up[1].transformer_layers, vec![2, 2, 2]);
        assert_eq!(cfg.mid_kind("x").unwrap(), MidKind::CrossAttn);
        assert_eq!(cfg.mid_depth().unwrap(), 10);
        assert_eq!(cfg.default_image_size(8), Some((1024, 1024)));
    }

    #[test]
    fn ssd1b_per_layer_depths_resolve() {
        let text = SDXL_BASE
            .replace(
                r#""transformer_layers_per_block":[1,2,10]"#,
                r#""transformer_layers_per_block":[[1],[2,2],[4,4]],
                   "reverse_transformer_layers_per_block":[[4,4,10],[2,1,1],1]"#,
            )
            .replace(r#""UNetMidBlock2DCrossAttn""#, r#""UNetMidBlock2D""#);
        let cfg = UNetConfig::parse(&text).unwrap();
        assert_eq!(cfg.mid_kind("x").unwrap(), MidKind::ResnetOnly);
        assert_eq!(cfg.down_blocks().unwrap()[1].transformer_layers, vec![2, 2]);
        let up = cfg.up_blocks().unwrap();
        assert_eq!(up[0].transformer_layers, vec![4, 4, 10]);
        assert_eq!(up[1].transformer_layers, vec![2, 1, 1]);
        assert!(up[2].transformer_layers.is_empty());

        // Per-layer depths need the reverse list, as in diffusers.
        let err = UNetConfig::parse(&text.replace(
            r#""reverse_transformer_layers_per_block":[[4,4,10],[2,1,1],1]"#,
            r#""reverse_transformer_layers_per_block":null"#,
        ))
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("reverse_transformer_layers_per_block"),
            "{err:#}"
        );
        // Too few depths for a block's layers.
        let err = UNetConfig::parse(&text.replace("[2,1,1]", "[2,1]")).unwrap_err();
        assert!(format!("{err:#}").contains("block 1"), "{err:#}");
    }

    #[test]
    fn unimplemented_sdxl_relatives_are_named() {
        let err =
            UNetConfig::parse(&SDXL_BASE.replace(r#""text_time""#, r#""text_image""#)).unwrap_err();
        assert!(
            format!("{err:#}").contains("addition_embed_type"),
            "{err:#}"
        );
        let err = UNetConfig::parse(&SDXL_BASE.replace(
            r#""UNetMidBlock2DCrossAttn""#,
            r#""UNetMidBlock2DSimpleCrossAttn""#,
        ))
        .unwrap_err();
        assert!(format!("{err:#}").contains("mid_block_type"), "{err:#}");
        let err = UNetConfig::parse(&SDXL_BASE.replace(
            r#""projection_class_embeddings_input_dim":2816"#,
            r#""projection_class_embeddings_input_dim":null"#,
        ))
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("projection_class_embeddings_input_dim"),
            "{err:#}"
        );
    }
}
