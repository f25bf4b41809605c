//! DPM-Solver++ (Lu et al. 2022), multistep, orders 1 and 2, exactly as diffusers'
//! `DPMSolverMultistepScheduler` with `algorithm_type: "dpmsolver++"`: the 20-step sampler SD
//! users switch to (`dpm++2m`, with Karras sigmas `dpm++2m-karras`).
//!
//! The model output is first converted to an x0 prediction; a second-order step combines it with
//! the previous step's (midpoint or Heun form). With fewer than 15 steps the last steps fall back
//! to first order (`lower_order_final`), and a final sigma of 0 always ends with a first-order
//! step, as diffusers does. Coefficients are f32, computed in diffusers' order.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::sigmas::{
    alpha_sigma, current_index, final_sigma, interp, karras, lambda, log_sigmas,
    sigma_alphas_cumprod, sigma_to_t, train_sigmas,
};
use super::{
    div_scalar, mul_scalar, numpy_arange, numpy_linspace, round_half_even, unsupported, Prediction,
    Scheduler, Spacing, StepOutput,
};
use crate::config::SchedulerConfig;

const CLASS: &str = "DPMSolverMultistepScheduler";

/// The integer timestep grid of the multistep solvers (DPM-Solver, UniPC): `n + 1` points over
/// `[0, last - 1]` without the final one (`linspace`, `leading`), or `trailing` from `last`.
pub(crate) fn multistep_timesteps(
    config: &SchedulerConfig,
    spacing: Spacing,
    n: usize,
    last: usize,
) -> Vec<f64> {
    match spacing {
        Spacing::Linspace => {
            let mut v: Vec<f64> = numpy_linspace(0.0, last as f64 - 1.0, n + 1)
                .into_iter()
                .map(round_half_even)
                .collect();
            v.reverse();
            v.truncate(n);
            v
        }
        Spacing::Leading => {
            let ratio = last / (n + 1);
            (1..=n)
                .rev()
                .map(|i| (i * ratio + config.steps_offset) as f64)
                .collect()
        }
        Spacing::Trailing => {
            let ratio = config.num_train_timesteps as f64 / n as f64;
            numpy_arange(last as f64, 0.0, -ratio)
                .into_iter()
                .map(|x| round_half_even(x) - 1.0)
                .collect()
        }
    }
}

/// The sigmas and timesteps of a multistep solver: the grid's interpolated sigmas, or Karras
/// sigmas mapped back to (rounded) timesteps, then the final sigma.
pub(crate) fn multistep_schedule(
    config: &SchedulerConfig,
    class: &str,
    alphas_cumprod: &[f32],
    timesteps: Vec<f64>,
    karras_rounds: bool,
) -> Result<(Vec<f64>, Vec<f32>)> {
    let n = timesteps.len();
    let train = train_sigmas(alphas_cumprod);
    let (timesteps, mut sigmas) = if config.use_karras_sigmas {
        let logs = log_sigmas(&train);
        let sigmas = karras(train[0] as f64, train[train.len() - 1] as f64, n);
        let ts = sigmas
            .iter()
            .map(|&s| {
                let t = sigma_to_t(s, &logs);
                if karras_rounds {
                    round_half_even(t)
                } else {
                    t.trunc()
                }
            })
            .collect();
        (ts, sigmas)
    } else {
        let sigmas = timesteps.iter().map(|&t| interp(t, &train)).collect();
        (timesteps, sigmas)
    };
    sigmas.push(final_sigma(
        &config.final_sigmas_type,
        class,
        alphas_cumprod,
    )?);
    Ok((timesteps, sigmas.into_iter().map(|s| s as f32).collect()))
}

/// `searchsorted(flip(lambda_t), lambda_min_clipped)`: training timesteps cut off by
/// `lambda_min_clipped` (none by default).
pub(crate) fn last_timestep(config: &SchedulerConfig, alphas_cumprod: &[f32]) -> usize {
    let mut lambdas: Vec<f32> = alphas_cumprod
        .iter()
        .map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln())
        .collect();
    lambdas.reverse();
    let clipped = lambdas
        .iter()
        .filter(|&&l| (l as f64) < config.lambda_min_clipped)
        .count();
    config.num_train_timesteps - clipped
}

/// The x0 prediction of a model output at `sigma` (diffusers' `convert_model_output`).
pub(crate) fn to_x0(
    prediction: Prediction,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Result<Tensor> {
    let (alpha_t, sigma_t) = alpha_sigma(sigma);
    Ok(match prediction {
        Prediction::Epsilon => {
            div_scalar(&sample.sub(&mul_scalar(model_output, sigma_t)?)?, alpha_t)?
        }
        Prediction::Sample => model_output.clone(),
        Prediction::VPrediction => {
            mul_scalar(sample, alpha_t)?.sub(&mul_scalar(model_output, sigma_t)?)?
        }
    })
}

#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    config: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    prediction: Prediction,
    spacing: Spacing,
    order: usize,
    heun: bool,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    /// The last `order` x0 predictions, oldest first.
    model_outputs: Vec<Tensor>,
    lower_order_nums: usize,
    step_index: Option<usize>,
}

