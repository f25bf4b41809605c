//! The model of a run: `--model` resolved (a diffusers folder, a repo id in the local Hugging Face
//! cache, `toy`, the embedded model, or a single-file checkpoint with the configs of `--config`
//! or of its family), with `--vae`, `--lora` and `--prediction` applied ([`ModelSpec`]), its
//! files checked, its settings file read ([`ModelRef`], no weights loaded), then loaded with its
//! fingerprint ([`Model`]).

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use semi_diffusion::loading::{resolve_model, ModelFiles, Variant};
use semi_diffusion::lora::LoraFile;
use semi_diffusion::pipeline::StableDiffusion;
use semi_diffusion::precision::Precision;

use crate::embedded;
use crate::settings::{Choices, Settings};

/// What names a model: `--model` and the flags that complete or change it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSpec {
    /// A diffusers folder, a cached repo id, `toy`, or a single `.safetensors` checkpoint.
    pub model: String,
    /// For a single file: the diffusers folder (or cached repo id) whose configs and tokenizers
    /// to use, as diffusers' `from_single_file(config=...)`; default: the family's standard.
    pub config: Option<String>,
    /// A VAE to use instead of the model's (`--vae FILE|FOLDER|REPO`).
    pub vae: Option<std::path::PathBuf>,
    /// LoRAs merged at load (`--lora FILE[:WEIGHT]`).
    pub loras: Vec<LoraFile>,
    /// The scheduler's `prediction_type` instead of the model's (`--prediction`).
    pub prediction: Option<String>,
}

impl From<&str> for ModelSpec {
    fn from(model: &str) -> Self {
        ModelSpec {
            model: model.to_string(),
            ..Default::default()
        }
    }
}

impl ModelSpec {
    /// The model's checked files: a folder (or `toy`), or a single file with its config folder;
    /// then the VAE, prediction and LoRAs applied. Also says whether it is the embedded model, and
    /// gives the folder whose `semi.json` holds its settings.
    pub fn files(&self, variant: Variant) -> Result<(ModelFiles, bool, std::path::PathBuf)> {
        let path = std::path::Path::new(&self.model);
        let (mut files, toy, settings_dir) = if path.is_file() {
            let found = semi_diffusion::single_file::recognise(path)?;
            let epsilon = self.prediction.as_deref() == Some("epsilon");
            let config = match &self.config {
                Some(c) => resolve_model(c).with_context(|| format!("--config {c}"))?,
                None => embedded::standard_config_dir(found.kind.standard_config(epsilon))?,
            };
            let files = ModelFiles::single_file(path, &config, &found, self.vae.is_some())?;
            (files, false, config)
        } else {
            if let Some(c) = &self.config {
                bail!(
                    "--config {c}: --config completes a single-file checkpoint, and {} is not a file",
                    self.model
                );
            }
            let (dir, toy) = embedded::resolve_model_arg(&self.model)?;
            (ModelFiles::check(&dir, variant)?, toy, dir)
        };
        if let Some(vae) = &self.vae {
            // A VAE may also be named by its repo id in the local Hugging Face cache.
            let vae = match vae.to_str() {
                Some(id) if !vae.exists() && semi_diffusion::loading::is_repo_id(id) => {
                    resolve_model(id).with_context(|| format!("--vae {id}"))?
                }
                _ => vae.clone(),
            };
            files.replace_vae(&vae)?;
        }
        if let Some(p) = &self.prediction {
            files.set_prediction(p)?;
        }
        semi_diffusion::lora::check_files(&self.loras)?;
        files.loras = self.loras.clone();
        Ok((files, toy, settings_dir))
    }
}

/// A checked model folder and its settings file; no weights read yet.
#[derive(Debug, Clone)]
pub struct ModelRef {
    /// The model as the user named it (`toy`, a folder, a repo id): what outputs record.
    pub name: String,
    pub files: ModelFiles,
    /// The model's `semi.json` (empty when it has none).
    pub choices: Choices,
    /// The embedded toy model (its categories are the toy world's shapes).
    pub toy: bool,
}

