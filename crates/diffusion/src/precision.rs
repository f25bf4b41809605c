//! Weights stored in a narrower dtype than the one the model computes in (issue 6).
//!
//! With `Precision { compute: F32, weights: F16 }` every weight matrix and convolution kernel
//! (every tensor of rank >= 2) is kept in f16, halving the weights' memory, and each layer widens
//! its own weight to f32 just before use ([`widen`]), so the f32 kernels of [`crate::cpu`] still
//! run and the results differ from f32 only by the weights' rounding. Biases and norm scales
//! (rank 1) stay in the compute dtype: they are tiny. Only the CPU with f32 compute does this;
//! elsewhere [`Precision::for_device`] stores the weights in the compute dtype, as before.

use crate::cpu;
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// The dtype a model computes in and the dtype its weight matrices are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    pub compute: DType,
    pub weights: DType,
}

impl Precision {
    /// Weights stored in the dtype the model computes in (the default everywhere).
    pub fn uniform(dtype: DType) -> Self {
        Self {
            compute: dtype,
            weights: dtype,
        }
    }

    /// f32 compute with f16 weight matrices (`--weights f16`).
    pub fn f16_weights() -> Self {
        Self {
            compute: DType::F32,
            weights: DType::F16,
        }
    }

    /// True when weights are stored narrower than the compute dtype.
    pub fn is_mixed(&self) -> bool {
        self.compute != self.weights
    }

    /// The precision actually used on `device`: mixed storage only on the CPU with f32 compute
    /// (CUDA and Metal keep their own kernels, which run any dtype natively).
    pub fn for_device(self, device: &Device) -> Self {
        if device.is_cpu() && self.compute == DType::F32 {
            self
        } else {
            Self::uniform(self.compute)
        }
    }

    /// A VarBuilder in the compute dtype over `backend`, whose rank >= 2 tensors come back in the
    /// weights dtype (converted once, at load, when the files hold another dtype).
    pub fn var_builder<'a>(
        self,
        backend: Box<dyn SimpleBackend + 'a>,
        device: &Device,
    ) -> VarBuilder<'a> {
        let p = self.for_device(device);
        let backend: Box<dyn SimpleBackend + 'a> = if p.is_mixed() {
            Box::new(MatricesIn {
                inner: backend,
                dtype: p.weights,
            })
        } else {
            backend
        };
        VarBuilder::from_backend(backend, p.compute, device.clone())
    }
}

impl Default for Precision {
    fn default() -> Self {
        Self::uniform(DType::F32)
    }
}

/// Hands out rank >= 2 tensors in `dtype`, everything else as asked.
struct MatricesIn<'a> {
    inner: Box<dyn SimpleBackend + 'a>,
    dtype: DType,
}

impl SimpleBackend for MatricesIn<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let dtype = if s.rank() >= 2 { self.dtype } else { dtype };
        self.inner.get(s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = self.inner.get_unchecked(name, dtype, dev)?;
        if t.rank() >= 2 {
            t.to_dtype(self.dtype)
        } else {
            Ok(t)
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// `t` in `dtype`: the stored weight itself when it already is, else a fresh widened copy (the
/// f16 -> f32 case on the CPU with a parallel vectorised kernel).
pub fn widen(t: &Tensor, dtype: DType) -> Result<Tensor> {
    if t.dtype() == dtype {
        Ok(t.clone())
    } else if dtype == DType::F32 && t.dtype() == DType::F16 && t.device().is_cpu() {
        cpu::convert::f16_to_f32(t)
    } else {
        t.to_dtype(dtype)
    }
}
