//! `semi bench`: seconds and peak memory of the SD-1.5-size components on random weights.
//!
//! Weights come from [`crate::random_weights`] (nothing to download), the shapes are those of
//! SD 1.5 at 512x512. Each row is the median of several runs after one warm-up run; peak memory is
//! the process's peak resident set during the row (Linux `VmHWM`, reset between rows).
//!
//! With [`BenchOptions::torch`] set, `tools/bench_torch.py` runs the same rows in PyTorch (2
//! threads, diffusers modules with default random init) right after ours, in the same invocation,
//! and the table gains PyTorch's median and the ratio ours / PyTorch.

use crate::random_weights::{build_seeded_with, DEFAULT_BASE_SEED};
use anyhow::{Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use semi_diffusion::config::SchedulerConfig;
use semi_diffusion::config::{TextEncoderConfig, UNetConfig, VaeConfig};
use semi_diffusion::controller::AttentionRecorder;
use semi_diffusion::noise;
use semi_diffusion::precision::Precision;
use semi_diffusion::schedulers::SchedulerSpec;
use semi_diffusion::text_encoder::ClipTextModel;
use semi_diffusion::unet::{AddedCond, ForwardOptions, UNet2DConditionModel, UNetOutput};
use semi_diffusion::vae::AutoencoderKL;
use std::time::Instant;

/// The SD 1.5 UNet config (runwayml/stable-diffusion-v1-5 `unet/config.json`).
pub const SD15_UNET: &str = r#"{"act_fn":"silu","attention_head_dim":8,"block_out_channels":[320,640,1280,1280],
"center_input_sample":false,"cross_attention_dim":768,"down_block_types":["CrossAttnDownBlock2D",
"CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],"downsample_padding":1,"flip_sin_to_cos":true,
"freq_shift":0,"in_channels":4,"layers_per_block":2,"mid_block_scale_factor":1,"norm_eps":1e-05,
"norm_num_groups":32,"out_channels":4,"sample_size":64,"up_block_types":["UpBlock2D","CrossAttnUpBlock2D",
"CrossAttnUpBlock2D","CrossAttnUpBlock2D"]}"#;

/// The SD 1.x text encoder config (CLIP ViT-L/14 text tower).
pub const SD15_TEXT: &str = r#"{"hidden_act":"quick_gelu","hidden_size":768,"intermediate_size":3072,
"max_position_embeddings":77,"num_attention_heads":12,"num_hidden_layers":12,"projection_dim":768,
"vocab_size":49408,"layer_norm_eps":1e-05}"#;

/// The SD 1.x VAE config.
pub const SD15_VAE: &str = r#"{"act_fn":"silu","block_out_channels":[128,256,512,512],"down_block_types":
["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],"in_channels":3,
"latent_channels":4,"layers_per_block":2,"norm_num_groups":32,"out_channels":3,"sample_size":512,
"up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"]}"#;

/// SD 1.5's scheduler config (`scheduler/scheduler_config.json`), from which the denoising rows
/// configure DDIM and DPM-Solver++ as a pipeline's `from_config` does.
pub const SD15_SCHEDULER: &str = r#"{"_class_name":"PNDMScheduler","beta_end":0.012,
"beta_schedule":"scaled_linear","beta_start":0.00085,"num_train_timesteps":1000,
"set_alpha_to_one":false,"skip_prk_steps":true,"steps_offset":1,"trained_betas":null,
"clip_sample":false}"#;

/// SDXL base 1.0's UNet config (`unet/config.json`, the fields that differ from the defaults).
pub const SDXL_UNET: &str = r#"{"addition_embed_type":"text_time","addition_time_embed_dim":256,
"attention_head_dim":[5,10,20],"block_out_channels":[320,640,1280],"cross_attention_dim":2048,
"down_block_types":["DownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D"],
"layers_per_block":2,"projection_class_embeddings_input_dim":2816,"sample_size":128,
"transformer_layers_per_block":[1,2,10],"upcast_attention":null,"use_linear_projection":true,
"up_block_types":["CrossAttnUpBlock2D","CrossAttnUpBlock2D","UpBlock2D"]}"#;

