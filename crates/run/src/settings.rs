//! The settings a run resolves, each from the first place that gives it: an explicit flag, then
//! the model's `semi.json` (a small file next to `model_index.json` with the model's measured
//! settings), then its family's defaults ([`family_defaults`]: SDXL's guidance 5, as diffusers'
//! SDXL pipeline), then the paper's defaults (docs/design.md 1.7). The sidecar records every
//! value with its source.
//!
//! Each setting is declared once, in the [`settings!`] table below: its name (the key in
//! `semi.json`), type, default and doc. A key of `semi.json` that is not in the table is an
//! error naming it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use semi_diffusion::config::SchedulerConfig;
use semi_diffusion::family::Family;
use semi_diffusion::schedulers::SchedulerSpec;
use semi_tickets::Rule;
use serde::{Deserialize, Serialize};

/// The name of a model's settings file, next to `model_index.json`.
pub const SETTINGS_FILE: &str = "semi.json";

/// Where a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Given on the command line (or in a request).
    Flag,
    /// The model's `semi.json`.
    Model,
    /// The default of the model's family (SDXL's own, where it differs from the paper's).
    Family,
    /// The paper's default.
    Default,
}

impl Source {
    /// How a message names where a pair of settings came from: the model's file if either did.
    fn max_describe(self, other: Source) -> &'static str {
        if self == Source::Model || other == Source::Model {
            Source::Model.describe()
        } else {
            ""
        }
    }

    /// How a message names the source: ` (from the model's semi.json)`, ...
    fn describe(self) -> &'static str {
        match self {
            Source::Flag => "",
            Source::Model => " (from the model's semi.json)",
            Source::Family => " (the model family's default)",
            Source::Default => " (the default)",
        }
    }
}

/// One resolved value and its source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    fn pick(flag: Option<T>, model: Option<T>, family: Option<T>, default: T) -> Self {
        let (value, source) = match (flag, model, family) {
            (Some(v), _, _) => (v, Source::Flag),
            (None, Some(v), _) => (v, Source::Model),
            (None, None, Some(v)) => (v, Source::Family),
            (None, None, None) => (default, Source::Default),
        };
        Setting { value, source }
    }
}

