//! UniPC (Zhao et al. 2023), multistep predictor-corrector, exactly as diffusers'
//! `UniPCMultistepScheduler` (`bh1`/`bh2`, orders 1-3, x0 or noise prediction).
//!
//! Each step first corrects the current sample with the new model output (UniC, skipped at the
//! first step and at `disable_corrector` steps), then predicts the next one (UniP). The small
//! linear systems of orders above 2 are solved in f32 with partial pivoting, as LAPACK does.

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::dpm_solver::{multistep_schedule, multistep_timesteps, to_x0};
use super::sigmas::{alpha_sigma, current_index, lambda, sigma_alphas_cumprod};
use super::{mul_scalar, unsupported, Prediction, Scheduler, Spacing, StepOutput};
use crate::config::SchedulerConfig;

const CLASS: &str = "UniPCMultistepScheduler";

#[derive(Debug, Clone)]
pub struct UniPcMultistepScheduler {
    config: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    prediction: Prediction,
    spacing: Spacing,
    order: usize,
    bh1: bool,
    predict_x0: bool,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    /// The last `order` converted model outputs, oldest first.
    model_outputs: Vec<Tensor>,
    lower_order_nums: usize,
    last_sample: Option<Tensor>,
    this_order: usize,
    step_index: Option<usize>,
}

/// Solves `a x = b` (row-major `n x n`) by Gaussian elimination with partial pivoting, in f32.
fn solve(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Result<Vec<f32>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .expect("non-empty");
        if a[pivot][col] == 0.0 {
            bail!("{CLASS}: singular corrector system (repeated timesteps?)");
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col].clone();
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0f32; n];
    for row in (0..n).rev() {
        let s: f32 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Ok(x)
}

impl UniPcMultistepScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        unsupported(
            (1..=3).contains(&config.solver_order),
            CLASS,
            "solver_order",
            config.solver_order,
        )?;
        // diffusers maps DPM-Solver's solver types to bh2.
        let bh1 = match config.solver_type.as_deref().unwrap_or("bh2") {
            "bh1" => true,
            "bh2" | "midpoint" | "heun" | "logrho" => false,
            other => bail!(
                "{CLASS}: the scheduler config value {other:?} of `solver_type` is not supported"
            ),
        };
        unsupported(!config.thresholding, CLASS, "thresholding", true)?;
        unsupported(
            config.solver_p.is_none(),
            CLASS,
            "solver_p",
            &config.solver_p,
        )?;
        for (field, on) in [
            ("use_exponential_sigmas", config.use_exponential_sigmas),
            ("use_beta_sigmas", config.use_beta_sigmas),
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
            bh1,
            predict_x0: config.predict_x0,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            last_sample: None,
            this_order: 1,
            step_index: None,
        })
    }

    /// The converted model output: x0 (`predict_x0`) or epsilon.
    fn convert(&self, model_output: &Tensor, sample: &Tensor, i: usize) -> Result<Tensor> {
        if self.predict_x0 {
            return to_x0(self.prediction, model_output, sample, self.sigmas[i]);
        }
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i]);
        Ok(match self.prediction {
            Prediction::Epsilon => model_output.clone(),
            Prediction::Sample => {
                super::div_scalar(&sample.sub(&mul_scalar(model_output, alpha_t)?)?, sigma_t)?
            }
            Prediction::VPrediction => {
                mul_scalar(model_output, alpha_t)?.add(&mul_scalar(sample, sigma_t)?)?
            }
        })
    }

    /// The shared coefficients of UniP and UniC between sigma indices `s0` and `t`: `h`-powers
    /// `rks`, the differences `D1s` against the newest history entry, and `(h_phi_1, B_h, R, b)`.
    #[allow(clippy::type_complexity)]
    fn coefficients(
        &self,
        t: usize,
        s0: usize,
        order: usize,
        history: impl Fn(usize) -> usize,
    ) -> Result<(f32, f32, Vec<Vec<f32>>, Vec<f32>, Vec<Tensor>)> {
        let (lt, ls0) = (lambda(self.sigmas[t]), lambda(self.sigmas[s0]));
        let h = lt - ls0;
        let k = self.model_outputs.len();
        let m0 = &self.model_outputs[k - 1];
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for i in 1..order {
            let si = history(i);
            let mi = &self.model_outputs[k - 1 - i];
            let rk = (lambda(self.sigmas[si]) - ls0) / h;
            rks.push(rk);
            d1s.push(super::div_scalar(&mi.sub(m0)?, rk)?);
        }
        rks.push(1.0);
        let hh = if self.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1u64;
        let b_h = if self.bh1 { hh } else { hh.exp_m1() };
        let mut r = Vec::new();
        let mut b = Vec::new();
        for i in 1..=order {
            r.push(
                rks.iter()
                    .map(|x| x.powi(i as i32 - 1))
                    .collect::<Vec<f32>>(),
            );
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= i as u64 + 1;
            h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
        }
        Ok((h_phi_1, b_h, r, b, d1s))
    }

    /// `alpha_t / alpha_s0 * x` (or the sigma ratio for x0 prediction) minus the first-order term.
    fn base(&self, x: &Tensor, t: usize, s0: usize, h_phi_1: f32, m0: &Tensor) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[t]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[s0]);
        Ok(if self.predict_x0 {
            mul_scalar(x, sigma_t / sigma_s0)?.sub(&mul_scalar(m0, alpha_t * h_phi_1)?)?
        } else {
            mul_scalar(x, alpha_t / alpha_s0)?.sub(&mul_scalar(m0, sigma_t * h_phi_1)?)?
        })
    }

    fn scale_of(&self, t: usize, b_h: f32) -> f32 {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[t]);
        if self.predict_x0 {
            alpha_t * b_h
        } else {
            sigma_t * b_h
        }
    }

    fn predictor(&self, x: &Tensor, i: usize, order: usize) -> Result<Tensor> {
        let (h_phi_1, b_h, r, b, d1s) = self.coefficients(i + 1, i, order, |k| i - k)?;
        let m0 = self.model_outputs.last().expect("history");
        let base = self.base(x, i + 1, i, h_phi_1, m0)?;
        if d1s.is_empty() {
            return Ok(base);
        }
        let rhos = if order == 2 {
            vec![0.5]
        } else {
            let n = order - 1;
            let a = r[..n].iter().map(|row| row[..n].to_vec()).collect();
            solve(a, b[..n].to_vec())?
        };
        let pred_res = weighted(&rhos, &d1s)?;
        Ok(base.sub(&mul_scalar(&pred_res, self.scale_of(i + 1, b_h))?)?)
    }

    fn corrector(&self, model_t: &Tensor, x: &Tensor, i: usize, order: usize) -> Result<Tensor> {
        let (h_phi_1, b_h, r, b, d1s) = self.coefficients(i, i - 1, order, |k| i - (k + 1))?;
        let m0 = self.model_outputs.last().expect("history");
        let base = self.base(x, i, i - 1, h_phi_1, m0)?;
        let rhos = if order == 1 { vec![0.5] } else { solve(r, b)? };
        let d1_t = mul_scalar(&model_t.sub(m0)?, rhos[rhos.len() - 1])?;
        let corr = if d1s.is_empty() {
            d1_t
        } else {
            weighted(&rhos[..rhos.len() - 1], &d1s)?.add(&d1_t)?
        };
        Ok(base.sub(&mul_scalar(&corr, self.scale_of(i, b_h))?)?)
    }
}