/// The layer the ticket probe stops after (docs/design.md 1.1).
pub const PROBE_LAYER: &str = "down_blocks.2.attentions.1.transformer_blocks.0.attn2";

/// One measured row.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub work: String,
    pub seconds: Vec<f64>,
    /// Peak resident memory of the process during the row, bytes (None where not measurable).
    pub peak_bytes: Option<u64>,
    /// PyTorch's seconds for the same row (empty when not measured).
    pub torch_seconds: Vec<f64>,
    /// PyTorch's peak resident memory during the row, bytes.
    pub torch_peak_bytes: Option<u64>,
}

fn median(seconds: &[f64]) -> f64 {
    let mut s = seconds.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

impl BenchRow {
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }

    /// PyTorch's median seconds, when measured.
    pub fn torch_median(&self) -> Option<f64> {
        (!self.torch_seconds.is_empty()).then(|| median(&self.torch_seconds))
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub runs: usize,
    pub height: usize,
    pub width: usize,
    /// Row names to run (substring match on the work column); empty = all.
    pub only: Vec<String>,
    /// A Python interpreter with torch and diffusers: also run `tools/bench_torch.py` with it.
    pub torch: Option<String>,
    /// Weight storage dtypes to measure, each a full pass over the rows (f32 compute always):
    /// `F16` rows are named with a ` (f16 weights)` suffix.
    pub weights: Vec<DType>,
    /// Where the rows run (the CPU, or a GPU: each timed run ends with a device synchronize).
    pub device: Device,
    /// Compute dtype (weights and activations); rows other than f32 are suffixed with it.
    pub compute: DType,
    /// Noise images per probe pass, one row each (the ticket collection's `--batch`).
    pub probe_batches: Vec<usize>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            runs: 3,
            height: 512,
            width: 512,
            only: Vec::new(),
            torch: None,
            weights: vec![DType::F32],
            device: Device::Cpu,
            compute: DType::F32,
            probe_batches: vec![1],
        }
    }
}

