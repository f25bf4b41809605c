//! The schedulers by name: diffusers class names, short aliases, and `model` (what the model's
//! config names). Adding a scheduler is one file plus one row in [`SchedulerKind::ALL`] and one
//! arm in [`SchedulerKind::build`].

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

use super::{
    DdimScheduler, DpmSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler, PndmScheduler, Scheduler, UniPcMultistepScheduler,
};
use crate::config::SchedulerConfig;

/// The schedulers semi implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchedulerKind {
    /// The paper's sampler and semi's default.
    #[default]
    Ddim,
    Pndm,
    Euler,
    EulerAncestral,
    DpmSolverMultistep,
    UniPcMultistep,
}

/// Config fields an alias sets, e.g. `use_karras_sigmas: true`.
pub type AliasOptions = &'static [(&'static str, bool)];

/// Short names: (alias, class, config fields it sets).
pub const SCHEDULER_NAMES: &[(&str, &str, AliasOptions)] = &[
    ("ddim", "DDIMScheduler", &[]),
    ("pndm", "PNDMScheduler", &[]),
    ("euler", "EulerDiscreteScheduler", &[]),
    ("euler-a", "EulerAncestralDiscreteScheduler", &[]),
    ("dpm++2m", "DPMSolverMultistepScheduler", &[]),
    (
        "dpm++2m-karras",
        "DPMSolverMultistepScheduler",
        &[("use_karras_sigmas", true)],
    ),
    ("unipc", "UniPCMultistepScheduler", &[]),
];

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 6] = [
        SchedulerKind::Ddim,
        SchedulerKind::Pndm,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmSolverMultistep,
        SchedulerKind::UniPcMultistep,
    ];

    /// The diffusers class this kind reproduces.
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::DpmSolverMultistep => "DPMSolverMultistepScheduler",
            SchedulerKind::UniPcMultistep => "UniPCMultistepScheduler",
        }
    }

    pub fn from_class(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.class_name() == name)
    }

    /// A fresh scheduler of this kind from a (model's) scheduler config; `eta` is DDIM's
    /// stochasticity (0 = deterministic DDIM) and an error for the other kinds.
    pub fn build(self, config: &SchedulerConfig, eta: f64) -> Result<Box<dyn Scheduler>> {
        if self != SchedulerKind::Ddim && eta != 0.0 {
            bail!(
                "eta {eta} applies to DDIMScheduler only, not {}",
                self.class_name()
            );
        }
        Ok(match self {
            SchedulerKind::Ddim => Box::new(DdimScheduler::new(config, eta)?),
            SchedulerKind::Pndm => Box::new(PndmScheduler::new(config)?),
            SchedulerKind::Euler => Box::new(EulerDiscreteScheduler::new(config)?),
            SchedulerKind::EulerAncestral => {
                Box::new(EulerAncestralDiscreteScheduler::new(config)?)
            }
            SchedulerKind::DpmSolverMultistep => {
                Box::new(DpmSolverMultistepScheduler::new(config)?)
            }
            SchedulerKind::UniPcMultistep => Box::new(UniPcMultistepScheduler::new(config)?),
        })
    }
}

/// A chosen scheduler: its kind and the model's config with the user's overrides applied, as
/// diffusers' `Class.from_config(model_config, **overrides)` builds it.
#[derive(Debug, Clone)]
pub struct SchedulerSpec {
    pub kind: SchedulerKind,
    pub config: SchedulerConfig,
    /// The overrides as given (alias-implied ones first), for the sidecar.
    pub options: Vec<(String, Value)>,
}

/// Every accepted name, for messages.
fn names() -> String {
    let mut v: Vec<&str> = SCHEDULER_NAMES.iter().map(|(a, _, _)| *a).collect();
    v.extend(SchedulerKind::ALL.iter().map(|k| k.class_name()));
    v.push("model");
    v.join(", ")
}

/// `key=value` with the value read as JSON (`true`, `1.5`, `"x"`, `[1]`), else as a string.
pub fn parse_option(text: &str) -> Result<(String, Value)> {
    let Some((key, value)) = text.split_once('=') else {
        bail!("--scheduler-option {text:?} is not key=value (e.g. use_karras_sigmas=true)");
    };
    let key = key.trim();
    if key.is_empty() {
        bail!("--scheduler-option {text:?} has no key");
    }
    let value = serde_json::from_str(value.trim())
        .unwrap_or_else(|_| Value::String(value.trim().to_string()));
    Ok((key.to_string(), value))
}

