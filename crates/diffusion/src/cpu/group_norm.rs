//! GroupNorm (optionally followed by SiLU) in three passes over the data: sum, centred sum of
//! squares, and the normalised, affine (and activated) write. candle composes it from about ten
//! element-wise and reduction ops, each a full pass with its own temporary.

use super::{simd, SharedMut};
use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// Elements per f32 partial sum before it is added into the f64 total.
const STAT_CHUNK: usize = 4096;

/// `x` `[b, c, *spatial]`, `weight` and `bias` `[c]` (f32, CPU); statistics per (batch, group) in
/// f64, as `torch.nn.functional.group_norm`; `silu` applies `y * sigmoid(y)` to the result.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 || groups == 0 || !dims[1].is_multiple_of(groups) {
        candle_core::bail!("group norm: {groups} groups for input {dims:?}");
    }
    let (b, c) = (dims[0], dims[1]);
    let plane: usize = dims[2..].iter().product();
    let per_group = c / groups;
    let weight = weight.to_vec1::<f32>()?;
    let bias = bias.to_vec1::<f32>()?;
    if weight.len() != c || bias.len() != c {
        candle_core::bail!("group norm: {c} channels but affine of {}", weight.len());
    }
    let mut out = super::uninit_vec(x.elem_count());
    let dst = SharedMut(out.as_mut_ptr());
    let group_len = per_group * plane;
    super::with_slice(x, |x| {
        (0..b * groups).into_par_iter().for_each(|item| {
            let src = &x[item * group_len..(item + 1) * group_len];
            // Centre on a sample first so the sums stay well conditioned in f32 lanes.
            let pivot = src[0];
            let (mut s1, mut s2) = (0f64, 0f64);
            for ch in src.chunks(STAT_CHUNK) {
                let (a, q) = simd::centered_sums(ch, pivot);
                s1 += a;
                s2 += q;
            }
            let n = group_len as f64;
            let mean_off = s1 / n;
            let var = (s2 / n - mean_off * mean_off).max(0.0);
            let mean = pivot as f64 + mean_off;
            let rstd = 1.0 / (var + eps).sqrt();
            // SAFETY: item `item` owns output elements [item * group_len, (item+1) * group_len).
            let out = unsafe {
                std::slice::from_raw_parts_mut(dst.get().add(item * group_len), group_len)
            };
            let g = item % groups;
            for (j, (o, i)) in out
                .chunks_mut(plane.max(1))
                .zip(src.chunks(plane.max(1)))
                .enumerate()
            {
                let ch = g * per_group + j;
                let a = rstd * weight[ch] as f64;
                let shift = bias[ch] as f64 - mean * a;
                simd::affine(i, o, a as f32, shift as f32, silu);
            }
        });
        Ok(())
    })?;
    super::from_vec(out, dims)
}
