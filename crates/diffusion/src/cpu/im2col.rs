//! Square convolutions the 3x3 and 1x1 kernels do not take (a stride of 2, a 7x7 stem...) as
//! im2col and one matrix product per image: `col[ci*k*k, ho*wo]` gathered with zero padding,
//! then `out[co, ho*wo] = bias + weight[co, ci*k*k] @ col`. candle's own CPU convolution for
//! these shapes gathers element by element and is several times slower (YOLOv8's stride-2
//! downsamplers).

use super::{simd, SharedMut};
use candle_core::{Result, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    static COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The shape of one convolution.
#[derive(Debug, Clone, Copy)]
struct Shape {
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

/// `x` `[b, ci, h, w]` convolved with `weight` `[co, ci*k*k]` (the `[co, ci, k, k]` kernel
/// flattened) plus `bias` `[co]`, stride `stride`, zero padding `pad` on every side; then SiLU
/// in place when `silu`.
pub fn conv(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    (k, stride, pad): (usize, usize, usize),
    silu: bool,
) -> Result<Tensor> {
    let (b, ci, h, w) = x.dims4()?;
    let (co, kk) = weight.dims2()?;
    let bias = bias.to_vec1::<f32>()?;
    if kk != ci * k * k || bias.len() != co || stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
        candle_core::bail!(
            "{k}x{k} conv: input {:?} with weight {:?}, {} biases, stride {stride}",
            x.dims(),
            weight.dims(),
            bias.len()
        );
    }
    let s = Shape {
        h,
        w,
        k,
        stride,
        pad,
        ho: (h + 2 * pad - k) / stride + 1,
        wo: (w + 2 * pad - k) / stride + 1,
    };
    let n = s.ho * s.wo;
    let mut out = super::uninit_vec(b * co * n);
    out.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(i, row)| row.fill(bias[i % co]));
    let threads = super::threads();
    super::with_slice(x, |x| {
        super::with_slice(weight, |wt| {
            let run = |bi: usize, dst: SharedMut, par: Parallelism| {
                COL.with_borrow_mut(|col| {
                    if col.len() < kk * n {
                        *col = super::uninit_vec(kk * n);
                    }
                    let image = &x[bi * ci * h * w..(bi + 1) * ci * h * w];
                    let parallel = matches!(par, Parallelism::Rayon(_));
                    gather(image, &mut col[..kk * n], &s, parallel);
                    // SAFETY: batch bi's [co, n] output rows; col is [kk, n]; weight [co, kk].
                    unsafe {
                        super::product(
                            (co, n, kk),
                            (dst.get().add(bi * co * n), n),
                            true,
                            (wt.as_ptr(), kk),
                            (col.as_ptr(), n, 1),
                            par,
                        );
                        if silu {
                            let out =
                                std::slice::from_raw_parts_mut(dst.get().add(bi * co * n), co * n);
                            simd::silu(out);
                        }
                    };
                });
            };
            let dst = SharedMut(out.as_mut_ptr());
            if b >= threads {
                (0..b)
                    .into_par_iter()
                    .for_each(|bi| run(bi, dst, Parallelism::None));
            } else {
                (0..b).for_each(|bi| run(bi, dst, Parallelism::Rayon(threads)));
            }
            Ok(())
        })
    })?;
    super::from_vec(out, (b, co, s.ho, s.wo))
}

/// One image's `[ci, h, w]` as `col[(c * k + ky) * k + kx, oy * wo + ox]`, zeros outside; the
/// rows split over the workers when `parallel`.
fn gather(x: &[f32], col: &mut [f32], s: &Shape, parallel: bool) {
    let n = s.ho * s.wo;
    if parallel {
        col.par_chunks_exact_mut(n)
            .enumerate()
            .for_each(|(r, row)| gather_row(x, r, row, s));
    } else {
        for (r, row) in col.chunks_exact_mut(n).enumerate() {
            gather_row(x, r, row, s);
        }
    }
}

/// Row `r` of [`gather`].
fn gather_row(x: &[f32], r: usize, row: &mut [f32], s: &Shape) {
    {
        let (c, ky, kx) = (r / (s.k * s.k), r / s.k % s.k, r % s.k);
        let plane = &x[c * s.h * s.w..(c + 1) * s.h * s.w];
        for (oy, out) in row.chunks_exact_mut(s.wo).enumerate() {
            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
            if iy < 0 || iy >= s.h as isize {
                out.fill(0.0);
                continue;
            }
            let line = &plane[iy as usize * s.w..(iy as usize + 1) * s.w];
            for (ox, v) in out.iter_mut().enumerate() {
                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                *v = if ix < 0 || ix >= s.w as isize {
                    0.0
                } else {
                    line[ix as usize]
                };
            }
        }
    }
}
