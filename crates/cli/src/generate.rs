//! `semi generate`: one prompt (or one layout), one image, by any method of the paper's Table 1
//! through [`semi_methods::generate`]: initial latents from seeded Gaussian noise (or a file),
//! semantic-driven initialisation from a ticket store (`--init semi`), Swap (`--init swap`,
//! `--init semi+swap`), with attention guidance `--guidance paint|soft`.

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use semi_diffusion::image::{save_png, save_sidecar, ImageParams};
use semi_diffusion::latents_io::{read_latents, write_latents};
use semi_diffusion::loading::{ModelFiles, Variant};
use semi_diffusion::pipeline::{GenerateRequest, StableDiffusion};
use semi_layout::Layout;
use semi_methods::{Guidance, Init, Method, MethodOptions};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    Metal,
}

/// `--guidance`: attention guidance, or (as in earlier versions) a number, taken as the
/// classifier-free guidance scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GuidanceArg {
    Method(Guidance),
    Scale(f64),
}

fn parse_guidance(text: &str) -> Result<GuidanceArg, String> {
    if let Ok(v) = text.trim().parse::<f64>() {
        return Ok(GuidanceArg::Scale(v));
    }
    Guidance::parse(text)
        .map(GuidanceArg::Method)
        .map_err(|e| format!("{e} (a number sets the classifier-free guidance scale, as --cfg)"))
}

fn parse_init(text: &str) -> Result<Init, String> {
    Init::parse(text).map_err(|e| e.to_string())
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// A diffusers folder, a Hugging Face repo id (owner/name) already in the local HF cache, or
    /// `toy`: the embedded toy model (models/toy), which needs no download.
    #[arg(long, default_value = crate::embedded::TOY_MODEL)]
    pub model: String,
    /// The prompt (or give --layout).
    #[arg(long, required_unless_present = "layout")]
    pub prompt: Option<String>,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Seed of the initial noise [default: the layout's seed, else 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// A layout (JSON): prompt, size, seed and boxes; also writes `<out>.boxes.png`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt", "height", "width"])]
    pub layout: Option<PathBuf>,
    /// Initial latents: gaussian (seeded noise, or --latents), semi (SemI from a ticket store),
    /// swap (the Gaussian noise's blocks rearranged by Swap, Mao et al. 2023), semi+swap (Swap on
    /// the SemI latents). All but gaussian need --layout.
    #[arg(long, default_value = "gaussian", value_parser = parse_init)]
    pub init: Init,
    /// Attention guidance: none, paint (eDiffi paint-with-words) or soft (Mao & Wang 2023); paint
    /// and soft need --layout. A number instead sets the classifier-free guidance scale (--cfg).
    #[arg(long, default_value = "none", value_parser = parse_guidance, allow_negative_numbers = true)]
    pub guidance: GuidanceArg,
    /// Paint's weight w (logit bonus w * ln(1 + sigma_t) * max logit inside the box).
    #[arg(long, default_value_t = semi_guidance::PAINT_DEFAULT_WEIGHT, allow_negative_numbers = true)]
    pub paint_weight: f64,
    /// Soft's weight w (logit bonus w * s(t) * max logit in the grown box).
    #[arg(long, default_value_t = semi_guidance::SOFT_DEFAULT_WEIGHT, allow_negative_numbers = true)]
    pub soft_weight: f64,
    #[command(flatten)]
    pub tickets: crate::common::TicketArgs,
    #[command(flatten)]
    pub probe: crate::common::ProbeArgs,
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (<= 1 turns it off) [default: 7.5].
    #[arg(long, visible_alias = "guidance-scale", allow_negative_numbers = true)]
    pub cfg: Option<f64>,
    /// DDIM eta: 0 deterministic; 1 ancestral (fresh noise at every step: on the toy model fewer
    /// duplicated objects from a prompt alone, but less layout control by the initial noise,
    /// docs/toyworld.md section 5).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Image height in pixels [default: the model's native size].
    #[arg(long)]
    pub height: Option<usize>,
    /// Image width in pixels [default: the model's native size].
    #[arg(long)]
    pub width: Option<usize>,
    /// Initial latents instead of seeded noise: .safetensors (key `latents`) or .npy (f32).
    #[arg(long, value_name = "FILE")]
    pub latents: Option<PathBuf>,
    /// Also write the final latents (safetensors key `latents`, or .npy).
    #[arg(long, value_name = "FILE")]
    pub save_latents: Option<PathBuf>,
    #[arg(long, default_value = "image.png")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Half precision: the fp16 weight variant when present, f16 compute.
    #[arg(long)]
    pub fp16: bool,
    /// `f16`: weights stored in f16 (half the memory; the fp16 variant when present) and widened
    /// per layer, compute stays f32 (CPU only; other devices store them in f32).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"], conflicts_with = "fp16")]
    pub weights: String,
}

impl GenerateArgs {
    /// The method of `--init` and `--guidance`.
    pub fn method(&self) -> Method {
        let guidance = match self.guidance {
            GuidanceArg::Method(g) => g,
            GuidanceArg::Scale(_) => Guidance::None,
        };
        Method::new(self.init, guidance)
    }

    /// The classifier-free guidance scale: `--cfg`, else a numeric `--guidance`, else 7.5.
    pub fn cfg_scale(&self) -> Result<f64> {
        match (self.cfg, self.guidance) {
            (Some(_), GuidanceArg::Scale(_)) => {
                bail!("--cfg and a numeric --guidance both set the guidance scale; give one")
            }
            (Some(c), _) | (None, GuidanceArg::Scale(c)) => Ok(c),
            (None, GuidanceArg::Method(_)) => Ok(7.5),
        }
    }

    /// The methods' settings from the flags.
    pub fn method_options(&self) -> Result<MethodOptions> {
        for (flag, w) in [
            ("--paint-weight", self.paint_weight),
            ("--soft-weight", self.soft_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                bail!("{flag} must be a finite number >= 0, got {w}");
            }
        }
        Ok(MethodOptions {
            rule: self.tickets.rule.rule()?,
            recalibrate: self.tickets.recalibrate,
            paint_weight: self.paint_weight,
            soft_weight: self.soft_weight,
            ..MethodOptions::default()
        })
    }
}

/// Why a method cannot run without `--layout`.
fn needs_layout(method: &Method) -> Option<String> {
    let init = method.init.name();
    match (method.init, method.guidance) {
        (Init::Semi | Init::SemiSwap, _) => Some(format!(
            "--init {init} needs --layout (the boxes say where each category's tickets go)"
        )),
        (Init::Swap, _) => Some(
            "--init swap needs --layout (Swap moves noise blocks into the objects' boxes)".into(),
        ),
        (_, Guidance::Paint | Guidance::Soft) => Some(format!(
            "--guidance {} needs --layout (the boxes say where each object's words attend)",
            method.guidance.name()
        )),
        _ => None,
    }
}

/// The candle device for `--device`; a backend not compiled in is an error, not a fallback.
pub fn select_device(d: DeviceArg) -> Result<Device> {
    match d {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => {
            #[cfg(feature = "cuda")]
            return anyhow::Context::context(Device::new_cuda(0), "cannot open CUDA device 0");
            #[cfg(not(feature = "cuda"))]
            bail!("--device cuda: this semi was built without CUDA support (rebuild with `--features cuda`)")
        }
        DeviceArg::Metal => {
            #[cfg(feature = "metal")]
            return anyhow::Context::context(Device::new_metal(0), "cannot open Metal device 0");
            #[cfg(not(feature = "metal"))]
            bail!("--device metal: this semi was built without Metal support (rebuild with `--features metal`)")
        }
    }
}

/// Fails early when a file could not be written at the end of a long run.
pub fn check_output_path(path: &Path, flag: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "{flag} {}: folder {} does not exist",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        bail!("{flag} {} is a folder", path.display());
    }
    Ok(())
}

