//! DDIM (Song et al. 2021), exactly as diffusers' `DDIMScheduler`.
//!
//! Scalar coefficients are computed in f32 in the same order as diffusers' torch code, so a step
//! agrees with diffusers to the last bits, not only to a tolerance. diffusers' quirks are kept on
//! purpose, since parity is the point: the previous timestep is always `t - T / n` whatever the
//! spacing, and "trailing" spacing can yield `n + 1` timesteps ending in -1 (a negative timestep
//! indexes `alphas_cumprod` from the end, as Python does).

use super::{
    alphas_cumprod, betas, check_noise, div_scalar, mul_scalar, numpy_arange, numpy_linspace,
    round_half_even, Prediction, Scheduler, Spacing, StepOutput,
};
use crate::config::SchedulerConfig;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;

#[derive(Debug, Clone)]
pub struct DdimScheduler {
    num_train_timesteps: usize,
    alphas_cumprod: Vec<f32>,
    /// alpha_cumprod used past the last step: 1 (`set_alpha_to_one`) or `alphas_cumprod[0]`.
    final_alpha_cumprod: f32,
    prediction: Prediction,
    spacing: Spacing,
    steps_offset: usize,
    /// Clamp predicted x0 to `[-clip_sample_range, clip_sample_range]`.
    clip_sample: Option<f32>,
    /// DDIM's eta: 0 is deterministic DDIM, 1 is DDPM-like ancestral sampling.
    eta: f32,
    num_inference_steps: Option<usize>,
    timesteps: Vec<i64>,
    timesteps_f64: Vec<f64>,
}

impl DdimScheduler {
    pub fn new(config: &SchedulerConfig, eta: f64) -> Result<Self> {
        if !(eta >= 0.0 && eta.is_finite()) {
            bail!("eta must be a finite number >= 0, got {eta}");
        }
        let betas = betas(config)?;
        let alphas_cumprod = alphas_cumprod(&betas);
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        if config.thresholding {
            bail!("scheduler config: dynamic thresholding (`thresholding: true`) is not supported");
        }
        Ok(Self {
            num_train_timesteps: config.num_train_timesteps,
            alphas_cumprod,
            final_alpha_cumprod,
            prediction: Prediction::parse(&config.prediction_type).context("scheduler config")?,
            spacing: Spacing::of(config, Spacing::Leading)?,
            steps_offset: config.steps_offset,
            clip_sample: config
                .clip_sample
                .then_some(config.clip_sample_range as f32),
            eta: eta as f32,
            num_inference_steps: None,
            timesteps: Vec::new(),
            timesteps_f64: Vec::new(),
        })
    }

