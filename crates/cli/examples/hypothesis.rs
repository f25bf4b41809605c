//! The paper's hypothesis on the toy model (issue 4, docs/toyworld.md): does the first-step
//! cross-attention of plain Gaussian noise predict where an object appears?
//!
//! For `--n` random two-object toy scenes (their captions only), noise `i` is probed with the
//! caption exactly as the ticket store probes (same layer plan, first timestep, head-averaged
//! probabilities, the object's token column, min-max normalised over the grid), then denoised
//! from the same noise with the same caption, unmodified, and the exact detector finds the
//! objects. Per object found: the mean normalised score of the grid cells inside its final box
//! minus outside, the rank AUC (chance that a cell inside scores above one outside) and whether
//! the map's peak cell lies in the box. Control: the same statistics with the map of another
//! noise (`i + 1`) probed with the same caption: what the box position alone explains.
//!
//! `--each-layer` scores every cross-attention layer of the UNet from the same images (one probe
//! per layer, one generation per scene); `--world latent` draws the scenes of the latent toy world
//! (shared palette) and finds objects by shape.
//!
//! ```sh
//! cargo run --release -p semi-cli --example hypothesis -- --n 300 --out hyp.json
//! cargo run --release -p semi-cli --example hypothesis -- --model models/toy-latent \
//!     --world latent --each-layer --n 200
//! ```

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Parser;
use semi_diffusion::loading::Variant;
use semi_diffusion::pipeline::{GenerateRequest, StableDiffusion};
use semi_diffusion::AttentionKind;
use semi_tickets::{LayerChoice, ProbeOptions, SdProber};
use semi_toyworld::detect::{detect, DetectorConfig};
use semi_toyworld::image::RgbImage;
use semi_toyworld::scene::{Scene, WorldConfig};
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// The model folder [default: models/toy].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Scenes (noise images).
    #[arg(long, default_value_t = 300)]
    n: u64,
    /// Objects per scene.
    #[arg(long, default_value_t = 2)]
    objects: u32,
    #[arg(long, default_value_t = 25)]
    steps: usize,
    #[arg(long, default_value_t = 2.0)]
    guidance: f64,
    /// Probe layers: default, all, or layer paths.
    #[arg(long, default_value = "default")]
    layers: String,
    /// Seed of the scenes; noise i is randn(seed + i).
    #[arg(long, default_value_t = 1000)]
    seed: u64,
    /// Score every cross-attention layer of the UNet, one at a time (overrides --layers).
    #[arg(long)]
    each_layer: bool,
    /// The toy world of the scenes: `pixel` (the first world, the default) or `latent`.
    #[arg(long, default_value = "pixel")]
    world: String,
    /// Also write the per-object records as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Statistics of one map against one box.
#[derive(Clone, Copy, Default)]
struct BoxScore {
    inside_minus_outside: f64,
    auc: f64,
    peak_inside: bool,
}

