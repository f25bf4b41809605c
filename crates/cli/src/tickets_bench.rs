//! `semi tickets bench`: what one probe pass costs next to the full UNet passes it replaces
//! (docs/design.md section 4: at most a third of one forward at batch 1; the authors pay a CFG
//! batch-2 forward per pass), and selection timings on a synthetic 700-pair x 100-image store.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use semi_bench::selection::{bench_requests, ensure_synthetic_store, time_rules};
use semi_diffusion::config::UNetConfig;
use semi_diffusion::controller::AttentionRecorder;
use semi_diffusion::unet::{AddedCond, ForwardOptions, UNet2DConditionModel, UNetOutput};
use semi_tickets::probe::{plan_layers, LayerChoice, LayerPlan};
use semi_tickets::Store;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Time the probe of this model (a diffusers folder or HF cache repo id) at its native size.
    #[arg(long)]
    pub model: Option<String>,
    /// Time the probe on an SD-1.5-size UNet with seeded random weights at 512x512 (building it
    /// takes about a minute).
    #[arg(long)]
    pub sd15: bool,
    /// Time selection on a synthetic 700-pair x 100-image store (80 categories, SD shapes).
    #[arg(long)]
    pub selection: bool,
    /// Keep (and reuse) the synthetic store here instead of a temporary folder.
    #[arg(long, value_name = "DIR")]
    pub selection_store: Option<PathBuf>,
    /// Timed runs per row (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also time probe passes with this many prompts per pass (comma-separated), per pair.
    #[arg(long, default_value = "2,4")]
    pub batches: String,
}

fn median_seconds(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut s = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        s.push(t.elapsed().as_secs_f64());
    }
    s.sort_by(f64::total_cmp);
    Ok(s[s.len() / 2])
}

