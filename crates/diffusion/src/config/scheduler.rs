//! `scheduler/scheduler_config.json`.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

use super::{config, parse_checked, require};

config! {
    /// `scheduler/scheduler_config.json`: the union of the fields of the diffusers schedulers
    /// semi implements. SD folders ship PNDM, DDIM, LMS, Euler or DPM-Solver configs; like
    /// diffusers' `from_config`, any of them configures any of our schedulers: each scheduler
    /// reads the fields it has, and a field the file does not set takes that scheduler's default
    /// (the `Option` fields, whose defaults differ between schedulers). Fields of schedulers semi
    /// does not implement are ignored, as diffusers ignores them.
    pub struct SchedulerConfig {
        class_name: Option<String> = None,
        num_train_timesteps: usize = 1000,
        beta_start: f64 = 0.0001,
        beta_end: f64 = 0.02,
        beta_schedule: String = "linear".to_string(),
        trained_betas: Option<Vec<f64>> = None,
        prediction_type: String = "epsilon".to_string(),
        steps_offset: usize = 0,
        /// DDIM and PNDM default to `leading`, the others to `linspace`.
        timestep_spacing: Option<String> = None,
        rescale_betas_zero_snr: bool = false,
        /// DDIM's clamp of predicted x0.
        clip_sample: bool = true,
        clip_sample_range: f64 = 1.0,
        /// DDIM defaults to true, PNDM to false.
        set_alpha_to_one: Option<bool> = None,
        thresholding: bool = false,
        dynamic_thresholding_ratio: f64 = 0.995,
        sample_max_value: f64 = 1.0,
        /// PNDM: PLMS steps only (SD's configs), or Runge-Kutta warm-up steps first.
        skip_prk_steps: bool = false,
        /// Euler: how sigmas are interpolated between training timesteps.
        interpolation_type: String = "linear".to_string(),
        use_karras_sigmas: bool = false,
        use_exponential_sigmas: bool = false,
        use_beta_sigmas: bool = false,
        sigma_min: Option<f64> = None,
        sigma_max: Option<f64> = None,
        timestep_type: String = "discrete".to_string(),
        final_sigmas_type: String = "zero".to_string(),
        /// DPM-Solver and UniPC.
        solver_order: usize = 2,
        algorithm_type: String = "dpmsolver++".to_string(),
        /// DPM-Solver defaults to `midpoint`, UniPC to `bh2`.
        solver_type: Option<String> = None,
        lower_order_final: bool = true,
        euler_at_final: bool = false,
        use_lu_lambdas: bool = false,
        /// `-Infinity` in diffusers' files (read as the most negative f64).
        lambda_min_clipped: f64 = f64::MIN,
        variance_type: Option<String> = None,
        predict_x0: bool = true,
        disable_corrector: Vec<usize> = Vec::new(),
        solver_p: Option<Value> = None,
        use_flow_sigmas: bool = false,
        flow_shift: f64 = 1.0,
        use_dynamic_shifting: bool = false,
        time_shift_type: String = "exponential".to_string(),
        shift_terminal: Option<f64> = None,
    }
}

