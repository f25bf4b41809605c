//! The unrolled text-to-image loop, step for step as diffusers' `StableDiffusionPipeline`.
//!
//! Everything is exposed in pieces (`encode_prompt`, `prepare_latents`, `decode_raw`) because
//! semi's ticket probe and initial-noise construction reuse them, and the loop calls back after
//! every step so callers can show progress, record or stop.

use crate::config::UNetConfig;
use crate::controller::AttentionController;
use crate::family::{PromptEmbeds, TextConditioner};
use crate::loading::{source_var_builder, KeyMap, Merge, ModelFiles, Variant};
use crate::lora::{Loras, Slot};
use crate::noise::TorchGenerator;
use crate::precision::Precision;
use crate::schedulers::SchedulerSpec;
use crate::single_file::Layout;
use crate::text_encoder::ClipTextModel;
use crate::tokenizer::ClipTokenizer;
use crate::unet::{AddedCond, ForwardOptions, UNet2DConditionModel, UNetOutput};
use crate::vae::AutoencoderKL;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::path::Path;
use std::sync::Arc;

/// One text-to-image request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: String,
    /// "" means no negative prompt (diffusers then encodes the empty string).
    pub negative_prompt: String,
    /// Image size in pixels.
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    /// Classifier-free guidance scale; <= 1 disables guidance (no unconditional pass).
    pub guidance_scale: f64,
    /// DDIM eta: 0 is deterministic; > 0 draws step noise from the seeded generator.
    pub eta: f64,
    pub seed: u64,
    /// Initial latents `[1, C, H/s, W/s]` (unit variance, before `init_noise_sigma`) instead of
    /// seeded noise, as diffusers' `latents=` argument.
    pub latents: Option<Tensor>,
    /// The sampler; `None`: the model's default ([`StableDiffusion::scheduler`], DDIM).
    pub scheduler: Option<SchedulerSpec>,
}

impl GenerateRequest {
    /// diffusers' defaults (50 steps, guidance 7.5, eta 0, seed 0) at the given size.
    pub fn new(prompt: impl Into<String>, height: usize, width: usize) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            height,
            width,
            steps: 50,
            guidance_scale: 7.5,
            eta: 0.0,
            seed: 0,
            latents: None,
            scheduler: None,
        }
    }

    /// Checks the model-independent fields and the size against `size_multiple`.
    pub fn validate(&self, size_multiple: usize) -> Result<()> {
        if self.prompt.trim().is_empty() {
            bail!("the prompt is empty");
        }
        for (what, v) in [("height", self.height), ("width", self.width)] {
            if v == 0 || !v.is_multiple_of(size_multiple) {
                bail!("{what} {v} must be a positive multiple of {size_multiple} for this model");
            }
        }
        if self.steps == 0 {
            bail!("steps must be at least 1");
        }
        if !self.guidance_scale.is_finite() {
            bail!("guidance scale must be a finite number");
        }
        if !(self.eta.is_finite() && self.eta >= 0.0) {
            bail!("eta must be a finite number >= 0, got {}", self.eta);
        }
        Ok(())
    }

    /// diffusers' `do_classifier_free_guidance`.
    pub fn uses_guidance(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

/// Reported after every denoising step.
pub struct StepEvent<'a> {
    /// 0-based step index.
    pub step: usize,
    pub num_steps: usize,
    pub timestep: f64,
    /// The latents after this step.
    pub latents: &'a Tensor,
    /// The scheduler's estimate of the clean latents at this step.
    pub pred_original: &'a Tensor,
}

/// The result of a run.
pub struct Generated {
    /// `[1, 3, H, W]` in [0, 1].
    pub image: Tensor,
    /// The final latents, before decoding.
    pub latents: Tensor,
    /// The initial latents as the loop started (already times `init_noise_sigma`).
    pub init_latents: Tensor,
    /// The timesteps the loop visited.
    pub timesteps: Vec<f64>,
}