impl ModelRef {
    /// Resolve, check (`variant`: the fp16 weight files when present) and read the settings.
    pub fn resolve(spec: &ModelSpec, variant: Variant) -> Result<ModelRef> {
        let (files, toy, settings_dir) = spec.files(variant)?;
        let choices = Choices::of_model(&settings_dir)?;
        Ok(ModelRef {
            name: spec.model.clone(),
            files,
            choices,
            toy,
        })
    }

    /// The model folder `dir`, named `name` in outputs; `toy`: the toy world's model.
    pub fn at(dir: &std::path::Path, name: &str, toy: bool, variant: Variant) -> Result<ModelRef> {
        let files = ModelFiles::check(dir, variant)?;
        let choices = Choices::of_model(dir)?;
        Ok(ModelRef {
            name: name.to_string(),
            files,
            choices,
            toy,
        })
    }

    /// What was put together to make this model beyond a plain folder: the single file and its
    /// config folder, a replaced VAE, the LoRAs with their weights, a changed prediction type.
    /// None for a plain folder.
    pub fn additions(&self) -> Option<serde_json::Value> {
        let f = &self.files;
        if f.single_file.is_none() && f.vae_from.is_none() && f.loras.is_empty() {
            return None;
        }
        let mut m = serde_json::Map::new();
        if let Some(s) = &f.single_file {
            m.insert("single_file".into(), s.display().to_string().into());
            m.insert("config".into(), f.root.display().to_string().into());
        }
        if let Some(v) = &f.vae_from {
            m.insert("vae".into(), v.display().to_string().into());
        }
        if !f.loras.is_empty() {
            let loras: Vec<serde_json::Value> = f
                .loras
                .iter()
                .map(|l| serde_json::json!({"path": l.path.display().to_string(), "weight": l.weight}))
                .collect();
            m.insert("loras".into(), loras.into());
        }
        m.insert(
            "prediction_type".into(),
            f.scheduler.prediction_type.clone().into(),
        );
        Some(m.into())
    }

    /// The image size the model was trained at (unet sample_size x the VAE's scale factor).
    pub fn native_size(&self) -> Result<(usize, usize)> {
        self.files.default_size().with_context(|| {
            format!(
                "the model {}'s unet/config.json has no sample_size, so its native size is \
                 unknown: give the layout a width and height (or pass --height and --width)",
                self.name
            )
        })
    }

    /// The settings of a run: `flags`, else this model's file, else its family's defaults, else
    /// the paper's.
    pub fn settings(&self, flags: &Choices) -> Result<Settings> {
        Settings::resolve_with(
            flags,
            &self.choices,
            &crate::settings::family_defaults(self.files.family),
        )
    }

    /// The weights' fingerprint (computed once per file state, cached on disk).
    pub fn fingerprint(&self) -> Result<String> {
        semi_tickets::cache::model_fingerprint(&self.files)
            .with_context(|| format!("cannot fingerprint the model {}", self.name))
    }

    /// Load the weights.
    pub fn load(self, device: &Device, precision: Precision) -> Result<Model> {
        let sd = StableDiffusion::from_files_with(self.files.clone(), device, precision)?;
        Ok(Model {
            reference: self,
            sd,
            fingerprint: OnceLock::new(),
        })
    }
}

/// A loaded model: the pipeline, what it was loaded from, and its fingerprint (on first use).
pub struct Model {
    pub reference: ModelRef,
    pub sd: StableDiffusion,
    fingerprint: OnceLock<String>,
}

impl Model {
    /// Resolve, check and load in f32 (what the ticket commands and the server use).
    pub fn open(spec: &ModelSpec, device: &Device) -> Result<Model> {
        ModelRef::resolve(spec, Variant::Full)?
            .load(device, Precision::uniform(candle_core::DType::F32))
    }

