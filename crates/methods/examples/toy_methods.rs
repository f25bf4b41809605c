//! A quick check of every Table-1 method on the toy model with its exact detector: two-object
//! toy-world scenes as layouts (caption = prompt, painted boxes = layout), one image per layout
//! and method, per object the best same-category IoU, success at IoU > 0.5. Not the evaluation
//! protocol (that is `semi eval`); a sanity check that each method steers objects at all.
//!
//! `cargo run --release -p semi-methods --example toy_methods -- [layouts] [steps] [cfg] [methods]`
//! (defaults 40, 20, 2, the Table-1 list). SemI methods fill a cache store under $SEMI_CACHE.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::{DType, Device};
use semi_diffusion::loading::Variant;
use semi_diffusion::pipeline::StableDiffusion;
use semi_layout::{BBox, Layout, LayoutObject};
use semi_methods::{generate, Method, MethodOptions, Sampling};
use semi_toyworld::{best_iou, detect, DetectorConfig, RgbImage, Scene, WorldConfig};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map_or(Ok(40), |s| s.parse())?;
    let steps: usize = args.get(1).map_or(Ok(20), |s| s.parse())?;
    let cfg: f64 = args.get(2).map_or(Ok(2.0), |s| s.parse())?;
    let methods: Vec<Method> = match args.get(3) {
        Some(list) => list.split(',').map(Method::parse).collect::<Result<_>>()?,
        None => Method::table1(),
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/toy");
    let sd = StableDiffusion::load(&dir, &Device::Cpu, DType::F32, Variant::Full)?;
    let world = WorldConfig::default();
    let mut layouts = Vec::new();
    let mut index = 0u64;
    while layouts.len() < n {
        let scene = Scene::generate(7, index, &world)?;
        index += 1;
        if scene.objects.len() != 2 {
            continue;
        }
        let objects = scene
            .objects
            .iter()
            .map(|o| {
                let [x0, y0, x1, y1] = o.bbox_normalized(world.size, world.size);
                Ok(LayoutObject::new(
                    o.category.name(),
                    o.category.name(),
                    BBox::new(x0 as f64, y0 as f64, x1 as f64, y1 as f64)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut l = Layout::new(scene.caption.clone(), world.size, world.size, objects);
        l.seed = Some(index);
        layouts.push((l, scene.objects.clone()));
    }
    let categories: Vec<String> = semi_toyworld::Category::ALL
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let store = if methods.iter().any(|m| m.needs_store()) {
        let probe = semi_tickets::ProbeOptions::new(world.size as usize, world.size as usize);
        Some(semi_methods::cache_store(
            &sd,
            "toy-example",
            &probe,
            &categories,
            &[],
            50,
            &mut |_| {},
        )?)
    } else {
        None
    };
    let options = MethodOptions::default();
    println!("{n} two-object layouts, {steps} steps, cfg {cfg}");
    println!("| method | mean IoU | success |");
    println!("|---|---|---|");
    for m in &methods {
        let (mut iou_sum, mut ok, mut count) = (0f64, 0usize, 0usize);
        for (l, objects) in &layouts {
            let mut req = Sampling::new(l.seed.unwrap_or(0));
            req.steps = steps;
            req.guidance_scale = cfg;
            let g = generate(&sd, l, &req, m, store.as_ref(), &options, &mut |_| Ok(()))?;
            let (w, h, rgb) = semi_diffusion::image::to_rgb8(&g.image)?;
            let img = RgbImage::from_raw(w, h, rgb)?;
            let dets = detect(&img, &DetectorConfig::for_image(w, h));
            for o in objects {
                let b = o.bbox;
                let iou = best_iou(
                    &dets,
                    o.category,
                    [b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32],
                );
                iou_sum += iou as f64;
                ok += usize::from(iou > 0.5);
                count += 1;
            }
        }
        println!(
            "| {m} | {:.3} | {:.1}% |",
            iou_sum / count as f64,
            100.0 * ok as f64 / count as f64
        );
    }
    Ok(())
}
