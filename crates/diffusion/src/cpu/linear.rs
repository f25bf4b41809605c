//! `x @ w^T + b` in one matrix product: the output rows start as the bias and the product is
//! accumulated onto them. candle's `Linear` writes the product into one fresh buffer and the sum
//! with the broadcast bias into a second (two passes and two sets of page faults over outputs of
//! up to 40 MiB in SD's feed-forward layers).

use super::SharedMut;
use candle_core::{Result, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

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
    let threads = super::threads();
    let par = if rows * out_dim * in_dim >= PARALLEL_WORK && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let dst = SharedMut(out.as_mut_ptr());
    super::with_slice(x, |x| {
        super::with_slice(weight, |w| {
            // SAFETY: dst holds rows x out_dim floats, x rows x in_dim, w out_dim x in_dim; the
            // strides below address exactly those.
            unsafe {
                super::product(
                    (rows, out_dim, in_dim),
                    (dst.get(), out_dim),
                    bias.is_some(),
                    (x.as_ptr(), in_dim),
                    (w.as_ptr(), 1, in_dim),
                    par,
                )
            };
            Ok(())
        })
    })?;
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("checked non-empty") = out_dim;
    super::from_vec(out, shape)
}

/// A 1x1 convolution, `x` `[b, ci, h, w]` with `weight` `[co, ci]` (the `[co, ci, 1, 1]` kernel
/// flattened) and `bias` `[co]`: per batch, `weight @ x[b]` over the `[ci, h*w]` pixels, onto
/// rows that start as the bias. candle runs it as im2col, a matrix product and a layout copy.
pub fn conv1x1(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
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
    super::from_vec(out, (b, co, h, w))
}
