//! The scaled dot-product attention core shared by the UNet's transformer blocks and the VAE.
//!
//! Two routes: [`attend`] is the fast path (nothing observable in between: the device's kernel
//! through [`crate::kernels::attention`]), and [`logits`] / [`softmax`] / [`weighted_values`]
//! materialise the steps so a controller can see and change them. Both compute the same thing.

use candle_core::{Result, Tensor};

pub use crate::kernels::generic::{logits, merge_heads, softmax, split_heads, weighted_values};

/// Fast path: multi-head attention of `q` `[b, nq, heads*d]` over `k`, `v` `[b, nk, heads*d]`,
/// returning `[b, nq, heads*d]`. The scale is `1/sqrt(d)`.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, upcast: bool) -> Result<Tensor> {
    crate::kernels::attention(q, k, v, heads, upcast)
}