/// Fields of the diffusers schedulers semi does not implement (they configure only those).
const OTHER_SCHEDULER_FIELDS: &[&str] = &[
    "original_inference_steps",
    "timestep_scaling",
    "noise_sampler_seed",
    "s_noise",
    "use_noise_sampler",
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

/// Python's `json` writes `-inf` as `-Infinity` (diffusers' `lambda_min_clipped`), which is not
/// JSON: outside strings, `Infinity` becomes the largest finite f64 (same comparisons).
fn python_json(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("Infinity") {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if rest.starts_with("Infinity") {
            out.push_str("1.7976931348623157e308");
            rest = &rest["Infinity".len()..];
            continue;
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

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
        let value: Value = serde_json::from_str(&python_json(text))
            .with_context(|| format!("{what}: malformed JSON"))?;
        let Value::Object(mut map) = value else {
            bail!("{what}: expected a JSON object")
        };
        // diffusers drops the keys a config lists as written from defaults, so that another
        // scheduler class gets its own defaults for them.
        if let Some(Value::Array(defaults)) = map.remove("_use_default_values") {
            for key in defaults.iter().filter_map(Value::as_str) {
                map.remove(key);
            }
        }
        let class_name = map
            .get("_class_name")
            .and_then(Value::as_str)
            .map(String::from);
        if let Some(class) = &class_name {
            if !KNOWN_SCHEDULER_CLASSES.contains(&class.as_str()) {
                bail!(
                    "{what}: unknown scheduler class {class:?}; semi reads the configs of {}",
                    KNOWN_SCHEDULER_CLASSES.join(", ")
                );
            }
        }
        let mut cfg = Self::from_map(map, what)?;
        cfg.class_name = class_name;
        Ok(cfg)
    }

    fn from_map(map: serde_json::Map<String, Value>, what: &str) -> Result<Self> {
        // `class_name` comes from `_class_name`, never from a key of its own.
        let known: Vec<&str> = Self::FIELDS
            .iter()
            .copied()
            .filter(|f| *f != "class_name")
            .collect();
        let text = Value::Object(map).to_string();
        let cfg: Self = parse_checked(&text, what, &known, OTHER_SCHEDULER_FIELDS)?;
        cfg.validate(what)?;
        Ok(cfg)
    }

    /// This config with `overrides` (field, value) set as if the file held them, checked as
    /// the file is (`what` names their source in errors, e.g. `--scheduler-option`).
    pub fn with_overrides(&self, overrides: &[(String, Value)], what: &str) -> Result<Self> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        let Value::Object(mut map) = serde_json::to_value(self)? else {
            bail!("a scheduler config serialises to an object");
        };
        map.remove("class_name");
        for (key, value) in overrides {
            if key == "class_name" || !Self::FIELDS.contains(&key.as_str()) {
                bail!(
                    "{what}: unknown scheduler config field `{key}` (fields: {})",
                    Self::FIELDS[1..].join(", ")
                );
            }
            map.insert(key.clone(), value.clone());
        }
        let mut cfg = Self::from_map(map, what)?;
        cfg.class_name = self.class_name.clone();
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
        if let Some(spacing) = &self.timestep_spacing {
            require(
                matches!(spacing.as_str(), "leading" | "trailing" | "linspace"),
                what,
                "timestep_spacing",
                spacing,
            )?;
        }
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

    #[test]
    fn python_infinity_and_default_markers_are_read_as_diffusers_does() {
        let text = r#"{"_class_name":"DPMSolverMultistepScheduler","lambda_min_clipped":-Infinity,
            "timestep_spacing":"leading","solver_order":2,"prompt":"say \"Infinity\"",
            "_use_default_values":["timestep_spacing","prompt"]}"#;
        let cfg = SchedulerConfig::parse(text).unwrap();
        assert_eq!(cfg.lambda_min_clipped, f64::MIN);
        // Written from a default: another class takes its own.
        assert_eq!(cfg.timestep_spacing, None);
        assert_eq!(
            python_json(r#"{"a":"Infinity","b":Infinity}"#),
            r#"{"a":"Infinity","b":1.7976931348623157e308}"#
        );
    }

    #[test]
    fn overrides_are_checked_like_the_file() {
        let cfg = SchedulerConfig::parse(r#"{"_class_name":"PNDMScheduler"}"#).unwrap();
        let o = cfg
            .with_overrides(
                &[("use_karras_sigmas".into(), Value::Bool(true))],
                "--scheduler-option",
            )
            .unwrap();
        assert!(o.use_karras_sigmas && !cfg.use_karras_sigmas);
        assert_eq!(o.class_name.as_deref(), Some("PNDMScheduler"));
        let e = cfg
            .with_overrides(&[("nope".into(), Value::Bool(true))], "--scheduler-option")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--scheduler-option") && e.contains("`nope`"),
            "{e}"
        );
        let e = cfg
            .with_overrides(
                &[("timestep_spacing".into(), "sideways".into())],
                "--scheduler-option",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("timestep_spacing"), "{e}");
    }
}
