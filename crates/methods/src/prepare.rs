//! Initial latents and controller for one layout and method ([`prepare`]), and the whole run
//! ([`generate`]); how each method is made is in the crate docs.

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use semi_diffusion::controller::AttentionController;
use semi_diffusion::pipeline::{GenerateRequest, StableDiffusion, StepEvent};
use semi_diffusion::schedulers::{alphas_cumprod, betas};
use semi_guidance::{
    objects_in_prompt, GuidedObject, NoiseLevels, Paint, PaintConfig, Soft, SoftConfig,
};
use semi_layout::Layout;
use semi_tickets::swap::{swap_noise, SwapOptions};
use semi_tickets::{semi_init, Construction, InitMethod, InitOptions, Rule, Store};
use serde_json::{json, Map, Value};

use crate::method::{Guidance, Init, Method};

/// Strengths and SemI settings; `Default` = the documented defaults.
#[derive(Clone, Debug)]
pub struct MethodOptions {
    /// Winning-ticket selection rule (default: the paper's, T_obj 0.5, T_bg 0.1).
    pub rule: Rule,
    /// SemI: standardise each latent channel afterwards (default off, as the paper).
    pub recalibrate: bool,
    /// SemI's control experiment: fill each cell with fresh Gaussian blocks matched to its
    /// ticket set's per-channel mean and variance instead of the tickets themselves, so a gain
    /// that survives is colour statistics, not tickets (`semi_tickets::InitMethod`; default off).
    pub colour_control: bool,
    /// Paint's `w` (default [`semi_guidance::PAINT_DEFAULT_WEIGHT`]).
    pub paint_weight: f64,
    /// Soft's `w` (default [`semi_guidance::SOFT_DEFAULT_WEIGHT`]).
    pub soft_weight: f64,
    /// Swap's probe and normalisation (default: the ticket probe's layer, mean-normalised).
    pub swap: SwapOptions,
}

impl Default for MethodOptions {
    fn default() -> Self {
        MethodOptions {
            rule: Rule::Paper {
                t_obj: 0.5,
                t_bg: 0.1,
            },
            recalibrate: false,
            colour_control: false,
            paint_weight: semi_guidance::PAINT_DEFAULT_WEIGHT,
            soft_weight: semi_guidance::SOFT_DEFAULT_WEIGHT,
            swap: SwapOptions::default(),
        }
    }
}

impl MethodOptions {
    /// The settings measured best for the embedded toy model (docs/toyworld.md, section 3):
    /// the paper rule at T_obj 0.7 and T_bg 0.3 (at the paper's T_bg 0.1 some category pairs of
    /// the toy model have no background tickets at all) and recalibration (the pixel-space
    /// background tickets are tinted). Strengths as [`MethodOptions::default`].
    pub fn toy() -> Self {
        MethodOptions {
            rule: Rule::Paper {
                t_obj: 0.7,
                t_bg: 0.3,
            },
            recalibrate: true,
            ..MethodOptions::default()
        }
    }
}

/// Everything that goes into the denoising loop for one layout.
pub struct Prepared {
    /// Initial latents `[1, C, H/f, W/f]` f32 on the CPU (unit variance, before
    /// `init_noise_sigma`).
    pub latents: Tensor,
    /// The attention controller for Paint/Soft (None for Guidance::None).
    pub controller: Option<Box<dyn AttentionController>>,
    /// SemI: which grid cells got which category's tickets (for previews); None otherwise.
    pub construction: Option<Construction>,
    /// Key/values for the PNG metadata and sidecar: `method`, `init`, `attention` (the guidance:
    /// none, paint, soft; not `guidance`, which the image parameters use for the classifier-free
    /// guidance scale), and as they apply `paint_weight` / `soft_weight`, `store`, `store_fingerprint`, `store_model`, `rule`,
    /// `recalibrate`, `tickets` (cells and reuse per ticket set), `swap` (the Swap report).
    pub metadata: Map<String, Value>,
}

