//! f16 -> f32 widening of stored weights ([`crate::precision`]), on every core with F16C.

use super::{from_vec, uninit_vec};
use candle_core::{Result, Storage, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Elements per rayon task: large enough to amortise scheduling, small enough to split a layer.
const CHUNK: usize = 1 << 16;

/// A contiguous f32 copy of the f16 CPU tensor `t`.
pub fn f16_to_f32(t: &Tensor) -> Result<Tensor> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let data = match &*storage {
        Storage::Cpu(cpu) => cpu.as_slice::<f16>()?,
        _ => candle_core::bail!("f16_to_f32 called on a non-CPU tensor"),
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("f16_to_f32: tensor is not contiguous".into()))?;
    let src = &data[start..end];
    let mut out = uninit_vec(src.len());
    out.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(o, s)| s.convert_to_f32_slice(o));
    from_vec(out, t.shape().clone())
}
