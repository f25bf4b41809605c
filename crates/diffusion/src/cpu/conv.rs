//! 3x3, stride 1, padding 1 convolution as nine accumulated matrix products over a zero-padded
//! copy of the input, without im2col.
//!
//! With the input padded to width `W + 2`, output pixel `q = y * (W + 2) + x` reads input
//! `q + kh * (W + 2) + kw` for tap `(kh, kw)`: for each tap the input is a plain strided matrix
//! `[ci, pixels]`, so the convolution is `sum_taps W_tap [co, ci] @ X_shifted [ci, pixels]`, run
//! on tiles of output pixels in parallel. The two padding columns of each output row are computed
//! and dropped when the tile is copied out (with the bias added).

use super::{simd, SharedMut};
use candle_core::{Result, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::Mutex;

/// Floats in one tile's `[co, pixels]` accumulator (output pixels per tile = this / `co`, before
/// rounding to an even split over the workers): the nine taps accumulate into it, so it should
/// stay in L2.
const TILE_FLOATS: usize = 1 << 17;

/// Below this many output pixels per worker, one tile with gemm's own threading is faster.
const MIN_SPLIT: usize = 256;

/// The zero-padded input, kept from one convolution to the next: a fresh buffer of this size
/// (over 100 MiB in the VAE at 512x512) costs more in page faults than filling it.
static PADDED: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// Frees the padded-input buffer kept between convolutions (it holds the largest input seen).
pub fn release_scratch() {
    if let Ok(mut v) = PADDED.lock() {
        *v = Vec::new();
    }
}

thread_local! {
    static TILE_BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The weight layout this kernel wants: `[co, ci, 3, 3]` -> `[9, co, ci]` (tap-major).
pub fn taps_from_oihw(w: &Tensor) -> Result<Tensor> {
    let (co, ci, kh, kw) = w.dims4()?;
    if (kh, kw) != (3, 3) {
        candle_core::bail!("3x3 conv kernel: weight of shape {:?}", w.dims());
    }
    w.permute((2, 3, 0, 1))?.reshape((9, co, ci))?.contiguous()
}

/// The inverse of [`taps_from_oihw`].
pub fn oihw_from_taps(taps: &Tensor) -> Result<Tensor> {
    let (_, co, ci) = taps.dims3()?;
    taps.reshape((3, 3, co, ci))?
        .permute((2, 3, 0, 1))?
        .contiguous()
}

/// `x` `[b, ci, h, w]` convolved with `taps` `[9, co, ci]` (see [`taps_from_oihw`]) plus `bias`
/// `[co]`; f32 on the CPU. Returns `[b, co, h, w]`.
pub fn conv3x3(x: &Tensor, taps: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    conv3x3_impl(x, taps, bias, Epilogue::default(), false)
}

/// What [`conv3x3_then`] adds to the convolution as it writes it out, saving the full passes
/// (and fresh buffers) of separate additions.
#[derive(Default, Clone, Copy)]
pub struct Epilogue<'a> {
    /// `[b, co]`, added per batch and channel after the bias (a ResNet block's time embedding).
    pub channel_add: Option<&'a Tensor>,
    /// `[b, co, h, w]`, added last (a residual connection).
    pub residual: Option<&'a Tensor>,
    /// SiLU of the sum, last (YOLOv8's Conv: convolution, folded BatchNorm, SiLU).
    pub silu: bool,
}

/// `((conv3x3(x) + bias) + channel_add) + residual`, in that order of additions (so the result
/// equals the unfused ops exactly), then SiLU when asked.
pub fn conv3x3_then(
    x: &Tensor,
    taps: &Tensor,
    bias: Option<&Tensor>,
    epilogue: Epilogue,
) -> Result<Tensor> {
    conv3x3_impl(x, taps, bias, epilogue, false)
}

/// [`conv3x3`] of the nearest-neighbour x2 upsampling of `x` (`Upsample2D`), without
/// materialising the upsampled map: the padded input is filled from `x` directly.
pub fn upsample2x_conv3x3(x: &Tensor, taps: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    conv3x3_impl(x, taps, bias, Epilogue::default(), true)
}

fn conv3x3_impl(
    x: &Tensor,
    taps: &Tensor,
    bias: Option<&Tensor>,
    epilogue: Epilogue,
    up2: bool,
) -> Result<Tensor> {
    let (b, ci, h_in, w_in) = x.dims4()?;
    let (h, w) = if up2 {
        (2 * h_in, 2 * w_in)
    } else {
        (h_in, w_in)
    };
    let (nine, co, ci_w) = taps.dims3()?;
    if nine != 9 || ci_w != ci {
        candle_core::bail!("3x3 conv: input {:?} with taps {:?}", x.dims(), taps.dims());
    }
    let bias = match bias {
        Some(t) => t.to_vec1::<f32>()?,
        None => vec![0.0; co],
    };
    if bias.len() != co {
        candle_core::bail!("3x3 conv: {co} output channels, bias of {}", bias.len());
    }
    let channel_add = match epilogue.channel_add {
        Some(t) => {
            if t.dims() != [b, co] {
                candle_core::bail!("3x3 conv: per-channel addend {:?} for {b}x{co}", t.dims());
            }
            t.flatten_all()?.to_vec1::<f32>()?
        }
        None => vec![0.0; b * co],
    };
    if let Some(r) = epilogue.residual {
        if r.dims() != [b, co, h, w] {
            candle_core::bail!(
                "3x3 conv: residual {:?} for output {:?}",
                r.dims(),
                [b, co, h, w]
            );
        }
    }
    let residual = epilogue.residual.map(|r| r.contiguous()).transpose()?;
    let wp = w + 2;
    // One spare element at the end: the last pixel's padding columns read one past the frame.
    let plane_p = (h + 2) * wp + 2;
    let mut cached = PADDED.try_lock().ok();
    let mut own = Vec::new();
    let buffer = cached.as_deref_mut().unwrap_or(&mut own);
    if buffer.len() < b * ci * plane_p {
        *buffer = super::uninit_vec(b * ci * plane_p);
    }
    let padded = &mut buffer[..b * ci * plane_p];
    super::with_slice(x, |x| {
        padded
            .par_chunks_mut(plane_p)
            .zip(x.par_chunks(h_in * w_in))
            .for_each(|(p, src)| {
                // The buffer is reused: write every padding element, not only the interior.
                p[..wp + 1].fill(0.0);
                p[(h + 1) * wp - 1..].fill(0.0);
                for y in 0..h {
                    p[(y + 1) * wp + w + 1..(y + 2) * wp + 1].fill(0.0);
                    let dst = &mut p[(y + 1) * wp + 1..(y + 1) * wp + 1 + w];
                    if up2 {
                        let row = &src[(y / 2) * w_in..(y / 2 + 1) * w_in];
                        for (pair, &v) in dst.chunks_exact_mut(2).zip(row) {
                            pair[0] = v;
                            pair[1] = v;
                        }
                    } else {
                        dst.copy_from_slice(&src[y * w..(y + 1) * w]);
                    }
                }
            });
        Ok(())
    })?;
    let pixels = h * wp;
    let threads = super::threads();
    // Tiles depend on one image's size only, so that an image's result does not depend on the
    // batch it runs in (a probe store is byte-identical for any `--batch`).
    let tiles = if pixels >= MIN_SPLIT * threads {
        let tile = (TILE_FLOATS / co).max(64);
        threads * pixels.div_ceil(threads * tile)
    } else {
        1
    };
    let tile = pixels.div_ceil(tiles);
    let items = b * tiles;
    let mut out = super::uninit_vec(b * co * h * w);
    let dst = SharedMut(out.as_mut_ptr());
    let geometry = Geometry {
        ci,
        co,
        h,
        w,
        plane_p,
    };
    let with_residual = |f: &dyn Fn(Option<&[f32]>) -> Result<()>| match &residual {
        Some(r) => super::with_slice(r, |r| f(Some(r))),
        None => f(None),
    };
    with_residual(&|residual| {
        super::with_slice(taps, |taps| {
            let run = |item: usize, par: Parallelism| {
                let (bi, t) = (item / tiles, item % tiles);
                let q0 = t * tile;
                let n = tile.min(pixels - q0);
                TILE_BUF.with_borrow_mut(|buf| {
                    if buf.len() < co * n {
                        buf.resize(co * n, 0.0);
                    }
                    // SAFETY: reads stay inside batch bi's padded planes (see `plane_p`); writes go
                    // to output pixels of tile t of batch bi only.
                    unsafe {
                        tile_product(
                            &padded[bi * ci * plane_p..(bi + 1) * ci * plane_p],
                            taps,
                            &mut buf[..co * n],
                            q0,
                            n,
                            &geometry,
                            par,
                        );
                        let plane = bi * co * h * w..(bi + 1) * co * h * w;
                        copy_out(
                            &buf[..co * n],
                            dst.get().add(plane.start),
                            (&bias, &channel_add[bi * co..(bi + 1) * co]),
                            residual.map(|r| &r[plane]),
                            (q0, n, epilogue.silu),
                            &geometry,
                        );
                    }
                });
            };
            if items >= threads {
                (0..items)
                    .into_par_iter()
                    .for_each(|i| run(i, Parallelism::None));
            } else {
                (0..items).for_each(|i| run(i, Parallelism::Rayon(threads)));
            }
            Ok(())
        })
    })?;
    super::from_vec(out, (b, co, h, w))
}

struct Geometry {
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    plane_p: usize,
}

/// `buf[co, n] = sum_taps taps[tap] @ padded[:, q0 + shift(tap) ..][.., n]`.
///
/// # Safety
/// `padded` must be one batch's `[ci, plane_p]` planes and `q0 + n <= h * (w + 2)`.
unsafe fn tile_product(
    padded: &[f32],
    taps: &[f32],
    buf: &mut [f32],
    q0: usize,
    n: usize,
    g: &Geometry,
    par: Parallelism,
) {
    let wp = g.w + 2;
    for tap in 0..9 {
        let shift = (tap / 3) * wp + tap % 3;
        debug_assert!((g.ci - 1) * g.plane_p + q0 + shift + n <= padded.len());
        super::product(
            (g.co, n, g.ci),
            (buf.as_mut_ptr(), n),
            tap > 0,
            (taps.as_ptr().add(tap * g.co * g.ci), g.ci),
            (padded.as_ptr().add(q0 + shift), g.plane_p, 1),
            par,
        );
    }
}

/// Copies the real pixels of a tile (dropping the padding columns) into `[co, h, w]`, adding the
/// bias (and the epilogue's additions), then SiLU when `silu`.
///
/// # Safety
/// `out` must point to one batch's `[co, h, w]` output.
unsafe fn copy_out(
    buf: &[f32],
    out: *mut f32,
    (bias, channel_add): (&[f32], &[f32]),
    residual: Option<&[f32]>,
    (q0, n, silu): (usize, usize, bool),
    g: &Geometry,
) {
    let wp = g.w + 2;
    let hw = g.h * g.w;
    for (c, src) in buf.chunks_exact(n).enumerate() {
        let mut q = q0;
        while q < q0 + n {
            let (y, x) = (q / wp, q % wp);
            let end = (q0 + n).min(y * wp + wp);
            if x < g.w {
                let len = (g.w - x).min(end - q);
                let at = c * hw + y * g.w + x;
                let dst = std::slice::from_raw_parts_mut(out.add(at), len);
                let src = &src[q - q0..q - q0 + len];
                match residual {
                    Some(r) => {
                        simd::add_two_then(dst, src, bias[c], channel_add[c], &r[at..at + len])
                    }
                    None => simd::add_two(dst, src, bias[c], channel_add[c]),
                }
                if silu {
                    simd::silu(dst);
                }
            }
            q = end;
        }
    }
}
