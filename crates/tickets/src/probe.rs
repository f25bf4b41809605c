//! The real probe (docs/design.md 1.1): one truncated UNet pass of a loaded [`StableDiffusion`] per
//! (noise image, contrastive prompt), implementing [`Prober`].
//!
//! - Timestep: the first timestep of the generation schedule, computed from the model's scheduler
//!   config (DDIM, [`DEFAULT_STEPS`] steps: 981 for SD 1.x with leading spacing and offset 1).
//! - Input: the noise times `init_noise_sigma`, through `scale_model_input`, as the first
//!   denoising step sees it; conditional branch only (no unconditional rows: classifier-free
//!   guidance does not change the conditional half's attention).
//! - Prompt: [`PROMPT_TEMPLATE`] `a {c1} and a {c2}`, lower-cased.
//! - Layers ([`LayerChoice`]): by default the authors' layer
//!   `down_blocks.2.attentions.1.transformer_blocks.0.attn2`. As a rule that also fits other
//!   UNets and sizes: the grid level is the down block with cross-attention whose grid (latent
//!   size / its downsampling) is nearest [`TARGET_GRID`] = 16 cells a side, the paper's 256 cells
//!   (SD 1.x at 512: down block 2, 16x16; the 32x32 pixel-space toy model: down block 1, 16x16
//!   cells of 2x2 pixels); on a tie, the deeper block. The default layer is the first
//!   cross-attention layer of the level's second transformer (`attentions.1`), or of its last
//!   transformer when it has one. SDXL at 1024x1024 (latent 128): down block 2 (32x32 cells of
//!   4x4 latent pixels = 32x32 image pixels, the cell of SD 1.x at 512; down block 1's 64x64 is
//!   an octave further from 16), whose second transformer's first of 10 layers is the authors'
//!   path again. [`LayerChoice::All`] probes every cross-attention layer at that resolution
//!   (down, mid where it matches, and up, prompt-to-prompt style).
//! - The pass stops right after the last probed layer (the layer's values `probs @ V` and
//!   everything later are never computed).
//! - Map: softmax probabilities over all 77 tokens, averaged over heads; a category's column is
//!   the sum of its tokens' columns (multi-token names); averaged over probed layers; min-max
//!   normalised per map. The grid is the probed layers' resolution.
//!
//! Several pairs can share one pass ([`Prober::probe_pairs`]): batch rows are prompts, the noise
//! is repeated. On a (shared, 2-core) CPU this did not pay reliably (per-pair time 0.7x-1.9x of
//! batch 1 across runs, `semi tickets bench`), so [`ProbeOptions::new`] keeps one pair per pass.

use std::cell::Cell;
use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};
use semi_diffusion::controller::{AttentionController, AttentionKind, AttentionSite, Place};
use semi_diffusion::family::PromptEmbeds;
use semi_diffusion::pipeline::StableDiffusion;
use semi_diffusion::schedulers::SchedulerSpec;
use semi_diffusion::tokenizer::ClipTokenizer;
use semi_diffusion::unet::{ForwardOptions, UNet2DConditionModel, UNetOutput};

use crate::fingerprint::ProbeFingerprint;
use crate::prober::{min_max_normalize, Prober};

/// The authors' probed layer (the second 16x16 cross-attention of SD 1.x's down path).
pub const AUTHORS_LAYER: &str = "down_blocks.2.attentions.1.transformer_blocks.0.attn2";
/// The contrastive prompt.
pub const PROMPT_TEMPLATE: &str = "a {c1} and a {c2}";
/// Generation steps whose first timestep the probe uses.
pub const DEFAULT_STEPS: usize = 50;
/// Cells a side of the ticket grid the default layer rule aims for (the authors' 16x16).
pub const TARGET_GRID: usize = 16;

/// Which cross-attention layers to probe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LayerChoice {
    /// The authors' layer, or the rule in the module docs.
    #[default]
    Default,
    /// Every cross-attention layer at the default layer's resolution (no early stop before the
    /// last of them).
    All,
    /// Explicit layer paths (all cross-attention, all at one resolution).
    Paths(Vec<String>),
}

