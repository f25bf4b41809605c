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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ConvWeights;
    use crate::nn::{conv2d, linear::linear};
    use candle_core::Module;
    use std::collections::HashMap;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 40503) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn rounded(t: &Tensor) -> Tensor {
        t.to_dtype(DType::F16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    }

    fn builder(tensors: HashMap<String, Tensor>, p: Precision) -> VarBuilder<'static> {
        p.var_builder(Box::new(tensors), &Device::Cpu)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn linear_keeps_f16_and_equals_f32_on_rounded_weights() {
        let (w, b) = (randn(&[24, 16], 1), randn(&[24], 2));
        let t =
            |w: &Tensor| HashMap::from([("weight".into(), w.clone()), ("bias".into(), b.clone())]);
        let f16w = linear(16, 24, builder(t(&w), Precision::f16_weights())).unwrap();
        assert_eq!(f16w.weight().dtype(), DType::F16);
        let reference = linear(16, 24, builder(t(&rounded(&w)), Precision::default())).unwrap();
        let x = randn(&[2, 5, 16], 3);
        let (a, r) = (f16w.forward(&x).unwrap(), reference.forward(&x).unwrap());
        assert_eq!(a.dtype(), DType::F32);
        assert_eq!(max_diff(&a, &r), 0.0);
    }

    #[test]
    fn convolutions_keep_f16_and_equal_f32_on_rounded_weights() {
        // 3x3 (the CPU kernel, plain and with the fused upsampling), 1x1 and stride 2 (candle).
        for (k, stride, pad) in [(3, 1, 1), (1, 1, 0), (3, 2, 1)] {
            let (w, b) = (randn(&[6, 4, k, k], 4), randn(&[6], 5));
            let t = |w: &Tensor| {
                HashMap::from([("weight".into(), w.clone()), ("bias".into(), b.clone())])
            };
            let f16w = conv2d(
                builder(t(&w), Precision::f16_weights()),
                4,
                6,
                k,
                stride,
                pad,
            )
            .unwrap();
            assert_eq!(f16w.weight().unwrap().dtype(), DType::F16);
            assert_eq!(
                matches!(f16w.weights(), ConvWeights::CpuTaps3x3 { .. }),
                k == 3 && stride == 1
            );
            let reference = conv2d(
                builder(t(&rounded(&w)), Precision::default()),
                4,
                6,
                k,
                stride,
                pad,
            )
            .unwrap();
            let x = randn(&[1, 4, 8, 8], 6);
            let a = f16w.forward(&x).unwrap();
            assert_eq!(a.dtype(), DType::F32);
            assert_eq!(max_diff(&a, &reference.forward(&x).unwrap()), 0.0);
            let a = f16w.forward_upsampled2x(&x).unwrap();
            let r = reference.forward_upsampled2x(&x).unwrap();
            assert_eq!(max_diff(&a, &r), 0.0);
        }
    }

    #[test]
    fn only_f32_compute_on_the_cpu_stores_weights_narrower() {
        let p = Precision::f16_weights();
        assert_eq!(p.for_device(&Device::Cpu), p);
        assert_eq!(
            Precision {
                compute: DType::F16,
                weights: DType::F16
            }
            .for_device(&Device::Cpu),
            Precision::uniform(DType::F16)
        );
        let p = Precision {
            compute: DType::BF16,
            weights: DType::F16,
        }
        .for_device(&Device::Cpu);
        assert_eq!(p, Precision::uniform(DType::BF16));
    }

    #[test]
    fn widening_matches_candle() {
        let t = randn(&[3, 70_001], 7).to_dtype(DType::F16).unwrap();
        let ours = widen(&t, DType::F32).unwrap();
        assert_eq!(ours.dtype(), DType::F32);
        assert_eq!(max_diff(&ours, &t.to_dtype(DType::F32).unwrap()), 0.0);
        // Strided input.
        let tt = t.t().unwrap();
        assert_eq!(
            max_diff(
                &widen(&tt, DType::F32).unwrap(),
                &tt.to_dtype(DType::F32).unwrap()
            ),
            0.0
        );
    }
}
