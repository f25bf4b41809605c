//! CLIP text encoder (transformers' CLIPTextModel): token ids -> last hidden state.
// SKELETON: owned by the "text" helper.
use crate::config::TextEncoderConfig;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

pub struct ClipTextModel {}

impl ClipTextModel {
    /// Accepts weights with or without the `text_model.` prefix.
    pub fn new(_vb: VarBuilder, _cfg: &TextEncoderConfig) -> Result<Self> {
        todo!()
    }
    /// ids: u32 `[batch, seq]` -> `[batch, seq, hidden]` after the final layer norm.
    pub fn forward(&self, _ids: &Tensor) -> Result<Tensor> {
        todo!()
    }
}
