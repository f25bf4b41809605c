//! `semi eval samples`: COCO 2017 annotations -> evaluation layouts by the paper's sample rule
//! (`semi_eval::samples` documents the rule), plus the category pairs a ticket collection needs
//! and the image list external detectors need.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use semi_eval::{select_samples, write_atomic, CocoCaptions, CocoInstances, SampleRule};

#[derive(Args, Debug)]
pub struct SamplesArgs {
    /// COCO instances file (instances_val2017.json).
    #[arg(long, value_name = "FILE")]
    pub instances: PathBuf,
    /// COCO captions file of the same split (captions_val2017.json).
    #[arg(long, value_name = "FILE")]
    pub captions: PathBuf,
    /// The layouts JSONL to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// One-object samples wanted.
    #[arg(long, default_value_t = 3000)]
    pub one: usize,
    /// Two-object samples wanted.
    #[arg(long, default_value_t = 3000)]
    pub two: usize,
    /// Width and height of the layouts (the images to generate).
    #[arg(long, default_value_t = 512)]
    pub size: u32,
    /// Seed of the selection order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Smallest box allowed, as a fraction of the image area (0: no limit).
    #[arg(long, default_value_t = 1.0 / 256.0)]
    pub min_box_fraction: f64,
    /// Also write the category pairs of the samples (`semi tickets collect --pairs`).
    #[arg(long, value_name = "FILE")]
    pub pairs_out: Option<PathBuf>,
    /// Also write the COCO image list for external detectors (`semi eval report --images`).
    #[arg(long, value_name = "FILE")]
    pub images_out: Option<PathBuf>,
    /// Also write the layouts' boxes as a COCO instances file, the ground truth of `semi eval
    /// coco-metrics` (GLIGEN's "YOLO score": AP of a detector's results on the generated images).
    #[arg(long, value_name = "FILE")]
    pub gt_out: Option<PathBuf>,
}

pub fn run(a: &SamplesArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.min_box_fraction) {
        bail!("--min-box-fraction must lie in [0, 1)");
    }
    let mut counts = BTreeMap::new();
    for (n, want) in [(1, a.one), (2, a.two)] {
        if want > 0 {
            counts.insert(n, want);
        }
    }
    if counts.is_empty() {
        bail!("--one and --two are both 0: nothing to select");
    }
    let rule = SampleRule {
        counts,
        seed: a.seed,
        width: a.size,
        height: a.size,
        min_box_fraction: a.min_box_fraction,
        ..SampleRule::default()
    };
    let instances = CocoInstances::from_path(&a.instances)?;
    let captions = CocoCaptions::from_path(&a.captions)?;
    let selection = select_samples(&instances, &captions, &rule)?;
    if selection.layouts.is_empty() {
        bail!("no image qualifies as a sample:\n{}", selection.stats);
    }
    eprint!("{}", selection.stats);
    for (n, want, got) in selection.stats.shortfalls(&rule) {
        eprintln!("warning: only {got} of the {want} wanted {n}-object samples qualify");
    }
    write_atomic(&a.out, selection.to_jsonl().as_bytes())?;
    println!(
        "wrote {} ({} layouts)",
        a.out.display(),
        selection.layouts.len()
    );
    super::write_extras(
        &selection.layouts,
        a.seed,
        a.pairs_out.as_deref(),
        a.images_out.as_deref(),
    )?;
    if let Some(path) = &a.gt_out {
        let plan = semi_eval::Plan::new(selection.layouts.clone(), a.seed)?;
        write_atomic(path, plan.coco_ground_truth_json().as_bytes())?;
        println!(
            "wrote {} (the layouts' boxes as COCO ground truth)",
            path.display()
        );
    }
    Ok(())
}
