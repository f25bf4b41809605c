//! Initial latents and controller for one layout and method ([`prepare`]), and the whole run
//! ([`generate`]): the method's init stages ([`crate::init`]) and guidance
//! ([`crate::guidance`]), then the pipeline.

use anyhow::{bail, Result};
use candle_core::Tensor;
use semi_diffusion::controller::AttentionController;
use semi_diffusion::pipeline::{GenerateRequest, StableDiffusion, StepEvent};
use semi_diffusion::schedulers::SchedulerSpec;
use semi_guidance::{objects_in_prompt, GuidedObject};
use semi_layout::Layout;
use semi_tickets::{Construction, Store};
use serde_json::{Map, Value};

use crate::guidance::GuidanceContext;
use crate::init::{InitContext, InitState};
use crate::method::{Init, Method};
use crate::MethodOptions;

/// How to denoise one layout: everything of a generation that is not in the layout (prompt,
/// negative prompt and size come from the layout itself).
#[derive(Clone, Debug)]
pub struct Sampling {
    /// Seeds the Gaussian noise, SemI's random choices and DDIM's step noise.
    pub seed: u64,
    pub steps: usize,
    /// Classifier-free guidance scale; <= 1 disables it.
    pub guidance_scale: f64,
    /// DDIM eta: 0 deterministic, 1 ancestral.
    pub eta: f64,
    /// Initial latents in place of the seeded noise (Gaussian and Swap; an error for SemI).
    pub latents: Option<Tensor>,
    /// The sampler; `None`: the model's default (DDIM).
    pub scheduler: Option<SchedulerSpec>,
}

impl Sampling {
    /// diffusers' defaults (50 steps, guidance 7.5, eta 0) with `seed`.
    pub fn new(seed: u64) -> Self {
        Sampling {
            seed,
            steps: 50,
            guidance_scale: 7.5,
            eta: 0.0,
            latents: None,
            scheduler: None,
        }
    }

    /// The pipeline's request for `layout`, built from it.
    pub fn request(&self, layout: &Layout) -> GenerateRequest {
        let mut req = GenerateRequest::new(
            layout.prompt.clone(),
            layout.height as usize,
            layout.width as usize,
        );
        req.negative_prompt = layout.negative_prompt.clone().unwrap_or_default();
        req.seed = self.seed;
        req.steps = self.steps;
        req.guidance_scale = self.guidance_scale;
        req.eta = self.eta;
        req.latents = self.latents.clone();
        req.scheduler = self.scheduler.clone();
        req
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
    /// guidance scale), and what the stages add: `paint_weight` / `soft_weight`, `store`,
    /// `store_fingerprint`, `store_model`, `rule`, `recalibrate`, `tickets` (cells and reuse per
    /// ticket set), `swap` (the Swap report).
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
    prepare_with(sd, layout, seed, steps, method, store, options, None)
}

/// [`prepare`], with `given` (when set) in place of the seeded Gaussian noise.
#[allow(clippy::too_many_arguments)]
fn prepare_with(
    sd: &StableDiffusion,
    layout: &Layout,
    seed: u64,
    steps: usize,
    method: &Method,
    store: Option<&Store>,
    options: &MethodOptions,
    given: Option<&Tensor>,
) -> Result<Prepared> {
    let name = method.name();
    let needs = method.needs();
    if needs.boxes.is_some() && layout.objects.is_empty() {
        bail!("method {name} needs a layout with boxes (objects)");
    }
    if let (Some(why), Some(_)) = (needs.own_latents, given) {
        bail!("method {name} cannot start from given latents: {why}");
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
    // Token positions only where they are used (SemI alone needs none).
    let objects = if needs.tokens {
        guided_objects(sd, layout)?
    } else {
        Vec::new()
    };

    let mut state = InitState::default();
    state.metadata.insert("method".into(), name.clone().into());
    state
        .metadata
        .insert("init".into(), method.init.name().into());
    state
        .metadata
        .insert("attention".into(), method.guidance.name().into());
    let cx = InitContext {
        sd,
        layout,
        method: &name,
        seed,
        steps,
        store,
        options,
        given,
        shape: &shape,
        objects: &objects,
    };
    for stage in method.init.stages(options) {
        stage.apply(&cx, &mut state)?;
    }
    let InitState {
        latents,
        construction,
        mut metadata,
    } = state;
    let Some(latents) = latents else {
        bail!("method {name}: its init stages made no latents");
    };
    let controller = match method.guidance.method() {
        Some(g) => {
            let cx = GuidanceContext {
                sd,
                steps,
                options,
                objects,
            };
            Some(g.controller(cx, &mut metadata)?)
        }
        None => None,
    };
    Ok(Prepared {
        latents,
        controller,
        construction,
        metadata,
    })
}

/// The layout's objects with their token positions in the layout's prompt. An object the
/// prompt names only past the text encoder's last token is an error saying so.
fn guided_objects(sd: &StableDiffusion, layout: &Layout) -> Result<Vec<GuidedObject>> {
    let tok = sd.tokenizer();
    let ids = tok.encode(&layout.prompt)?;
    if let Some(n) = tok.cut(&layout.prompt)? {
        let full = tok.encode_full(&layout.prompt)?;
        let found = |ids: &[u32], text: &str| tok.token_positions(ids, text).is_some();
        for (i, o) in layout.objects.iter().enumerate() {
            let seen = found(&ids, &o.phrase) || found(&ids, &o.category);
            if !seen && (found(&full, &o.phrase) || found(&full, &o.category)) {
                bail!(
                    "objects[{i}]: its phrase {:?} lies beyond token {} of the prompt, which has \
                     {n}; the text encoder reads only the first {}, so attention guidance cannot \
                     steer it: shorten the prompt or name the object earlier",
                    o.phrase,
                    tok.max_length(),
                    tok.max_length()
                );
            }
        }
    }
    objects_in_prompt(layout, |text| tok.token_positions(&ids, text))
}

/// A warning when the prompt has more tokens than the text encoder reads (the rest is cut, as
/// in diffusers).
pub fn prompt_warnings(sd: &StableDiffusion, prompt: &str) -> Result<Vec<String>> {
    Ok(match sd.tokenizer().cut(prompt)? {
        Some(n) => vec![format!(
            "the prompt has {n} tokens; the text encoder reads only the first {}, the rest is cut",
            sd.tokenizer().max_length()
        )],
        None => Vec::new(),
    })
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
    /// Things the user should know (a prompt cut at the text encoder's length).
    pub warnings: Vec<String>,
}

/// [`prepare`] + `sd.generate` with the pipeline request built from `layout` and `sampling`;
/// `on_step` after every step. With Gaussian init and no given latents the pipeline draws the
/// noise itself (the same values), so DDIM with eta > 0 also draws its step noise as diffusers
/// does.
pub fn generate(
    sd: &StableDiffusion,
    layout: &Layout,
    sampling: &Sampling,
    method: &Method,
    store: Option<&Store>,
    options: &MethodOptions,
    on_step: &mut dyn FnMut(&StepEvent) -> Result<()>,
) -> Result<Generation> {
    let mut run = sampling.request(layout);
    run.validate(sd.size_multiple())?;
    let mut prepared = prepare_with(
        sd,
        layout,
        sampling.seed,
        sampling.steps,
        method,
        store,
        options,
        sampling.latents.as_ref(),
    )?;
    if method.init != Init::Gaussian || sampling.latents.is_some() {
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
        warnings: prompt_warnings(sd, &layout.prompt)?,
    })
}
