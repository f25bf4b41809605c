//! The latent toy world's autoencoder through semi's own VAE code (issue 22): encode scenes of
//! `WorldConfig::latent` (posterior mean), decode, and run the shape detector on the
//! reconstructions. A VAE the latent toy model can build on keeps every object detectable:
//! reported are the share of objects found with the right category and IoU > 0.9, the mean
//! absolute pixel error, and the latents' standard deviation (for `scaling_factor`).
//!
//! ```sh
//! cargo run --release -p semi-cli --example latent_vae_check -- --vae models/toy-latent/vae --n 500
//! ```

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use semi_diffusion::config::VaeConfig;
use semi_diffusion::vae::AutoencoderKL;
use semi_toyworld::{detect, iou_xyxy, DetectorConfig, RgbImage, Scene, WorldConfig};
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// A diffusers VAE folder (config.json + diffusion_pytorch_model.safetensors).
    #[arg(long)]
    vae: PathBuf,
    /// Scenes to check.
    #[arg(long, default_value_t = 500)]
    n: u64,
    /// Scene seed (not the training data's, 101).
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cfg = VaeConfig::from_file(&args.vae.join("config.json"))?;
    let weights = args.vae.join("diffusion_pytorch_model.safetensors");
    // SAFETY: a read-only map of a weights file that is not modified while it is read.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu)
    }
    .with_context(|| format!("{}", weights.display()))?;
    let vae = AutoencoderKL::new(vb, &cfg)?;
    let world = WorldConfig::latent();
    let det = DetectorConfig::for_world(&world);
    let (mut objects, mut found, mut abs_err, mut pixels) = (0usize, 0usize, 0f64, 0usize);
    let (mut sum, mut sum2, mut count) = (0f64, 0f64, 0usize);
    // Misses: another shape's name, the right shape with box IoU <= 0.9, nothing there.
    let (mut misnamed, mut loose, mut lost) = (0usize, 0usize, 0usize);
    for i in 0..args.n {
        let scene = Scene::generate(args.seed, i, &world)?;
        let s = world.size as usize;
        let x = Tensor::from_vec(scene.image.as_raw().to_vec(), (1, s, s, 3), &Device::Cpu)?
            .permute((0, 3, 1, 2))?
            .to_dtype(DType::F32)?;
        let x = ((x / 127.5)? - 1.0)?;
        let (mean, _) = vae.encode(&x)?;
        let v: Vec<f32> = mean.flatten_all()?.to_vec1()?;
        sum += v.iter().map(|&a| f64::from(a)).sum::<f64>();
        sum2 += v.iter().map(|&a| f64::from(a) * f64::from(a)).sum::<f64>();
        count += v.len();
        let rec = vae.decode(&mean)?;
        let rec = ((rec.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?
            .round()?
            .permute((0, 2, 3, 1))?
            .flatten_all()?
            .to_dtype(DType::U8)?
            .to_vec1::<u8>()?;
        abs_err += rec
            .iter()
            .zip(scene.image.as_raw())
            .map(|(&a, &b)| f64::from((i16::from(a) - i16::from(b)).unsigned_abs()))
            .sum::<f64>();
        pixels += rec.len();
        let image = RgbImage::from_raw(world.size, world.size, rec)?;
        let dets = detect(&image, &det);
        for o in &scene.objects {
            objects += 1;
            let truth = o.bbox.map(|v| v as f32);
            let hit = dets
                .iter()
                .any(|d| d.category == o.category && iou_xyxy(d.bbox_xyxy(), truth) > 0.9);
            found += usize::from(hit);
            if !hit {
                // Why: the best-overlapping detection's category and IoU.
                let best = dets
                    .iter()
                    .map(|d| (iou_xyxy(d.bbox_xyxy(), truth), d))
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                match best {
                    Some((iou, d)) if iou > 0.5 && d.category != o.category => misnamed += 1,
                    Some((iou, _)) if iou > 0.5 => loose += 1,
                    _ => lost += 1,
                }
            }
        }
    }
    let mean = sum / count as f64;
    let std = (sum2 / count as f64 - mean * mean).sqrt();
    println!(
        "{} scenes: {found} of {objects} objects found by shape in the reconstructions ({:.1}%), \
         mean absolute pixel error {:.2} / 255, latent mean {mean:.3} std {std:.3} \
         (scaling_factor {:.4} would give unit std; the config has {}); misses: {misnamed} \
         named as another shape, {loose} with a box IoU <= 0.9, {lost} not found",
        args.n,
        100.0 * found as f64 / objects as f64,
        abs_err / pixels as f64,
        1.0 / std,
        cfg.scaling_factor
    );
    Ok(())
}
