//! The noise level sigma_t that Paint's strength depends on.

use anyhow::{bail, Result};

/// sigma as a function of the (possibly fractional) timestep.
pub struct NoiseLevels {
    sigma: Box<dyn Fn(f64) -> f64 + Send + Sync>,
}

impl std::fmt::Debug for NoiseLevels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoiseLevels")
    }
}

impl NoiseLevels {
    /// `sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)` from the training schedule's
    /// `alphas_cumprod` (one entry per training timestep), e.g.
    /// `schedulers::alphas_cumprod(&schedulers::betas(&scheduler_config)?)` of semi-diffusion,
    /// so the beta schedules live in one place. Between integer timesteps sigma is interpolated
    /// linearly, outside `[0, T-1]` it is clamped (both as diffusers' LMS scheduler, whose
    /// sigmas the reference Paint implementation uses).
    pub fn from_alphas_cumprod(alphas_cumprod: &[f32]) -> Result<Self> {
        if alphas_cumprod.is_empty() {
            bail!("noise levels: alphas_cumprod is empty");
        }
        let mut sigmas = Vec::with_capacity(alphas_cumprod.len());
        for (t, &a) in alphas_cumprod.iter().enumerate() {
            let a = a as f64;
            if !(a > 0.0 && a <= 1.0) {
                bail!(
                    "noise levels: alphas_cumprod[{t}] = {a} is outside (0, 1]; sigma would not be \
                     finite (a zero-terminal-SNR schedule cannot drive Paint)"
                );
            }
            sigmas.push(((1.0 - a) / a).sqrt());
        }
        let last = (sigmas.len() - 1) as f64;
        Ok(Self::from_fn(move |t| {
            let t = t.clamp(0.0, last);
            let lo = t.floor();
            let frac = t - lo;
            let lo = lo as usize;
            let hi = (lo + 1).min(sigmas.len() - 1);
            sigmas[lo] + frac * (sigmas[hi] - sigmas[lo])
        }))
    }

    /// Any sigma(timestep), e.g. a scheduler's own sigmas or a constant in tests.
    pub fn from_fn(sigma: impl Fn(f64) -> f64 + Send + Sync + 'static) -> Self {
        Self {
            sigma: Box::new(sigma),
        }
    }

    pub fn sigma(&self, timestep: f64) -> f64 {
        (self.sigma)(timestep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_from_alphas_cumprod_interpolates_and_clamps() {
        let n = NoiseLevels::from_alphas_cumprod(&[0.8, 0.5, 0.2]).unwrap();
        assert!((n.sigma(0.0) - 0.5).abs() < 1e-7); // sqrt(0.2 / 0.8)
        assert!((n.sigma(1.0) - 1.0).abs() < 1e-12);
        assert!((n.sigma(2.0) - 2.0).abs() < 1e-7);
        assert!((n.sigma(1.5) - 1.5).abs() < 1e-7);
        assert!((n.sigma(-3.0) - 0.5).abs() < 1e-7);
        assert!((n.sigma(7.0) - 2.0).abs() < 1e-7);
    }

    #[test]
    fn bad_tables_are_refused() {
        let e = NoiseLevels::from_alphas_cumprod(&[0.9, 0.0]).unwrap_err();
        assert!(e.to_string().contains("alphas_cumprod[1] = 0"), "{e}");
        assert!(NoiseLevels::from_alphas_cumprod(&[]).is_err());
        assert!(NoiseLevels::from_alphas_cumprod(&[f32::NAN]).is_err());
    }
}