/// A loaded Stable Diffusion (1.x/2.x or XL) model.
pub struct StableDiffusion {
    pub files: ModelFiles,
    /// The tokenizers and text encoders, and the family's rules for conditioning the UNet.
    pub text: TextConditioner,
    pub unet: UNet2DConditionModel,
    /// `None` for pixel-space models.
    pub vae: Option<AutoencoderKL>,
    /// The dtype the VAE computes in: f32 when the family upcasts it (SDXL's `force_upcast`).
    pub vae_dtype: DType,
    /// The default sampler: DDIM on the folder's scheduler config (the paper's).
    pub scheduler: SchedulerSpec,
    pub device: Device,
    /// The dtype the models compute in.
    pub dtype: DType,
    /// The dtype the weight matrices are stored in (see [`Precision`]).
    pub weights_dtype: DType,
}

impl StableDiffusion {
    /// Checks and loads a diffusers folder.
    pub fn load(dir: &Path, device: &Device, dtype: DType, variant: Variant) -> Result<Self> {
        Self::load_with(dir, device, Precision::uniform(dtype), variant)
    }

    /// [`Self::load`] with weights possibly stored narrower than the compute dtype.
    pub fn load_with(
        dir: &Path,
        device: &Device,
        precision: Precision,
        variant: Variant,
    ) -> Result<Self> {
        let files = ModelFiles::check(dir, variant)?;
        Self::from_files_with(files, device, precision)
    }

    pub fn from_files(files: ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        Self::from_files_with(files, device, Precision::uniform(dtype))
    }

    /// [`Self::from_files`] with `precision` (f16 weights on the CPU: `Precision::f16_weights()`;
    /// on other devices the weights are stored in the compute dtype, see
    /// [`Precision::for_device`]).
    pub fn from_files_with(
        files: ModelFiles,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        let precision = precision.for_device(device);
        let dtype = precision.compute;
        // LoRAs merge into the UNet and the text encoders as their weights are read; a single
        // file's components read their original names through the key map.
        let loras = if files.loras.is_empty() {
            None
        } else {
            Some(Arc::new(Loras::open(&files.loras, files.family)?))
        };
        let unet_cfg = files.unet.config.clone();
        let vae_blocks = files
            .vae
            .as_ref()
            .map_or(0, |v| v.config.block_out_channels.len());
        let build = |weights: &[std::path::PathBuf],
                     keys: &Option<Layout>,
                     slot: Option<Slot>,
                     precision: Precision| {
            let keys = keys.clone().map(|layout| {
                let cfg = unet_cfg.clone();
                Box::new(move |n: &str| layout.original(n, &cfg, vae_blocks)) as KeyMap
            });
            let merge = match (&loras, slot) {
                (Some(loras), Some(slot)) => Some(Merge {
                    loras: loras.clone(),
                    slot,
                    unet_cfg: Some(unet_cfg.clone()),
                }),
                _ => None,
            };
            source_var_builder(weights, keys, merge, precision, device)
        };
        let tokenizer = ClipTokenizer::from_dir(&files.tokenizer_dir)
            .with_context(|| format!("cannot load the tokenizer in {}", files.root.display()))?;
        let (vb, used) = build(
            &files.text_encoder.weights,
            &files.text_encoder.keys,
            Some(Slot::text(files.family, 0)),
            precision,
        )?;
        let text_encoder = ClipTextModel::new(vb, &files.text_encoder.config)
            .context("cannot build the text encoder")?;
        used.check_all_used()
            .context("cannot build the text encoder")?;
        let second = match &files.text_2 {
            Some(t) => {
                let tokenizer = ClipTokenizer::from_dir(&t.tokenizer_dir).with_context(|| {
                    format!("cannot load the tokenizer in {}", t.tokenizer_dir.display())
                })?;
                let (vb, used) = build(
                    &t.encoder.weights,
                    &t.encoder.keys,
                    Some(Slot::text(files.family, 1)),
                    precision,
                )?;
                let encoder = ClipTextModel::with_projection(vb, &t.encoder.config)
                    .context("cannot build the second text encoder")?;
                used.check_all_used()
                    .context("cannot build the second text encoder")?;
                Some((tokenizer, encoder))
            }
            None => None,
        };
        let text = TextConditioner {
            family: files.family,
            tokenizer,
            encoder: text_encoder,
            second,
            force_zeros_for_empty_prompt: files.index.force_zeros_for_empty_prompt.unwrap_or(true),
        };
        let (vb, used) = build(
            &files.unet.weights,
            &files.unet.keys,
            Some(Slot::Unet),
            precision,
        )?;
        let unet =
            UNet2DConditionModel::new(vb, &files.unet.config).context("cannot build the UNet")?;
        used.check_all_used().context("cannot build the UNet")?;
        let mut vae_dtype = dtype;
        let vae = match &files.vae {
            Some(v) => {
                // diffusers' SDXL pipeline decodes in f32 when the VAE says it overflows in f16.
                let vae_precision = if files.family.upcasts_vae()
                    && v.config.force_upcast
                    && matches!(dtype, DType::F16 | DType::BF16)
                {
                    Precision::uniform(DType::F32)
                } else {
                    precision
                };
                vae_dtype = vae_precision.for_device(device).compute;
                let (vb, used) = build(&v.weights, &v.keys, None, vae_precision)?;
                let vae = AutoencoderKL::new(vb, &v.config).context("cannot build the VAE")?;
                used.check_all_used().context("cannot build the VAE")?;
                Some(vae)
            }
            None => None,
        };
        if let Some(loras) = &loras {
            loras.check_all_used()?;
        }
        Ok(Self {
            scheduler: SchedulerSpec::ddim(&files.scheduler),
            text,
            unet,
            vae,
            vae_dtype,
            files,
            device: device.clone(),
            dtype,
            weights_dtype: precision.weights,
        })
    }

