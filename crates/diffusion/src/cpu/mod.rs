//! Fused f32 kernels for the CPU device (issue 6): attention without the full score matrix,
//! one-pass GroupNorm(+SiLU), a copy-free 3x3 convolution, im2col for other square
//! convolutions, and element-wise SiLU and GEGLU.
//!
//! Callers check [`eligible`] first; everything else (CUDA, Metal, half precision) keeps candle's
//! own ops. The kernels read candle's CPU storage directly and return fresh contiguous tensors.

pub mod attention;
pub mod conv;
pub mod convert;
pub mod elementwise;
pub mod group_norm;
pub mod im2col;
pub mod linear;
mod simd;

use candle_core::{DType, Device, Result, Shape, Storage, Tensor};

/// True when every tensor is an f32 tensor on the CPU: the kernels in this module apply.
pub fn eligible(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The kernels, by the names `SEMI_CPU_KERNELS_OFF` accepts.
pub const KERNELS: [&str; 8] = [
    "attention",
    "group_norm",
    "conv3x3",
    "conv1x1",
    "im2col",
    "geglu",
    "silu",
    "linear",
];

/// [`eligible`], unless the kernel is switched off in `SEMI_CPU_KERNELS_OFF` (a comma-separated
/// subset of [`KERNELS`], or `all`): lets `semi bench` measure what each kernel buys.
pub fn use_kernel(name: &str, tensors: &[&Tensor]) -> bool {
    static OFF: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        std::env::var("SEMI_CPU_KERNELS_OFF")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    !OFF.iter().any(|o| o == name || o == "all") && eligible(tensors)
}

/// Runs `f` on the contiguous f32 data of `t` (copying first only if `t` is strided).
pub(crate) fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let data = match &*storage {
        Storage::Cpu(cpu) => cpu.as_slice::<f32>()?,
        _ => candle_core::bail!("cpu kernel called on a non-CPU tensor"),
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("cpu kernel: tensor is not contiguous".into()))?;
    f(&data[start..end])
}

/// Wraps a kernel's output buffer as a CPU tensor.
pub(crate) fn from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// A raw pointer that may be shared between rayon workers writing disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// SAFETY: every user writes through it only to regions no other worker touches.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// A vector of `n` floats whose contents are about to be fully overwritten.
pub(crate) fn uninit_vec(n: usize) -> Vec<f32> {
    // Zeroing costs a full pass over often hundreds of MiB; callers write every element.
    let mut v = Vec::with_capacity(n);
    #[allow(clippy::uninit_vec)]
    // SAFETY: f32 has no invalid bit patterns and every caller overwrites all n elements.
    unsafe {
        v.set_len(n)
    };
    v
}

/// `dst[m, n] = lhs[m, k] @ rhs[k, n]`, or `+=` when `accumulate`: `dst` and `lhs` row-major with
/// the given row strides, `rhs` with strides `(row, column)`. The one shape of `gemm` call the
/// convolution and linear kernels make.
///
/// # Safety
/// The pointers must address every element those dimensions and strides reach.
pub(crate) unsafe fn product(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, usize),
    accumulate: bool,
    (lhs, lhs_rs): (*const f32, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
    par: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        1,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

/// Number of rayon workers (candle's CPU ops use the same global pool).
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

#[cfg(test)]
mod tests;