/// Probe pass (batch 1 and batched, per pair), full forward batch 1, CFG forward batch 2.
fn bench_unet(
    name: &str,
    unet: &UNet2DConditionModel,
    latent: (usize, usize),
    context_dim: usize,
    timestep: f64,
    runs: usize,
    batches: &[usize],
) -> Result<()> {
    let plan: LayerPlan = plan_layers(unet, latent, &LayerChoice::Default)?;
    let dev = Device::Cpu;
    let c = unet.config().in_channels;
    let x1 = semi_diffusion::noise::randn(7, &[1, c, latent.0, latent.1], &dev)?;
    let e1 = semi_diffusion::noise::randn(8, &[1, 77, context_dim], &dev)?;
    // SDXL's added conditions: a pooled embedding of the width add_embedding expects, and six
    // time ids.
    let pooled = match unet.config().text_time() {
        Some((time_dim, input)) => Some(semi_diffusion::noise::randn(
            9,
            &[1, input.saturating_sub(6 * time_dim)],
            &dev,
        )?),
        None => None,
    };
    let added = |b: usize| -> Result<Option<AddedCond>> {
        Ok(match &pooled {
            Some(p) => Some(AddedCond {
                text_embeds: p.repeat((b, 1))?,
                time_ids: vec![vec![1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]; b],
            }),
            None => None,
        })
    };
    let probe = |b: usize| -> Result<f64> {
        let x = x1.repeat((b, 1, 1, 1))?;
        let e = e1.repeat((b, 1, 1))?;
        let added = added(b)?;
        median_seconds(runs, || {
            let mut rec = AttentionRecorder::for_paths(plan.layers.clone());
            let out = unet.forward_with(
                &x,
                timestep,
                &e,
                ForwardOptions {
                    controller: Some(&mut rec),
                    stop_after: Some(&plan.stop_after),
                    added: added.as_ref(),
                    ..Default::default()
                },
            )?;
            ensure!(matches!(out, UNetOutput::Stopped), "the probe did not stop");
            Ok(())
        })
    };
    let forward = |b: usize| -> Result<f64> {
        let x = x1.repeat((b, 1, 1, 1))?;
        let e = e1.repeat((b, 1, 1))?;
        let added = added(b)?;
        median_seconds(runs, || {
            unet.forward_with(
                &x,
                timestep,
                &e,
                ForwardOptions {
                    added: added.as_ref(),
                    ..Default::default()
                },
            )?;
            Ok(())
        })
    };
    println!(
        "{name}: latent {}x{}, probed layer {} (grid {}x{}), t = {timestep}, median of {runs} runs",
        latent.0, latent.1, plan.stop_after, plan.grid[0], plan.grid[1]
    );
    // Each row is printed as soon as it is measured (SD-size rows take a while on a CPU).
    let p1 = probe(1)?;
    println!("  probe pass, batch 1              {:>9.4} s", p1);
    for &b in batches {
        let pb = probe(b)?;
        println!(
            "  probe pass, batch {b:<2} (per pair)   {:>9.4} s  ({:.2}x batch 1)",
            pb / b as f64,
            pb / b as f64 / p1
        );
    }
    let f1 = forward(1)?;
    println!("  full UNet forward, batch 1       {:>9.4} s", f1);
    let f2 = forward(2)?;
    println!("  CFG UNet forward, batch 2        {:>9.4} s", f2);
    println!(
        "  probe / forward batch 1 = {:.3};  probe / CFG batch 2 = {:.3} ({:.1}x cheaper)",
        p1 / f1,
        p1 / f2,
        f2 / p1
    );
    Ok(())
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.model.is_none() && !args.sd15 && !args.selection {
        bail!("nothing to time: give --model M, --sd15 and/or --selection");
    }
    let batches: Vec<usize> = args
        .batches
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .ok()
                .filter(|b: &usize| *b >= 1)
                .with_context(|| format!("--batches: {s:?} is not a batch size >= 1"))
        })
        .collect::<Result<_>>()?;
    if let Some(spec) = &args.model {
        let (dir, _) = semi_run::embedded::resolve_model_arg(spec)?;
        let sd = semi_diffusion::pipeline::StableDiffusion::load(
            &dir,
            &Device::Cpu,
            DType::F32,
            semi_diffusion::loading::Variant::Full,
        )?;
        let (h, w) = sd
            .default_size()
            .context("the model has no sample_size to bench at")?;
        let shape = sd.latent_shape(h, w);
        let t = semi_tickets::probe::first_timestep(&sd, semi_tickets::probe::DEFAULT_STEPS)?;
        let ctx = sd.unet.context_dim();
        bench_unet(
            spec,
            &sd.unet,
            (shape[2], shape[3]),
            ctx,
            t,
            args.runs,
            &batches,
        )?;
    }
    if args.sd15 {
        let t = Instant::now();
        let cfg = UNetConfig::parse(semi_bench::models::SD15_UNET)?;
        let unet = semi_bench::random_weights::build_seeded(
            semi_bench::random_weights::DEFAULT_BASE_SEED,
            DType::F32,
            &Device::Cpu,
            |vb| UNet2DConditionModel::new(vb, &cfg),
        )?;
        println!(
            "built the SD-1.5-size UNet (random weights) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        bench_unet(
            "SD-1.5-size UNet, 512x512",
            &unet,
            (64, 64),
            768,
            981.0,
            args.runs,
            &batches,
        )?;
    }
    if args.selection {
        bench_selection(args)?;
    }
    Ok(())
}

fn bench_selection(args: &BenchArgs) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("semi-bench-store-{}", std::process::id()));
    let dir = args.selection_store.clone().unwrap_or_else(|| tmp.clone());
    let result = (|| -> Result<()> {
        if let Some(built) = ensure_synthetic_store(&dir)? {
            println!(
                "built a synthetic store (80 categories, 700 pairs, 100 images) in {:.1} s",
                built.as_secs_f64()
            );
        }
        let t = Instant::now();
        let store = Store::open(&dir)?;
        println!(
            "selection on {} pairs x {} images ({} blocks); Store::open {:.2} ms",
            store.pairs().len(),
            store.n_images(),
            store.n_blocks(),
            t.elapsed().as_secs_f64() * 1e3
        );
        let requests = bench_requests(&store);
        for (name, timings) in time_rules(&dir, &requests, 20)? {
            println!("  rule {name}:");
            for timing in timings {
                println!("    {timing}");
            }
        }
        Ok(())
    })();
    if args.selection_store.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
