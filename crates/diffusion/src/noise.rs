//! Seeded Gaussian noise identical to PyTorch's CPU generator (MT19937 + ATen's normal fill).
// SKELETON: owned by the "text" helper.
use candle_core::{Device, Result, Tensor};

/// `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` as an f32 tensor.
pub fn randn(_seed: u64, _shape: &[usize], _device: &Device) -> Result<Tensor> {
    todo!()
}