impl LayerChoice {
    /// `default`, `all`, or a comma-separated list of layer paths.
    pub fn parse(text: &str) -> Result<LayerChoice> {
        match text.trim() {
            "default" => Ok(LayerChoice::Default),
            "all" => Ok(LayerChoice::All),
            "" => bail!("--layers is empty (use default, all, or layer paths)"),
            list => Ok(LayerChoice::Paths(
                list.split(',').map(|p| p.trim().to_string()).collect(),
            )),
        }
    }
}

/// Probe settings.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Image size in pixels.
    pub height: usize,
    pub width: usize,
    pub layers: LayerChoice,
    /// Generation steps (the probe runs at the schedule's first timestep).
    pub steps: usize,
    pub template: String,
    /// Prompts per UNet pass (batch rows); 1 = no batching.
    pub pairs_per_pass: usize,
    /// Noise images per UNet pass (batch rows, times the prompts); 1 = one image per pass.
    /// The scores are the same for any value.
    pub images_per_pass: usize,
    /// The sampler whose first step the probe reproduces; `None`: the model's default (DDIM).
    pub scheduler: Option<SchedulerSpec>,
}

impl ProbeOptions {
    pub fn new(height: usize, width: usize) -> Self {
        ProbeOptions {
            height,
            width,
            layers: LayerChoice::Default,
            steps: DEFAULT_STEPS,
            template: PROMPT_TEMPLATE.to_string(),
            pairs_per_pass: 1,
            images_per_pass: 1,
            scheduler: None,
        }
    }
}

/// The probed layers of a UNet for a latent size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    /// Layer paths in execution order.
    pub layers: Vec<String>,
    /// The layer after which the pass stops (the last of `layers`).
    pub stop_after: String,
    /// Downsampling factor of the probed resolution relative to the latent.
    pub factor: usize,
    /// `[rows, cols]` = latent size / factor.
    pub grid: [usize; 2],
}

/// Downsampling factor of the block an attention layer lives in.
fn layer_factor(path: &str, place: Place, n_blocks: usize) -> Result<usize> {
    let index = |prefix: &str| -> Result<usize> {
        path.strip_prefix(prefix)
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("cannot read the block index of layer {path}"))
    };
    Ok(match place {
        Place::Down => 1 << index("down_blocks.")?,
        Place::Mid => 1 << (n_blocks - 1),
        Place::Up => 1 << (n_blocks - 1 - index("up_blocks.")?),
    })
}

