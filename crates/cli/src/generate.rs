//! `semi generate`: one prompt (or one layout), one image, by any method of the paper's Table 1.
//! The flags become a `semi_run::Request`; `semi_run::Run` does the work; this file prints.

use anyhow::{bail, Result};
use clap::Args;
use semi_diffusion::loading::Variant;
use semi_diffusion::precision::Precision;
use semi_methods::{Guidance, Init, Method};
use semi_run::{Choices, ModelRef, Outputs, Request, Run, StoreSpec};
use std::path::PathBuf;

use crate::common::{DeviceArg, ProbeArgs, TicketArgs};

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
    #[command(flatten)]
    pub model: semi_run::model::ModelArgs,
    /// The prompt (or give --layout).
    #[arg(long, required_unless_present = "layout")]
    pub prompt: Option<String>,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Seed of the initial noise [default: the layout's seed, else 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// A layout (JSON): prompt, boxes, optionally size and seed (a layout without width and
    /// height gets the model's native size); also writes `<out>.boxes.png`.
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
    pub tickets: TicketArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// DDIM steps [default: the model's, else 50].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (<= 1 turns it off) [default: the model's, else 7.5].
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
    /// Half precision: the fp16 weight variant when present, f16 compute (`--dtype f16`).
    #[arg(long, conflicts_with = "dtype")]
    pub fp16: bool,
    /// Compute precision of weights and activations (softmax, group norm and the attention a
    /// method reads stay f32) [default: f16 on CUDA, f32 elsewhere and when filling a cache
    /// store, whose probe runs in f32].
    #[arg(long, value_parser = ["f32", "f16", "bf16"])]
    pub dtype: Option<String>,
    /// `f16`: weights stored in f16 (half the memory; the fp16 variant when present) and widened
    /// per layer, compute stays f32 (CPU only; other devices store them in f32).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"], conflicts_with = "fp16")]
    pub weights: String,
}

/// `--dtype`, `--fp16`, or the device's default (module docs of the flag).
fn compute_dtype(
    args: &GenerateArgs,
    device: &candle_core::Device,
    fills_cache: bool,
) -> candle_core::DType {
    use candle_core::DType;
    match (args.dtype.as_deref(), args.fp16) {
        (Some("f16"), _) | (None, true) => DType::F16,
        (Some("bf16"), _) => DType::BF16,
        (Some(_), _) => DType::F32,
        (None, false) if device.is_cuda() && !fills_cache => DType::F16,
        (None, false) => DType::F32,
    }
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

    /// The classifier-free guidance scale given: `--cfg`, else a numeric `--guidance`.
    pub fn cfg_scale(&self) -> Result<Option<f64>> {
        match (self.cfg, self.guidance) {
            (Some(_), GuidanceArg::Scale(_)) => {
                bail!("--cfg and a numeric --guidance both set the guidance scale; give one")
            }
            (Some(c), _) | (None, GuidanceArg::Scale(c)) => Ok(Some(c)),
            (None, GuidanceArg::Method(_)) => Ok(None),
        }
    }

    /// The settings given explicitly.
    pub fn choices(&self) -> Result<Choices> {
        Ok(Choices {
            guidance_scale: self.cfg_scale()?,
            num_inference_steps: self.steps,
            ..Choices {
                probe_layers: self.probe.layers.clone(),
                scheduler: self.probe.scheduler.scheduler.clone(),
                scheduler_options: self.probe.choices().scheduler_options,
                ..self.tickets.choices()?
            }
        })
    }
}

/// Why `method` cannot run without `--layout`, in the flags' words.
fn needs_layout(method: &Method) -> Option<String> {
    if let Some(why) = method.init.needs().boxes {
        return Some(format!(
            "--init {} needs --layout ({why})",
            method.init.name()
        ));
    }
    let why = method.guidance.needs().boxes?;
    Some(format!(
        "--guidance {} needs --layout ({why})",
        method.guidance.name()
    ))
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
    let half = args.fp16 || args.dtype.as_deref().is_some_and(|d| d != "f32");
    if semi && half && args.tickets.store.is_none() {
        bail!(
            "--init {init} probes in f32 to fill its cache store; drop --fp16/--dtype or pass \
             --store"
        );
    }
    args.probe.check()?;
    let flags = args.choices()?;
    let device = args.device.device()?;
    let outputs = Outputs {
        image: args.out.clone(),
        latents: args.save_latents.clone(),
    };
    let inputs: Vec<(&std::path::Path, &str)> = args
        .layout
        .iter()
        .map(|p| (p.as_path(), "--layout"))
        .collect();
    outputs.check(args.layout.is_some(), &inputs)?;
    let f16_weights = args.weights == "f16";
    let fills_cache = semi && args.tickets.store.is_none();
    let dtype = compute_dtype(args, &device, fills_cache);
    if dtype == candle_core::DType::BF16 && device.is_cpu() {
        bail!("--dtype bf16 needs a GPU (candle's CPU matmul has no bf16); use f32 or f16 here");
    }
    let variant = if dtype == candle_core::DType::F16 || f16_weights {
        Variant::Fp16
    } else {
        Variant::Full
    };
    let model = ModelRef::resolve(&args.model.spec()?, variant)?;
    let layout = match &args.layout {
        Some(p) => Some(crate::common::read_layout(p, model.native_size().ok())?),
        None => None,
    };
    let request = Request {
        layout,
        prompt: args.prompt.clone(),
        negative_prompt: Some(args.negative_prompt.clone()),
        seed: args.seed,
        height: args.height,
        width: args.width,
        method: Some(method),
        flags,
        authors_rule: args.tickets.rule.authors(),
        eta: args.eta,
        paint_weight: Some(args.paint_weight),
        soft_weight: Some(args.soft_weight),
        fill: semi_tickets::InitMethod::SemI,
        latents: args.latents.clone(),
    };
    let run = Run::plan(&model, request)?;
    let precision = if f16_weights {
        Precision::f16_weights()
    } else {
        Precision::uniform(dtype)
    };
    let model = model.load(&device, precision)?;

    let store = if run.needs_store() {
        let spec = StoreSpec {
            given: args.tickets.store.as_deref(),
            partners: args.tickets.partners()?,
            pairs_per_pass: args.probe.pairs_per_pass,
            images_per_pass: args.probe.images_per_pass(&model.sd.device),
        };
        let mut bar = crate::common::CollectBar::new("probing");
        let store = run.store(&model, &spec, &mut |p| bar.update(p), &mut |line| {
            println!("{line}")
        });
        bar.finish();
        Some(store?)
    } else {
        None
    };

    let pb = crate::common::bar(
        "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} elapsed, ETA {eta_precise}",
        run.sampling.steps,
        "",
    );
    let out = run.generate(&model, store.as_ref(), &mut |ev| {
        pb.set_position(ev.step as u64 + 1);
        Ok(())
    });
    pb.finish_and_clear();
    let out = out?;
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
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
    let params = run.params(model.name(), &out);
    let written = outputs.write(&run, &params, &out)?;
    println!(
        "wrote {} and {}",
        written[0].display(),
        written[1].display()
    );
    for p in &written[2..] {
        let what = if *p == semi_run::outputs::boxes_path(&args.out) {
            " (layout boxes)"
        } else {
            ""
        };
        println!("wrote {}{what}", p.display());
    }
    Ok(())
}
