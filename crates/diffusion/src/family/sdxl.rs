//! SDXL (`StableDiffusionXLPipeline`), as diffusers' pipeline conditions its UNet:
//!
//! - two tokenizers and encoders: CLIP ViT-L (`CLIPTextModel`) and OpenCLIP ViT-bigG
//!   (`CLIPTextModelWithProjection`), each tokenizing with its own pad token; the states are
//!   both encoders' penultimate hidden states (`hidden_states[-2]`, no final norm),
//!   concatenated along the width (768 + 1280 = 2048 for base 1.0);
//! - the second encoder's pooled, projected end-token embedding (`text_embeds`);
//! - `add_time_ids` = original size + crop top-left + target size = `(h, w, 0, 0, h, w)` for a
//!   plain text-to-image run, the same for the unconditional row;
//! - with `force_zeros_for_empty_prompt` (the pipeline's default), no negative prompt gives
//!   all-zero unconditional states and pooled embedding instead of encoding "".

use super::{PromptEmbeds, TextConditioner, TextSlot};
use crate::text_encoder::HiddenState;
use crate::unet::AddedCond;
use anyhow::{Context, Result};
use candle_core::Tensor;

pub(super) const TEXT: &[TextSlot] = &[
    TextSlot {
        encoder: "text_encoder",
        tokenizer: "tokenizer",
        class: "CLIPTextModel",
    },
    TextSlot {
        encoder: "text_encoder_2",
        tokenizer: "tokenizer_2",
        class: "CLIPTextModelWithProjection",
    },
];

pub(super) fn embed(text: &TextConditioner, prompts: &[&str]) -> Result<PromptEmbeds> {
    let (tokenizer_2, encoder_2) = text
        .second
        .as_ref()
        .context("an SDXL model needs its second text encoder")?;
    let rows = TextConditioner::tokens(&text.tokenizer, prompts)?;
    let first = text
        .encoder
        .encode(&rows, HiddenState::Penultimate, false)
        .context("text encoder failed")?;
    let rows_2 = TextConditioner::tokens(tokenizer_2, prompts)?;
    let second = encoder_2
        .encode(&rows_2, HiddenState::Penultimate, true)
        .context("second text encoder failed")?;
    let states = Tensor::cat(
        &[
            &first.hidden,
            &second.hidden.to_dtype(first.hidden.dtype())?,
        ],
        2,
    )?;
    Ok(PromptEmbeds {
        states,
        pooled: second.pooled,
    })
}

pub(super) fn unconditional(
    text: &TextConditioner,
    negative: &str,
    cond: &PromptEmbeds,
) -> Result<PromptEmbeds> {
    if negative.is_empty() && text.force_zeros_for_empty_prompt {
        let row = |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(0, 0, 1)?.zeros_like()?) };
        return Ok(PromptEmbeds {
            states: row(&cond.states)?,
            pooled: cond.pooled.as_ref().map(row).transpose()?,
        });
    }
    embed(text, &[negative])
}

pub(super) fn added(embeds: &PromptEmbeds, height: usize, width: usize) -> Result<AddedCond> {
    let pooled = embeds
        .pooled
        .clone()
        .context("SDXL conditioning needs the pooled text embedding")?;
    let (h, w) = (height as f64, width as f64);
    Ok(AddedCond {
        time_ids: vec![vec![h, w, 0.0, 0.0, h, w]; embeds.rows()?],
        text_embeds: pooled,
    })
}