macro_rules! settings {
    ($( $(#[doc = $doc:expr])* $name:ident : $ty:ty = $default:expr ),* $(,)?) => {
        /// Values some source gives (flags, or a model's `semi.json`); `None`: not given.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Choices {
            $( $(#[doc = $doc])* #[serde(default, skip_serializing_if = "Option::is_none")]
               pub $name: Option<$ty>, )*
        }

        /// Every setting with the value a run uses and its source.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        pub struct Settings {
            $( $(#[doc = $doc])* pub $name: Setting<$ty>, )*
        }

        impl Settings {
            /// Flag, then model, then the paper's default, for each setting.
            pub fn resolve(flags: &Choices, model: &Choices) -> Result<Settings> {
                Self::resolve_with(flags, model, &Choices::default())
            }

            /// Flag, then model, then the family's default, then the paper's, for each setting.
            pub fn resolve_with(flags: &Choices, model: &Choices, family: &Choices) -> Result<Settings> {
                let s = Settings {
                    $( $name: Setting::pick(
                        flags.$name.clone(),
                        model.$name.clone(),
                        family.$name.clone(),
                        $default,
                    ), )*
                };
                s.check()?;
                Ok(s)
            }
        }
    };
}

settings! {
    /// Object threshold T_obj of the paper's selection rule, in [0, 1].
    t_obj: f64 = 0.5,
    /// Background threshold T_bg of the paper's selection rule, in [0, 1].
    t_bg: f64 = 0.1,
    /// SemI: standardise each latent channel after construction.
    recalibrate: bool = false,
    /// Classifier-free guidance scale (<= 1 turns it off).
    guidance_scale: f64 = 7.5,
    /// DDIM steps.
    num_inference_steps: usize = 50,
    /// The probed layers: `default`, `all` or layer paths (`semi tickets collect --layers`).
    probe_layers: String = "default".to_string(),
    /// Noise images per category pair when a cache store is filled on the fly.
    cache_images: usize = 100,
    /// The sampler: `ddim` (the paper's), `pndm`, `euler`, `euler-a`, `dpm++2m`,
    /// `dpm++2m-karras`, `unipc`, a diffusers class name, or `model` (the class the model's
    /// scheduler config names). The probe scores tickets at its first timestep.
    scheduler: String = "ddim".to_string(),
    /// Overrides of the scheduler config, `key=value` (e.g. `use_karras_sigmas=true`).
    scheduler_options: Vec<String> = Vec::new(),
}

/// The defaults of a model family where they differ from the paper's: SDXL's guidance scale 5,
/// the default of diffusers' `StableDiffusionXLPipeline` (7.5 over-saturates SDXL images).
pub fn family_defaults(family: Family) -> Choices {
    match family {
        Family::Sd => Choices::default(),
        Family::Sdxl => Choices {
            guidance_scale: Some(5.0),
            ..Choices::default()
        },
    }
}

impl Choices {
    /// The settings file of the model folder `dir` (empty when it has none).
    pub fn of_model(dir: &Path) -> Result<Choices> {
        let path = dir.join(SETTINGS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Choices::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }
}

impl Settings {
    /// The paper's defaults (no flags, no model file).
    pub fn paper() -> Settings {
        Settings::resolve(&Choices::default(), &Choices::default()).expect("valid defaults")
    }

    /// The chosen sampler on the model's scheduler config (checked: a bad name or option is an
    /// error naming it and where it came from).
    pub fn scheduler(&self, model: &SchedulerConfig) -> Result<SchedulerSpec> {
        let source = self
            .scheduler
            .source
            .max_describe(self.scheduler_options.source);
        SchedulerSpec::resolve(&self.scheduler.value, &self.scheduler_options.value, model)
            .map_err(|e| anyhow::anyhow!("{e:#}{source}"))
    }

    /// The paper rule at these thresholds.
    pub fn paper_rule(&self) -> Result<Rule> {
        Rule::paper(self.t_obj.value as f32, self.t_bg.value as f32)
            .context("T_obj and T_bg must lie in [0, 1]")
    }

    fn check(&self) -> Result<()> {
        for (name, flag, s) in [
            ("t_obj", "--t-obj", &self.t_obj),
            ("t_bg", "--t-bg", &self.t_bg),
        ] {
            if !(0.0..=1.0).contains(&s.value) {
                let name = if s.source == Source::Flag { flag } else { name };
                bail!(
                    "{name} {}{} is outside [0, 1]",
                    s.value,
                    s.source.describe()
                );
            }
        }
        let g = &self.guidance_scale;
        if !g.value.is_finite() {
            bail!(
                "guidance_scale {}{} must be finite",
                g.value,
                g.source.describe()
            );
        }
        for (name, s) in [
            ("num_inference_steps", &self.num_inference_steps),
            ("cache_images", &self.cache_images),
        ] {
            if s.value == 0 {
                bail!("{name}{} must be at least 1", s.source.describe());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_model_then_default() {
        let flags = Choices {
            t_obj: Some(0.6),
            ..Choices::default()
        };
        let model = Choices {
            t_obj: Some(0.7),
            t_bg: Some(0.3),
            ..Choices::default()
        };
        let s = Settings::resolve(&flags, &model).unwrap();
        assert_eq!((s.t_obj.value, s.t_obj.source), (0.6, Source::Flag));
        assert_eq!((s.t_bg.value, s.t_bg.source), (0.3, Source::Model));
        assert_eq!(
            (s.guidance_scale.value, s.guidance_scale.source),
            (7.5, Source::Default)
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["t_bg"]["source"], "model");
    }

    #[test]
    fn sdxl_gets_its_familys_guidance_below_flags_and_files() {
        let family = family_defaults(Family::Sdxl);
        let s = Settings::resolve_with(&Choices::default(), &Choices::default(), &family).unwrap();
        assert_eq!(
            (s.guidance_scale.value, s.guidance_scale.source),
            (5.0, Source::Family)
        );
        assert_eq!(s.t_obj.source, Source::Default);
        let model = Choices {
            guidance_scale: Some(6.0),
            ..Choices::default()
        };
        let s = Settings::resolve_with(&Choices::default(), &model, &family).unwrap();
        assert_eq!(s.guidance_scale.value, 6.0);
        assert_eq!(
            serde_json::to_value(
                Settings::resolve_with(&Choices::default(), &Choices::default(), &family).unwrap()
            )
            .unwrap()["guidance_scale"]["source"],
            "family"
        );
    }

    #[test]
    fn bad_files_and_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Choices::of_model(dir.path()).unwrap(), Choices::default());
        std::fs::write(dir.path().join(SETTINGS_FILE), r#"{"t_ob": 0.7}"#).unwrap();
        let e = format!("{:#}", Choices::of_model(dir.path()).unwrap_err());
        assert!(e.contains("semi.json") && e.contains("t_ob"), "{e}");
        let model = Choices {
            t_bg: Some(1.5),
            ..Choices::default()
        };
        let e = Settings::resolve(&Choices::default(), &model).unwrap_err();
        assert!(e.to_string().contains("semi.json"), "{e}");
    }

    #[test]
    fn the_embedded_model_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/toy");
        let c = Choices::of_model(&dir).unwrap();
        assert_eq!(c.t_obj, Some(0.7));
        assert_eq!(c.recalibrate, Some(true));
    }
}
