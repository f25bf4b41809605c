//! Element-wise kernels that replace chains of candle ops (each its own pass and temporary).

use super::simd;
use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// Rows per parallel work item.
const ROWS: usize = 64;

/// GEGLU: `x` `[.., 2n]` -> `x[.., :n] * gelu_erf(x[.., n:])` `[.., n]` (f32, CPU), as diffusers'
/// `GEGLU` (`hidden, gate = proj(x).chunk(2, -1); hidden * gelu(gate)`).
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let two_n = *dims.last().unwrap_or(&0);
    if two_n == 0 || !two_n.is_multiple_of(2) {
        candle_core::bail!("geglu: last dimension of {dims:?} must be even and non-zero");
    }
    let n = two_n / 2;
    let rows = x.elem_count() / two_n;
    let mut out = super::uninit_vec(rows * n);
    super::with_slice(x, |x| {
        out.par_chunks_mut(ROWS * n)
            .zip(x.par_chunks(ROWS * two_n))
            .for_each(|(o, i)| {
                for (o, i) in o.chunks_exact_mut(n).zip(i.chunks_exact(two_n)) {
                    simd::geglu(&i[..n], &i[n..], o);
                }
            });
        Ok(())
    })?;
    let mut out_dims = dims;
    *out_dims.last_mut().unwrap() = n;
    super::from_vec(out, out_dims)
}

/// SiLU, `x * sigmoid(x)`, with the vectorised `exp` (candle's calls libm per element).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    let mut out = super::uninit_vec(x.elem_count());
    super::with_slice(x, |x| {
        out.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(o, i)| simd::affine(i, o, 1.0, 0.0, true));
        Ok(())
    })?;
    super::from_vec(out, x.dims())
}
