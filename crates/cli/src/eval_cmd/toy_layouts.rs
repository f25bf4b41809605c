//! `semi eval toy-layouts`: random layouts of the toy world for evaluating the toy model.
//!
//! Layout `k` is toy-world scene `k` of run `--seed` (`semi_toyworld::Scene::generate`): its
//! caption is the prompt ("a circle and a square"), each drawn object one layout object
//! (category and phrase = the shape's name, box = the painted shape's tight box normalised by
//! the image size), ids `000000`, `000001`, ... and no per-layout seed (the batch assigns one).
//! Objects have distinct categories and never overlap; box sides are drawn uniformly from
//! `--min-size..=--max-size` (default the training distribution, 8-20 px at 32 x 32), which
//! populates all three size buckets of the metrics (they are relative to the image area:
//! small < 8.6%, large > 34.3%). Deterministic per seed. `--world latent` draws from the latent
//! world instead (`WorldConfig::latent`: 64 x 64, 16-40 px; issue 22).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use semi_layout::{BBox, Layout, LayoutObject};
use semi_toyworld::{Scene, WorldConfig};

/// Which toy world the layouts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum World {
    /// One colour per shape (the embedded toy model's world).
    First,
    /// Any shape in any colour, 64 x 64 (the latent toy world).
    Latent,
}

#[derive(Args, Debug)]
pub struct ToyLayoutsArgs {
    /// The toy world.
    #[arg(long, value_enum, default_value_t = World::First)]
    pub world: World,
    /// Number of layouts.
    #[arg(long, default_value_t = 500)]
    pub n: usize,
    /// Objects per layout (1-6, distinct categories).
    #[arg(long, default_value_t = 2)]
    pub objects: u32,
    /// Seed of the scene generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image size in pixels [default: the world's: 32, or 64 for the latent world].
    #[arg(long)]
    pub size: Option<u32>,
    /// Smallest box side in pixels [default: the world's, scaled to --size].
    #[arg(long)]
    pub min_size: Option<u32>,
    /// Largest box side in pixels [default: the world's, scaled to --size].
    #[arg(long)]
    pub max_size: Option<u32>,
    /// The layouts JSONL to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Also write the category pairs (`semi tickets collect --pairs`).
    #[arg(long, value_name = "FILE")]
    pub pairs_out: Option<PathBuf>,
    /// Also write the COCO image list for external detectors.
    #[arg(long, value_name = "FILE")]
    pub images_out: Option<PathBuf>,
}

/// The world the layouts are drawn from.
fn world(a: &ToyLayoutsArgs) -> Result<WorldConfig> {
    let base = match (a.world, a.size) {
        (World::First, size) => WorldConfig::with_size(size.unwrap_or(32)),
        (World::Latent, None) => WorldConfig::latent(),
        (World::Latent, Some(size)) => WorldConfig {
            size,
            ..WorldConfig::latent()
        },
    };
    let cfg = WorldConfig {
        min_objects: a.objects,
        max_objects: a.objects,
        min_object_size: a.min_size.unwrap_or(base.min_object_size),
        max_object_size: a.max_size.unwrap_or(base.max_object_size),
        ..base
    };
    cfg.validate().context("toy-layouts")?;
    Ok(cfg)
}

/// Layout `index` of run `seed` (module docs).
pub fn toy_layout(seed: u64, index: u64, cfg: &WorldConfig) -> Result<Layout> {
    let scene = Scene::generate(seed, index, cfg)?;
    let (w, h) = (scene.image.width(), scene.image.height());
    let objects = scene
        .objects
        .iter()
        .map(|o| {
            let [x0, y0, x1, y1] = o.bbox;
            let (fw, fh) = (f64::from(w), f64::from(h));
            let b = BBox::new(
                f64::from(x0) / fw,
                f64::from(y0) / fh,
                f64::from(x1) / fw,
                f64::from(y1) / fh,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let name = o.category.name();
            Ok(LayoutObject::new(name, name, b))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut layout = Layout::new(scene.caption, w, h, objects);
    layout.id = Some(format!("{index:06}"));
    Ok(layout)
}

/// The most layouts one call writes (an evaluation uses thousands).
pub const MAX_LAYOUTS: usize = 1_000_000;

pub fn run(a: &ToyLayoutsArgs) -> Result<()> {
    if a.n == 0 || a.n > MAX_LAYOUTS {
        bail!("--n must be between 1 and {MAX_LAYOUTS}, got {}", a.n);
    }
    crate::common::check_path(&a.out, "--out")?;
    let cfg = world(a)?;
    let first = toy_layout(a.seed, 0, &cfg)?.to_json_line();
    semi_jobs::ensure_free(
        a.out.parent().unwrap_or(std::path::Path::new(".")),
        (first.len() as u64 + 1) * a.n as u64,
        &format!("{} layouts", a.n),
    )?;
    // Streamed line by line; the layouts are kept only for the extra files that need them all.
    let keep = a.pairs_out.is_some() || a.images_out.is_some();
    let mut layouts = Vec::new();
    let metrics = semi_eval::MetricConfig::default();
    let mut buckets = [0usize; 3];
    semi_jobs::write_atomic_file(&a.out, |file| {
        let mut out = std::io::BufWriter::new(file);
        for i in 0..a.n as u64 {
            let layout = toy_layout(a.seed, i, &cfg)?;
            for o in &layout.objects {
                let area = o.bbox.area()
                    * f64::from(metrics.reference_width)
                    * f64::from(metrics.reference_height);
                buckets[metrics.bucket(area) as usize] += 1;
            }
            writeln!(out, "{}", layout.to_json_line())?;
            if keep {
                layouts.push(layout);
            }
        }
        out.flush()?;
        Ok(())
    })?;
    println!(
        "wrote {} ({} layouts; objects small/medium/large: {}/{}/{})",
        a.out.display(),
        a.n,
        buckets[0],
        buckets[1],
        buckets[2]
    );
    super::write_extras(
        &layouts,
        a.seed,
        a.pairs_out.as_deref(),
        a.images_out.as_deref(),
    )
}