/// Choose the probed layers (module docs) for a `latent_hw` latent.
pub fn plan_layers(
    unet: &UNet2DConditionModel,
    latent_hw: (usize, usize),
    choice: &LayerChoice,
) -> Result<LayerPlan> {
    let n = unet.config().block_out_channels.len();
    let cross: Vec<(String, usize, Place)> = unet
        .attention_layers()
        .iter()
        .filter(|l| l.kind == AttentionKind::CrossAttention)
        .map(|l| Ok((l.path.clone(), layer_factor(&l.path, l.place, n)?, l.place)))
        .collect::<Result<_>>()?;
    let down_level = || -> Result<usize> {
        // Distance of a level's grid from the target, in octaves (x2 finer = x2 coarser).
        let side = latent_hw.0.min(latent_hw.1).max(1) as f64;
        let distance = |f: usize| (side / f as f64 / TARGET_GRID as f64).log2().abs();
        (0..n)
            .rev()
            .map(|lvl| 1usize << lvl)
            .filter(|f| cross.iter().any(|(_, g, p)| *p == Place::Down && g == f))
            .min_by(|a, b| distance(*a).total_cmp(&distance(*b)))
            .context("the UNet has no cross-attention layer in its down path to probe")
    };
    let layers: Vec<String> = match choice {
        LayerChoice::Default => {
            if cross.iter().any(|(p, _, _)| p == AUTHORS_LAYER) {
                vec![AUTHORS_LAYER.to_string()]
            } else {
                let f = down_level()?;
                let at: Vec<&String> = cross
                    .iter()
                    .filter(|(_, g, p)| *p == Place::Down && *g == f)
                    .map(|(path, _, _)| path)
                    .collect();
                // The level's transformers (`down_blocks.i.attentions.k`) in order: the second
                // one's first layer, or the last transformer's when the level has one.
                let transformer = |path: &str| -> String {
                    path.split(".transformer_blocks.")
                        .next()
                        .unwrap_or(path)
                        .to_string()
                };
                let mut transformers: Vec<String> = Vec::new();
                for p in &at {
                    let t = transformer(p);
                    if !transformers.contains(&t) {
                        transformers.push(t);
                    }
                }
                let chosen = transformers
                    .get(1)
                    .unwrap_or(&transformers[transformers.len() - 1]);
                let first = at
                    .iter()
                    .find(|p| transformer(p) == *chosen)
                    .expect("the transformer has a cross-attention layer");
                vec![first.to_string()]
            }
        }
        LayerChoice::All => {
            let default = plan_layers(unet, latent_hw, &LayerChoice::Default)?;
            cross
                .iter()
                .filter(|(_, g, _)| *g == default.factor)
                .map(|(p, _, _)| p.clone())
                .collect()
        }
        LayerChoice::Paths(paths) => {
            let mut out: Vec<String> = Vec::new();
            for p in paths {
                let exact = unet.resolve_attention_path(p)?;
                if !cross.iter().any(|(c, _, _)| c == exact) {
                    bail!("layer {exact} is not a cross-attention layer (probe an `attn2` layer)");
                }
                if !out.iter().any(|o| o == exact) {
                    out.push(exact.to_string());
                }
            }
            // Execution order, whatever order they were given in.
            out.sort_by_key(|p| cross.iter().position(|(c, _, _)| c == p));
            out
        }
    };
    let factors: Vec<usize> = layers
        .iter()
        .map(|l| {
            cross
                .iter()
                .find(|(c, _, _)| c == l)
                .expect("known layer")
                .1
        })
        .collect();
    let factor = factors[0];
    if factors.iter().any(|f| *f != factor) {
        bail!(
            "the probed layers {} have different resolutions; probe layers of one resolution",
            layers.join(", ")
        );
    }
    let (lh, lw) = latent_hw;
    if !lh.is_multiple_of(factor) || !lw.is_multiple_of(factor) {
        bail!("a {lh}x{lw} latent does not divide into the probed layer's 1/{factor} resolution");
    }
    Ok(LayerPlan {
        stop_after: layers.last().expect("at least one layer").clone(),
        layers,
        factor,
        grid: [lh / factor, lw / factor],
    })
}

/// The first timestep of the model's default (DDIM) schedule with `steps` steps.
pub fn first_timestep(sd: &StableDiffusion, steps: usize) -> Result<f64> {
    first_timestep_of(&sd.scheduler, steps)
}

/// The first timestep of `scheduler`'s schedule with `steps` steps.
pub fn first_timestep_of(scheduler: &SchedulerSpec, steps: usize) -> Result<f64> {
    let mut s = scheduler.build(0.0)?;
    s.set_timesteps(steps)?;
    s.timesteps()
        .first()
        .copied()
        .context("the scheduler produced no timesteps")
}

/// The probe's scheduler (set to its steps), first timestep and input scale (what the first
/// denoising step feeds the UNet per unit of noise: 1 but for Euler's sigma space).
fn schedule(
    sd: &StableDiffusion,
    options: &ProbeOptions,
) -> Result<(Box<dyn semi_diffusion::schedulers::Scheduler>, u32, f64)> {
    let spec = options.scheduler.as_ref().unwrap_or(&sd.scheduler);
    let mut scheduler = spec.build(0.0)?;
    scheduler.set_timesteps(options.steps)?;
    let timestep = *scheduler
        .timesteps()
        .first()
        .context("the scheduler produced no timesteps")?;
    ensure!(
        timestep >= 0.0 && timestep.fract() == 0.0,
        "the first timestep {timestep} of {} is not a whole number",
        spec.kind.class_name()
    );
    let input_scale =
        scheduler.init_noise_sigma() / scheduler.model_input_divisor(timestep)? as f64;
    Ok((scheduler, timestep as u32, input_scale))
}