/// The request for a checked model folder: sizes defaulted and validated, latents read and
/// shape-checked, all before any weights are loaded.
pub fn build_request(
    args: &GenerateArgs,
    layout: Option<&Layout>,
    files: &ModelFiles,
) -> Result<GenerateRequest> {
    let (height, width) = match (layout, args.height, args.width, files.default_size()) {
        (Some(l), ..) => (l.height as usize, l.width as usize),
        (None, Some(h), Some(w), _) => (h, w),
        (None, h, w, Some((dh, dw))) => (h.unwrap_or(dh), w.unwrap_or(dw)),
        _ => bail!("the model's unet/config.json has no sample_size; pass --height and --width"),
    };
    let prompt = match (layout, &args.prompt) {
        (Some(l), _) => l.prompt.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => bail!("give --prompt or --layout"),
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let mut req = GenerateRequest::new(prompt, height, width);
    req.negative_prompt = match layout.and_then(|l| l.negative_prompt.clone()) {
        Some(n) if args.negative_prompt.is_empty() => n,
        _ => args.negative_prompt.clone(),
    };
    req.seed = args.seed.or(layout.and_then(|l| l.seed)).unwrap_or(0);
    req.steps = args.steps;
    req.guidance_scale = args.cfg_scale()?;
    req.eta = args.eta;
    req.validate(files.size_multiple())?;
    if req.steps > files.scheduler.num_train_timesteps {
        bail!(
            "--steps {} exceeds the scheduler's {} training timesteps",
            req.steps,
            files.scheduler.num_train_timesteps
        );
    }
    if let Some(path) = &args.latents {
        let latents = read_latents(path)?;
        let want = files.latent_shape(height, width);
        if latents.dims() != want.as_slice() {
            bail!(
                "--latents {} has shape {:?}, but a {width}x{height} image with this model needs {:?}",
                path.display(),
                latents.dims(),
                want
            );
        }
        req.latents = Some(latents);
    }
    Ok(req)
}

fn progress_bar(steps: usize) -> ProgressBar {
    let pb = ProgressBar::new(steps as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} elapsed, ETA {eta_precise}",
        )
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    pb
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    if let Some(p) = &args.prompt {
        if p.trim().is_empty() {
            bail!("the prompt is empty");
        }
    }
    let method = args.method();
    let init = method.init.name();
    let semi = method.needs_store();
    if args.layout.is_none() {
        if let Some(why) = needs_layout(&method) {
            bail!("{why}");
        }
    }
    if semi && args.latents.is_some() {
        bail!("--init {init} and --latents both give initial latents; choose one");
    }
    if semi && args.fp16 && args.tickets.store.is_none() {
        bail!("--init {init} probes in f32 to fill its cache store; drop --fp16 or pass --store");
    }
    if args.tickets.n == 0 {
        bail!("--n must be at least 1 noise image");
    }
    args.cfg_scale()?;
    let options = args.method_options()?;
    let device = select_device(args.device)?;
    check_output_path(&args.out, "--out")?;
    if let Some(p) = &args.save_latents {
        check_output_path(p, "--save-latents")?;
    }
    let layout = match &args.layout {
        Some(p) => Some(crate::common::read_layout(p)?),
        None => None,
    };
    let dir = crate::embedded::resolve_model_arg(&args.model)?;
    let f16_weights = args.weights == "f16";
    let variant = if args.fp16 || f16_weights {
        Variant::Fp16
    } else {
        Variant::Full
    };
    let files = ModelFiles::check(&dir, variant)?;
    let req = build_request(args, layout.as_ref(), &files)?;
    let model_fingerprint = if semi {
        Some(semi_tickets::cache::model_fingerprint(&files)?)
    } else {
        None
    };
    let dtype = if args.fp16 { DType::F16 } else { DType::F32 };
    let precision = match f16_weights {
        true => semi_diffusion::precision::Precision::f16_weights(),
        false => semi_diffusion::precision::Precision::uniform(dtype),
    };
    let sd = StableDiffusion::from_files_with(files, &device, precision)?;

    let store = match (&layout, &model_fingerprint) {
        (Some(layout), Some(fp)) => Some(crate::semi_store::store_for(args, &sd, fp, layout)?),
        _ => None,
    };
    // A plain prompt runs as a layout without boxes (only `sd` accepts one).
    let plain = Layout::new(
        req.prompt.clone(),
        req.width as u32,
        req.height as u32,
        Vec::new(),
    );
    let target = layout.as_ref().unwrap_or(&plain);

    let pb = progress_bar(req.steps);
    let out = semi_methods::generate(
        &sd,
        target,
        &req,
        &method,
        store.as_ref(),
        &options,
        &mut |ev| {
            pb.set_position(ev.step as u64 + 1);
            Ok(())
        },
    );
    pb.finish_and_clear();
    let out = out?;
    if let Some(c) = &out.construction {
        println!("SemI construction:");
        print!("{c}");
    }
    if let Some(swap) = out.prepared_metadata.get("swap") {
        println!(
            "swap: {} of {} blocks moved",
            swap["moved"],
            swap["source"].as_array().map_or(0, |a| a.len())
        );
    }
    let mut extra = out.prepared_metadata.clone();
    if let Some(layout) = &layout {
        extra.insert("layout".into(), serde_json::to_value(layout)?);
    }

    let params = ImageParams {
        prompt: req.prompt.clone(),
        negative_prompt: req.negative_prompt.clone(),
        seed: req.seed,
        steps: req.steps,
        guidance: req.guidance_scale,
        eta: req.eta,
        model: args.model.clone(),
        width: req.width,
        height: req.height,
        extra,
    };
    save_png(&args.out, &out.image, &params)?;
    let sidecar = save_sidecar(&args.out, &params)?;
    println!("wrote {} and {}", args.out.display(), sidecar.display());
    if let Some(layout) = &layout {
        let preview = boxes_path(&args.out);
        let (w, h, rgb) = semi_diffusion::image::to_rgb8(&out.image)?;
        let image = semi_toyworld::image::RgbImage::from_raw(w, h, rgb)?;
        let boxes: Vec<[f64; 4]> = layout.objects.iter().map(|o| o.bbox.to_array()).collect();
        crate::plot::boxes_over(&image, &boxes).save_png(&preview, &[("Title", "layout boxes")])?;
        println!("wrote {} (layout boxes)", preview.display());
    }
    if let Some(p) = &args.save_latents {
        write_latents(p, &out.latents)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// `<out>.boxes.png` next to the image: `image.png` -> `image.boxes.png`.
pub fn boxes_path(out: &Path) -> PathBuf {
    out.with_extension("boxes.png")
}
