//! Typed mirrors of the diffusers/transformers `config.json` files of a Stable Diffusion folder.
//!
//! Every field that diffusers writes for SD 1.x/2.x models is known here. A field that changes the
//! computation in a way we do not implement must keep its neutral value, otherwise loading fails
//! with an error that names the file and the field: a model must never run silently wrong. Unknown
//! fields are errors too; keys starting with `_` (`_class_name`, `_diffusers_version`, ...) are
//! metadata and ignored.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// A value that diffusers accepts either once for all blocks or as one entry per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for block `i` of `n` blocks; errors if a list has the wrong length.
    pub fn resolve(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => bail!(
                "`{field}` has {} entries but the model has {n} blocks",
                v.len()
            ),
        }
    }
}

/// Reads a JSON object, checks its keys against `known`, and deserialises it.
fn read_checked<T: DeserializeOwned>(path: &Path, known: &[&str], tolerated: &[&str]) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_checked(&text, &path.display().to_string(), known, tolerated)
}

/// Parses config text (named `what` in errors), rejecting unknown keys and dropping `tolerated` ones.
pub(crate) fn parse_checked<T: DeserializeOwned>(
    text: &str,
    what: &str,
    known: &[&str],
    tolerated: &[&str],
) -> Result<T> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("{what}: malformed JSON"))?;
    let Value::Object(map) = value else {
        bail!("{what}: expected a JSON object")
    };
    let mut kept = Map::new();
    for (k, v) in map {
        if k.starts_with('_') || tolerated.contains(&k.as_str()) {
            continue;
        }
        if !known.contains(&k.as_str()) {
            bail!("{what}: unsupported field `{k}`");
        }
        kept.insert(k, v);
    }
    serde_json::from_value(Value::Object(kept)).with_context(|| format!("{what}: invalid value"))
}

/// Fails naming the field when `ok` is false (a feature we do not implement is switched on).
fn require(ok: bool, what: &str, field: &str, value: impl std::fmt::Debug) -> Result<()> {
    if !ok {
        bail!("{what}: unsupported value {value:?} for field `{field}`");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// model_index.json

/// `model_index.json`: which components the pipeline folder holds.
#[derive(Debug, Clone)]
pub struct ModelIndex {
    pub class_name: String,
    /// component name -> (library, class); `None` for components set to `[null, null]`.
    pub components: BTreeMap<String, Option<(String, String)>>,
    pub requires_safety_checker: Option<bool>,
}

impl ModelIndex {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).with_context(|| format!("{what}: malformed JSON"))?;
        let Value::Object(map) = value else {
            bail!("{what}: expected a JSON object")
        };
        let class_name = map
            .get("_class_name")
            .and_then(Value::as_str)
            .with_context(|| format!("{what}: missing `_class_name`"))?
            .to_string();
        let mut components = BTreeMap::new();
        let mut requires_safety_checker = None;
        for (k, v) in &map {
            if k.starts_with('_') {
                continue;
            }
            if k == "requires_safety_checker" {
                requires_safety_checker = v.as_bool();
                continue;
            }
            let entry = match v {
                Value::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                    (Value::String(l), Value::String(c)) => Some((l.clone(), c.clone())),
                    (Value::Null, Value::Null) => None,
                    _ => bail!("{what}: component `{k}` must be [library, class] or [null, null]"),
                },
                _ => bail!("{what}: unsupported field `{k}`"),
            };
            components.insert(k.clone(), entry);
        }
        Ok(Self {
            class_name,
            components,
            requires_safety_checker,
        })
    }

    /// True when the component is present (not absent, not `[null, null]`).
    pub fn has(&self, name: &str) -> bool {
        matches!(self.components.get(name), Some(Some(_)))
    }
}

// ---------------------------------------------------------------------------------------------
// unet/config.json

