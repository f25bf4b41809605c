//! One generation from start to finish. A [`Request`] is what a command asks for; [`Run::plan`]
//! resolves it against a checked model folder before any weights are read (the layout sized,
//! the settings resolved with their sources, the sampling built from the layout, given latents
//! shape-checked); [`Run::generate`] prepares the method's latents and controller and denoises;
//! [`Run::params`] is what the outputs record. `semi generate`, `semi eval generate` and `semi
//! serve`'s worker all go through it, so they make the same image for the same inputs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use semi_diffusion::family::Family;
use semi_diffusion::image::ImageParams;
use semi_diffusion::latents_io::read_latents;
use semi_diffusion::pipeline::StepEvent;
use semi_layout::{Layout, SizeFrom};
use semi_methods::{Generation, Method, MethodOptions, Sampling};
use semi_tickets::{Progress, Rule, Store};
use serde_json::{json, Map, Value};

use crate::model::{Model, ModelRef};
use crate::settings::{Choices, Settings};
use crate::store::StoreSpec;

/// What a command asks for, before anything is resolved.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// A layout (its size may have come from the model: `size_from`), or none for a plain
    /// prompt.
    pub layout: Option<(Layout, SizeFrom)>,
    /// The prompt of a run without a layout.
    pub prompt: Option<String>,
    /// Replaces the layout's negative prompt when set.
    pub negative_prompt: Option<String>,
    /// Replaces the layout's seed; neither: 0.
    pub seed: Option<u64>,
    /// `--height`/`--width` of a run without a layout.
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub method: Option<Method>,
    /// Settings given explicitly (flags, a request's fields).
    pub flags: Choices,
    /// The official code's selection rule instead of the paper's (then no thresholds).
    pub authors_rule: bool,
    pub eta: f64,
    pub paint_weight: Option<f64>,
    pub soft_weight: Option<f64>,
    /// SemI's tickets, or one of its control experiments.
    pub fill: semi_tickets::InitMethod,
    /// Initial latents from a file instead of seeded noise.
    pub latents: Option<PathBuf>,
}

/// A resolved run: everything that decides the image besides the model's weights and the store.
#[derive(Debug, Clone)]
pub struct Run {
    /// The request's layout (a plain prompt is a layout without boxes), with the prompt,
    /// negative prompt and seed of the run.
    pub layout: Layout,
    pub size_from: SizeFrom,
    pub method: Method,
    pub settings: Settings,
    pub options: MethodOptions,
    pub sampling: Sampling,
    /// The model's family (`sd`, `sdxl`), recorded in the sidecar.
    pub family: Family,
    /// What completes or changes the model (single file, config, VAE, LoRAs), recorded in the
    /// sidecar as `model_files` (see [`crate::ModelRef::additions`]).
    pub model_files: Option<Value>,
}

/// Read a layout file; a layout without `width`/`height` gets `native` (width, height) when
/// known. Warnings (suspicious but allowed) come back for the caller to show.
pub fn read_layout(
    path: &Path,
    native: Option<(usize, usize)>,
) -> Result<(Layout, SizeFrom, Vec<String>)> {
    let read = match native {
        Some((w, h)) => Layout::from_path_sized(path, (w as u32, h as u32)),
        None => Layout::from_path(path).map(|l| (l, SizeFrom::Layout)),
    };
    // The layout crate's errors name the file already.
    let (layout, from) = read.map_err(|e| anyhow::anyhow!("{e}"))?;
    let warnings = layout
        .check()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("invalid layout {}", path.display()))?;
    Ok((layout, from, semi_layout::summarize_warnings(&warnings)))
}