    pub fn eta(&self) -> f64 {
        self.eta as f64
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// The integer timesteps of the run (what diffusers' `scheduler.timesteps` holds).
    pub fn int_timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// `alphas_cumprod[t]` with Python's negative indexing (see the module docs).
    fn alpha_at(&self, t: i64) -> Result<f32> {
        let n = self.alphas_cumprod.len() as i64;
        let idx = if t < 0 { n + t } else { t };
        if idx < 0 || idx >= n {
            bail!(
                "timestep {t} is outside the scheduler's {n} training timesteps (check steps_offset)"
            );
        }
        Ok(self.alphas_cumprod[idx as usize])
    }

    fn compute_timesteps(&self, n: usize) -> Vec<i64> {
        let t = self.num_train_timesteps;
        match self.spacing {
            Spacing::Linspace => numpy_linspace(0.0, (t - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|x| round_half_even(x) as i64)
                .collect(),
            Spacing::Leading => {
                let ratio = t / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as i64)
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = t as f64 / n as f64;
                numpy_arange(t as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|x| round_half_even(x) as i64 - 1)
                    .collect()
            }
        }
    }
}

impl Scheduler for DdimScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            bail!("the number of inference steps must be at least 1");
        }
        if n > self.num_train_timesteps {
            bail!(
                "num_inference_steps {n} cannot be larger than the scheduler's num_train_timesteps {}",
                self.num_train_timesteps
            );
        }
        self.num_inference_steps = Some(n);
        self.timesteps = self.compute_timesteps(n);
        self.timesteps_f64 = self.timesteps.iter().map(|&t| t as f64).collect();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps_f64
    }

    fn needs_variance_noise(&self) -> bool {
        self.eta > 0.0
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        variance_noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let Some(n) = self.num_inference_steps else {
            bail!("DDIM: call set_timesteps before step");
        };
        if timestep.fract() != 0.0 || !timestep.is_finite() {
            bail!("DDIM: timestep {timestep} is not an integer");
        }
        let t = timestep as i64;
        let prev_t = t - (self.num_train_timesteps / n) as i64;

        let alpha_t = self.alpha_at(t)?;
        let alpha_prev = if prev_t >= 0 {
            self.alpha_at(prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        let beta_t = 1.0 - alpha_t;
        let (sqrt_alpha_t, sqrt_beta_t) = (alpha_t.sqrt(), beta_t.sqrt());

        let (x0, eps) = match self.prediction {
            Prediction::Epsilon => {
                let x0 = div_scalar(
                    &sample.sub(&mul_scalar(model_output, sqrt_beta_t)?)?,
                    sqrt_alpha_t,
                )?;
                (x0, model_output.clone())
            }
            Prediction::Sample => {
                let eps = div_scalar(
                    &sample.sub(&mul_scalar(model_output, sqrt_alpha_t)?)?,
                    sqrt_beta_t,
                )?;
                (model_output.clone(), eps)
            }
            Prediction::VPrediction => {
                let x0 = mul_scalar(sample, sqrt_alpha_t)?
                    .sub(&mul_scalar(model_output, sqrt_beta_t)?)?;
                let eps = mul_scalar(model_output, sqrt_alpha_t)?
                    .add(&mul_scalar(sample, sqrt_beta_t)?)?;
                (x0, eps)
            }
        };
        let x0 = match self.clip_sample {
            Some(r) => x0.clamp(-r, r)?,
            None => x0,
        };

        // sigma_t of the DDIM paper (Eq. 16), scaled by eta.
        let beta_prev = 1.0 - alpha_prev;
        let variance = (beta_prev / beta_t) * (1.0 - alpha_t / alpha_prev);
        let std_dev_t = self.eta * variance.sqrt();
        let direction = mul_scalar(&eps, (1.0 - alpha_prev - std_dev_t * std_dev_t).sqrt())?;
        let mut prev = mul_scalar(&x0, alpha_prev.sqrt())?.add(&direction)?;

        if self.eta > 0.0 {
            let noise = check_noise("DDIM with eta > 0", variance_noise, model_output)?;
            prev = prev.add(&mul_scalar(&noise.to_dtype(prev.dtype())?, std_dev_t)?)?;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn sched(json: &str) -> DdimScheduler {
        DdimScheduler::new(&SchedulerConfig::parse(json).unwrap(), 0.0).unwrap()
    }

    #[test]
    fn leading_spacing_with_offset() {
        let mut s = sched(r#"{"steps_offset": 1}"#);
        s.set_timesteps(4).unwrap();
        assert_eq!(s.int_timesteps(), &[751, 501, 251, 1]);
    }

    #[test]
    fn too_many_or_zero_steps_are_errors() {
        let mut s = sched("{}");
        let err = s.set_timesteps(1001).unwrap_err().to_string();
        assert!(err.contains("1001") && err.contains("1000"), "{err}");
        assert!(s.set_timesteps(0).is_err());
    }

    #[test]
    fn step_before_set_timesteps_is_an_error() {
        let mut s = sched("{}");
        let x = Tensor::zeros((1, 4, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(&x, 999.0, &x, None).is_err());
    }

    #[test]
    fn stochastic_step_requires_noise_of_the_right_shape() {
        let cfg = SchedulerConfig::parse("{}").unwrap();
        let mut s = DdimScheduler::new(&cfg, 0.5).unwrap();
        assert!(s.needs_variance_noise());
        s.set_timesteps(10).unwrap();
        let x = Tensor::ones((1, 4, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(&x, 900.0, &x, None).is_err());
        let bad = Tensor::ones((1, 4, 2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(s.step(&x, 900.0, &x, Some(&bad)).is_err());
        assert!(s.step(&x, 900.0, &x, Some(&x)).is_ok());
        assert!(DdimScheduler::new(&cfg, -1.0).is_err());
    }
}
