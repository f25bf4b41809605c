//! The served model: loaded once on the worker thread; what the handlers need to know about it
//! ([`ModelInfo`]) is copied out, so requests are validated without touching the weights.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use semi_diffusion::loading::{ModelFiles, Variant};
use semi_diffusion::pipeline::StableDiffusion;
use semi_tickets::names::normalize_category;
use semi_tickets::{ProbeOptions, SdProber, Store};
use serde::Serialize;

/// Where the model and the optional ticket store come from (resolved by the CLI: the server
/// never takes a path from a client).
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// A diffusers folder.
    pub dir: PathBuf,
    /// The name shown in the page and written into the PNG metadata (`toy`, a repo id, ...).
    pub name: String,
    /// The embedded toy model: its six shape names are the only categories.
    pub toy: bool,
    /// A collected ticket store for `semi`/`semi+swap`; without one, a cache store is filled on
    /// the fly (`semi_methods::cache_store`).
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
    pub default_steps: usize,
    pub default_guidance: f64,
    /// Noise images per pair when a cache store is filled on the fly.
    pub cache_images: usize,
    pub has_store: bool,
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
    pub sd: StableDiffusion,
    pub fingerprint: String,
    pub store: Option<Store>,
    pub info: ModelInfo,
    /// Selection rule, recalibration and strengths for every job: the toy model's measured
    /// settings ([`semi_methods::MethodOptions::toy`]) or the paper's defaults.
    pub options: semi_methods::MethodOptions,
}

/// The toy world's category names.
pub fn toy_categories() -> Vec<String> {
    semi_toyworld::category::Category::ALL
        .iter()
        .map(|c| c.name().to_string())
        .collect()
}

/// Load the model (f32, CPU), fingerprint it, open the store and work out the grid.
pub fn load(source: &ModelSource) -> Result<Loaded> {
    let files = ModelFiles::check(&source.dir, Variant::Full)?;
    let fingerprint = semi_tickets::cache::model_fingerprint(&files)
        .with_context(|| format!("cannot fingerprint the model {}", source.name))?;
    let train_timesteps = files.scheduler.num_train_timesteps;
    let sd = StableDiffusion::from_files(files, &Device::Cpu, DType::F32)?;
    let (height, width) = sd.default_size().with_context(|| {
        format!(
            "the model {} has no unet sample_size, so the page cannot know its image size",
            source.name
        )
    })?;
    let probe = ProbeOptions::new(height, width);
    let grid = SdProber::new(&sd, fingerprint.clone(), &probe)?.plan().grid;
    let store = match &source.store {
        Some(dir) => {
            let store = Store::open(dir)?;
            semi_methods::check_store_model(&store, &fingerprint, &source.name)?;
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
    let categories = match (&store, source.toy) {
        (Some(s), _) => Vocabulary::Store(s.categories().to_vec()),
        (None, true) => Vocabulary::Toy(toy_categories()),
        (None, false) => Vocabulary::Any,
    };
    let grid = match &store {
        Some(s) => s.fingerprint().grid,
        None => grid,
    };
    let pixel_space = sd.vae.is_none();
    // The toy model is trained for short schedules and low guidance (models/toy/README.md);
    // SD's are diffusers' defaults.
    let (default_steps, default_guidance, cache_images) = if source.toy {
        (20, 2.0, 30)
    } else {
        (50, 7.5, 100)
    };
    let info = ModelInfo {
        name: source.name.clone(),
        width,
        height,
        size_multiple: sd.size_multiple(),
        train_timesteps,
        grid,
        pixel_space,
        categories,
        default_steps,
        default_guidance,
        cache_images,
        has_store: store.is_some(),
    };
    let options = if source.toy {
        semi_methods::MethodOptions::toy()
    } else {
        semi_methods::MethodOptions::default()
    };
    Ok(Loaded {
        sd,
        fingerprint,
        store,
        info,
        options,
    })
}
