//! The device-independent implementations: candle's own ops, for every device and dtype (and
//! the reference the kernels are tested against). The attention steps are public so a
//! controller's route (`crate::nn::attention`) can materialise them one by one.

use candle_core::{DType, Result, Tensor, D};

/// `[b, n, heads * d]` -> `[b, heads, n, d]` (contiguous).
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    if heads == 0 || !c.is_multiple_of(heads) {
        candle_core::bail!("attention: {c} channels cannot be split into {heads} heads");
    }
    x.reshape((b, n, heads, c / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// `[b, heads, n, d]` -> `[b, n, heads * d]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, heads, n, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, n, heads * d))
}

/// Scaled logits `q k^T * scale`, `[b, heads, q, k]`, from split-head `q`, `k`. With `upcast`
/// they are computed in f32 whatever the input dtype (diffusers' `upcast_attention`).
pub fn logits(q: &Tensor, k: &Tensor, scale: f64, upcast: bool) -> Result<Tensor> {
    let (q, k) = if upcast {
        (q.to_dtype(DType::F32)?, k.to_dtype(DType::F32)?)
    } else {
        (q.clone(), k.clone())
    };
    (q * scale)?.matmul(&k.t()?)
}

/// Softmax over the keys, computed in at least f32 precision for half-precision inputs.
pub fn softmax(logits: &Tensor) -> Result<Tensor> {
    match logits.dtype() {
        DType::F16 | DType::BF16 => {
            let p = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
            p.to_dtype(logits.dtype())
        }
        _ => candle_nn::ops::softmax_last_dim(logits),
    }
}

/// `probs @ v` for split-head `v`, in `v`'s dtype: `[b, heads, q, d]`.
pub fn weighted_values(probs: &Tensor, v: &Tensor) -> Result<Tensor> {
    probs.to_dtype(v.dtype())?.matmul(v)
}

/// Multi-head attention composed of candle ops (see [`super::attention`]).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, upcast: bool) -> Result<Tensor> {
    let (q, k, v) = (
        split_heads(q, heads)?,
        split_heads(k, heads)?,
        split_heads(v, heads)?,
    );
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let probs = softmax(&logits(&q, &k, scale, upcast)?)?;
    merge_heads(&weighted_values(&probs, &v)?)
}
