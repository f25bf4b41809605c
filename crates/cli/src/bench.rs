//! `semi bench`: the SD-1.5-size CPU table of issue "CPU speed" (see `semi_bench::models`).

use anyhow::Result;
use clap::Args;
use semi_bench::models::{markdown_with, parse_weights, BenchOptions};
use semi_bench::run as run_bench;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Timed runs per row (after one warm-up run); the table shows the median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Image height in pixels (latents are height/8).
    #[arg(long, default_value_t = 512)]
    pub height: usize,
    /// Image width in pixels.
    #[arg(long, default_value_t = 512)]
    pub width: usize,
    /// Only rows whose name contains one of these words (e.g. `--only UNet --only probe`).
    #[arg(long)]
    pub only: Vec<String>,
    /// A Python with torch and diffusers: run `tools/bench_torch.py` on the same rows right after
    /// ours and add PyTorch's time, the ratio and its peak memory to the table.
    #[arg(long, value_name = "PYTHON")]
    pub torch: Option<String>,
    /// Weight storage to measure, comma-separated: `f32`, `f16` (stored in f16, widened per layer,
    /// f32 compute; rows suffixed `(f16 weights)`), or `f32,f16` for both in one run.
    #[arg(long, default_value = "f32")]
    pub weights: String,
    /// Where the rows run (a GPU run synchronizes after each timed run).
    #[arg(long, value_enum, default_value_t = crate::common::DeviceArg::Cpu)]
    pub device: crate::common::DeviceArg,
    /// Compute dtype of weights and activations; rows other than f32 are suffixed with it.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    pub dtype: String,
    /// Noise images per probe pass, comma-separated: one probe row each (as `semi tickets
    /// collect --batch`; e.g. `1,16,64` on a GPU).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    pub probe_batches: Vec<usize>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(
        args.height.is_multiple_of(64)
            && args.width.is_multiple_of(64)
            && args.height > 0
            && args.width > 0,
        "--height and --width must be positive multiples of 64, got {}x{}",
        args.height,
        args.width
    );
    anyhow::ensure!(
        !(args.dtype == "bf16" && matches!(args.device, crate::common::DeviceArg::Cpu)),
        "--dtype bf16 needs a GPU (candle's CPU matmul has no bf16); use f32 or f16 here"
    );
    anyhow::ensure!(
        args.probe_batches.iter().all(|&n| n >= 1),
        "--probe-batches: every batch must be at least 1"
    );
    let opts = BenchOptions {
        runs: args.runs,
        height: args.height,
        width: args.width,
        only: args.only.clone(),
        torch: args.torch.clone(),
        weights: parse_weights(&args.weights)?,
        device: args.device.device()?,
        compute: match args.dtype.as_str() {
            "f16" => candle_core::DType::F16,
            "bf16" => candle_core::DType::BF16,
            _ => candle_core::DType::F32,
        },
        probe_batches: args.probe_batches.clone(),
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!(
        "semi bench: SD-1.5-size models, random weights, {} compute ({} weights), {:?} ({threads} CPU threads), {}x{}",
        args.dtype, args.weights, args.device, args.height, args.width
    );
    let rows = run_bench(&opts, &mut |what| eprintln!("  {what} ..."))?;
    let memory = if opts.device.is_cpu() {
        "peak RSS"
    } else {
        "peak GPU memory"
    };
    print!("{}", markdown_with(&rows, memory));
    Ok(())
}