/// The first timestep and input scale the probe of `options` runs at (what a store's
/// fingerprint records), without building a prober.
pub fn probe_schedule(sd: &StableDiffusion, options: &ProbeOptions) -> Result<(u32, f64)> {
    let (_, t, scale) = schedule(sd, options)?;
    Ok((t, scale))
}

/// Positions of `c1`'s and `c2`'s tokens in the encoded prompt `template(c1, c2)`: each name is
/// searched after the text before it, so a name that also occurs inside the other (`dog`,
/// `hot dog`) or in the template gets its own tokens.
pub fn category_spans(
    tokenizer: &ClipTokenizer,
    template: &str,
    c1: &str,
    c2: &str,
) -> Result<(Vec<u32>, Vec<usize>, Vec<usize>)> {
    let prompt = template
        .replace("{c1}", c1)
        .replace("{c2}", c2)
        .to_lowercase();
    let ids = tokenizer.encode(&prompt)?;
    let (p1, p2) = (
        template.find("{c1}").context("template lacks {c1}")?,
        template.find("{c2}").context("template lacks {c2}")?,
    );
    let (first, second, first_at) = if p1 <= p2 { (c1, c2, p1) } else { (c2, c1, p2) };
    let prefix = tokenizer.encode_plain(&template[..first_at].to_lowercase())?;
    let find = |from: usize, name: &str| -> Result<Vec<usize>> {
        let at = tokenizer
            .token_positions(&ids[from.min(ids.len())..], &name.to_lowercase())
            .with_context(|| {
                format!(
                    "category {name:?} is not among the first {} tokens of the prompt {prompt:?} \
                     (names too long?)",
                    tokenizer.max_length()
                )
            })?;
        Ok(at.into_iter().map(|i| i + from).collect())
    };
    let s_first = find(1 + prefix.len(), first)?;
    let s_second = find(s_first.last().expect("non-empty span") + 1, second)?;
    // Truncation keeps the end token at the last position: a span must end before it.
    let eos_at = ids
        .iter()
        .position(|&t| t == tokenizer.eos_id())
        .unwrap_or(ids.len());
    ensure!(
        s_second.iter().all(|&i| i < eos_at),
        "the prompt {prompt:?} is too long for the text encoder"
    );
    Ok(if p1 <= p2 {
        (ids, s_first, s_second)
    } else {
        (ids, s_second, s_first)
    })
}

/// Records head-averaged probabilities of the probed layers and counts the attention layers the
/// pass reaches (to show that it stops early).
struct ProbeController<'a> {
    layers: &'a [String],
    visited: Cell<usize>,
    maps: Vec<Tensor>,
}

impl AttentionController for ProbeController<'_> {
    fn wants(&self, site: &AttentionSite) -> bool {
        self.visited.set(self.visited.get() + 1);
        self.layers.iter().any(|l| l == site.path)
    }

    fn edit_probs(&mut self, _site: &AttentionSite, probs: Tensor) -> candle_core::Result<Tensor> {
        self.maps.push(probs.to_dtype(DType::F32)?.mean(1)?);
        Ok(probs)
    }
}

/// The probe of a loaded model (module docs).
pub struct SdProber<'a> {
    sd: &'a StableDiffusion,
    plan: LayerPlan,
    timestep: f64,
    init_noise_sigma: f64,
    scheduler: Box<dyn semi_diffusion::schedulers::Scheduler>,
    template: String,
    fingerprint: ProbeFingerprint,
    /// Image size in pixels (SDXL's time ids).
    height: usize,
    width: usize,
    pairs_per_pass: usize,
    images_per_pass: usize,
    /// Prompt -> `[1, 77, D]` embedding (and SDXL's pooled one): the text encoders run once
    /// per pair, not per image.
    embeddings: HashMap<String, PromptEmbeds>,
    last_visited: usize,
}

/// Bound on cached prompt embeddings (collect visits pairs batch by batch).
const EMBEDDING_CACHE: usize = 1024;

