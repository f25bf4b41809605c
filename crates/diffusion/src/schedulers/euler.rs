//! Euler (Karras et al. 2022, Algorithm 2 without churn), exactly as diffusers'
//! `EulerDiscreteScheduler`: SDXL's shipped scheduler.
//!
//! The sample lives in sigma space: initial noise is scaled by `init_noise_sigma` (the largest
//! sigma), the UNet input by `1 / sqrt(sigma^2 + 1)`, and a step moves along the ODE derivative
//! `(x - x0) / sigma` to the next sigma. Timesteps may be fractional (Karras sigmas map back to
//! fractional training timesteps); they are the f32 values diffusers hands the UNet.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::sigmas::{
    final_sigma, interp, karras, log_sigmas, sigma_alphas_cumprod, sigma_to_t, train_sigmas,
    SigmaSchedule,
};
use super::{
    div_scalar, mul_scalar, numpy_arange, numpy_linspace, round_half_even, unsupported, Prediction,
    Scheduler, Spacing, StepOutput,
};
use crate::config::SchedulerConfig;

const CLASS: &str = "EulerDiscreteScheduler";

/// The timestep grid of diffusers' discrete sigma schedulers (Euler, Euler ancestral), as f32
/// values: `linspace` over `[0, T-1]`, `leading` multiples of `T // n` plus the offset, or
/// `trailing` from `T` down in steps of `T / n`, minus one.
pub(crate) fn discrete_timesteps(config: &SchedulerConfig, spacing: Spacing, n: usize) -> Vec<f64> {
    let t = config.num_train_timesteps;
    let f32_values = |v: Vec<f64>| v.into_iter().map(|x| x as f32 as f64).collect();
    match spacing {
        Spacing::Linspace => {
            let mut v = numpy_linspace(0.0, (t - 1) as f64, n);
            v.reverse();
            f32_values(v)
        }
        Spacing::Leading => {
            let ratio = t / n;
            (0..n)
                .rev()
                .map(|i| ((i * ratio) as f32 + config.steps_offset as f32) as f64)
                .collect()
        }
        Spacing::Trailing => {
            let ratio = t as f64 / n as f64;
            numpy_arange(t as f64, 0.0, -ratio)
                .into_iter()
                .map(|x| (round_half_even(x) as f32 - 1.0) as f64)
                .collect()
        }
    }
}

#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    alphas_cumprod: Vec<f32>,
    prediction: Prediction,
    config: SchedulerConfig,
    /// The final sigma is 0, or the smallest training sigma (`final_sigmas_type`).
    schedule: SigmaSchedule,
}

impl EulerDiscreteScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        unsupported(!config.thresholding, CLASS, "thresholding", true)?;
        unsupported(
            config.interpolation_type == "linear",
            CLASS,
            "interpolation_type",
            &config.interpolation_type,
        )?;
        for (field, on) in [
            ("use_exponential_sigmas", config.use_exponential_sigmas),
            ("use_beta_sigmas", config.use_beta_sigmas),
        ] {
            unsupported(!on, CLASS, field, on)?;
        }
        unsupported(
            config.timestep_type == "discrete",
            CLASS,
            "timestep_type",
            &config.timestep_type,
        )?;
        let prediction = Prediction::of(config)?;
        Ok(Self {
            alphas_cumprod: sigma_alphas_cumprod(config)?,
            prediction,
            config: config.clone(),
            schedule: SigmaSchedule::new(CLASS, Spacing::of(config, Spacing::Linspace)?),
        })
    }

    /// The sigmas of the run (one per timestep, then the final one).
    pub fn sigmas(&self) -> &[f32] {
        &self.schedule.sigmas
    }
}

/// `x0` of a sigma-space step: `x - sigma * eps`, v-prediction's
/// `v * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1)`, or the output itself.
pub(crate) fn sigma_x0(
    prediction: Prediction,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Result<Tensor> {
    Ok(match prediction {
        Prediction::Epsilon => sample.sub(&mul_scalar(model_output, sigma)?)?,
        Prediction::VPrediction => {
            let s2 = sigma * sigma + 1.0;
            mul_scalar(model_output, -sigma / s2.sqrt())?.add(&div_scalar(sample, s2)?)?
        }
        Prediction::Sample => model_output.clone(),
    })
}

impl Scheduler for EulerDiscreteScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            bail!("the number of inference steps must be at least 1");
        }
        let cfg = &self.config;
        let timesteps = discrete_timesteps(cfg, self.schedule.spacing, n);
        let train = train_sigmas(&self.alphas_cumprod);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp(t, &train)).collect();
        let timesteps = if cfg.use_karras_sigmas {
            let logs = log_sigmas(&train);
            let lo = cfg.sigma_min.unwrap_or(*sigmas.last().expect("n >= 1"));
            let hi = cfg.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras(lo, hi, n);
            sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &logs) as f32 as f64)
                .collect()
        } else {
            timesteps
        };
        sigmas.push(final_sigma(
            &cfg.final_sigmas_type,
            CLASS,
            &self.alphas_cumprod,
        )?);
        self.schedule
            .set(timesteps, sigmas.into_iter().map(|s| s as f32).collect());
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.schedule.init_noise_sigma()
    }

    fn model_input_divisor(&self, timestep: f64) -> Result<f32> {
        self.schedule.input_divisor(timestep)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _variance_noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let i = self.schedule.index(timestep)?;
        let (sigma, next) = self.schedule.sigma_at(i)?;
        let dtype = model_output.dtype();
        let sample = sample.to_dtype(DType::F32)?;
        let model_output = model_output.to_dtype(DType::F32)?;
        let x0 = sigma_x0(self.prediction, &model_output, &sample, sigma)?;
        let derivative = div_scalar(&sample.sub(&x0)?, sigma)?;
        let prev = sample.add(&mul_scalar(&derivative, next - sigma)?)?;
        self.schedule.step_index = Some(i + 1);
        Ok(StepOutput {
            prev_sample: prev.to_dtype(dtype)?,
            pred_original_sample: x0,
        })
    }
}
