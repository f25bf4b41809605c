//! `scheduler/scheduler_config.json`.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

use super::{config, parse_checked, require};

config! {
    /// `scheduler/scheduler_config.json`. SD folders ship PNDM, DDIM, LMS, Euler or DPM-Solver
    /// configs; like diffusers' `from_config`, any of them configures any of our schedulers: the
    /// fields that describe the noise schedule are honoured and the sampler-specific ones of other
    /// schedulers are ignored.
    pub struct SchedulerConfig {
        class_name: Option<String> = None,
        num_train_timesteps: usize = 1000,
        beta_start: f64 = 0.0001,
        beta_end: f64 = 0.02,
        beta_schedule: String = "linear".to_string(),
        trained_betas: Option<Vec<f64>> = None,
        clip_sample: bool = true,
        set_alpha_to_one: bool = true,
        steps_offset: usize = 0,
        prediction_type: String = "epsilon".to_string(),
        thresholding: bool = false,
        dynamic_thresholding_ratio: f64 = 0.995,
        clip_sample_range: f64 = 1.0,
        sample_max_value: f64 = 1.0,
        timestep_spacing: String = "leading".to_string(),
        rescale_betas_zero_snr: bool = false,
    }
}

/// Fields of the other diffusers schedulers that only configure their own sampling algorithm.
const OTHER_SCHEDULER_FIELDS: &[&str] = &[
    "skip_prk_steps",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "interpolation_type",
    "sigma_min",
    "sigma_max",
    "timestep_type",
    "final_sigmas_type",
    "solver_order",
    "algorithm_type",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "use_lu_lambdas",
    "lambda_min_clipped",
    "variance_type",
    "predict_x0",
    "solver_p",
    "disable_corrector",
    "use_flow_sigmas",
    "flow_shift",
];

/// The diffusers schedulers of SD 1.x/2.x/XL folders whose config describes a noise schedule
/// semi reads (see the struct docs). Another `_class_name` (a flow-matching scheduler, a typo)
/// is an error naming it, not DDIM's defaults in silence.
pub const KNOWN_SCHEDULER_CLASSES: &[&str] = &[
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
    "LCMScheduler",
    "TCDScheduler",
];

impl SchedulerConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse_named(&text, &path.display().to_string())
    }

    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_named(text, "scheduler config")
    }

    fn parse_named(text: &str, what: &str) -> Result<Self> {
        let class_name = serde_json::from_str::<Value>(text).ok().and_then(|v| {
            v.get("_class_name")
                .and_then(Value::as_str)
                .map(String::from)
        });
        // `class_name` comes from `_class_name`, never from a key of its own.
        let known: Vec<&str> = Self::FIELDS
            .iter()
            .copied()
            .filter(|f| *f != "class_name")
            .collect();
        if let Some(class) = &class_name {
            if !KNOWN_SCHEDULER_CLASSES.contains(&class.as_str()) {
                bail!(
                    "{what}: unknown scheduler class {class:?}; semi reads the configs of {}",
                    KNOWN_SCHEDULER_CLASSES.join(", ")
                );
            }
        }
        let mut cfg: Self = parse_checked(text, what, &known, OTHER_SCHEDULER_FIELDS)?;
        cfg.class_name = class_name;
        cfg.validate(what)?;
        Ok(cfg)
    }

    pub fn validate(&self, what: &str) -> Result<()> {
        require(
            matches!(
                self.beta_schedule.as_str(),
                "linear" | "scaled_linear" | "squaredcos_cap_v2"
            ) || self.trained_betas.is_some(),
            what,
            "beta_schedule",
            &self.beta_schedule,
        )?;
        require(
            matches!(
                self.prediction_type.as_str(),
                "epsilon" | "v_prediction" | "sample"
            ),
            what,
            "prediction_type",
            &self.prediction_type,
        )?;
        require(
            matches!(
                self.timestep_spacing.as_str(),
                "leading" | "trailing" | "linspace"
            ),
            what,
            "timestep_spacing",
            &self.timestep_spacing,
        )?;
        require(!self.thresholding, what, "thresholding", self.thresholding)?;
        if self.num_train_timesteps == 0 {
            bail!("{what}: `num_train_timesteps` must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn scheduler_accepts_pndm_config() {
        let text = r#"{"_class_name":"PNDMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear",
            "beta_start":0.00085,"num_train_timesteps":1000,"set_alpha_to_one":false,"skip_prk_steps":true,
            "steps_offset":1,"trained_betas":null,"clip_sample":false}"#;
        let cfg = SchedulerConfig::parse(text).unwrap();
        assert_eq!(cfg.class_name.as_deref(), Some("PNDMScheduler"));
        assert_eq!(cfg.steps_offset, 1);
        assert!(SchedulerConfig::parse(r#"{"prediction_type":"flow"}"#).is_err());
    }

    #[test]
    fn an_unknown_scheduler_class_is_an_error_naming_it() {
        let err = SchedulerConfig::parse(r#"{"_class_name":"FooScheduler"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown scheduler class \"FooScheduler\""),
            "{err}"
        );
    }
}
