//! Noise schedulers, one file per algorithm, all behind [`Scheduler`].
//!
//! The trait is shaped after diffusers' scheduler protocol so that DDIM, DPM-Solver++ and Euler fit
//! the same denoising loop: `step` takes `&mut self` (multistep solvers keep a history of model
//! outputs, Euler keeps a step index), timesteps are `f64` (Euler's are fractional), and randomness
//! never comes from inside a scheduler: a stochastic step asks for `variance_noise`, which the
//! pipeline draws from its seeded generator exactly where diffusers would.
//!
//! The helpers here rebuild diffusers' training noise schedule bit for bit: torch computes it in
//! f32 (with a fused multiply-add in `linspace` and a double accumulator in `cumprod`), and SD's
//! final denoising steps are sensitive to the last digits of `alphas_cumprod`.

pub mod ddim;
pub mod dpm_solver;
pub mod euler;
pub mod euler_ancestral;
pub mod pndm;
mod registry;
mod sigmas;
pub mod unipc;

pub use ddim::DdimScheduler;
pub use dpm_solver::DpmSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;
pub use euler_ancestral::EulerAncestralDiscreteScheduler;
pub use pndm::PndmScheduler;
pub use registry::{SchedulerKind, SchedulerSpec, SCHEDULER_NAMES};
pub use unipc::UniPcMultistepScheduler;

use crate::config::SchedulerConfig;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;

/// The result of one scheduler step.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The sample at the previous (less noisy) timestep: the next loop input.
    pub prev_sample: Tensor,
    /// The model's current estimate of the clean sample x0 (for previews and guidance).
    pub pred_original_sample: Tensor,
}

/// A diffusers-compatible sampler driven by the pipeline's denoising loop.
pub trait Scheduler {
    /// Chooses the `num_inference_steps` timesteps of a run and resets any per-run state.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// The timesteps of the run, in the order the loop visits them (empty before `set_timesteps`).
    fn timesteps(&self) -> &[f64];

    /// Standard deviation of the initial noise: initial latents are `randn * init_noise_sigma`
    /// (an f32 value, as diffusers' tensors hold it). 1 unless the scheduler works in sigma space.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// What `scale_model_input` divides by at `timestep`: 1 for DDIM, `sqrt(sigma^2 + 1)` (f32)
    /// for sigma-space schedulers such as Euler. The probe records the resulting input scale.
    fn model_input_divisor(&self, _timestep: f64) -> Result<f32> {
        Ok(1.0)
    }

    /// The UNet input for `sample` at `timestep` (see [`Self::model_input_divisor`]).
    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let d = self.model_input_divisor(timestep)?;
        if d == 1.0 {
            Ok(sample.clone())
        } else {
            div_scalar(sample, d)
        }
    }

    /// Whether `step` needs `variance_noise` (DDIM with eta > 0, ancestral and SDE samplers).
    fn needs_variance_noise(&self) -> bool {
        false
    }

    /// One denoising step from `sample` at `timestep` given the (guided) model output.
    /// `variance_noise` must have the shape of `model_output` when the step is stochastic.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        variance_noise: Option<&Tensor>,
    ) -> Result<StepOutput>;

    /// Model evaluations per timestep entry (diffusers' `order`; 1 for DDIM, Euler, DPM-Solver++).
    fn order(&self) -> usize {
        1
    }
}

/// What the UNet predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
    Sample,
}

impl Prediction {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            "sample" => Prediction::Sample,
            other => bail!("unsupported prediction_type {other:?}"),
        })
    }

    pub(crate) fn of(config: &SchedulerConfig) -> Result<Self> {
        Self::parse(&config.prediction_type).context("scheduler config")
    }
}

/// How inference timesteps are spread over the training timesteps (`timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

impl Spacing {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => bail!("unsupported timestep_spacing {other:?}"),
        })
    }

    /// The config's spacing, or the scheduler's own `default` when the file does not set it.
    pub(crate) fn of(config: &SchedulerConfig, default: Spacing) -> Result<Self> {
        match &config.timestep_spacing {
            Some(s) => Self::parse(s).context("scheduler config"),
            None => Ok(default),
        }
    }
}

/// Fails naming the field unless `ok` (a scheduler option semi does not implement is set).
pub(crate) fn unsupported(
    ok: bool,
    class: &str,
    field: &str,
    value: impl std::fmt::Debug,
) -> Result<()> {
    if !ok {
        bail!("{class}: the scheduler config value {value:?} of `{field}` is not supported");
    }
    Ok(())
}

/// `tensor * s` as torch multiplies by a 0-d f32 tensor (an exact elementwise product).
pub(crate) fn mul_scalar(t: &Tensor, s: f32) -> Result<Tensor> {
    let s = Tensor::new(s, t.device())?.to_dtype(t.dtype())?;
    Ok(t.broadcast_mul(&s)?)
}

pub(crate) fn div_scalar(t: &Tensor, s: f32) -> Result<Tensor> {
    let s = Tensor::new(s, t.device())?.to_dtype(t.dtype())?;
    Ok(t.broadcast_div(&s)?)
}

