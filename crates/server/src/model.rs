//! The served model: loaded once on the worker thread (`semi_run::Model`); what the handlers
//! need to know about it ([`ModelInfo`]) is copied out, so requests are validated and planned
//! without touching the weights.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use semi_diffusion::loading::Variant;
use semi_diffusion::precision::Precision;
use semi_run::{Model, ModelRef, Settings};
use semi_tickets::names::normalize_category;
use semi_tickets::{SdProber, Store};
use serde::Serialize;

/// Where the model and the optional ticket store come from (resolved by the CLI: the server
/// never takes a path from a client).
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// The model as every command names it (`--model`, `--config`, `--vae`, `--lora`, ...).
    pub spec: semi_run::ModelSpec,
    /// The name shown in the page and written into the PNG metadata (`toy`, a repo id, ...).
    pub name: String,
    /// A collected ticket store for `semi`/`semi+swap`; without one, a cache store is filled on
    /// the fly (`semi_run::store`).
    pub store: Option<PathBuf>,
}

/// Which categories a layout may use.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "source", content = "names", rename_all = "lowercase")]
pub enum Vocabulary {
    /// The `--store`'s categories: SemI can only fill cells with tickets it has.
    Store(Vec<String>),
    /// The toy world's shapes: the toy model knows no other nouns.
    Toy(Vec<String>),
    /// Any name: tickets are collected on the fly for the categories a layout uses.
    Any,
}

/// What the page and the validation need to know about the model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub width: usize,
    pub height: usize,
    pub size_multiple: usize,
    pub train_timesteps: usize,
    /// The ticket grid `[rows, cols]` (the probed cross-attention layer's resolution).
    pub grid: [usize; 2],
    /// Latents are the image (no VAE): previews are exact, not a projection.
    pub pixel_space: bool,
    pub categories: Vocabulary,
    /// The model's settings (its `semi.json`, else the paper's defaults).
    pub default_steps: usize,
    pub default_guidance: f64,
    /// Noise images per pair when a cache store is filled on the fly.
    pub cache_images: usize,
    pub has_store: bool,
    /// The checked model folder, for planning runs (not sent to the page).
    #[serde(skip)]
    pub reference: ModelRef,
}

impl ModelInfo {
    /// A category a layout may use here (see [`Vocabulary`]); the error says which are known.
    pub fn check_category(&self, category: &str) -> Result<()> {
        let name = normalize_category(category)?;
        let known = match &self.categories {
            Vocabulary::Store(names) | Vocabulary::Toy(names) => names,
            Vocabulary::Any => return Ok(()),
        };
        if !known.contains(&name) {
            let source = match &self.categories {
                Vocabulary::Store(_) => "the ticket store",
                _ => "the toy model",
            };
            bail!(
                "unknown category {category:?}: {source} knows {}",
                known.join(", ")
            );
        }
        Ok(())
    }
}

/// The loaded model, owned by the worker thread.
pub struct Loaded {
    pub model: Model,
    pub store: Option<Store>,
    pub info: ModelInfo,
}

/// Load the model (f32, CPU), fingerprint it, open the store and work out the grid.
pub fn load(source: &ModelSource) -> Result<Loaded> {
    let mut reference = ModelRef::resolve(&source.spec, Variant::Full)?;
    reference.name = source.name.clone();
    let train_timesteps = reference.files.scheduler.num_train_timesteps;
    let settings: Settings = reference.settings(&semi_run::Choices::default())?;
    let model = reference
        .clone()
        .load(&Device::Cpu, Precision::uniform(DType::F32))?;
    let fingerprint = model.fingerprint()?.to_string();
    let (height, width) = model.native_size().with_context(|| {
        format!(
            "the model {} has no unet sample_size, so the page cannot know its image size",
            source.name
        )
    })?;
    let probe =
        semi_run::store::probe_options(&settings, &model.sd.files.scheduler, 1, height, width)?;
    let grid = SdProber::new(&model.sd, fingerprint.clone(), &probe)?
        .plan()
        .grid;
    let store = match &source.store {
        Some(dir) => {
            let store = Store::open(dir)?;
            semi_methods::check_store_model(
                &store,
                &fingerprint,
                model.sd.files.family,
                &source.name,
            )?;
            let theirs = store.fingerprint();
            if (theirs.height as usize, theirs.width as usize) != (height, width) {
                bail!(
                    "the store {} is for {}x{} images, the model makes {width}x{height}",
                    dir.display(),
                    theirs.width,
                    theirs.height
                );
            }
            Some(store)
        }
        None => None,
    };
    let categories = match (&store, model.vocabulary()) {
        (Some(s), _) => Vocabulary::Store(s.categories().to_vec()),
        (None, Some(names)) => Vocabulary::Toy(names),
        (None, None) => Vocabulary::Any,
    };
    let grid = match &store {
        Some(s) => s.fingerprint().grid,
        None => grid,
    };
    let info = ModelInfo {
        name: source.name.clone(),
        width,
        height,
        size_multiple: model.sd.size_multiple(),
        train_timesteps,
        grid,
        pixel_space: model.sd.vae.is_none(),
        categories,
        default_steps: settings.num_inference_steps.value,
        default_guidance: settings.guidance_scale.value,
        cache_images: settings.cache_images.value,
        has_store: store.is_some(),
        reference,
    };
    Ok(Loaded { model, store, info })
}