/// `sum_k w[k] * t[k]` (diffusers' `einsum('k,bkc...->bc...')`).
fn weighted(w: &[f32], t: &[Tensor]) -> Result<Tensor> {
    let mut acc = mul_scalar(&t[0], w[0])?;
    for (wk, tk) in w.iter().zip(t).skip(1) {
        acc = acc.add(&mul_scalar(tk, *wk)?)?;
    }
    Ok(acc)
}

impl Scheduler for UniPcMultistepScheduler {
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            bail!("the number of inference steps must be at least 1");
        }
        // Unlike DPM-Solver, UniPC has no `lambda_min_clipped`: the grid spans all timesteps.
        let grid = multistep_timesteps(
            &self.config,
            self.spacing,
            n,
            self.config.num_train_timesteps,
        );
        let (timesteps, sigmas) =
            multistep_schedule(&self.config, CLASS, &self.alphas_cumprod, grid, true)?;
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.last_sample = None;
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
        let converted = self.convert(model_output, sample, i)?;
        let use_corrector = i > 0
            && !self.config.disable_corrector.contains(&(i - 1))
            && self.last_sample.is_some();
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector(&converted, last, i, self.this_order)?,
            _ => sample.clone(),
        };
        if self.model_outputs.len() == self.order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(converted.clone());
        let this_order = if self.config.lower_order_final {
            self.order.min(n - i)
        } else {
            self.order
        };
        self.this_order = this_order.min(self.lower_order_nums + 1);
        let prev = self.predictor(&sample, i, self.this_order)?;
        self.last_sample = Some(sample);
        if self.lower_order_nums < self.order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        let x0 = if self.predict_x0 {
            converted
        } else {
            to_x0(
                self.prediction,
                model_output,
                self.last_sample.as_ref().expect("set"),
                self.sigmas[i],
            )?
        };
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::solve;

    #[test]
    fn solves_a_pivoting_system() {
        let x = solve(vec![vec![0.0, 1.0], vec![2.0, 1.0]], vec![1.0, 5.0]).unwrap();
        assert!((x[0] - 2.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6);
        assert!(solve(vec![vec![1.0, 1.0], vec![1.0, 1.0]], vec![1.0, 2.0]).is_err());
    }
}