fn default_true() -> bool {
    true
}
fn default_one_f64() -> f64 {
    1.0
}
fn default_norm_groups() -> usize {
    32
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_silu() -> String {
    "silu".to_string()
}
fn default_three() -> usize {
    3
}
fn default_one_usize() -> usize {
    1
}

/// `unet/config.json` of a `UNet2DConditionModel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UNetConfig {
    #[serde(default)]
    pub sample_size: Option<PerBlock<usize>>,
    #[serde(default = "default_four")]
    pub in_channels: usize,
    #[serde(default = "default_four")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "default_down_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid_block")]
    pub mid_block_type: Option<String>,
    #[serde(default = "default_up_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_only_cross")]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default = "default_block_out")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "default_one_usize")]
    pub downsample_padding: usize,
    #[serde(default = "default_one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "default_silu")]
    pub act_fn: String,
    #[serde(default = "default_norm_groups_opt")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_cross_dim")]
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "default_transformer_layers")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Value>,
    #[serde(default)]
    pub encoder_hid_dim: Option<Value>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<Value>,
    /// Despite the name, diffusers uses this as the number of heads when `num_attention_heads` is
    /// unset (a historical naming bug that every SD 1.x/2.x config relies on).
    #[serde(default = "default_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub class_embed_type: Option<Value>,
    #[serde(default)]
    pub addition_embed_type: Option<Value>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<Value>,
    #[serde(default)]
    pub num_class_embeds: Option<Value>,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "default_time_scale_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    #[serde(default = "default_one_f64")]
    pub resnet_out_scale_factor: f64,
    #[serde(default = "default_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<Value>,
    #[serde(default)]
    pub timestep_post_act: Option<Value>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<Value>,
    #[serde(default = "default_three")]
    pub conv_in_kernel: usize,
    #[serde(default = "default_three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<Value>,
    #[serde(default = "default_attention_type")]
    pub attention_type: String,
    #[serde(default)]
    pub class_embeddings_concat: bool,
    #[serde(default)]
    pub mid_block_only_cross_attention: Option<Value>,
    #[serde(default)]
    pub cross_attention_norm: Option<Value>,
    #[serde(default)]
    pub addition_embed_type_num_heads: Option<Value>,
}

fn default_four() -> usize {
    4
}
fn default_down_blocks() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".to_string())
}
fn default_up_blocks() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_only_cross() -> PerBlock<bool> {
    PerBlock::One(false)
}
fn default_block_out() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_layers_per_block() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn default_norm_groups_opt() -> Option<usize> {
    Some(32)
}
fn default_cross_dim() -> PerBlock<usize> {
    PerBlock::One(1280)
}
fn default_transformer_layers() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn default_head_dim() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn default_time_scale_shift() -> String {
    "default".to_string()
}
fn default_positional() -> String {
    "positional".to_string()
}
fn default_attention_type() -> String {
    "default".to_string()
}

const UNET_FIELDS: &[&str] = &[
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "only_cross_attention",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "dropout",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "reverse_transformer_layers_per_block",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "attention_head_dim",
    "num_attention_heads",
    "dual_cross_attention",
    "use_linear_projection",
    "class_embed_type",
    "addition_embed_type",
    "addition_time_embed_dim",
    "num_class_embeds",
    "upcast_attention",
    "resnet_time_scale_shift",
    "resnet_skip_time_act",
    "resnet_out_scale_factor",
    "time_embedding_type",
    "time_embedding_dim",
    "time_embedding_act_fn",
    "timestep_post_act",
    "time_cond_proj_dim",
    "conv_in_kernel",
    "conv_out_kernel",
    "projection_class_embeddings_input_dim",
    "attention_type",
    "class_embeddings_concat",
    "mid_block_only_cross_attention",
    "cross_attention_norm",
    "addition_embed_type_num_heads",
];

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
        let cfg: Self = read_checked(path, UNET_FIELDS, &[])?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Self = parse_checked(text, "unet config", UNET_FIELDS, &[])?;
        cfg.validate("unet config")?;
        Ok(cfg)
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

// ---------------------------------------------------------------------------------------------
// text_encoder/config.json

/// `text_encoder/config.json` of a transformers `CLIPTextModel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextEncoderConfig {
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_projection")]
    pub projection_dim: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn default_vocab() -> usize {
    49408
}
fn default_hidden() -> usize {
    512
}
fn default_intermediate() -> usize {
    2048
}
fn default_projection() -> usize {
    512
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    8
}
fn default_max_pos() -> usize {
    77
}
fn default_quick_gelu() -> String {
    "quick_gelu".to_string()
}
fn default_ln_eps() -> f64 {
    1e-5
}

const TEXT_FIELDS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "projection_dim",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "hidden_act",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
];