impl Run {
    /// Resolve `req` against `model` (see the module docs); no weights are read.
    pub fn plan(model: &ModelRef, req: Request) -> Result<Run> {
        let method = req
            .method
            .unwrap_or_else(|| Method::parse("sd").expect("a method"));
        let needs = method.needs();
        if req.layout.is_none() {
            if let Some(why) = needs.boxes {
                bail!("method {method} needs a layout ({why})");
            }
        }
        if let (Some(why), Some(_)) = (needs.own_latents, &req.latents) {
            bail!("method {method} and given latents both make the initial latents ({why}); choose one");
        }
        let settings = model.settings(&req.flags)?;
        let rule = if req.authors_rule {
            if req.flags.t_obj.is_some() || req.flags.t_bg.is_some() {
                bail!("--t-obj/--t-bg apply to --rule paper; --rule authors uses the official code's thresholds");
            }
            Rule::authors()
        } else {
            settings.paper_rule()?
        };
        let mut options = MethodOptions {
            rule,
            recalibrate: settings.recalibrate.value,
            fill: req.fill,
            ..MethodOptions::default()
        };
        for (flag, value, slot) in [
            (
                "--paint-weight",
                req.paint_weight,
                &mut options.paint_weight,
            ),
            ("--soft-weight", req.soft_weight, &mut options.soft_weight),
        ] {
            if let Some(w) = value {
                if !(w.is_finite() && w >= 0.0) {
                    bail!("{flag} must be a finite number >= 0, got {w}");
                }
                *slot = w;
            }
        }

        let (mut layout, size_from) = match req.layout {
            Some(l) => l,
            None => {
                let prompt = req.prompt.clone().context("give a prompt or a layout")?;
                let (height, width, from) = match (req.height, req.width) {
                    (Some(h), Some(w)) => (h, w, SizeFrom::Flag),
                    (h, w) => {
                        let (nh, nw) = model.native_size()?;
                        let from = if h.is_some() || w.is_some() {
                            SizeFrom::Flag
                        } else {
                            SizeFrom::Model
                        };
                        (h.unwrap_or(nh), w.unwrap_or(nw), from)
                    }
                };
                (
                    Layout::new(prompt, width as u32, height as u32, Vec::new()),
                    from,
                )
            }
        };
        if layout.prompt.trim().is_empty() {
            bail!("the prompt is empty");
        }
        if let Some(n) = req.negative_prompt.filter(|n| !n.is_empty()) {
            layout.negative_prompt = Some(n);
        }
        let seed = req.seed.or(layout.seed).unwrap_or(0);
        layout.seed = Some(seed);

        let mut sampling = Sampling::new(seed);
        sampling.steps = settings.num_inference_steps.value;
        sampling.guidance_scale = settings.guidance_scale.value;
        sampling.eta = req.eta;
        let files = &model.files;
        let scheduler = settings.scheduler(&files.scheduler)?;
        scheduler.build(req.eta)?;
        sampling.scheduler = Some(scheduler);
        let request = sampling.request(&layout);
        request.validate(files.size_multiple())?;
        let batch = if request.uses_guidance() { 2 } else { 1 };
        files.check_size(
            request.height,
            request.width,
            batch,
            semi_diffusion::memory::available_bytes(),
        )?;
        let train = files.scheduler.num_train_timesteps;
        if sampling.steps > train {
            bail!(
                "{} steps exceed the scheduler's {train} training timesteps",
                sampling.steps
            );
        }
        if let Some(path) = &req.latents {
            let latents = read_latents(path)?;
            let want = files.latent_shape(request.height, request.width);
            if latents.dims() != want.as_slice() {
                bail!(
                    "--latents {} has shape {:?}, but a {}x{} image with this model needs {:?}",
                    path.display(),
                    latents.dims(),
                    request.width,
                    request.height,
                    want
                );
            }
            sampling.latents = Some(latents);
        }
        Ok(Run {
            layout,
            size_from,
            method,
            settings,
            options,
            sampling,
            family: model.files.family,
            model_files: model.additions(),
        })
    }

    /// Whether the method draws on a ticket store.
    pub fn needs_store(&self) -> bool {
        self.method.needs_store()
    }

    /// This run's store ([`crate::store::open`]) for the layout's categories at its size.
    pub fn store(
        &self,
        model: &Model,
        spec: &StoreSpec,
        progress: &mut dyn FnMut(&Progress),
        log: &mut dyn FnMut(&str),
    ) -> Result<Store> {
        crate::store::open(
            model,
            spec,
            &self.settings,
            &self.layout.categories(),
            self.layout.height as usize,
            self.layout.width as usize,
            progress,
            log,
        )
    }

    /// Prepare the method's latents and controller and denoise; `on_step` after every step.
    pub fn generate(
        &self,
        model: &Model,
        store: Option<&Store>,
        on_step: &mut dyn FnMut(&StepEvent) -> Result<()>,
    ) -> Result<Generation> {
        semi_methods::generate(
            &model.sd,
            &self.layout,
            &self.sampling,
            &self.method,
            store,
            &self.options,
            on_step,
        )
    }

