//! The ticket store of a run: the one the user gave (checked to come from this model), or the
//! model's on-the-fly cache store ([`semi_methods::cache_store_with`]), filled first with the
//! category pairs the layouts need.

use std::path::Path;

use anyhow::{bail, Result};
use semi_diffusion::config::SchedulerConfig;
use semi_diffusion::pipeline::StableDiffusion;
use semi_tickets::names::normalize_categories;
use semi_tickets::{LayerChoice, ProbeOptions, Progress, Store};

use crate::model::Model;
use crate::settings::Settings;

/// Where a run's tickets come from, and how a cache store is filled.
#[derive(Debug, Clone, Default)]
pub struct StoreSpec<'a> {
    /// A collected store; `None`: the model's cache store.
    pub given: Option<&'a Path>,
    /// Categories to contrast the layouts' categories with (a one-category layout needs one);
    /// empty: for the toy model, its other shapes.
    pub partners: Vec<String>,
    /// Contrastive prompts per probe pass when filling the cache store (0 means 1).
    pub pairs_per_pass: usize,
    /// Noise images per probe pass when filling the cache store (0 means 1).
    pub images_per_pass: usize,
}

/// The probe settings of the cache store for images of `height` x `width`.
/// `model`: the model's scheduler config, which the chosen sampler starts from.
pub fn probe_options(
    settings: &Settings,
    model: &SchedulerConfig,
    pairs_per_pass: usize,
    height: usize,
    width: usize,
) -> Result<ProbeOptions> {
    let mut o = ProbeOptions::new(height, width);
    o.layers = LayerChoice::parse(&settings.probe_layers.value)?;
    o.pairs_per_pass = pairs_per_pass.max(1);
    o.scheduler = Some(settings.scheduler(model)?);
    Ok(o)
}

/// Open the store for layouts of `categories` at `height` x `width` (see the module docs).
/// `progress` follows the probe passes; `log` gets one line saying whether the cache store was
/// up to date or what is being collected.
#[allow(clippy::too_many_arguments)]
pub fn open(
    model: &Model,
    spec: &StoreSpec,
    settings: &Settings,
    categories: &[String],
    height: usize,
    width: usize,
    progress: &mut dyn FnMut(&Progress),
    log: &mut dyn FnMut(&str),
) -> Result<Store> {
    let fingerprint = model.fingerprint()?;
    let mut probe = probe_options(
        settings,
        &model.sd.files.scheduler,
        spec.pairs_per_pass,
        height,
        width,
    )?;
    probe.images_per_pass = spec.images_per_pass.max(1);
    if let Some(dir) = spec.given {
        let store = Store::open(dir)?;
        semi_methods::check_store_model(&store, fingerprint, model.sd.files.family, model.name())?;
        check_store_schedule(&store, &model.sd, &probe)?;
        return Ok(store);
    }
    let categories = normalize_categories(categories)?;
    let partners = if !spec.partners.is_empty() {
        spec.partners.clone()
    } else if categories.len() >= 2 {
        Vec::new()
    } else {
        match model.vocabulary() {
            Some(all) => all
                .into_iter()
                .filter(|c| !categories.contains(c))
                .collect(),
            None => Vec::new(),
        }
    };
    semi_methods::cache_store_with(
        &model.sd,
        fingerprint,
        &probe,
        &categories,
        &partners,
        settings.cache_images.value,
        progress,
        log,
    )
}

/// A store scored at another first step than this run's sampler takes is refused: its tickets
/// won for another timestep or input scale.
fn check_store_schedule(store: &Store, sd: &StableDiffusion, probe: &ProbeOptions) -> Result<()> {
    let (timestep, input_scale) = semi_tickets::probe::probe_schedule(sd, probe)?;
    let theirs = store.fingerprint();
    if theirs.timestep != timestep || theirs.input_scale != input_scale {
        let class = probe
            .scheduler
            .as_ref()
            .unwrap_or(&sd.scheduler)
            .kind
            .class_name();
        bail!(
            "the store {} was probed at timestep {} (input scale {}), but this run's scheduler \
             {class} starts at timestep {timestep} (input scale {input_scale}); collect a store \
             with the same --scheduler, or run with the scheduler the store was collected with",
            store.dir().display(),
            theirs.timestep,
            theirs.input_scale
        );
    }
    Ok(())
}

/// One size for every layout of a cache store (it serves one size); the error names the odd one.
pub fn one_size<'a>(
    sizes: impl IntoIterator<Item = (&'a str, u32, u32)>,
) -> Result<Option<(usize, usize)>> {
    let mut first: Option<(u32, u32)> = None;
    for (id, w, h) in sizes {
        match first {
            None => first = Some((w, h)),
            Some((fw, fh)) if (fw, fh) != (w, h) => bail!(
                "layouts of several sizes ({fw}x{fh} and {w}x{h} for {id:?}) need a collected \
                 --store: the cache store serves one size"
            ),
            _ => {}
        }
    }
    Ok(first.map(|(w, h)| (h as usize, w as usize)))
}
