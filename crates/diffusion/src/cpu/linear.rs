//! `x @ w^T + b` in one matrix product: the output rows start as the bias and the product is
//! accumulated onto them. candle's `Linear` writes the product into one fresh buffer and the sum
//! with the broadcast bias into a second (two passes and two sets of page faults over outputs of
//! up to 40 MiB in SD's feed-forward layers).

use super::{simd, SharedMut};
use candle_core::{Result, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// 2-d inputs up to this many rows are multiplied row by row (see [`linear`]).
const SMALL_BATCH: usize = 256;

/// Multiply-adds below which the product runs on one thread.
const PARALLEL_WORK: usize = 1 << 20;

/// `x` `[.., in]`, `weight` `[out, in]`, `bias` `[out]` (f32, CPU) -> `[.., out]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let (out_dim, in_dim) = weight.dims2()?;
    if dims.last() != Some(&in_dim) {
        candle_core::bail!("linear: input {dims:?} with weight {:?}", weight.dims());
    }
    let rows = x.elem_count() / in_dim.max(1);
    let mut out = super::uninit_vec(rows * out_dim);
    if let Some(b) = bias {
        let b = b.to_vec1::<f32>()?;
        if b.len() != out_dim {
            candle_core::bail!("linear: {out_dim} outputs, bias of {}", b.len());
        }
        out.par_chunks_mut(out_dim.max(1) * 64).for_each(|c| {
            c.chunks_exact_mut(out_dim)
                .for_each(|r| r.copy_from_slice(&b))
        });
    }
    // One product per batch entry (the first dimension of a 3-d or deeper input): the matrix
    // library's blocking depends on the row count, so this keeps an entry's result independent
    // of the batch it runs in (a probe store is byte-identical for any `--batch`).
    // A 2-d input of a few rows is a batch of vectors (time embeddings): one product per row.
    let batch = match dims.len() {
        0 | 1 => 1,
        2 if rows <= SMALL_BATCH => rows.max(1),
        2 => 1,
        _ => dims[0].max(1),
    };
    let per = rows / batch;
    let threads = super::threads();
    let par = if per * out_dim * in_dim >= PARALLEL_WORK && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let dst = SharedMut(out.as_mut_ptr());
    super::with_slice(x, |x| {
        super::with_slice(weight, |w| {
            for e in 0..batch {
                // SAFETY: dst holds rows x out_dim floats, x rows x in_dim, w out_dim x in_dim;
                // entry e owns rows e*per..(e+1)*per of dst and x.
                unsafe {
                    super::product(
                        (per, out_dim, in_dim),
                        (dst.get().add(e * per * out_dim), out_dim),
                        bias.is_some(),
                        (x.as_ptr().add(e * per * in_dim), in_dim),
                        (w.as_ptr(), 1, in_dim),
                        par,
                    )
                };
            }
            Ok(())
        })
    })?;
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("checked non-empty") = out_dim;
    super::from_vec(out, shape)
}

/// A 1x1 convolution, `x` `[b, ci, h, w]` with `weight` `[co, ci]` (the `[co, ci, 1, 1]` kernel
/// flattened) and `bias` `[co]`: per batch, `weight @ x[b]` over the `[ci, h*w]` pixels, onto
/// rows that start as the bias, then SiLU in place when `silu`. candle runs it as im2col, a
/// matrix product and a layout copy.
pub fn conv1x1(x: &Tensor, weight: &Tensor, bias: &Tensor, silu: bool) -> Result<Tensor> {
    let (b, ci, h, w) = x.dims4()?;
    let (co, ci_w) = weight.dims2()?;
    let bias = bias.to_vec1::<f32>()?;
    if ci_w != ci || bias.len() != co {
        candle_core::bail!(
            "1x1 conv: input {:?} with weight {:?} and {} biases",
            x.dims(),
            weight.dims(),
            bias.len()
        );
    }
    let hw = h * w;
    let mut out = super::uninit_vec(b * co * hw);
    out.par_chunks_mut(hw.max(1))
        .enumerate()
        .for_each(|(i, row)| row.fill(bias[i % co]));
    let threads = super::threads();
    let par = if co * hw * ci >= PARALLEL_WORK && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let dst = SharedMut(out.as_mut_ptr());
    super::with_slice(x, |x| {
        super::with_slice(weight, |wt| {
            for bi in 0..b {
                // SAFETY: batch bi's [co, hw] output and [ci, hw] input; weight is [co, ci].
                unsafe {
                    super::product(
                        (co, hw, ci),
                        (dst.get().add(bi * co * hw), hw),
                        true,
                        (wt.as_ptr(), ci),
                        (x.as_ptr().add(bi * ci * hw), hw, 1),
                        par,
                    )
                };
            }
            Ok(())
        })
    })?;
    if silu {
        out.par_chunks_mut(1 << 14).for_each(simd::silu);
    }
    super::from_vec(out, (b, co, h, w))
}