/// Resets the peak-memory counter of `dev`: the process's peak RSS (Linux only) on the CPU, the
/// CUDA memory pool's high-water mark on a GPU. False where it cannot be reset.
fn reset_peak(dev: &Device) -> bool {
    if dev.is_cuda() {
        return crate::gpu_memory::reset_peak(dev);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The peak memory since the last [`reset_peak`], in bytes: resident set on the CPU, bytes
/// allocated on a GPU (as `torch.cuda.max_memory_allocated`).
fn peak_bytes(dev: &Device) -> Option<u64> {
    if dev.is_cuda() {
        return crate::gpu_memory::peak(dev);
    }
    peak_rss()
}

/// The process's peak resident set since the last reset, in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Announces the row `work` to `progress`, then times `f` (its result is dropped), each run
/// ended by a synchronize of `dev` so a GPU's queued work is counted.
pub(crate) fn time_row<T, E: Into<anyhow::Error>>(
    work: &str,
    runs: usize,
    dev: &Device,
    progress: &mut dyn FnMut(&str),
    mut f: impl FnMut() -> std::result::Result<T, E>,
) -> Result<BenchRow> {
    progress(work);
    let resettable = reset_peak(dev);
    f().map_err(Into::into)
        .with_context(|| format!("bench `{work}`: warm-up run failed"))?;
    dev.synchronize()?;
    let mut seconds = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f().map_err(Into::into)?;
        dev.synchronize()?;
        seconds.push(t.elapsed().as_secs_f64());
    }
    Ok(BenchRow {
        work: work.to_string(),
        seconds,
        peak_bytes: if resettable { peak_bytes(dev) } else { None },
        torch_seconds: Vec::new(),
        torch_peak_bytes: None,
    })
}

/// `--weights f32,f16`: the weight storage dtypes [`BenchOptions::weights`] accepts.
pub fn parse_weights(list: &str) -> Result<Vec<DType>> {
    list.split(',')
        .map(|w| match w.trim() {
            "f32" => Ok(DType::F32),
            "f16" => Ok(DType::F16),
            other => anyhow::bail!("--weights: `{other}` is not f32 or f16"),
        })
        .collect()
}

/// A model of the bench built on `dev` with [`DEFAULT_BASE_SEED`]'s random weights.
fn seeded<M>(
    precision: Precision,
    dev: &Device,
    make: impl Fn(VarBuilder<'static>) -> candle_core::Result<M>,
) -> Result<M> {
    Ok(build_seeded_with(DEFAULT_BASE_SEED, precision, dev, make)?)
}

/// The SD-1.5-size text encoder, UNet and VAE, all three on `dev`.
fn sd15_models(
    precision: Precision,
    dev: &Device,
) -> Result<(ClipTextModel, UNet2DConditionModel, AutoencoderKL)> {
    let te_cfg = TextEncoderConfig::parse(SD15_TEXT)?;
    let (unet_cfg, vae_cfg) = (UNetConfig::parse(SD15_UNET)?, VaeConfig::parse(SD15_VAE)?);
    Ok((
        seeded(precision, dev, |vb| ClipTextModel::new(vb, &te_cfg))?,
        seeded(precision, dev, |vb| {
            UNet2DConditionModel::new(vb, &unet_cfg)
        })?,
        seeded(precision, dev, |vb| AutoencoderKL::new(vb, &vae_cfg))?,
    ))
}

/// Seeded noise on `dev` in `dtype`.
fn randn(seed: u64, dims: &[usize], dev: &Device, dtype: DType) -> Result<Tensor> {
    Ok(noise::randn(seed, dims, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(dev)?)
}

/// Runs the table. `progress` is told which row starts (building SD-size weights takes a while).
pub fn run(opts: &BenchOptions, progress: &mut dyn FnMut(&str)) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for (precision, suffix) in precisions(opts) {
        run_rows(opts, precision, &suffix, &mut rows, progress)?;
    }
    Ok(rows)
}

/// With `opts.torch`, PyTorch's seconds beside the rows of the same name
/// (`tools/bench_torch.py`).
pub fn add_torch(opts: &BenchOptions, rows: &mut [BenchRow], progress: &mut dyn FnMut(&str)) {
    if let Some(python) = &opts.torch {
        progress("running tools/bench_torch.py (PyTorch, 2 threads)");
        // Our rows are kept when the PyTorch side fails or is stopped (a time limit on a
        // borrowed GPU): the table then has no PyTorch columns, and the reason is reported.
        match run_torch(python, opts).and_then(|report| merge_torch(rows, &report)) {
            Ok(()) => {}
            Err(e) => progress(&format!("PyTorch side failed, table without it: {e:#}")),
        }
    }
}

/// The precision of each weight storage dtype of `opts`, with the suffix of its rows' names.
pub(crate) fn precisions(opts: &BenchOptions) -> Vec<(Precision, String)> {
    opts.weights
        .iter()
        .map(|&weights| {
            let precision = Precision {
                compute: opts.compute,
                weights: if opts.compute == DType::F32 {
                    weights
                } else {
                    opts.compute
                },
            };
            let dt = precision.compute;
            let suffix = if precision.is_mixed() {
                format!(" ({:?} weights)", precision.weights).to_lowercase()
            } else if dt != DType::F32 {
                format!(" ({})", dtype_name(dt))
            } else {
                String::new()
            };
            (precision, suffix)
        })
        .collect()
}

/// The rows for one weight storage dtype.
fn run_rows(
    opts: &BenchOptions,
    precision: Precision,
    suffix: &str,
    rows: &mut Vec<BenchRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let dev = opts.device.clone();
    let dt = precision.compute;
    let wanted = |w: &str| opts.only.is_empty() || opts.only.iter().any(|o| w.contains(o.as_str()));
    let (h, w) = (opts.height / 8, opts.width / 8);
    let unet_rows = [
        format!("UNet forward, batch 1{suffix}"),
        format!("UNet forward, batch 2{suffix}"),
    ];
    let probe_rows: Vec<(usize, String)> = opts
        .probe_batches
        .iter()
        .map(|&n| {
            (
                n,
                format!("probe pass (to down_blocks.2.attentions.1), batch {n}{suffix}"),
            )
        })
        .collect();
    if unet_rows
        .iter()
        .chain(probe_rows.iter().map(|(_, r)| r))
        .any(|r| wanted(r))
    {
        progress("building the SD-1.5-size UNet with random weights");
        let cfg = UNetConfig::parse(SD15_UNET)?;
        let unet = seeded(precision, &dev, |vb| UNet2DConditionModel::new(vb, &cfg))?;
        let sample1 = randn(7, &[1, 4, h, w], &dev, dt)?;
        let text1 = randn(8, &[1, 77, 768], &dev, dt)?;
        let sample2 = Tensor::cat(&[&sample1, &sample1], 0)?;
        let text2 = Tensor::cat(&[&text1, &text1], 0)?;
        if wanted(&unet_rows[0]) {
            rows.push(time_row(&unet_rows[0], opts.runs, &dev, progress, || {
                unet.forward(&sample1, 981.0, &text1)
            })?);
        }
        if wanted(&unet_rows[1]) {
            rows.push(time_row(&unet_rows[1], opts.runs, &dev, progress, || {
                unet.forward(&sample2, 981.0, &text2)
            })?);
        }
        for (n, work) in probe_rows.iter().filter(|(_, r)| wanted(r)) {
            // n noise images, one prompt: the rows of one batched probe pass.
            let sample = randn(7, &[*n, 4, h, w], &dev, dt)?;
            let text = text1.repeat((*n, 1, 1))?;
            rows.push(time_row(work, opts.runs, &dev, progress, || {
                let mut rec = AttentionRecorder::for_paths([PROBE_LAYER]);
                let out = unet.forward_with(
                    &sample,
                    981.0,
                    &text,
                    ForwardOptions {
                        controller: Some(&mut rec),
                        stop_after: Some(PROBE_LAYER),
                        ..Default::default()
                    },
                )?;
                anyhow::ensure!(
                    matches!(out, UNetOutput::Stopped),
                    "the probe pass did not stop early"
                );
                anyhow::ensure!(
                    rec.records.len() == 1,
                    "the probe pass recorded {} maps",
                    rec.records.len()
                );
                anyhow::Ok(())
            })?);
        }
    }

    let text_row = &format!("CLIP text encoder, batch 1{suffix}");
    if wanted(text_row) {
        progress("building the SD-1.5-size text encoder with random weights");
        let cfg = TextEncoderConfig::parse(SD15_TEXT)?;
        let te = seeded(precision, &dev, |vb| ClipTextModel::new(vb, &cfg))?;
        let ids: Vec<u32> = (0..77u32)
            .map(|i| {
                if i == 0 {
                    49406
                } else if i < 9 {
                    320 + i
                } else {
                    49407
                }
            })
            .collect();
        let ids = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
        rows.push(time_row(text_row, opts.runs, &dev, progress, || {
            te.forward(&ids)
        })?);
    }

    let vae_row = &format!("VAE decode, batch 1{suffix}");
    if wanted(vae_row) {
        progress("building the SD-size VAE with random weights");
        let cfg = VaeConfig::parse(SD15_VAE)?;
        let vae = seeded(precision, &dev, |vb| AutoencoderKL::new(vb, &cfg))?;
        let latents = randn(9, &[1, 4, h, w], &dev, dt)?;
        rows.push(time_row(vae_row, opts.runs, &dev, progress, || {
            vae.decode(&latents)
        })?);
    }
    let gen_row = &format!(
        "generation memory: text encoder x2, UNet batch 2, VAE decode, all loaded{suffix}"
    );
    // Only on request (it builds all three models at once): `--only generation`.
    if requested(opts, gen_row) {
        progress("building the SD-1.5-size text encoder, UNet and VAE together");
        let (te, unet, vae) = sd15_models(precision, &dev)?;
        let ids = Tensor::new(&[[49406u32; 1], [49407u32; 1]], &dev)?
            .reshape((2, 1))?
            .repeat((1, 77))?;
        let latents = randn(9, &[1, 4, h, w], &dev, dt)?;
        rows.push(time_row(gen_row, opts.runs.min(1), &dev, progress, || {
            let text = Tensor::cat(
                &[&te.forward(&ids.i(0..1)?)?, &te.forward(&ids.i(1..2)?)?],
                0,
            )?;
            let eps = unet.forward(&Tensor::cat(&[&latents, &latents], 0)?, 981.0, &text)?;
            vae.decode(&(latents.clone() - eps.i(0..1)?)?)?;
            anyhow::Ok(())
        })?);
    }
    denoising_rows(opts, precision, suffix, rows, progress)?;
    generation_row(opts, precision, suffix, rows, progress)?;
    sdxl_row(opts, precision, suffix, rows, progress)?;

    Ok(())
}

/// Rows run only when named with `--only` (minutes each on a CPU).
pub(crate) fn requested(opts: &BenchOptions, work: &str) -> bool {
    opts.only.iter().any(|o| work.contains(o.as_str()))
}

/// `--only denoising`: the denoising loop of one image (classifier-free guidance: UNet batch 2,
/// then the scheduler's step) with 50 DDIM steps and with 20 DPM-Solver++ 2M steps, on the
/// SD-1.5-size UNet at the bench size. Text encoding and decoding are the same for both and
/// left out, so the ratio of the two rows is the cost of a 20-step DPM++ image against a
/// 50-step DDIM one: the sampler's own work is noise next to the UNet's.
fn denoising_rows(
    opts: &BenchOptions,
    precision: Precision,
    suffix: &str,
    rows: &mut Vec<BenchRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let cases = [
        (
            "ddim",
            50,
            format!("denoising, 50 DDIM steps (UNet batch 2){suffix}"),
        ),
        (
            "dpm++2m",
            20,
            format!("denoising, 20 DPM++ 2M steps (UNet batch 2){suffix}"),
        ),
    ];
    if !cases.iter().any(|(_, _, w)| requested(opts, w)) {
        return Ok(());
    }
    let dev = opts.device.clone();
    let dt = precision.compute;
    let (h, w) = (opts.height / 8, opts.width / 8);
    progress("building the SD-1.5-size UNet with random weights");
    let cfg = UNetConfig::parse(SD15_UNET)?;
    let unet = seeded(precision, &dev, |vb| UNet2DConditionModel::new(vb, &cfg))?;
    let sched_cfg = SchedulerConfig::parse(SD15_SCHEDULER)?;
    let init = randn(7, &[1, 4, h, w], &dev, DType::F32)?;
    let text = randn(8, &[2, 77, 768], &dev, dt)?;
    for (name, steps, work) in &cases {
        if !requested(opts, work) {
            continue;
        }
        let spec = SchedulerSpec::resolve(name, &[], &sched_cfg)?;
        rows.push(time_row(work, opts.runs, &dev, progress, || {
            denoise(&unet, &spec, *steps, &init, &text, dt)
        })?);
    }
    Ok(())
}

/// The denoising loop of one image: `steps` of `spec` from `init` (f32 noise), classifier-free
/// guidance 7.5 over the batch-2 `text` (unconditional row first), in `dt`.
fn denoise(
    unet: &UNet2DConditionModel,
    spec: &SchedulerSpec,
    steps: usize,
    init: &Tensor,
    text: &Tensor,
    dt: DType,
) -> Result<Tensor> {
    let mut scheduler = spec.build(0.0)?;
    scheduler.set_timesteps(steps)?;
    let mut latents = (init * scheduler.init_noise_sigma())?.to_dtype(dt)?;
    for t in scheduler.timesteps().to_vec() {
        let input = Tensor::cat(&[&latents, &latents], 0)?;
        let input = scheduler.scale_model_input(&input, t)?;
        let pred = unet.forward(&input, t, text)?;
        let (uncond, cond) = (pred.i(0..1)?, pred.i(1..2)?);
        let pred = (&uncond + ((cond - &uncond)? * 7.5)?)?;
        latents = scheduler.step(&pred, t, &latents, None)?.prev_sample;
    }
    Ok(latents)
}

/// `--only "50-step generation"`: one whole image as a pipeline makes it: the prompt and the
/// empty negative prompt through the text encoder, 50 DDIM steps with classifier-free guidance
/// (UNet batch 2, guidance 7.5), and the VAE decode of the final latents, all three models
/// loaded (no tokenizer, no PNG).
fn generation_row(
    opts: &BenchOptions,
    precision: Precision,
    suffix: &str,
    rows: &mut Vec<BenchRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let work =
        format!("50-step generation end to end (text encoder, 50 DDIM steps, VAE decode){suffix}");
    if !requested(opts, &work) {
        return Ok(());
    }
    let dev = opts.device.clone();
    let dt = precision.compute;
    let (h, w) = (opts.height / 8, opts.width / 8);
    progress("building the SD-1.5-size text encoder, UNet and VAE together");
    let (te, unet, vae) = sd15_models(precision, &dev)?;
    let prompt: Vec<u32> = (0..77u32)
        .map(|i| match i {
            0 => 49406,
            1..=8 => 320 + i,
            _ => 49407,
        })
        .collect();
    let empty: Vec<u32> = (0..77u32)
        .map(|i| if i == 0 { 49406 } else { 49407 })
        .collect();
    let ids = Tensor::new([empty, prompt].concat().as_slice(), &dev)?.reshape((2, 77))?;
    let spec = SchedulerSpec::resolve("ddim", &[], &SchedulerConfig::parse(SD15_SCHEDULER)?)?;
    let init = randn(7, &[1, 4, h, w], &dev, DType::F32)?;
    rows.push(time_row(&work, opts.runs, &dev, progress, || {
        let text = Tensor::cat(
            &[&te.forward(&ids.i(0..1)?)?, &te.forward(&ids.i(1..2)?)?],
            0,
        )?;
        let latents = denoise(&unet, &spec, 50, &init, &text, dt)?;
        anyhow::Ok(vae.decode(&(latents / 0.18215)?)?)
    })?);
    Ok(())
}

/// `--only SDXL`: one SDXL-base-size UNet forward at 1024x1024, batch 1, with its added
/// conditions (random weights): the time, and the peak memory of holding and running it.
fn sdxl_row(
    opts: &BenchOptions,
    precision: Precision,
    suffix: &str,
    rows: &mut Vec<BenchRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let work = format!("SDXL-size UNet at 1024x1024, batch 1{suffix}");
    if !requested(opts, &work) {
        return Ok(());
    }
    let dev = opts.device.clone();
    let dt = precision.compute;
    progress("building the SDXL-size UNet with random weights (2.6 billion)");
    let cfg = UNetConfig::parse(SDXL_UNET)?;
    let unet = seeded(precision, &dev, |vb| UNet2DConditionModel::new(vb, &cfg))?;
    let sample = randn(7, &[1, 4, 128, 128], &dev, dt)?;
    let text = randn(8, &[1, 77, 2048], &dev, dt)?;
    let added = AddedCond {
        text_embeds: randn(9, &[1, 1280], &dev, dt)?,
        time_ids: vec![vec![1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]],
    };
    rows.push(time_row(&work, opts.runs, &dev, progress, || {
        unet.forward_with(
            &sample,
            981.0,
            &text,
            ForwardOptions {
                added: Some(&added),
                ..Default::default()
            },
        )
    })?);
    Ok(())
}

/// The script next to this crate in the repository (`tools/bench_torch.py`), or `SEMI_BENCH_TORCH`.
fn torch_script() -> std::path::PathBuf {
    match std::env::var_os("SEMI_BENCH_TORCH") {
        Some(p) => p.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/bench_torch.py"),
    }
}

/// `f32`, `f16`, `bf16`: the names the flags and the torch script use.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

/// Runs the PyTorch side and returns its JSON report.
fn run_torch(python: &str, opts: &BenchOptions) -> Result<serde_json::Value> {
    let script = torch_script();
    anyhow::ensure!(
        script.is_file(),
        "bench --torch: {} not found (set SEMI_BENCH_TORCH to the script)",
        script.display()
    );
    let mut cmd = std::process::Command::new(python);
    cmd.arg(&script)
        .args(["--runs", &opts.runs.to_string()])
        .args(["--height", &opts.height.to_string()])
        .args(["--width", &opts.width.to_string()])
        .args([
            "--device",
            if opts.device.is_cuda() { "cuda" } else { "cpu" },
        ])
        .args(["--dtype", dtype_name(opts.compute)]);
    if opts.compute != DType::F32 {
        cmd.args(["--suffix", &format!(" ({})", dtype_name(opts.compute))]);
    }
    for o in &opts.only {
        cmd.args(["--only", o]);
    }
    let batches: Vec<String> = opts.probe_batches.iter().map(|n| n.to_string()).collect();
    cmd.args(["--probe-batches", &batches.join(",")]);
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("bench --torch: cannot run `{python}`"))?;
    anyhow::ensure!(
        out.status.success(),
        "bench --torch: {} {} failed ({})",
        python,
        script.display(),
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| l.trim_start().starts_with('{'));
    serde_json::from_str(last.unwrap_or(""))
        .with_context(|| format!("bench --torch: no JSON report in the script's output: {text}"))
}

/// Copies PyTorch's seconds and peak memory into the rows of the same name.
fn merge_torch(rows: &mut [BenchRow], report: &serde_json::Value) -> Result<()> {
    let theirs = report["rows"]
        .as_array()
        .context("bench --torch: report has no `rows` array")?;
    for t in theirs {
        let work = t["work"].as_str().unwrap_or_default();
        if let Some(row) = rows.iter_mut().find(|r| r.work == work) {
            row.torch_seconds = t["seconds"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
                .unwrap_or_default();
            row.torch_peak_bytes = t["peak_bytes"].as_u64();
        }
    }
    Ok(())
}

fn gib(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{:.2}", b as f64 / (1u64 << 30) as f64))
        .unwrap_or_else(|| "n/a".into())
}

/// The table as Markdown: work, median seconds, min-max, peak memory; with PyTorch's median,
/// the ratio ours / PyTorch and PyTorch's peak memory when any row has them.
pub fn markdown(rows: &[BenchRow]) -> String {
    markdown_with(rows, "peak RSS")
}

/// [`markdown`] with the memory columns named `memory` (on a GPU: "peak GPU memory", bytes
/// allocated on the device).
pub fn markdown_with(rows: &[BenchRow], memory: &str) -> String {
    let torch = rows.iter().any(|r| r.torch_median().is_some());
    let mut s = format!("| work | median s | runs (min-max s) | {memory} GiB |");
    if torch {
        s.push_str(&format!(
            " PyTorch median s | ratio ours/PyTorch | PyTorch {memory} GiB |"
        ));
    }
    s.push_str(if torch {
        "\n|---|---|---|---|---|---|---|\n"
    } else {
        "\n|---|---|---|---|\n"
    });
    for r in rows {
        let min = r.seconds.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = r.seconds.iter().cloned().fold(0.0, f64::max);
        s.push_str(&format!(
            "| {} | {:.2} | {} ({:.2}-{:.2}) | {} |",
            r.work,
            r.median(),
            r.seconds.len(),
            min,
            max,
            gib(r.peak_bytes)
        ));
        if torch {
            match r.torch_median() {
                Some(t) => s.push_str(&format!(
                    " {:.2} | {:.2} | {} |",
                    t,
                    r.median() / t,
                    gib(r.torch_peak_bytes)
                )),
                None => s.push_str(" n/a | n/a | n/a |"),
            }
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_report_merges_into_rows_and_table() {
        let mut rows = vec![BenchRow {
            work: "VAE decode, batch 1".into(),
            seconds: vec![3.0, 1.0, 2.0],
            peak_bytes: Some(1 << 30),
            torch_seconds: Vec::new(),
            torch_peak_bytes: None,
        }];
        let report = serde_json::json!({"rows": [
            {"work": "VAE decode, batch 1", "seconds": [4.0, 4.0, 5.0], "peak_bytes": 2147483648u64},
            {"work": "not ours", "seconds": [1.0]}
        ]});
        merge_torch(&mut rows, &report).unwrap();
        assert_eq!(rows[0].torch_median(), Some(4.0));
        let md = markdown(&rows);
        assert!(
            md.contains(
                "| VAE decode, batch 1 | 2.00 | 3 (1.00-3.00) | 1.00 | 4.00 | 0.50 | 2.00 |"
            ),
            "{md}"
        );
        assert!(merge_torch(&mut rows, &serde_json::json!({})).is_err());
    }
}