impl DpmSolverMultistepScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        unsupported(
            config.algorithm_type == "dpmsolver++",
            CLASS,
            "algorithm_type",
            &config.algorithm_type,
        )?;
        unsupported(
            (1..=2).contains(&config.solver_order),
            CLASS,
            "solver_order",
            config.solver_order,
        )?;
        let solver_type = config.solver_type.as_deref().unwrap_or("midpoint");
        // diffusers maps UniPC's and DEIS's solver types to midpoint.
        let heun = match solver_type {
            "heun" => true,
            "midpoint" | "logrho" | "bh1" | "bh2" => false,
            other => bail!(
                "{CLASS}: the scheduler config value {other:?} of `solver_type` is not supported"
            ),
        };
        unsupported(!config.thresholding, CLASS, "thresholding", true)?;
        unsupported(
            config.variance_type.is_none(),
            CLASS,
            "variance_type",
            &config.variance_type,
        )?;
        for (field, on) in [
            ("use_exponential_sigmas", config.use_exponential_sigmas),
            ("use_beta_sigmas", config.use_beta_sigmas),
            ("use_lu_lambdas", config.use_lu_lambdas),
            ("use_flow_sigmas", config.use_flow_sigmas),
            ("use_dynamic_shifting", config.use_dynamic_shifting),
        ] {
            unsupported(!on, CLASS, field, on)?;
        }
        Ok(Self {
            config: config.clone(),
            alphas_cumprod: sigma_alphas_cumprod(config)?,
            prediction: Prediction::of(config)?,
            spacing: Spacing::of(config, Spacing::Linspace)?,
            order: config.solver_order,
            heun,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            step_index: None,
        })
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// `x_t` from `sample` at sigma `s` with the x0 prediction `m` (first order).
    fn first_order(&self, m: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (_, sigma_s) = alpha_sigma(self.sigmas[i]);
        let h = lambda(self.sigmas[i + 1]) - lambda(self.sigmas[i]);
        Ok(mul_scalar(sample, sigma_t / sigma_s)?
            .sub(&mul_scalar(m, alpha_t * ((-h).exp() - 1.0))?)?)
    }

    fn second_order(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (_, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (lt, ls0, ls1) = (
            lambda(self.sigmas[i + 1]),
            lambda(self.sigmas[i]),
            lambda(self.sigmas[i - 1]),
        );
        let k = self.model_outputs.len();
        let (m0, m1) = (&self.model_outputs[k - 1], &self.model_outputs[k - 2]);
        let (h, h0) = (lt - ls0, ls0 - ls1);
        let r0 = h0 / h;
        let d1 = mul_scalar(&m0.sub(m1)?, 1.0 / r0)?;
        let e = (-h).exp() - 1.0;
        let base = mul_scalar(sample, sigma_t / sigma_s0)?.sub(&mul_scalar(m0, alpha_t * e)?)?;
        Ok(if self.heun {
            base.add(&mul_scalar(&d1, alpha_t * (e / h + 1.0))?)?
        } else {
            base.sub(&mul_scalar(&d1, 0.5 * (alpha_t * e))?)?
        })
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            bail!("the number of inference steps must be at least 1");
        }
        let last = last_timestep(&self.config, &self.alphas_cumprod);
        let grid = multistep_timesteps(&self.config, self.spacing, n, last);
        // diffusers rounds Karras timesteps except for the cosine schedule (then it truncates
        // them to int64).
        let rounds = self.config.beta_schedule != "squaredcos_cap_v2";
        let (timesteps, sigmas) =
            multistep_schedule(&self.config, CLASS, &self.alphas_cumprod, grid, rounds)?;
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.step_index = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _variance_noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let i = current_index(self.step_index, &self.timesteps, timestep, true, CLASS)?;
        let n = self.timesteps.len();
        let lower_final = i == n - 1
            && (self.config.euler_at_final
                || (self.config.lower_order_final && n < 15)
                || self.config.final_sigmas_type == "zero");
        let x0 = to_x0(self.prediction, model_output, sample, self.sigmas[i])?;
        if self.model_outputs.len() == self.order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(x0.clone());
        let dtype = model_output.dtype();
        let sample = sample.to_dtype(DType::F32)?;
        let prev = if self.order == 1 || self.lower_order_nums < 1 || lower_final {
            self.first_order(&x0.to_dtype(DType::F32)?, &sample, i)?
        } else {
            self.second_order(&sample, i)?
        };
        if self.lower_order_nums < self.order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        Ok(StepOutput {
            prev_sample: prev.to_dtype(dtype)?,
            pred_original_sample: x0,
        })
    }
}
