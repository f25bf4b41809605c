//! The model of a run: `--model` resolved (a diffusers folder, a repo id in the local Hugging Face
//! cache, or `toy`, the embedded model), its files checked, its settings file read
//! ([`ModelRef`], no weights loaded), then loaded with its fingerprint ([`Model`]).

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use semi_diffusion::loading::{ModelFiles, Variant};
use semi_diffusion::pipeline::StableDiffusion;
use semi_diffusion::precision::Precision;

use crate::embedded;
use crate::settings::{Choices, Settings};

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
    pub fn resolve(spec: &str, variant: Variant) -> Result<ModelRef> {
        let (dir, toy) = embedded::resolve_model_arg(spec)?;
        ModelRef::at(&dir, spec, toy, variant)
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
    pub fn open(spec: &str, device: &Device) -> Result<Model> {
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
