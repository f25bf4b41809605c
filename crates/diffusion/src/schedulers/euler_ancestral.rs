//! Euler ancestral, exactly as diffusers' `EulerAncestralDiscreteScheduler`: an Euler step to
//! `sigma_down`, then fresh noise of standard deviation `sigma_up`, with
//! `sigma_up^2 + sigma_down^2 = sigma_next^2`. The noise is the pipeline's `variance_noise`,
//! drawn from the run's generator after the initial latents, one draw per step, as diffusers
//! draws it.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::euler::{discrete_timesteps, sigma_x0};
use super::sigmas::{interp, sigma_alphas_cumprod, train_sigmas, SigmaSchedule};
use super::{
    check_noise, div_scalar, mul_scalar, unsupported, Prediction, Scheduler, Spacing, StepOutput,
};
use crate::config::SchedulerConfig;

const CLASS: &str = "EulerAncestralDiscreteScheduler";

#[derive(Debug, Clone)]
pub struct EulerAncestralDiscreteScheduler {
    alphas_cumprod: Vec<f32>,
    prediction: Prediction,
    config: SchedulerConfig,
    schedule: SigmaSchedule,
}

impl EulerAncestralDiscreteScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let prediction = Prediction::of(config)?;
        unsupported(
            prediction != Prediction::Sample,
            CLASS,
            "prediction_type",
            "sample",
        )?;
        Ok(Self {
            alphas_cumprod: sigma_alphas_cumprod(config)?,
            prediction,
            config: config.clone(),
            schedule: SigmaSchedule::new(CLASS, Spacing::of(config, Spacing::Linspace)?),
        })
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            bail!("the number of inference steps must be at least 1");
        }
        let timesteps = discrete_timesteps(&self.config, self.schedule.spacing, n);
        let train = train_sigmas(&self.alphas_cumprod);
        let sigmas = timesteps
            .iter()
            .map(|&t| interp(t, &train) as f32)
            .chain(std::iter::once(0.0))
            .collect();
        self.schedule.set(timesteps, sigmas);
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

    fn needs_variance_noise(&self) -> bool {
        true
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        variance_noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let noise = check_noise(CLASS, variance_noise, model_output)?;
        let i = self.schedule.index(timestep)?;
        let (from, to) = self.schedule.sigma_at(i)?;
        let dtype = model_output.dtype();
        let sample = sample.to_dtype(DType::F32)?;
        let model_output = model_output.to_dtype(DType::F32)?;
        let x0 = sigma_x0(self.prediction, &model_output, &sample, from)?;
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let down = (to * to - up * up).sqrt();
        let derivative = div_scalar(&sample.sub(&x0)?, from)?;
        let prev = sample.add(&mul_scalar(&derivative, down - from)?)?;
        let prev = prev.add(&mul_scalar(&noise.to_dtype(DType::F32)?, up)?)?;
        self.schedule.step_index = Some(i + 1);
        Ok(StepOutput {
            prev_sample: prev.to_dtype(dtype)?,
            pred_original_sample: x0,
        })
    }
}
