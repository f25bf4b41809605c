//! Model families: which text encoders a pipeline folder holds and how a prompt becomes what
//! the UNet is conditioned on. One file per family (`sd.rs`, `sdxl.rs`), registered in
//! [`Family`]: its pipeline class, its text components and the arms of the dispatch below.
//!
//! Everything else (UNet, VAE, schedulers, the probe and the layout methods) is shared: the
//! families differ only in their text side, SDXL's added conditions and its VAE upcast.

mod sd;
mod sdxl;

use crate::config::ModelIndex;
use crate::text_encoder::ClipTextModel;
use crate::tokenizer::ClipTokenizer;
use crate::unet::AddedCond;
use anyhow::{bail, Result};
use candle_core::Tensor;

/// A family of pipelines that load, encode prompts and condition the UNet alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `StableDiffusionPipeline`: SD 1.x and 2.x (and the embedded toy models).
    Sd,
    /// `StableDiffusionXLPipeline`: SDXL base and its config-driven relatives (SSD-1B,
    /// Segmind-Vega, SDXL-Turbo).
    Sdxl,
}

/// One text encoder of a family: its folder, its tokenizer's folder and the transformers class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextSlot {
    pub encoder: &'static str,
    pub tokenizer: &'static str,
    pub class: &'static str,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Sd, Family::Sdxl];

    /// The family of a folder from its `model_index.json`. SDXL is `StableDiffusionXLPipeline`;
    /// other XL classes (the refiner's image-to-image pipeline) are errors naming the class;
    /// everything else is read as an SD folder, as before families existed.
    pub fn of(index: &ModelIndex) -> Result<Family> {
        let class = index.class_name.as_str();
        if class == "StableDiffusionXLPipeline" {
            return Ok(Family::Sdxl);
        }
        if class.contains("XL") || index.has("text_encoder_2") {
            bail!(
                "pipeline class {class} is not supported: semi runs StableDiffusionPipeline (SD \
                 1.x/2.x) and StableDiffusionXLPipeline (SDXL) folders"
            );
        }
        Ok(Family::Sd)
    }

    /// The short name stores and sidecars record: `sd`, `sdxl`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Sd => "sd",
            Family::Sdxl => "sdxl",
        }
    }

    /// The name people use: `SD 1.x/2.x`, `SDXL`.
    pub fn label(self) -> &'static str {
        match self {
            Family::Sd => "SD 1.x/2.x",
            Family::Sdxl => "SDXL",
        }
    }

    /// The text encoders the family's folders hold, in the order their states are concatenated.
    pub fn text_slots(self) -> &'static [TextSlot] {
        match self {
            Family::Sd => sd::TEXT,
            Family::Sdxl => sdxl::TEXT,
        }
    }

    /// Whether the VAE decodes in f32 when its config says `force_upcast` and the model
    /// computes in half precision (SDXL's VAE overflows in f16; diffusers' SD pipeline does
    /// not upcast).
    pub fn upcasts_vae(self) -> bool {
        matches!(self, Family::Sdxl)
    }
}

/// The text embeddings of some prompts, one row each.
#[derive(Debug, Clone)]
pub struct PromptEmbeds {
    /// `[rows, 77, D]`: what the cross-attention layers read.
    pub states: Tensor,
    /// `[rows, P]`: the pooled, projected embedding (SDXL).
    pub pooled: Option<Tensor>,
}

impl PromptEmbeds {
    /// The rows of several embeddings, in order.
    pub fn concat(parts: &[&PromptEmbeds]) -> Result<PromptEmbeds> {
        let states: Vec<&Tensor> = parts.iter().map(|p| &p.states).collect();
        let pooled = match parts
            .iter()
            .map(|p| p.pooled.as_ref())
            .collect::<Option<Vec<_>>>()
        {
            Some(p) if !p.is_empty() => Some(Tensor::cat(&p, 0)?),
            _ => None,
        };
        Ok(PromptEmbeds {
            states: Tensor::cat(&states, 0)?,
            pooled,
        })
    }

    /// Batch rows.
    pub fn rows(&self) -> Result<usize> {
        Ok(self.states.dim(0)?)
    }

    /// The same values in `dtype`.
    pub fn to_dtype(&self, dtype: candle_core::DType) -> Result<PromptEmbeds> {
        Ok(PromptEmbeds {
            states: self.states.to_dtype(dtype)?,
            pooled: self
                .pooled
                .as_ref()
                .map(|p| p.to_dtype(dtype))
                .transpose()?,
        })
    }
}

/// The text side of a loaded model: its tokenizers and encoders and its family's rules.
pub struct TextConditioner {
    pub family: Family,
    /// The first tokenizer: token positions (Paint, Soft, the probe's category columns) are
    /// its, and SDXL's second tokenizer splits words identically.
    pub tokenizer: ClipTokenizer,
    pub encoder: ClipTextModel,
    /// SDXL's second tokenizer and encoder (OpenCLIP ViT-bigG with projection).
    pub second: Option<(ClipTokenizer, ClipTextModel)>,
    /// SDXL: an empty negative prompt gives zero embeddings (`model_index.json`).
    pub force_zeros_for_empty_prompt: bool,
}

impl TextConditioner {
    /// Embeddings of `prompts`, one row each.
    pub fn embed(&self, prompts: &[&str]) -> Result<PromptEmbeds> {
        match self.family {
            Family::Sd => sd::embed(self, prompts),
            Family::Sdxl => sdxl::embed(self, prompts),
        }
    }

    /// The unconditional row of classifier-free guidance for `negative` ("" = none), shaped
    /// like one row of `cond`.
    pub fn unconditional(&self, negative: &str, cond: &PromptEmbeds) -> Result<PromptEmbeds> {
        match self.family {
            Family::Sd => sd::embed(self, &[negative]),
            Family::Sdxl => sdxl::unconditional(self, negative, cond),
        }
    }

    /// What the UNet needs besides the states for an image of `height` x `width` (SDXL's pooled
    /// embedding and time ids), one row per row of `embeds`.
    pub fn added(
        &self,
        embeds: &PromptEmbeds,
        height: usize,
        width: usize,
    ) -> Result<Option<AddedCond>> {
        match self.family {
            Family::Sd => Ok(None),
            Family::Sdxl => sdxl::added(embeds, height, width).map(Some),
        }
    }

    /// Token rows of `prompts` for `tokenizer`, padded to its length.
    fn tokens(tokenizer: &ClipTokenizer, prompts: &[&str]) -> Result<Vec<Vec<u32>>> {
        prompts.iter().map(|p| tokenizer.encode(p)).collect()
    }
}
