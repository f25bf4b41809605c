//! What diffusers' sigma-space schedulers (Euler, Euler ancestral, DPM-Solver, UniPC) share: the
//! training sigmas, numpy's `interp`, the Karras schedule, `_sigma_to_t`, and the step-index
//! rule. Each helper keeps the dtypes numpy and torch use there (f32 tensors, f64 numpy
//! arithmetic), so timesteps and sigmas agree with diffusers to the last bits or nearly.

use anyhow::{bail, Result};

use super::{alphas_cumprod, betas};
use crate::config::SchedulerConfig;

/// `alphas_cumprod` as the sigma-space schedulers hold it: with zero-terminal-SNR rescaling the
/// last entry is set to 2^-24, so that its sigma is finite.
pub(crate) fn sigma_alphas_cumprod(config: &SchedulerConfig) -> Result<Vec<f32>> {
    let mut ac = alphas_cumprod(&betas(config)?);
    if config.rescale_betas_zero_snr {
        if let Some(last) = ac.last_mut() {
            *last = 2f32.powi(-24);
        }
    }
    Ok(ac)
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in f32, ascending with the timestep.
pub(crate) fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod
        .iter()
        .map(|&a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// `np.interp(x, np.arange(len(fp)), fp)` in f64, as numpy computes it.
pub(crate) fn interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    let (y0, y1) = (fp[j] as f64, fp[j + 1] as f64);
    let slope = y1 - y0; // the grid step is 1
    slope * (x - j as f64) + y0
}

/// Karras et al. (2022) sigmas with rho = 7, from `sigma_max` down to `sigma_min`, in f64.
pub(crate) fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    super::numpy_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep of `sigma`, by linear
/// interpolation in log-sigma. `log_sigmas` is numpy's f32 `np.log(sigmas)`; the weight's
/// denominator is an f32 difference, as numpy computes it.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let below = log_sigmas
        .iter()
        .filter(|&&l| log_sigma - l as f64 >= 0.0)
        .count();
    let low_idx = below.saturating_sub(1).min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// `np.log` of the training sigmas, in f32.
pub(crate) fn log_sigmas(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|s| s.ln()).collect()
}

/// `(alpha_t, sigma_t)` of a sigma, in f32: `1 / sqrt(sigma^2 + 1)` and `sigma * alpha_t`.
pub(crate) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// `log(alpha_t) - log(sigma_t)` of a sigma (infinite at sigma 0).
pub(crate) fn lambda(sigma: f32) -> f32 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

/// How a scheduler finds the index of the first timestep it is given (diffusers'
/// `index_for_timestep`): the second match when the timestep occurs twice (so that a run that
/// starts mid-schedule does not skip a sigma), else the only one. `missing_is_last`: a timestep
/// not in the schedule means the last index (DPM-Solver, UniPC) instead of an error (Euler).
pub(crate) fn index_for_timestep(
    timesteps: &[f64],
    t: f64,
    missing_is_last: bool,
) -> Result<usize> {
    let matches: Vec<usize> = (0..timesteps.len())
        .filter(|&i| timesteps[i] == t)
        .collect();
    match matches.len() {
        0 if missing_is_last && !timesteps.is_empty() => Ok(timesteps.len() - 1),
        0 => bail!("timestep {t} is not in the scheduler's schedule (call set_timesteps first)"),
        1 => Ok(matches[0]),
        _ => Ok(matches[1]),
    }
}

/// The schedule of a discrete sigma scheduler (Euler, Euler ancestral): timesteps, their sigmas
/// plus the final one, and the step counter diffusers keeps.
#[derive(Debug, Clone)]
pub(crate) struct SigmaSchedule {
    pub class: &'static str,
    pub spacing: super::Spacing,
    pub timesteps: Vec<f64>,
    /// One more than the timesteps: the final sigma last.
    pub sigmas: Vec<f32>,
    pub step_index: Option<usize>,
}

impl SigmaSchedule {
    pub fn new(class: &'static str, spacing: super::Spacing) -> Self {
        SigmaSchedule {
            class,
            spacing,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            step_index: None,
        }
    }