/// Generic `PretrainedConfig` bookkeeping that transformers writes into every config; none of it
/// changes inference of a `CLIPTextModel`.
const TRANSFORMERS_BOOKKEEPING: &[&str] = &[
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "attention_dropout",
    "dropout",
    "initializer_range",
    "initializer_factor",
    "add_cross_attention",
    "bad_words_ids",
    "begin_suppress_tokens",
    "chunk_size_feed_forward",
    "cross_attention_hidden_size",
    "decoder_start_token_id",
    "diversity_penalty",
    "do_sample",
    "early_stopping",
    "encoder_no_repeat_ngram_size",
    "exponential_decay_length_penalty",
    "finetuning_task",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "id2label",
    "is_decoder",
    "is_encoder_decoder",
    "label2id",
    "length_penalty",
    "max_length",
    "min_length",
    "no_repeat_ngram_size",
    "num_beam_groups",
    "num_beams",
    "num_return_sequences",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "prefix",
    "problem_type",
    "pruned_heads",
    "remove_invalid_values",
    "repetition_penalty",
    "return_dict",
    "return_dict_in_generate",
    "sep_token_id",
    "suppress_tokens",
    "task_specific_params",
    "temperature",
    "tf_legacy_loss",
    "tie_encoder_decoder",
    "tie_word_embeddings",
    "tokenizer_class",
    "top_k",
    "top_p",
    "torchscript",
    "typical_p",
    "use_bfloat16",
    "gradient_checkpointing",
    "use_cache",
    "output_past",
];

impl TextEncoderConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg: Self = read_checked(path, TEXT_FIELDS, TRANSFORMERS_BOOKKEEPING)?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Self = parse_checked(
            text,
            "text encoder config",
            TEXT_FIELDS,
            TRANSFORMERS_BOOKKEEPING,
        )?;
        cfg.validate("text encoder config")?;
        Ok(cfg)
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        require(
            matches!(self.hidden_act.as_str(), "quick_gelu" | "gelu"),
            what,
            "hidden_act",
            &self.hidden_act,
        )?;
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            bail!(
                "{what}: hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// vae/config.json

/// `vae/config.json` of an `AutoencoderKL`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_three")]
    pub in_channels: usize,
    #[serde(default = "default_three")]
    pub out_channels: usize,
    #[serde(default = "default_vae_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_vae_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_vae_block_out")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_one_usize")]
    pub layers_per_block: usize,
    #[serde(default = "default_silu")]
    pub act_fn: String,
    #[serde(default = "default_four")]
    pub latent_channels: usize,
    #[serde(default = "default_norm_groups")]
    pub norm_num_groups: usize,
    #[serde(default)]
    pub sample_size: Option<usize>,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default)]
    pub latents_mean: Option<Value>,
    #[serde(default)]
    pub latents_std: Option<Value>,
    #[serde(default = "default_true")]
    pub force_upcast: bool,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
}

fn default_vae_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".to_string()]
}
fn default_vae_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".to_string()]
}
fn default_vae_block_out() -> Vec<usize> {
    vec![64]
}
fn default_scaling() -> f64 {
    0.18215
}

const VAE_FIELDS: &[&str] = &[
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "act_fn",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "force_upcast",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
];

impl VaeConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg: Self = read_checked(path, VAE_FIELDS, &[])?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Self = parse_checked(text, "vae config", VAE_FIELDS, &[])?;
        cfg.validate("vae config")?;
        Ok(cfg)
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

// ---------------------------------------------------------------------------------------------
// scheduler/scheduler_config.json

/// `scheduler/scheduler_config.json`. SD folders ship PNDM, DDIM, LMS, Euler or DPM-Solver
/// configs; like diffusers' `from_config`, any of them configures any of our schedulers: the
/// fields that describe the noise schedule are honoured and the sampler-specific ones of other
/// schedulers are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default)]
    pub class_name: Option<String>,
    #[serde(default = "default_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "default_true")]
    pub clip_sample: bool,
    #[serde(default = "default_true")]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "default_epsilon")]
    pub prediction_type: String,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default = "default_dyn_ratio")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(default = "default_one_f64")]
    pub clip_sample_range: f64,
    #[serde(default = "default_one_f64")]
    pub sample_max_value: f64,
    #[serde(default = "default_leading")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

fn default_train_steps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> String {
    "linear".to_string()
}
fn default_epsilon() -> String {
    "epsilon".to_string()
}
fn default_dyn_ratio() -> f64 {
    0.995
}
fn default_leading() -> String {
    "leading".to_string()
}

const SCHEDULER_FIELDS: &[&str] = &[
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "clip_sample",
    "set_alpha_to_one",
    "steps_offset",
    "prediction_type",
    "thresholding",
    "dynamic_thresholding_ratio",
    "clip_sample_range",
    "sample_max_value",
    "timestep_spacing",
    "rescale_betas_zero_snr",
];

