//! PNDM (Liu et al. 2022), exactly as diffusers' `PNDMScheduler`: the scheduler SD 1.x folders
//! name. With `skip_prk_steps` (SD's configs) it runs linear multistep (PLMS) steps only, warming
//! up with a repeated second timestep; otherwise 12 Runge-Kutta (PRK) steps come first.
//!
//! diffusers' PNDM returns no x0 estimate; semi's `pred_original_sample` is the DDIM-style
//! estimate from the combined noise prediction, for previews only.

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::{
    alphas_cumprod, betas, div_scalar, mul_scalar, numpy_arange, numpy_linspace, round_half_even,
    Prediction, Scheduler, Spacing, StepOutput,
};
use crate::config::SchedulerConfig;

const CLASS: &str = "PNDMScheduler";

#[derive(Debug, Clone)]
pub struct PndmScheduler {
    num_train_timesteps: usize,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    prediction: Prediction,
    spacing: Spacing,
    steps_offset: usize,
    skip_prk_steps: bool,
    num_inference_steps: usize,
    prk_timesteps: Vec<i64>,
    timesteps: Vec<f64>,
    /// Past noise predictions (PLMS history).
    ets: Vec<Tensor>,
    counter: usize,
    cur_model_output: Option<Tensor>,
    cur_sample: Option<Tensor>,
}

impl PndmScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let prediction = Prediction::of(config)?;
        if prediction == Prediction::Sample {
            bail!("{CLASS}: the scheduler config value \"sample\" of `prediction_type` is not supported");
        }
        let alphas_cumprod = alphas_cumprod(&betas(config)?);
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            num_train_timesteps: config.num_train_timesteps,
            alphas_cumprod,
            final_alpha_cumprod,
            prediction,
            spacing: Spacing::of(config, Spacing::Leading)?,
            steps_offset: config.steps_offset,
            skip_prk_steps: config.skip_prk_steps,
            num_inference_steps: 0,
            prk_timesteps: Vec::new(),
            timesteps: Vec::new(),
            ets: Vec::new(),
            counter: 0,
            cur_model_output: None,
            cur_sample: None,
        })
    }

    fn alpha(&self, t: i64) -> Result<f32> {
        if t < 0 || t as usize >= self.alphas_cumprod.len() {
            bail!(
                "{CLASS}: timestep {t} is outside the {} training timesteps",
                self.alphas_cumprod.len()
            );
        }
        Ok(self.alphas_cumprod[t as usize])
    }

    /// `(prev_sample, x0 estimate)` from `sample` at `t` to `prev_t` with the combined output.
    fn prev_sample(
        &self,
        sample: &Tensor,
        t: i64,
        prev_t: i64,
        output: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let a_t = self.alpha(t)?;
        let a_prev = if prev_t >= 0 {
            self.alpha(prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let eps = match self.prediction {
            Prediction::VPrediction => {
                mul_scalar(output, a_t.sqrt())?.add(&mul_scalar(sample, b_t.sqrt())?)?
            }
            _ => output.clone(),
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let prev = mul_scalar(sample, sample_coeff)?
            .sub(&div_scalar(&mul_scalar(&eps, a_prev - a_t)?, denom)?)?;
        let x0 = div_scalar(&sample.sub(&mul_scalar(&eps, b_t.sqrt())?)?, a_t.sqrt())?;
        Ok((prev, x0))
    }

    fn step_prk(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
    ) -> Result<StepOutput> {
        let half = (self.num_train_timesteps / self.num_inference_steps / 2) as i64;
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { half };
        let prev_t = timestep - diff_to_prev;
        let t = self.prk_timesteps[self.counter / 4 * 4];
        let add = |acc: &Option<Tensor>, x: Tensor| -> Result<Tensor> {
            Ok(match acc {
                Some(a) => a.add(&x)?,
                None => x,
            })
        };
        let output = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(add(
                    &self.cur_model_output,
                    mul_scalar(model_output, (1.0f64 / 6.0) as f32)?,
                )?);
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output.clone()
            }
            1 | 2 => {
                self.cur_model_output = Some(add(
                    &self.cur_model_output,
                    mul_scalar(model_output, (1.0f64 / 3.0) as f32)?,
                )?);
                model_output.clone()
            }
            _ => {
                let out = add(
                    &self.cur_model_output,
                    mul_scalar(model_output, (1.0f64 / 6.0) as f32)?,
                )?;
                self.cur_model_output = None;
                out
            }
        };
        let cur = self.cur_sample.clone().unwrap_or_else(|| sample.clone());
        let (prev, x0) = self.prev_sample(&cur, t, prev_t, &output)?;
        self.counter += 1;
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn step_plms(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
    ) -> Result<StepOutput> {
        let ratio = (self.num_train_timesteps / self.num_inference_steps) as i64;
        let (mut t, mut prev_t) = (timestep, timestep - ratio);
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(model_output.clone());
        } else {
            prev_t = timestep;
            t = timestep + ratio;
        }
        let e = self.ets.clone();
        let k = e.len();
        let mut sample = sample.clone();
        let output = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.clone());
            model_output.clone()
        } else if k == 1 && self.counter == 1 {
            let out = div_scalar(&model_output.add(&e[0])?, 2.0)?;
            sample = self.cur_sample.take().expect("set at the first step");
            out
        } else if k == 2 {
            div_scalar(&e[1].affine(3.0, 0.0)?.sub(&e[0])?, 2.0)?
        } else if k == 3 {
            div_scalar(
                &e[2]
                    .affine(23.0, 0.0)?
                    .sub(&e[1].affine(16.0, 0.0)?)?
                    .add(&e[0].affine(5.0, 0.0)?)?,
                12.0,
            )?
        } else {
            let sum = e[k - 1]
                .affine(55.0, 0.0)?
                .sub(&e[k - 2].affine(59.0, 0.0)?)?
                .add(&e[k - 3].affine(37.0, 0.0)?)?
                .sub(&e[k - 4].affine(9.0, 0.0)?)?;
            mul_scalar(&sum, (1.0f64 / 24.0) as f32)?
        };
        let (prev, x0) = self.prev_sample(&sample, t, prev_t, &output)?;
        self.counter += 1;
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}