    /// A fresh run over `timesteps` and `sigmas` (one longer).
    pub fn set(&mut self, timesteps: Vec<f64>, sigmas: Vec<f32>) {
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.step_index = None;
    }

    /// The current step: the counter, or the index of the first timestep given.
    pub fn index(&self, timestep: f64) -> Result<usize> {
        current_index(
            self.step_index,
            &self.timesteps,
            timestep,
            false,
            self.class,
        )
    }

    /// `(sigma, next sigma)` at step `i`.
    pub fn sigma_at(&self, i: usize) -> Result<(f32, f32)> {
        if i + 1 >= self.sigmas.len() {
            bail!(
                "{}: more steps than the {} timesteps set",
                self.class,
                self.timesteps.len()
            );
        }
        Ok((self.sigmas[i], self.sigmas[i + 1]))
    }

    /// The largest sigma, or `sqrt(max^2 + 1)` for leading spacing (diffusers' rule).
    pub fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().copied().fold(0.0f32, f32::max);
        match self.spacing {
            super::Spacing::Linspace | super::Spacing::Trailing => max as f64,
            super::Spacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }

    /// `sqrt(sigma^2 + 1)` at the step of `timestep`.
    pub fn input_divisor(&self, timestep: f64) -> Result<f32> {
        let (sigma, _) = self.sigma_at(self.index(timestep)?)?;
        Ok((sigma * sigma + 1.0).sqrt())
    }
}

/// The step a scheduler is at: its counter once it has stepped, else the index of the first
/// timestep it is given ([`index_for_timestep`]); past the last timestep is an error.
pub(crate) fn current_index(
    step_index: Option<usize>,
    timesteps: &[f64],
    timestep: f64,
    missing_is_last: bool,
    class: &str,
) -> Result<usize> {
    if timesteps.is_empty() {
        bail!("{class}: call set_timesteps before step");
    }
    let i = match step_index {
        Some(i) => i,
        None => index_for_timestep(timesteps, timestep, missing_is_last)?,
    };
    if i >= timesteps.len() {
        bail!(
            "{class}: more steps than the {} timesteps set",
            timesteps.len()
        );
    }
    Ok(i)
}

/// Sigmas past the last step (`final_sigmas_type`): 0, or the smallest training sigma.
pub(crate) fn final_sigma(kind: &str, class: &str, alphas_cumprod: &[f32]) -> Result<f64> {
    match kind {
        "zero" => Ok(0.0),
        "sigma_min" => {
            let a = alphas_cumprod[0];
            Ok(((1.0 - a) / a).sqrt() as f64)
        }
        other => bail!(
            "{class}: the scheduler config value {other:?} of `final_sigmas_type` is not supported"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_is_exact_on_grid_points_and_linear_between() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(interp(0.0, &fp), 1.0);
        assert_eq!(interp(1.0, &fp), 3.0);
        assert_eq!(interp(1.5, &fp), 5.0);
        assert_eq!(interp(2.5, &fp), 7.0);
        assert_eq!(interp(-1.0, &fp), 1.0);
    }

    #[test]
    fn sigma_to_t_inverts_interpolation() {
        let sigmas: Vec<f32> = (1..=10).map(|i| i as f32).collect();
        let logs = log_sigmas(&sigmas);
        assert!((sigma_to_t(1.0, &logs) - 0.0).abs() < 1e-9);
        assert!((sigma_to_t(10.0, &logs) - 9.0).abs() < 1e-6);
        assert!((sigma_to_t(100.0, &logs) - 9.0).abs() < 1e-9);
        assert_eq!(sigma_to_t(0.0, &logs), 0.0);
    }

    #[test]
    fn the_second_of_two_matches_is_taken() {
        let ts = [9.0, 5.0, 5.0, 1.0];
        assert_eq!(index_for_timestep(&ts, 5.0, false).unwrap(), 2);
        assert_eq!(index_for_timestep(&ts, 9.0, false).unwrap(), 0);
        assert!(index_for_timestep(&ts, 3.0, false).is_err());
        assert_eq!(index_for_timestep(&ts, 3.0, true).unwrap(), 3);
    }
}