/// Checks that a stochastic step got noise of the model output's shape.
pub(crate) fn check_noise<'a>(
    class: &str,
    noise: Option<&'a Tensor>,
    model_output: &Tensor,
) -> Result<&'a Tensor> {
    let Some(noise) = noise else {
        bail!("{class} needs variance noise for each step");
    };
    if noise.dims() != model_output.dims() {
        bail!(
            "{class}: variance noise has shape {:?}, expected {:?}",
            noise.dims(),
            model_output.dims()
        );
    }
    Ok(noise)
}

/// `torch.linspace(start, end, n, dtype=float32)` on CPU, bit for bit: ATen computes
/// `start + step * i` for the first half and `end - step * (n - 1 - i)` for the second, each as a
/// single fused multiply-add.
pub(crate) fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// `torch.cumprod` of an f32 vector on CPU: a double accumulator, each output rounded to f32.
pub(crate) fn cumprod_f32(values: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform (`squaredcos_cap_v2`), computed in
/// double precision as Python does and stored as f32.
pub(crate) fn squaredcos_cap_v2(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1), in f32 like torch:
/// shifts and scales sqrt(alphas_cumprod) so that the last timestep has zero signal.
pub(crate) fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_bar: Vec<f32> = cumprod_f32(&alphas).iter().map(|a| a.sqrt()).collect();
    let first = sqrt_bar[0];
    let last = sqrt_bar[sqrt_bar.len() - 1];
    let scale = first / (first - last);
    for v in sqrt_bar.iter_mut() {
        *v -= last;
        *v *= scale;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

/// The training betas of a scheduler config (`trained_betas`, else `beta_schedule`), optionally
/// rescaled to zero terminal SNR, exactly as diffusers' DDPM-family schedulers build them.
pub fn betas(config: &SchedulerConfig) -> Result<Vec<f32>> {
    let n = config.num_train_timesteps;
    let betas = if let Some(trained) = &config.trained_betas {
        if trained.len() != n {
            bail!(
                "scheduler config: `trained_betas` has {} entries but `num_train_timesteps` is {n}",
                trained.len()
            );
        }
        trained.iter().map(|&b| b as f32).collect()
    } else {
        match config.beta_schedule.as_str() {
            "linear" => torch_linspace_f32(config.beta_start as f32, config.beta_end as f32, n),
            "scaled_linear" => torch_linspace_f32(
                config.beta_start.sqrt() as f32,
                config.beta_end.sqrt() as f32,
                n,
            )
            .into_iter()
            .map(|b| b * b)
            .collect(),
            "squaredcos_cap_v2" => squaredcos_cap_v2(n),
            other => {
                bail!("scheduler config: unsupported value {other:?} for field `beta_schedule`")
            }
        }
    };
    Ok(if config.rescale_betas_zero_snr {
        rescale_zero_terminal_snr(&betas)
    } else {
        betas
    })
}

/// `alphas_cumprod = cumprod(1 - betas)` in torch's f32 arithmetic.
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    cumprod_f32(&alphas)
}

/// `np.round` (round half to even) as diffusers uses it on timestep grids.
pub(crate) fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.arange(start, stop, step)` for floats, with numpy's length rule (`ceil((stop-start)/step)`)
/// and fill rule (`start + i * ((start + step) - start)`), so edge cases match diffusers exactly.
pub(crate) fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let delta = (start + step) - start;
    (0..len as usize)
        .map(|i| start + i as f64 * delta)
        .collect()
}

/// `np.linspace(start, stop, n)` (endpoint included): `i * step + start`, last entry exactly `stop`.
pub(crate) fn numpy_linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
            v[n - 1] = stop;
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_endpoints_and_symmetry() {
        let v = torch_linspace_f32(0.0001, 0.02, 1000);
        assert_eq!(v.len(), 1000);
        assert_eq!(v[0], 0.0001f32);
        assert_eq!(v[999], 0.02f32);
        assert_eq!(torch_linspace_f32(3.0, 5.0, 1), vec![3.0]);
    }

    #[test]
    fn numpy_arange_reproduces_the_extra_trailing_entry() {
        // np.arange(1000, 0, -1000/61) has 62 entries, the last about -5.7e-13: diffusers' trailing
        // spacing inherits this and so must we.
        let v = numpy_arange(1000.0, 0.0, -1000.0 / 61.0);
        assert_eq!(v.len(), 62);
        assert!(v[61].abs() < 1e-9);
        assert_eq!(
            numpy_arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
    }

    #[test]
    fn round_is_half_to_even() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(499.5), 500.0);
        assert_eq!(round_half_even(-0.4), -0.0);
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero_signal() {
        let cfg = SchedulerConfig::parse(r#"{"rescale_betas_zero_snr": true}"#).unwrap();
        let ac = alphas_cumprod(&betas(&cfg).unwrap());
        assert_eq!(*ac.last().unwrap(), 0.0);
        let plain = alphas_cumprod(&betas(&SchedulerConfig::parse("{}").unwrap()).unwrap());
        assert!((ac[0] - plain[0]).abs() < 1e-6);
    }

    #[test]
    fn trained_betas_length_is_checked() {
        let cfg =
            SchedulerConfig::parse(r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}"#)
                .unwrap();
        let err = betas(&cfg).unwrap_err().to_string();
        assert!(err.contains("trained_betas"), "{err}");
    }
}