fn score(map: &[f32], grid: [usize; 2], cell_px: [f32; 2], bbox: [f32; 4]) -> Option<BoxScore> {
    let [rows, cols] = grid;
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for r in 0..rows {
        for c in 0..cols {
            let (x, y) = ((c as f32 + 0.5) * cell_px[0], (r as f32 + 0.5) * cell_px[1]);
            let v = map[r * cols + c];
            if x >= bbox[0] && x < bbox[2] && y >= bbox[1] && y < bbox[3] {
                inside.push(v)
            } else {
                outside.push(v)
            }
        }
    }
    if inside.is_empty() || outside.is_empty() {
        return None;
    }
    let mean = |v: &[f32]| v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
    let mut wins = 0.0;
    for a in &inside {
        for b in &outside {
            wins += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    let peak = map
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .expect("non-empty map");
    let (pr, pc) = (peak / cols, peak % cols);
    let (px, py) = (
        (pc as f32 + 0.5) * cell_px[0],
        (pr as f32 + 0.5) * cell_px[1],
    );
    Some(BoxScore {
        inside_minus_outside: mean(&inside) - mean(&outside),
        auc: wins / (inside.len() * outside.len()) as f64,
        peak_inside: px >= bbox[0] && px < bbox[2] && py >= bbox[1] && py < bbox[3],
    })
}

struct Record {
    layer: String,
    scene: u64,
    caption: String,
    category: String,
    real: BoxScore,
    control: BoxScore,
}

/// Mean and standard error.
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, (var / n).sqrt())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = args
        .model
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/toy"));
    let sd = StableDiffusion::load(&dir, &Device::Cpu, DType::F32, Variant::Full)
        .with_context(|| format!("cannot load {}", dir.display()))?;
    let size = sd.default_size().context("the model has no sample_size")?.0;
    let mut opts = ProbeOptions::new(size, size);
    opts.steps = args.steps;
    let choices: Vec<LayerChoice> = if args.each_layer {
        sd.unet
            .attention_layers()
            .iter()
            .filter(|l| l.kind == AttentionKind::CrossAttention)
            .map(|l| LayerChoice::Paths(vec![l.path.clone()]))
            .collect()
    } else {
        vec![LayerChoice::parse(&args.layers)?]
    };
    let mut probers = Vec::new();
    for choice in choices {
        opts.layers = choice;
        let prober = SdProber::new(&sd, "hypothesis".into(), &opts)?;
        let grid = prober.plan().grid;
        eprintln!(
            "probe layers {:?}, grid {}x{}, t = {}",
            prober.plan().layers,
            grid[0],
            grid[1],
            prober.timestep()
        );
        probers.push(prober);
    }
    let latent = sd.latent_shape(size, size);
    let base = match args.world.as_str() {
        "pixel" => WorldConfig::with_size(size as u32),
        "latent" => WorldConfig::latent(),
        w => bail!("--world {w}: expected pixel or latent"),
    };
    if base.size as usize != size {
        bail!(
            "the {} world draws {}x{} scenes and the model makes {size}x{size}",
            args.world,
            base.size,
            base.size
        );
    }
    let world = WorldConfig {
        min_objects: args.objects,
        max_objects: args.objects,
        ..base
    };
    let detector = DetectorConfig::for_world(&world);
    let noise = |i: u64| semi_diffusion::noise::randn(args.seed + i, &latent, &Device::Cpu);
    let (mut records, mut missing, mut total) = (Vec::new(), 0usize, 0usize);
    for i in 0..args.n {
        let scene = Scene::generate(args.seed, i, &world)?;
        let prompt = scene.caption.clone();
        let ids = sd.tokenizer().encode(&prompt)?;
        let z = noise(i)?;
        let z_other = noise((i + 1) % args.n)?;
        let mut maps = Vec::new();
        for prober in &mut probers {
            let real = prober.attention_maps(&z, std::slice::from_ref(&prompt))?;
            let other = prober.attention_maps(&z_other, std::slice::from_ref(&prompt))?;
            maps.push((real, other));
        }
        let mut req = GenerateRequest::new(prompt.clone(), size, size);
        req.steps = args.steps;
        req.guidance_scale = args.guidance;
        req.seed = args.seed + i;
        req.latents = Some(z);
        let out = sd.generate(&req, None, &mut |_| Ok(()))?;
        let (w, h, rgb) = semi_diffusion::image::to_rgb8(&out.image)?;
        let image = RgbImage::from_raw(w, h, rgb)?;
        let found = detect(&image, &detector);
        for (category, _) in &scene.groups {
            total += 1;
            let Some(det) = found
                .iter()
                .filter(|d| d.category == *category)
                .max_by_key(|d| d.area)
            else {
                missing += 1;
                continue;
            };
            let tokens = sd
                .tokenizer()
                .token_positions(&ids, category.name())
                .with_context(|| format!("{} not in {prompt:?}", category.name()))?;
            let column = |m: &[Vec<f32>]| -> Result<Vec<f32>> {
                let mut v: Vec<f32> = m
                    .iter()
                    .map(|row| tokens.iter().map(|t| row[*t]).sum())
                    .collect();
                semi_tickets::min_max_normalize(&mut v)?;
                Ok(v)
            };
            let bbox = det.bbox_xyxy();
            for (prober, (real, other)) in probers.iter().zip(&maps) {
                let grid = prober.plan().grid;
                let cell_px = [size as f32 / grid[1] as f32, size as f32 / grid[0] as f32];
                let (Some(real), Some(control)) = (
                    score(&column(&real[0])?, grid, cell_px, bbox),
                    score(&column(&other[0])?, grid, cell_px, bbox),
                ) else {
                    continue;
                };
                records.push(Record {
                    layer: prober.plan().layers.join(","),
                    scene: i,
                    caption: prompt.clone(),
                    category: category.name().to_string(),
                    real,
                    control,
                });
            }
        }
        if (i + 1) % 50 == 0 {
            eprintln!("{} / {} scenes", i + 1, args.n);
        }
    }
    if records.is_empty() {
        bail!("no object was found in any image");
    }
    println!(
        "{} scenes of {} objects ({} world), DDIM {} steps, guidance {}",
        args.n, args.objects, args.world, args.steps, args.guidance
    );
    println!(
        "objects requested {total}, found {} ({} missing)\n",
        total - missing,
        missing
    );
    println!(
        "| probe layer (grid) | map | objects scored | inside - outside (mean ± s.e.) | AUC (mean ± s.e.) | peak cell inside the box |"
    );
    println!("|---|---|---|---|---|---|");
    for prober in &probers {
        let layer = prober.plan().layers.join(",");
        let grid = prober.plan().grid;
        let of_layer: Vec<&Record> = records.iter().filter(|r| r.layer == layer).collect();
        if of_layer.is_empty() {
            continue;
        }
        for (name, pick) in [
            (
                "this noise (real)",
                (|r: &Record| r.real) as fn(&Record) -> BoxScore,
            ),
            ("another noise (control)", |r: &Record| r.control),
        ] {
            let s: Vec<BoxScore> = of_layer.iter().map(|r| pick(r)).collect();
            let (d, de) = mean_se(&s.iter().map(|x| x.inside_minus_outside).collect::<Vec<_>>());
            let (a, ae) = mean_se(&s.iter().map(|x| x.auc).collect::<Vec<_>>());
            let hit = s.iter().filter(|x| x.peak_inside).count() as f64 / s.len() as f64;
            let head = if name.starts_with("this") {
                format!("`{layer}` ({}x{})", grid[0], grid[1])
            } else {
                String::new()
            };
            println!(
                "| {head} | {name} | {} | {d:.4} ± {de:.4} | {a:.4} ± {ae:.4} | {:.1}% |",
                s.len(),
                100.0 * hit
            );
        }
    }
    if let Some(path) = &args.out {
        let box_json = |b: &BoxScore| {
            serde_json::json!({"inside_minus_outside": b.inside_minus_outside, "auc": b.auc,
                               "peak_inside": b.peak_inside})
        };
        let json: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                serde_json::json!({"layer": r.layer, "scene": r.scene, "caption": r.caption, "category": r.category,
                                   "real": box_json(&r.real), "control": box_json(&r.control)})
            })
            .collect();
        semi_tickets::fsutil::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