    /// What the image's metadata and sidecar record: the request, the method's metadata, the
    /// layout, and every setting with its source (and where the size came from).
    pub fn params(&self, model: &str, generation: &Generation) -> ImageParams {
        let mut extra: Map<String, Value> = generation.prepared_metadata.clone();
        if !self.layout.objects.is_empty() {
            extra.insert(
                "layout".into(),
                serde_json::to_value(&self.layout).unwrap_or_default(),
            );
        }
        extra.insert(
            "size".into(),
            json!({"width": self.layout.width, "height": self.layout.height, "source": self.size_from}),
        );
        extra.insert(
            "settings".into(),
            serde_json::to_value(&self.settings).unwrap_or_default(),
        );
        if let Some(s) = &self.sampling.scheduler {
            extra.insert("scheduler".into(), s.describe());
        }
        extra.insert("family".into(), json!(self.family.name()));
        if let Some(files) = &self.model_files {
            extra.insert("model_files".into(), files.clone());
        }
        ImageParams {
            prompt: self.layout.prompt.clone(),
            negative_prompt: self.layout.negative_prompt.clone().unwrap_or_default(),
            seed: self.sampling.seed,
            steps: self.sampling.steps,
            guidance: self.sampling.guidance_scale,
            eta: self.sampling.eta,
            model: model.to_string(),
            width: self.layout.width as usize,
            height: self.layout.height as usize,
            extra,
        }
    }

    /// Settings that decide an image besides its layout and seed, as a comparable JSON value
    /// (`semi eval` refuses to resume a folder made with other settings).
    pub fn decisive_settings(&self, model_fingerprint: &str, store: Option<&Store>) -> Value {
        let mut s = json!({
            "model_fingerprint": model_fingerprint,
            "steps": self.sampling.steps,
            "guidance": self.sampling.guidance_scale,
            "eta": self.sampling.eta,
        });
        // Plain DDIM, the default, is left out so that folders begun before schedulers were
        // selectable still resume.
        if let Some(sched) = self.sampling.scheduler.as_ref().filter(|s| {
            s.kind != semi_diffusion::schedulers::SchedulerKind::Ddim || !s.options.is_empty()
        }) {
            s.as_object_mut()
                .expect("an object")
                .insert("scheduler".into(), sched.describe());
        }
        let map = s.as_object_mut().expect("an object");
        let m = &self.method;
        let o = &self.options;
        match m.guidance {
            semi_methods::Guidance::None => {}
            semi_methods::Guidance::Paint => {
                map.insert("paint_weight".into(), o.paint_weight.into());
            }
            semi_methods::Guidance::Soft => {
                map.insert("soft_weight".into(), o.soft_weight.into());
            }
        }
        if m.init.uses_swap() {
            map.insert("swap".into(), format!("{:?}", o.swap).into());
        }
        if m.needs_store() {
            map.insert("rule".into(), format!("{:?}", o.rule).into());
            map.insert("recalibrate".into(), o.recalibrate.into());
            match o.fill {
                semi_tickets::InitMethod::SemI => {}
                // The key settings have always had for this control.
                semi_tickets::InitMethod::ColourMatchedControl => {
                    map.insert("colour_control".into(), true.into());
                }
                other => {
                    map.insert("control".into(), other.name().into());
                }
            }
            if let Some(store) = store {
                map.insert(
                    "store".into(),
                    json!({
                        "probe": store.fingerprint().digest(),
                        "images": store.n_images(),
                        "pairs": store.pairs().len(),
                    }),
                );
            }
        }
        s
    }
}

/// The same run for another layout (a batch: `semi eval`), keeping its method and settings.
impl Run {
    pub fn for_layout(&self, layout: &Layout, seed: u64) -> Run {
        let mut run = self.clone();
        run.layout = layout.clone();
        run.layout.seed = Some(seed);
        run.size_from = SizeFrom::Layout;
        run.sampling.seed = seed;
        run.sampling.latents = None;
        run
    }
}

/// The initial latents as unit-variance f32 on the CPU.
pub fn cpu_f32(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?)
}
