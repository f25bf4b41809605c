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

/// The most attention logits one materialised product may hold (elements; 4 GiB in f32).
/// candle's CUDA kernels index with 32-bit integers, so a larger tensor fails to launch
/// (`CUDA_ERROR_INVALID_VALUE`) or reads out of bounds: 64 noise images of a batched probe at
/// 512x512 have 8 heads x 4096 x 4096 logits each, 2^33 in all. It also bounds the memory that
/// large batches and image sizes take.
pub const MAX_LOGITS: usize = 1 << 30;

/// Multi-head attention composed of candle ops (see [`super::attention`]), in pieces of at most
/// [`MAX_LOGITS`] logits: batch rows first, then query rows (each query's softmax is over all
/// keys, so the pieces are exact).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, upcast: bool) -> Result<Tensor> {
    attention_in_pieces(q, k, v, heads, upcast, MAX_LOGITS)
}

/// [`attention`] with at most `limit` logits per piece.
fn attention_in_pieces(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    upcast: bool,
    limit: usize,
) -> Result<Tensor> {
    let (b, nq, _) = q.dims3()?;
    let nk = k.dim(1)?;
    let per_query = heads.max(1) * nk;
    if b * nq * per_query <= limit {
        return attention_whole(q, k, v, heads, upcast);
    }
    if b > 1 {
        let rows = (limit / (nq * per_query)).clamp(1, b);
        let parts = (0..b)
            .step_by(rows)
            .map(|s| {
                let n = rows.min(b - s);
                let (q, k, v) = (q.narrow(0, s, n)?, k.narrow(0, s, n)?, v.narrow(0, s, n)?);
                attention_in_pieces(&q, &k, &v, heads, upcast, limit)
            })
            .collect::<Result<Vec<_>>>()?;
        return Tensor::cat(&parts, 0);
    }
    let rows = (limit / per_query).clamp(1, nq);
    let parts = (0..nq)
        .step_by(rows)
        .map(|s| attention_whole(&q.narrow(1, s, rows.min(nq - s))?, k, v, heads, upcast))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 1)
}

/// Multi-head attention in one materialised product.
fn attention_whole(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    upcast: bool,
) -> Result<Tensor> {
    let (q, k, v) = (
        split_heads(q, heads)?,
        split_heads(k, heads)?,
        split_heads(v, heads)?,
    );
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let probs = softmax(&logits(&q, &k, scale, upcast)?)?;
    merge_heads(&weighted_values(&probs, &v)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Pieces by batch rows, by query rows, and by both give the one-product result.
    #[test]
    fn attention_in_pieces_is_exact() -> Result<()> {
        let dev = Device::Cpu;
        let (b, nq, nk, heads, d) = (3, 10, 7, 2, 4);
        let q = Tensor::randn(0f32, 1.0, (b, nq, heads * d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, nk, heads * d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, nk, heads * d), &dev)?;
        let whole = attention_whole(&q, &k, &v, heads, false)?;
        // 2 images per piece; 3 query rows per piece (one image); 1 query row per piece.
        for limit in [2 * nq * heads * nk, 3 * heads * nk, 1] {
            let pieces = attention_in_pieces(&q, &k, &v, heads, false, limit)?;
            let diff = (pieces - &whole)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "limit {limit}: max difference {diff}");
        }
        Ok(())
    }
}