/// Build the initial latents and the controller for `layout` with `method`.
/// `seed` seeds the Gaussian noise (Gaussian, Swap) and SemI's random choices; `steps` is the
/// run's step count (Swap probes at its first timestep, Soft's schedule spans it). `store` is
/// required when `method.needs_store()`. A layout without objects (a plain prompt) is accepted
/// only by `sd`.
pub fn prepare(
    sd: &StableDiffusion,
    layout: &Layout,
    seed: u64,
    steps: usize,
    method: &Method,
    store: Option<&Store>,
    options: &MethodOptions,
) -> Result<Prepared> {
    prepare_from(sd, layout, seed, steps, method, store, options, None)
}

/// [`prepare`], with `noise` (when given) in place of the seeded Gaussian noise.
#[allow(clippy::too_many_arguments)]
fn prepare_from(
    sd: &StableDiffusion,
    layout: &Layout,
    seed: u64,
    steps: usize,
    method: &Method,
    store: Option<&Store>,
    options: &MethodOptions,
    noise: Option<&Tensor>,
) -> Result<Prepared> {
    let name = method.name();
    if method.needs_boxes() && layout.objects.is_empty() {
        bail!("method {name} needs a layout with boxes (objects)");
    }
    if steps == 0 {
        bail!("steps must be at least 1");
    }
    let (h, w) = (layout.height as usize, layout.width as usize);
    let multiple = sd.size_multiple();
    if h == 0 || w == 0 || h % multiple != 0 || w % multiple != 0 {
        bail!("the layout's size {w}x{h} must be positive multiples of {multiple} for this model");
    }
    let shape = sd.latent_shape(h, w);
    let mut metadata = Map::new();
    metadata.insert("method".into(), name.clone().into());
    metadata.insert("init".into(), method.init.name().into());
    metadata.insert("attention".into(), method.guidance.name().into());

    // Token positions only where they are used (SemI alone needs none).
    let objects = if method.init.uses_swap() || method.guidance != Guidance::None {
        guided_objects(sd, layout)?
    } else {
        Vec::new()
    };

    let mut construction = None;
    let mut latents = if method.init.uses_semi() {
        if noise.is_some() {
            bail!(
                "method {name} builds its latents from tickets; it cannot start from given latents"
            );
        }
        let store = store.with_context(|| {
            format!("method {name} needs a ticket store (SemI draws its latents from one)")
        })?;
        let init = InitOptions {
            seed,
            method: if options.colour_control {
                InitMethod::ColourMatchedControl
            } else {
                InitMethod::SemI
            },
            recalibrate: options.recalibrate,
        };
        let (_, c) = semi_init(store, layout, &options.rule, &init)?;
        ensure!(
            c.shape.as_slice() == shape.as_slice(),
            "the store {} makes latents of shape {:?}, but this model needs {shape:?} at {w}x{h}",
            store.dir().display(),
            c.shape
        );
        let t = Tensor::from_vec(c.latents.clone(), c.shape.to_vec(), &Device::Cpu)?;
        let f = store.fingerprint();
        metadata.insert("store".into(), store.dir().display().to_string().into());
        metadata.insert("store_fingerprint".into(), f.digest().into());
        metadata.insert("store_model".into(), f.model.clone().into());
        metadata.insert("rule".into(), options.rule.to_string().into());
        metadata.insert("recalibrate".into(), options.recalibrate.into());
        if options.colour_control {
            metadata.insert("colour_control".into(), true.into());
        }
        let uses: Vec<Value> = c
            .uses
            .iter()
            .map(|u| json!({"set": u.name, "cells": u.cells, "available": u.available, "reused": u.reused}))
            .collect();
        metadata.insert("tickets".into(), uses.into());
        construction = Some(c);
        t
    } else {
        match noise {
            Some(n) => {
                ensure!(
                    n.dims() == shape.as_slice(),
                    "initial latents have shape {:?}, but a {w}x{h} image with this model needs \
                     {shape:?}",
                    n.dims()
                );
                n.to_device(&Device::Cpu)?
                    .to_dtype(candle_core::DType::F32)?
            }
            None => semi_diffusion::noise::randn(seed, &shape, &Device::Cpu)?,
        }
    };

    if method.init.uses_swap() {
        let tokens: Vec<Vec<usize>> = objects.iter().map(|o| o.tokens.clone()).collect();
        let (swapped, report) = swap_noise(sd, &latents, layout, &tokens, steps, &options.swap)?;
        latents = swapped;
        metadata.insert("swap".into(), report.to_json());
    }

    let controller: Option<Box<dyn AttentionController>> = match method.guidance {
        Guidance::None => None,
        Guidance::Paint => {
            let sigmas =
                NoiseLevels::from_alphas_cumprod(&alphas_cumprod(&betas(&sd.scheduler_config)?))?;
            let config = PaintConfig {
                weight: options.paint_weight,
                ..PaintConfig::default()
            };
            metadata.insert("paint_weight".into(), options.paint_weight.into());
            Some(Box::new(Paint::new(objects, sigmas, config)?))
        }
        Guidance::Soft => {
            let config = SoftConfig {
                weight: options.soft_weight,
                ..SoftConfig::for_steps(steps)
            };
            metadata.insert("soft_weight".into(), options.soft_weight.into());
            Some(Box::new(Soft::new(objects, config)?))
        }
    };
    Ok(Prepared {
        latents,
        controller,
        construction,
        metadata,
    })
}

