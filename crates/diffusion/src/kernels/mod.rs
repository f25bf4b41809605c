//! Kernel choice behind one seam: one dispatch point per operation, which picks the device's
//! implementation, so the layers in [`crate::nn`] never branch on the device, the dtype or
//! which kernels exist.
//!
//! | operation | dispatch | CPU kernel (f32) | everywhere else |
//! |---|---|---|---|
//! | attention | [`attention`] | [`crate::cpu::attention`] | [`generic::attention`] |
//! | group norm (+ SiLU) | [`group_norm`] | [`crate::cpu::group_norm`] | candle's GroupNorm |
//! | 3x3 / 1x1 convolution | [`ConvWeights`] | [`crate::cpu::conv`], [`crate::cpu::linear`] | candle's conv2d |
//! | linear | [`linear`] | [`crate::cpu::linear`] | candle's matmul |
//! | GEGLU | [`geglu`] | [`crate::cpu::elementwise`] | candle ops |
//!
//! A kernel applies when `applies` says so for the operation's tensors (device, dtype, and the
//! `SEMI_CPU_KERNELS_OFF` switch that `semi bench` uses); otherwise the next one is tried and
//! candle's generic ops come last. To add a device kernel (CUDA, Metal): put it in one new file
//! (a module beside [`crate::cpu`]) with an `applies`-style check, and add its line at the top
//! of the operation's dispatch here (for convolutions: a [`ConvWeights`] variant holding the
//! weights in the layout the kernel wants, prepared once at load, and its arms).

mod conv;
pub mod generic;

pub use conv::{ConvWeights, Epilogue};

use candle_core::{Result, Tensor};

use crate::cpu;

/// Multi-head attention of `q` `[b, nq, heads*d]` over `k`, `v` `[b, nk, heads*d]`, scale
/// `1/sqrt(d)`, returning `[b, nq, heads*d]` (the fast path: nothing observable in between).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, upcast: bool) -> Result<Tensor> {
    if cpu::use_kernel("attention", &[q, k, v]) {
        let (_, _, c) = q.dims3()?;
        if heads > 0 && c.is_multiple_of(heads) {
            let scale = 1.0 / ((c / heads) as f32).sqrt();
            return cpu::attention::attend(q, k, v, heads, scale);
        }
    }
    generic::attention(q, k, v, heads, upcast)
}

/// `x @ weight^T + bias` for `weight` `[out, in]` in `x`'s dtype.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if cpu::use_kernel("linear", &[x, weight]) {
        return cpu::linear::linear(x, weight, bias);
    }
    use candle_core::Module;
    candle_nn::Linear::new(weight.clone(), bias.cloned()).forward(x)
}

/// diffusers' `GEGLU` on an already projected `x` `[.., 2n]`: `x[.., :n] * gelu_erf(x[.., n:])`.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    if cpu::use_kernel("geglu", &[x]) {
        return cpu::elementwise::geglu(x);
    }
    let parts = x.chunk(2, candle_core::D::Minus1)?;
    &parts[0] * parts[1].gelu_erf()?
}

/// SiLU, `x * sigmoid(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if cpu::use_kernel("silu", &[x]) {
        return cpu::elementwise::silu(x);
    }
    x.silu()
}

/// An affine group norm of `x` `[b, c, ...]` over `groups`, then SiLU when `silu`.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    if cpu::use_kernel("group_norm", &[x, weight]) {
        return cpu::group_norm::group_norm(x, groups, weight, bias, eps, silu);
    }
    use candle_core::Module;
    let channels = weight.dim(0)?;
    let norm = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
    let y = norm.forward(x)?;
    if silu {
        y.silu()
    } else {
        Ok(y)
    }
}