    /// The sampler of `req`: its own, else the model's default.
    pub fn scheduler_for<'a>(&'a self, req: &'a GenerateRequest) -> &'a SchedulerSpec {
        req.scheduler.as_ref().unwrap_or(&self.scheduler)
    }

    pub fn unet_config(&self) -> &UNetConfig {
        &self.files.unet.config
    }

    /// Pixels per latent pixel (1 without a VAE).
    pub fn vae_scale_factor(&self) -> usize {
        self.files.vae_scale_factor()
    }

    /// Image sizes must be multiples of this: the VAE scale times the UNet's downsampling.
    pub fn size_multiple(&self) -> usize {
        self.files.size_multiple()
    }

    /// `unet.sample_size * vae scale factor` as (height, width), as diffusers' default size.
    pub fn default_size(&self) -> Option<(usize, usize)> {
        self.files.default_size()
    }

    /// The latent shape `[1, C, H/s, W/s]` of an image size.
    pub fn latent_shape(&self, height: usize, width: usize) -> Vec<usize> {
        self.files.latent_shape(height, width)
    }

    /// The first tokenizer: the token positions of prompts (see [`TextConditioner::tokenizer`]).
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.text.tokenizer
    }

    /// Text embeddings of the prompt: `[uncond, cond]` (negative prompt first, as diffusers
    /// concatenates them) with guidance, `[cond]` without; in the compute dtype.
    pub fn encode_prompt(
        &self,
        prompt: &str,
        negative_prompt: &str,
        guidance: bool,
    ) -> Result<PromptEmbeds> {
        let cond = self.text.embed(&[prompt])?;
        let embeds = if guidance {
            let uncond = self.text.unconditional(negative_prompt, &cond)?;
            PromptEmbeds::concat(&[&uncond, &cond])?
        } else {
            cond
        };
        embeds.to_dtype(self.dtype)
    }

    /// What the UNet takes besides the text states for `embeds` at an image size: SDXL's
    /// pooled embedding and time ids; `None` for SD 1.x/2.x.
    pub fn added_conditions(
        &self,
        embeds: &PromptEmbeds,
        height: usize,
        width: usize,
    ) -> Result<Option<AddedCond>> {
        self.text.added(embeds, height, width)
    }

    /// Initial latents as diffusers' `prepare_latents`: the given ones (shape-checked) or
    /// `randn` from `generator`, then times `init_noise_sigma`.
    pub fn prepare_latents(
        &self,
        height: usize,
        width: usize,
        latents: Option<&Tensor>,
        generator: &mut TorchGenerator,
        init_noise_sigma: f64,
    ) -> Result<Tensor> {
        let shape = self.latent_shape(height, width);
        let base = match latents {
            Some(l) => {
                if l.dims() != shape.as_slice() {
                    bail!(
                        "initial latents have shape {:?}, but a {width}x{height} image with this model needs {:?}",
                        l.dims(),
                        shape
                    );
                }
                l.to_device(&self.device)?.to_dtype(DType::F32)?
            }
            None => generator.randn(&shape, &self.device)?,
        };
        let scaled = if init_noise_sigma == 1.0 {
            base
        } else {
            (base * init_noise_sigma)?
        };
        Ok(scaled.to_dtype(self.dtype)?)
    }

    /// Runs the denoising loop and decodes the result.
    pub fn generate(
        &self,
        req: &GenerateRequest,
        mut controller: Option<&mut dyn AttentionController>,
        on_step: &mut dyn FnMut(StepEvent) -> Result<()>,
    ) -> Result<Generated> {
        req.validate(self.size_multiple())?;
        let mut scheduler = self.scheduler_for(req).build(req.eta)?;
        scheduler.set_timesteps(req.steps)?;
        let timesteps = scheduler.timesteps().to_vec();

        let guidance = req.uses_guidance();
        let embeds = self.encode_prompt(&req.prompt, &req.negative_prompt, guidance)?;
        let added = self.added_conditions(&embeds, req.height, req.width)?;
        let emb = embeds.states;
        let mut generator = TorchGenerator::manual_seed(req.seed);
        let mut latents = self.prepare_latents(
            req.height,
            req.width,
            req.latents.as_ref(),
            &mut generator,
            scheduler.init_noise_sigma(),
        )?;
        if !all_finite(&latents)? {
            bail!(
                "the initial {} NaN or infinite values",
                if req.latents.is_some() {
                    "latents given hold"
                } else {
                    "noise holds"
                }
            );
        }
        let init_latents = latents.clone();
        let mut finite = FiniteCheck::new(self.device.is_cpu());
        let rows = if guidance {
            vec![false, true]
        } else {
            vec![true]
        };

        for (i, &t) in timesteps.iter().enumerate() {
            let input = if guidance {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(&input, t)?;
            let opts = ForwardOptions {
                controller: controller.as_mut().map(|c| &mut **c as _),
                step: i,
                conditional_rows: Some(rows.clone()),
                stop_after: None,
                added: added.as_ref(),
            };
            let out = self
                .unet
                .forward_with(&input, t, &emb, opts)
                .with_context(|| format!("UNet failed at step {i} (timestep {t})"))?;
            let UNetOutput::Full(pred) = out else {
                bail!("the UNet stopped early during generation");
            };
            let pred = if guidance {
                let uncond = pred.narrow(0, 0, 1)?;
                let cond = pred.narrow(0, 1, 1)?;
                (&uncond + ((cond - &uncond)? * req.guidance_scale)?)?
            } else {
                pred
            };
            // diffusers draws the step noise from the same generator, after the latents.
            let noise = if scheduler.needs_variance_noise() {
                Some(
                    generator
                        .randn(pred.dims(), &self.device)?
                        .to_dtype(pred.dtype())?,
                )
            } else {
                None
            };
            let step = scheduler.step(&pred, t, &latents, noise.as_ref())?;
            latents = step.prev_sample;
            finite.after_step(&latents, i, &timesteps)?;
            on_step(StepEvent {
                step: i,
                num_steps: timesteps.len(),
                timestep: t,
                latents: &latents,
                pred_original: &step.pred_original_sample,
            })?;
        }
        finite.finish(&timesteps)?;
        let image = self.decode(&latents)?;
        Ok(Generated {
            image,
            latents,
            init_latents,
            timesteps,
        })
    }

    /// Latents -> image in about [-1, 1]: `vae.decode(latents / scaling_factor)`, or the latents
    /// themselves for pixel-space models.
    pub fn decode_raw(&self, latents: &Tensor) -> Result<Tensor> {
        match &self.vae {
            Some(vae) => {
                let latents = latents.to_dtype(self.vae_dtype)?;
                let sf = Tensor::new(vae.config().scaling_factor as f32, latents.device())?
                    .to_dtype(latents.dtype())?;
                let scaled = latents.broadcast_div(&sf)?;
                Ok(vae.decode(&scaled).context("VAE decode failed")?)
            }
            None => Ok(latents.clone()),
        }
    }

    /// Latents -> `[1, 3, H, W]` image in [0, 1], as diffusers' postprocessing.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let raw = self.decode_raw(latents)?;
        ensure!(
            raw.dims().len() == 4 && raw.dims()[1] == 3,
            "decoded image has shape {:?}, expected [batch, 3, height, width]",
            raw.dims()
        );
        to_unit_range(&raw.to_dtype(DType::F32)?)
    }
}

