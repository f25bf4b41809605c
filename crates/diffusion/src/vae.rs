//! AutoencoderKL: the VAE encoder and decoder.
// SKELETON: owned by the "models" helper.
use crate::config::VaeConfig;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

pub struct AutoencoderKL {}

impl AutoencoderKL {
    pub fn new(_vb: VarBuilder, _cfg: &VaeConfig) -> Result<Self> {
        todo!()
    }
    pub fn config(&self) -> &VaeConfig {
        todo!()
    }
    /// Latents (already divided by `scaling_factor`) -> image in about [-1, 1].
    pub fn decode(&self, _latents: &Tensor) -> Result<Tensor> {
        todo!()
    }
    /// Image in [-1, 1] -> (mean, logvar) of the latent posterior (not scaled).
    pub fn encode(&self, _image: &Tensor) -> Result<(Tensor, Tensor)> {
        todo!()
    }
}