/// Fields of the other diffusers schedulers that only configure their own sampling algorithm.
const OTHER_SCHEDULER_FIELDS: &[&str] = &[
    "skip_prk_steps",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "interpolation_type",
    "sigma_min",
    "sigma_max",
    "timestep_type",
    "final_sigmas_type",
    "solver_order",
    "algorithm_type",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "use_lu_lambdas",
    "lambda_min_clipped",
    "variance_type",
    "predict_x0",
    "solver_p",
    "disable_corrector",
    "use_flow_sigmas",
    "flow_shift",
];

impl SchedulerConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse_named(&text, &path.display().to_string())
    }

    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_named(text, "scheduler config")
    }

    fn parse_named(text: &str, what: &str) -> Result<Self> {
        let class_name = serde_json::from_str::<Value>(text).ok().and_then(|v| {
            v.get("_class_name")
                .and_then(Value::as_str)
                .map(String::from)
        });
        let mut cfg: Self = parse_checked(text, what, SCHEDULER_FIELDS, OTHER_SCHEDULER_FIELDS)?;
        cfg.class_name = class_name;
        cfg.validate(what)?;
        Ok(cfg)
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        require(
            matches!(
                self.beta_schedule.as_str(),
                "linear" | "scaled_linear" | "squaredcos_cap_v2"
            ) || self.trained_betas.is_some(),
            what,
            "beta_schedule",
            &self.beta_schedule,
        )?;
        require(
            matches!(
                self.prediction_type.as_str(),
                "epsilon" | "v_prediction" | "sample"
            ),
            what,
            "prediction_type",
            &self.prediction_type,
        )?;
        require(
            matches!(
                self.timestep_spacing.as_str(),
                "leading" | "trailing" | "linspace"
            ),
            what,
            "timestep_spacing",
            &self.timestep_spacing,
        )?;
        require(!self.thresholding, what, "thresholding", self.thresholding)?;
        if self.num_train_timesteps == 0 {
            bail!("{what}: `num_train_timesteps` must be positive");
        }
        Ok(())
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
        let err = VaeConfig::parse(
            r#"{"down_block_types":["Foo"],"up_block_types":["UpDecoderBlock2D"]}"#,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("down_block_types"), "{err:#}");
    }

    #[test]
    fn default_size_uses_the_vae_scale() {
        let cfg = UNetConfig::parse(r#"{"sample_size": 64}"#).unwrap();
        assert_eq!(cfg.default_image_size(8), Some((512, 512)));
        let cfg = UNetConfig::parse("{}").unwrap();
        assert_eq!(cfg.default_image_size(8), None);
    }

    #[test]
    fn scheduler_accepts_pndm_config() {
        let text = r#"{"_class_name":"PNDMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear",
            "beta_start":0.00085,"num_train_timesteps":1000,"set_alpha_to_one":false,"skip_prk_steps":true,
            "steps_offset":1,"trained_betas":null,"clip_sample":false}"#;
        let cfg = SchedulerConfig::parse(text).unwrap();
        assert_eq!(cfg.class_name.as_deref(), Some("PNDMScheduler"));
        assert_eq!(cfg.steps_offset, 1);
        assert!(SchedulerConfig::parse(r#"{"prediction_type":"flow"}"#).is_err());
    }

    #[test]
    fn text_encoder_tolerates_transformers_bookkeeping() {
        let text = r#"{"architectures":["CLIPTextModel"],"hidden_act":"gelu","hidden_size":1024,
            "num_attention_heads":16,"num_hidden_layers":23,"torch_dtype":"float32","use_bfloat16":false}"#;
        let cfg = TextEncoderConfig::parse(text).unwrap();
        assert_eq!(cfg.num_hidden_layers, 23);
        assert!(TextEncoderConfig::parse(r#"{"hidden_act":"relu"}"#).is_err());
    }

    #[test]
    fn model_index_reads_components() {
        let text = r#"{"_class_name":"StableDiffusionPipeline","feature_extractor":[null,null],
            "safety_checker":[null,null],"requires_safety_checker":false,
            "unet":["diffusers","UNet2DConditionModel"],"vae":["diffusers","AutoencoderKL"]}"#;
        let idx = ModelIndex::parse(text, "model_index.json").unwrap();
        assert!(idx.has("unet") && idx.has("vae") && !idx.has("safety_checker"));
    }
}