impl SchedulerSpec {
    /// DDIM on the model's config: semi's default.
    pub fn ddim(model: &SchedulerConfig) -> Self {
        SchedulerSpec {
            kind: SchedulerKind::Ddim,
            config: model.clone(),
            options: Vec::new(),
        }
    }

    /// `name` (an alias, a class name, or `model`) with `options` (`key=value`) on the model's
    /// config; checked by building it once.
    pub fn resolve(name: &str, options: &[String], model: &SchedulerConfig) -> Result<Self> {
        let (kind, mut overrides) = if name == "model" {
            let class = model.class_name.as_deref().unwrap_or("DDIMScheduler");
            let Some(kind) = SchedulerKind::from_class(class) else {
                bail!(
                    "--scheduler model: the model's scheduler {class} is not one semi implements; \
                     choose one of {}",
                    names()
                );
            };
            (kind, Vec::new())
        } else if let Some((_, class, set)) = SCHEDULER_NAMES.iter().find(|(a, _, _)| *a == name) {
            let kind = SchedulerKind::from_class(class).expect("registered class");
            let set = set
                .iter()
                .map(|(k, v)| (k.to_string(), Value::Bool(*v)))
                .collect();
            (kind, set)
        } else if let Some(kind) = SchedulerKind::from_class(name) {
            (kind, Vec::new())
        } else {
            bail!("unknown scheduler {name:?}; choose one of {}", names());
        };
        for o in options {
            overrides.push(parse_option(o)?);
        }
        let config = model.with_overrides(&overrides, "--scheduler-option")?;
        let spec = SchedulerSpec {
            kind,
            config,
            options: overrides,
        };
        spec.kind.build(&spec.config, 0.0)?;
        Ok(spec)
    }

    pub fn build(&self, eta: f64) -> Result<Box<dyn Scheduler>> {
        self.kind.build(&self.config, eta)
    }

    /// What outputs record: `{"class": ..., "options": {...}}`.
    pub fn describe(&self) -> Value {
        let options: Map<String, Value> = self.options.iter().cloned().collect();
        json!({"class": self.kind.class_name(), "options": options})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd1() -> SchedulerConfig {
        SchedulerConfig::parse(
            r#"{"_class_name":"PNDMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear",
            "beta_start":0.00085,"set_alpha_to_one":false,"skip_prk_steps":true,"steps_offset":1}"#,
        )
        .unwrap()
    }

    #[test]
    fn names_aliases_and_model() {
        let m = sd1();
        assert_eq!(
            SchedulerSpec::resolve("ddim", &[], &m).unwrap().kind,
            SchedulerKind::Ddim
        );
        let k = SchedulerSpec::resolve("dpm++2m-karras", &[], &m).unwrap();
        assert_eq!(k.kind, SchedulerKind::DpmSolverMultistep);
        assert!(k.config.use_karras_sigmas);
        assert_eq!(k.describe()["options"]["use_karras_sigmas"], true);
        assert_eq!(
            SchedulerSpec::resolve("model", &[], &m).unwrap().kind,
            SchedulerKind::Pndm
        );
        let e = SchedulerSpec::resolve(
            "EulerDiscreteScheduler",
            &["use_karras_sigmas=true".into()],
            &m,
        )
        .unwrap();
        assert!(e.config.use_karras_sigmas);
    }

    #[test]
    fn bad_names_and_options_are_named() {
        let m = sd1();
        let e = SchedulerSpec::resolve("lms", &[], &m)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown scheduler \"lms\"") && e.contains("euler-a"),
            "{e}"
        );
        let e = SchedulerSpec::resolve("euler", &["use_karas_sigmas=true".into()], &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("use_karas_sigmas"), "{e}");
        let e = SchedulerSpec::resolve("euler", &["nokey".into()], &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("key=value"), "{e}");
        let e = format!(
            "{:#}",
            SchedulerSpec::resolve("dpm++2m", &["solver_order=3".into()], &m).unwrap_err()
        );
        assert!(e.contains("solver_order"), "{e}");
        let Err(e) = SchedulerSpec::resolve("euler", &[], &m).unwrap().build(0.5) else {
            panic!("eta with Euler must be refused");
        };
        assert!(e.to_string().contains("eta"), "{e}");
        let lms = SchedulerConfig::parse(r#"{"_class_name":"LMSDiscreteScheduler"}"#).unwrap();
        let e = SchedulerSpec::resolve("model", &[], &lms)
            .unwrap_err()
            .to_string();
        assert!(e.contains("LMSDiscreteScheduler"), "{e}");
    }
}