    pub fn name(&self) -> &str {
        &self.reference.name
    }

    /// The weights' fingerprint, computed on first use.
    pub fn fingerprint(&self) -> Result<&str> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f);
        }
        let f = self.reference.fingerprint()?;
        Ok(self.fingerprint.get_or_init(|| f))
    }

    /// The model's native image size.
    pub fn native_size(&self) -> Result<(usize, usize)> {
        self.reference.native_size()
    }

    /// The categories a toy model knows (None: any name).
    pub fn vocabulary(&self) -> Option<Vec<String>> {
        self.reference.toy.then(toy_categories)
    }
}

/// The toy world's category names.
pub fn toy_categories() -> Vec<String> {
    semi_toyworld::category::Category::ALL
        .iter()
        .map(|c| c.name().to_string())
        .collect()
}

/// The candle device named `cpu`, `cuda` or `metal`; a backend not compiled in is an error, not
/// a fallback.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            #[cfg(feature = "cuda")]
            return Device::new_cuda(0).map_err(|e| {
                let why = e.to_string();
                anyhow::anyhow!(
                    "--device cuda: no CUDA device can be opened ({}); check the driver with \
                     nvidia-smi",
                    why.lines().next().unwrap_or_default()
                )
            });
            #[cfg(not(feature = "cuda"))]
            bail!("--device cuda: this semi was built without CUDA support (rebuild with `--features cuda`)")
        }
        "metal" => {
            #[cfg(feature = "metal")]
            return Device::new_metal(0).context("cannot open Metal device 0");
            #[cfg(not(feature = "metal"))]
            bail!("--device metal: this semi was built without Metal support (rebuild with `--features metal`)")
        }
        other => bail!("unknown device {other:?} (use cpu, cuda or metal)"),
    }
}

/// The flags that name a model, shared by every command that loads one (`semi generate`,
/// `semi eval generate|run`, `semi tickets collect`, `semi serve`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// A diffusers folder, a Hugging Face repo id (owner/name) already in the local HF cache, a
    /// single-file checkpoint (`.safetensors` of SD 1.x, 2.x or XL), or a built-in model, which
    /// needs no download: `toy` (models/toy, pixel space) or `toy-latent` (models/toy-latent,
    /// with a VAE; colour does not give the category away).
    #[arg(long, default_value = crate::embedded::TOY_MODEL)]
    pub model: String,
    /// For a single-file --model: a diffusers folder or cached repo id whose configs and
    /// tokenizers to use [default: the standard ones of the file's family].
    #[arg(long, value_name = "FOLDER|REPO")]
    pub config: Option<String>,
    /// A VAE instead of the model's: a diffusers VAE folder (or its repo id in the local HF
    /// cache), or one .safetensors file.
    #[arg(long, value_name = "FILE|FOLDER|REPO")]
    pub vae: Option<std::path::PathBuf>,
    /// A LoRA to merge into the weights at load, with its weight (default 1); repeatable.
    #[arg(long = "lora", value_name = "FILE[:WEIGHT]")]
    pub loras: Vec<String>,
    /// The scheduler's prediction type instead of the model's: epsilon, v_prediction or sample
    /// (a single SD 2.x file is taken as v_prediction, as diffusers does).
    #[arg(long, value_name = "TYPE")]
    pub prediction: Option<String>,
}

impl ModelArgs {
    pub fn spec(&self) -> Result<ModelSpec> {
        if let Some(p) = &self.prediction {
            semi_diffusion::schedulers::Prediction::parse(p)
                .with_context(|| format!("--prediction {p}"))?;
        }
        Ok(ModelSpec {
            model: self.model.clone(),
            config: self.config.clone(),
            vae: self.vae.clone(),
            loras: self
                .loras
                .iter()
                .map(|l| LoraFile::parse(l))
                .collect::<Result<_>>()?,
            prediction: self.prediction.clone(),
        })
    }
}
