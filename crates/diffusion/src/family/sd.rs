//! SD 1.x/2.x (`StableDiffusionPipeline`): one CLIP text encoder, conditioned on its last
//! hidden state after the final layer norm; nothing added to the time embedding.

use super::{PromptEmbeds, TextConditioner, TextSlot};
use crate::text_encoder::HiddenState;
use anyhow::{Context, Result};

pub(super) const TEXT: &[TextSlot] = &[TextSlot {
    encoder: "text_encoder",
    tokenizer: "tokenizer",
    class: "CLIPTextModel",
}];

pub(super) fn embed(text: &TextConditioner, prompts: &[&str]) -> Result<PromptEmbeds> {
    let rows = TextConditioner::tokens(&text.tokenizer, prompts)?;
    let out = text
        .encoder
        .encode(&rows, HiddenState::Last, false)
        .context("text encoder failed")?;
    Ok(PromptEmbeds {
        states: out.hidden,
        pooled: None,
    })
}