/// The layout's objects with their token positions in the layout's prompt.
fn guided_objects(sd: &StableDiffusion, layout: &Layout) -> Result<Vec<GuidedObject>> {
    let ids = sd.tokenizer.encode(&layout.prompt)?;
    objects_in_prompt(layout, |text| sd.tokenizer.token_positions(&ids, text))
}

/// The result of [`generate`].
pub struct Generation {
    /// `[1, 3, H, W]` in [0, 1].
    pub image: Tensor,
    /// The final latents.
    pub latents: Tensor,
    /// The initial latents as prepared (before `init_noise_sigma`).
    pub initial: Tensor,
    pub prepared_metadata: Map<String, Value>,
    pub construction: Option<Construction>,
}

/// [`prepare`] (seed and steps from `req`) + `sd.generate` with the request's steps, guidance
/// scale and eta; `on_step` after every step. The request's prompt and size must be the
/// layout's. `req.latents`, when given, replaces the seeded Gaussian noise (Gaussian, Swap; an
/// error with SemI). With Gaussian init and no given latents the pipeline draws the noise itself
/// (the same values), so DDIM with eta > 0 also draws its step noise as diffusers does.
pub fn generate(
    sd: &StableDiffusion,
    layout: &Layout,
    req: &GenerateRequest,
    method: &Method,
    store: Option<&Store>,
    options: &MethodOptions,
    on_step: &mut dyn FnMut(&StepEvent) -> Result<()>,
) -> Result<Generation> {
    if req.prompt != layout.prompt {
        bail!(
            "the request's prompt {:?} is not the layout's prompt {:?}",
            req.prompt,
            layout.prompt
        );
    }
    if (req.height, req.width) != (layout.height as usize, layout.width as usize) {
        bail!(
            "the request is {}x{} but the layout {}x{}",
            req.width,
            req.height,
            layout.width,
            layout.height
        );
    }
    req.validate(sd.size_multiple())?;
    let mut prepared = prepare_from(
        sd,
        layout,
        req.seed,
        req.steps,
        method,
        store,
        options,
        req.latents.as_ref(),
    )?;
    let mut run = req.clone();
    if method.init != Init::Gaussian || req.latents.is_some() {
        run.latents = Some(prepared.latents.clone());
    }
    let out = match prepared.controller.as_mut() {
        Some(c) => sd.generate(&run, Some(&mut **c), &mut |ev| on_step(&ev))?,
        None => sd.generate(&run, None, &mut |ev| on_step(&ev))?,
    };
    Ok(Generation {
        image: out.image,
        latents: out.latents,
        initial: prepared.latents,
        prepared_metadata: prepared.metadata,
        construction: prepared.construction,
    })
}
