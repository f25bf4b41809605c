//! UNet2DConditionModel with an attention-controller hook and early stop.
// SKELETON: owned by the "models" helper.
use crate::config::UNetConfig;
use crate::controller::AttentionController;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

pub struct UNet2DConditionModel {}

/// Per-call options of the UNet forward pass.
#[derive(Default)]
pub struct ForwardOptions<'a> {
    pub controller: Option<&'a mut dyn AttentionController>,
    /// Denoising step index reported to the controller.
    pub step: usize,
    /// Per batch row: is it a conditional row? Default: all rows conditional.
    pub conditional_rows: Option<Vec<bool>>,
    /// Stop right after the attention layer with this path (or the last attention layer under this
    /// path prefix) and return `UNetOutput::Stopped`.
    pub stop_after: Option<&'a str>,
}

pub enum UNetOutput {
    Full(Tensor),
    Stopped,
}

impl UNet2DConditionModel {
    pub fn new(_vb: VarBuilder, _cfg: &UNetConfig) -> Result<Self> {
        todo!()
    }
    pub fn config(&self) -> &UNetConfig {
        todo!()
    }
    /// sample `[b, c, h, w]`, timestep, encoder states `[b, seq, dim]` -> noise prediction.
    pub fn forward(
        &self,
        _sample: &Tensor,
        _timestep: f64,
        _encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        todo!()
    }
    pub fn forward_with(
        &self,
        _sample: &Tensor,
        _timestep: f64,
        _encoder_hidden_states: &Tensor,
        _opts: ForwardOptions,
    ) -> Result<UNetOutput> {
        todo!()
    }
    /// The diffusers paths of all attention layers, in execution order.
    pub fn attention_layer_paths(&self) -> Vec<String> {
        todo!()
    }
}