/// `(x * 0.5 + 0.5).clamp(0, 1)`: diffusers' `denormalize`.
pub fn to_unit_range(raw: &Tensor) -> Result<Tensor> {
    Ok(raw.affine(0.5, 0.5)?.clamp(0f32, 1f32)?)
}

/// The check that denoising stays finite, naming the first step that was not. On the CPU each
/// step is checked as it ends (reading a sum costs nothing there, and a bad run stops at once);
/// on a GPU reading it back would stall the device queue every step, so each step's sum stays
/// on the device and all are read once, after the loop.
pub struct FiniteCheck {
    each_step: bool,
    sums: Vec<Tensor>,
}

impl FiniteCheck {
    pub fn new(each_step: bool) -> Self {
        Self {
            each_step,
            sums: Vec::new(),
        }
    }

    /// After step `i` of `timesteps` produced `latents`.
    pub fn after_step(&mut self, latents: &Tensor, i: usize, timesteps: &[f64]) -> Result<()> {
        if self.each_step {
            if !all_finite(latents)? {
                return Err(non_finite(i, timesteps));
            }
        } else {
            self.sums.push(latents.to_dtype(DType::F32)?.sum_all()?);
        }
        Ok(())
    }

    /// After the loop: the deferred sums, read in one transfer.
    pub fn finish(&mut self, timesteps: &[f64]) -> Result<()> {
        if self.sums.is_empty() {
            return Ok(());
        }
        let sums = Tensor::stack(&std::mem::take(&mut self.sums), 0)?.to_vec1::<f32>()?;
        match sums.iter().position(|s| !s.is_finite()) {
            Some(i) => Err(non_finite(i, timesteps)),
            None => Ok(()),
        }
    }
}