impl<'a> SdProber<'a> {
    /// A prober for `sd`; `model_fingerprint` identifies its weights (see
    /// [`crate::cache::model_fingerprint`]).
    pub fn new(
        sd: &'a StableDiffusion,
        model_fingerprint: String,
        options: &ProbeOptions,
    ) -> Result<Self> {
        let multiple = sd.size_multiple();
        if options.height == 0
            || options.width == 0
            || !options.height.is_multiple_of(multiple)
            || !options.width.is_multiple_of(multiple)
        {
            bail!(
                "image size {}x{} must be positive multiples of {multiple} for this model",
                options.width,
                options.height
            );
        }
        if options.pairs_per_pass == 0 {
            bail!("pairs per pass must be at least 1");
        }
        let shape = sd.latent_shape(options.height, options.width);
        let (c, lh, lw) = (shape[1], shape[2], shape[3]);
        let plan = plan_layers(&sd.unet, (lh, lw), &options.layers)?;
        let (scheduler, timestep, input_scale) = schedule(sd, options)?;
        let init_noise_sigma = scheduler.init_noise_sigma();
        let fingerprint = ProbeFingerprint {
            model: model_fingerprint,
            family: sd.files.family.name().to_string(),
            layers: plan.layers.clone(),
            timestep,
            input_scale,
            prompt_template: options.template.clone(),
            height: options.height as u32,
            width: options.width as u32,
            latent: [c, lh, lw],
            grid: plan.grid,
        };
        fingerprint.validate()?;
        Ok(SdProber {
            sd,
            init_noise_sigma,
            scheduler,
            plan,
            timestep: timestep as f64,
            template: options.template.clone(),
            fingerprint,
            height: options.height,
            width: options.width,
            pairs_per_pass: options.pairs_per_pass,
            images_per_pass: options.images_per_pass.max(1),
            embeddings: HashMap::new(),
            last_visited: 0,
        })
    }

    pub fn plan(&self) -> &LayerPlan {
        &self.plan
    }

    pub fn timestep(&self) -> f64 {
        self.timestep
    }

    /// Attention layers (self and cross) the last pass reached; fewer than the UNet has when it
    /// stopped early.
    pub fn last_pass_layers_visited(&self) -> usize {
        self.last_visited
    }

    fn embedding(&mut self, prompt: &str) -> Result<PromptEmbeds> {
        if let Some(e) = self.embeddings.get(prompt) {
            return Ok(e.clone());
        }
        if self.embeddings.len() >= EMBEDDING_CACHE {
            self.embeddings.clear();
        }
        let e = self.sd.encode_prompt(prompt, "", false)?;
        self.embeddings.insert(prompt.to_string(), e.clone());
        Ok(e)
    }

    /// The raw (un-normalised) head- and layer-averaged maps `[rows, queries, 77]` for one noise
    /// image and several prompts (one batch row each).
    pub fn attention_maps(
        &mut self,
        noise: &Tensor,
        prompts: &[String],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        self.attention_maps_of(&[noise], prompts)
    }

