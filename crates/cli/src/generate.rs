//! `semi generate`: one prompt, one image.

use semi_diffusion::latents_io::{read_latents, write_latents};
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use semi_diffusion::image::{save_png, save_sidecar, ImageParams};
use semi_diffusion::loading::{resolve_model, ModelFiles, Variant};
use semi_diffusion::pipeline::{GenerateRequest, StableDiffusion};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    Metal,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// A diffusers folder, or a Hugging Face repo id (owner/name) already in the local HF cache.
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (<= 1 turns guidance off).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// DDIM eta (0 = deterministic).
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
pub fn build_request(args: &GenerateArgs, files: &ModelFiles) -> Result<GenerateRequest> {
    let (height, width) = match (args.height, args.width, files.default_size()) {
        (Some(h), Some(w), _) => (h, w),
        (h, w, Some((dh, dw))) => (h.unwrap_or(dh), w.unwrap_or(dw)),
        _ => bail!("the model's unet/config.json has no sample_size; pass --height and --width"),
    };
    let mut req = GenerateRequest::new(args.prompt.clone(), height, width);
    req.negative_prompt = args.negative_prompt.clone();
    req.seed = args.seed;
    req.steps = args.steps;
    req.guidance_scale = args.guidance;
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
    if args.prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let device = select_device(args.device)?;
    check_output_path(&args.out, "--out")?;
    if let Some(p) = &args.save_latents {
        check_output_path(p, "--save-latents")?;
    }
    let dir = resolve_model(&args.model)?;
    let variant = if args.fp16 {
        Variant::Fp16
    } else {
        Variant::Full
    };
    let files = ModelFiles::check(&dir, variant)?;
    let req = build_request(args, &files)?;
    let dtype = if args.fp16 { DType::F16 } else { DType::F32 };
    let sd = StableDiffusion::from_files(files, &device, dtype)?;

    let pb = progress_bar(req.steps);
    let out = sd.generate(&req, None, &mut |ev| {
        pb.set_position(ev.step as u64 + 1);
        Ok(())
    });
    pb.finish_and_clear();
    let out = out?;

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
        extra: Default::default(),
    };
    save_png(&args.out, &out.image, &params)?;
    let sidecar = save_sidecar(&args.out, &params)?;
    println!("wrote {} and {}", args.out.display(), sidecar.display());
    if let Some(p) = &args.save_latents {
        write_latents(p, &out.latents)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