fn non_finite(i: usize, timesteps: &[f64]) -> anyhow::Error {
    anyhow::anyhow!(
        "denoising produced NaN or infinite latents at step {i} of {} (timestep {}); the \
         model's weights hold non-finite values, or its precision is too low (try f32)",
        timesteps.len(),
        timesteps.get(i).copied().unwrap_or(f64::NAN)
    )
}

/// Whether `t` holds no NaN and no infinity (one reduction: both survive a sum).
pub fn all_finite(t: &Tensor) -> Result<bool> {
    let sum = t
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(sum.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_validation() {
        let ok = GenerateRequest::new("a cat", 512, 512);
        ok.validate(64).unwrap();
        let mut r = ok.clone();
        r.prompt = "  ".into();
        assert!(r
            .validate(64)
            .unwrap_err()
            .to_string()
            .contains("prompt is empty"));
        let mut r = ok.clone();
        r.height = 520;
        let e = r.validate(64).unwrap_err().to_string();
        assert!(e.contains("height 520") && e.contains("64"), "{e}");
        let mut r = ok.clone();
        r.width = 0;
        assert!(r.validate(64).is_err());
        let mut r = ok.clone();
        r.steps = 0;
        assert!(r.validate(64).is_err());
        let mut r = ok.clone();
        r.eta = -0.1;
        assert!(r.validate(64).is_err());
        let mut r = ok;
        r.guidance_scale = 1.0;
        assert!(!r.uses_guidance());
    }

    #[test]
    fn deferred_finite_check_names_the_first_bad_step() {
        let steps = [981.0, 961.0, 941.0];
        let good = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let bad = Tensor::new(&[1f32, f32::NAN], &Device::Cpu).unwrap();
        for each_step in [true, false] {
            let mut check = FiniteCheck::new(each_step);
            check.after_step(&good, 0, &steps).unwrap();
            let at_once = check.after_step(&bad, 1, &steps);
            assert_eq!(at_once.is_err(), each_step);
            if !each_step {
                check.after_step(&bad, 2, &steps).unwrap();
                let e = check.finish(&steps).unwrap_err().to_string();
                assert!(e.contains("step 1 of 3 (timestep 961)"), "{e}");
            }
        }
        FiniteCheck::new(false).finish(&steps).unwrap();
    }

    #[test]
    fn unit_range_mapping() {
        let t = Tensor::new(&[[[[-2f32, -1.0, 0.0, 0.5, 1.0, 3.0]]]], &Device::Cpu).unwrap();
        let v = to_unit_range(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(v, vec![0.0, 0.0, 0.5, 0.75, 1.0, 1.0]);
    }
}