    /// [`Self::attention_maps`] for several noise images in one pass: rows are image-major
    /// (image 0 with every prompt, then image 1, ...).
    pub fn attention_maps_of(
        &mut self,
        noises: &[&Tensor],
        prompts: &[String],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let [c, h, w] = self.fingerprint.latent;
        for noise in noises {
            if noise.dims() != [1, c, h, w] {
                bail!(
                    "probe: noise has shape {:?}, expected [1, {c}, {h}, {w}]",
                    noise.dims()
                );
            }
        }
        let sd = self.sd;
        let mut inputs = Vec::with_capacity(noises.len());
        for noise in noises {
            let x = noise.to_device(&sd.device)?.to_dtype(DType::F32)?;
            let x = if self.init_noise_sigma == 1.0 {
                x
            } else {
                (x * self.init_noise_sigma)?
            };
            let x = self
                .scheduler
                .scale_model_input(&x, self.timestep)?
                .to_dtype(sd.dtype)?;
            let b = prompts.len();
            inputs.push(if b == 1 { x } else { x.repeat((b, 1, 1, 1))? });
        }
        let x = if inputs.len() == 1 {
            inputs.pop().expect("one input")
        } else {
            Tensor::cat(&inputs, 0)?
        };

        let embs: Vec<PromptEmbeds> = prompts
            .iter()
            .map(|p| self.embedding(p))
            .collect::<Result<_>>()?;
        let rows: Vec<&PromptEmbeds> = (0..noises.len()).flat_map(|_| embs.iter()).collect();
        let embeds = PromptEmbeds::concat(&rows)?;
        let added = sd.added_conditions(&embeds, self.height, self.width)?;
        let emb = embeds.states;
        let layers = self.plan.layers.clone();
        let mut ctl = ProbeController {
            layers: &layers,
            visited: Cell::new(0),
            maps: Vec::new(),
        };
        let out = sd
            .unet
            .forward_with(
                &x,
                self.timestep,
                &emb,
                ForwardOptions {
                    controller: Some(&mut ctl),
                    step: 0,
                    conditional_rows: None,
                    stop_after: Some(&self.plan.stop_after),
                    added: added.as_ref(),
                },
            )
            .context("the probe's UNet pass failed")?;
        ensure!(
            matches!(out, UNetOutput::Stopped),
            "the probe pass did not stop after {}",
            self.plan.stop_after
        );
        self.last_visited = ctl.visited.get();
        ensure!(
            ctl.maps.len() == layers.len(),
            "the probe recorded {} maps for {} layers",
            ctl.maps.len(),
            layers.len()
        );
        let mut sum = ctl.maps[0].clone();
        for m in &ctl.maps[1..] {
            sum = (sum + m)?;
        }
        let mean = (sum / layers.len() as f64)?;
        let cells = self.fingerprint.cells();
        ensure!(
            mean.dim(1)? == cells,
            "the probed layer has {} queries, the {:?} grid has {cells} cells",
            mean.dim(1)?,
            self.fingerprint.grid
        );
        Ok(mean.to_vec3()?)
    }
}

/// Sum of the `span` columns of a `[queries][keys]` map, per query.
fn column_sum(map: &[Vec<f32>], span: &[usize]) -> Vec<f32> {
    map.iter()
        .map(|row| span.iter().map(|&k| row[k]).sum())
        .collect()
}

impl Prober for SdProber<'_> {
    fn fingerprint(&self) -> ProbeFingerprint {
        self.fingerprint.clone()
    }

    fn check_pair(&self, (c1, c2): (&str, &str)) -> Result<()> {
        category_spans(self.sd.tokenizer(), &self.template, c1, c2).map(|_| ())
    }

    fn probe(&mut self, noise: &Tensor, pair: (&str, &str)) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(self.probe_pairs(noise, &[pair])?.remove(0))
    }

    fn probe_pairs(
        &mut self,
        noise: &Tensor,
        pairs: &[(&str, &str)],
    ) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        Ok(self.probe_images(&[noise], pairs)?.remove(0))
    }

    fn probe_images(
        &mut self,
        noises: &[&Tensor],
        pairs: &[(&str, &str)],
    ) -> Result<Vec<Vec<crate::prober::PairMaps>>> {
        if pairs.is_empty() || noises.is_empty() {
            return Ok(vec![Vec::new(); noises.len()]);
        }
        let mut prompts = Vec::with_capacity(pairs.len());
        let mut spans = Vec::with_capacity(pairs.len());
        for &(c1, c2) in pairs {
            let (_, s1, s2) = category_spans(self.sd.tokenizer(), &self.template, c1, c2)?;
            prompts.push(self.fingerprint.prompt(c1, c2).to_lowercase());
            spans.push((s1, s2));
        }
        let maps = self.attention_maps_of(noises, &prompts)?;
        maps.chunks(pairs.len())
            .map(|image| {
                image
                    .iter()
                    .zip(&spans)
                    .map(|(m, (s1, s2))| {
                        let mut a = column_sum(m, s1);
                        let mut b = column_sum(m, s2);
                        min_max_normalize(&mut a)?;
                        min_max_normalize(&mut b)?;
                        Ok((a, b))
                    })
                    .collect()
            })
            .collect()
    }

    fn images_per_pass(&self) -> usize {
        self.images_per_pass
    }

    fn pairs_per_pass(&self) -> usize {
        self.pairs_per_pass
    }
}