impl Scheduler for PndmScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let t = self.num_train_timesteps;
        if n == 0 || n > t {
            bail!("{CLASS}: the number of inference steps must be between 1 and {t}, got {n}");
        }
        self.num_inference_steps = n;
        // Ascending, as diffusers' `_timesteps`.
        let base: Vec<i64> = match self.spacing {
            Spacing::Linspace => numpy_linspace(0.0, (t - 1) as f64, n)
                .into_iter()
                .map(|x| round_half_even(x) as i64)
                .collect(),
            Spacing::Leading => (0..n)
                .map(|i| (i * (t / n) + self.steps_offset) as i64)
                .collect(),
            Spacing::Trailing => {
                let mut v: Vec<i64> = numpy_arange(t as f64, 0.0, -(t as f64 / n as f64))
                    .into_iter()
                    .map(|x| round_half_even(x) as i64 - 1)
                    .collect();
                v.reverse();
                v
            }
        };
        let (prk, plms): (Vec<i64>, Vec<i64>) = if self.skip_prk_steps {
            let m = base.len();
            let mut plms: Vec<i64> = base[..m - 1].to_vec();
            if m >= 2 {
                plms.push(base[m - 2]);
            }
            plms.push(base[m - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            if base.len() < 4 {
                bail!("{CLASS}: Runge-Kutta warm-up (skip_prk_steps false) needs at least 4 steps");
            }
            let half = (t / n / 2) as i64;
            let last4 = &base[base.len() - 4..];
            let rep: Vec<i64> = last4.iter().flat_map(|&x| [x, x + half]).collect();
            let rep2: Vec<i64> = rep[..rep.len() - 1].iter().flat_map(|&x| [x, x]).collect();
            let mut prk = rep2[1..rep2.len() - 1].to_vec();
            prk.reverse();
            let mut plms = base[..base.len() - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        self.timesteps = prk.iter().chain(&plms).map(|&x| x as f64).collect();
        self.prk_timesteps = prk;
        self.ets.clear();
        self.counter = 0;
        self.cur_model_output = None;
        self.cur_sample = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn order(&self) -> usize {
        1
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _variance_noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        if self.num_inference_steps == 0 {
            bail!("{CLASS}: call set_timesteps before step");
        }
        if timestep.fract() != 0.0 || !timestep.is_finite() {
            bail!("{CLASS}: timestep {timestep} is not an integer");
        }
        let t = timestep as i64;
        if self.counter < self.prk_timesteps.len() && !self.skip_prk_steps {
            self.step_prk(model_output, t, sample)
        } else {
            self.step_plms(model_output, t, sample)
        }
    }
}
