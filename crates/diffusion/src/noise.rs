//! Seeded Gaussian noise identical to PyTorch's CPU generator (MT19937 + ATen's normal fill).
// SKELETON: owned by the "text" helper.
use candle_core::{Device, Result, Tensor};

/// `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` as an f32 tensor.
pub fn randn(_seed: u64, _shape: &[usize], _device: &Device) -> Result<Tensor> {
    todo!()
}

/// A `torch.Generator()` on CPU whose consecutive draws continue one stream.
// Signature added by the "pipeline" helper to match the text helper's implementation; the text
// helper's noise.rs replaces this file at merge.
pub struct TorchGenerator {}

impl TorchGenerator {
    /// `torch.Generator().manual_seed(seed)`.
    pub fn manual_seed(_seed: u64) -> Self {
        todo!()
    }
    /// `torch.randn(shape, generator=self)` as f32.
    pub fn randn(&mut self, _shape: &[usize], _device: &Device) -> Result<Tensor> {
        todo!()
    }
}
