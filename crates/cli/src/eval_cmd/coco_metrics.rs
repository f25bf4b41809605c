//! `semi eval coco-metrics`: COCO's AP/AR of a detection results file against an annotations
//! file, as pycocotools' COCOeval (bbox) computes them (`semi_eval::cocoeval`).

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CocoMetricsArgs {
    /// Ground truth: a COCO instances file (`images`, `annotations`, `categories`).
    #[arg(long, value_name = "ANNOTATIONS.json")]
    pub gt: PathBuf,
    /// Detections: a COCO results file (`[{"image_id", "category_id", "bbox", "score"}]`).
    #[arg(long, value_name = "RESULTS.json")]
    pub results: PathBuf,
    /// Print one JSON object (`AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`, `AR1`, `AR10`, `AR100`,
    /// `ARs`, `ARm`, `ARl`, as fractions like pycocotools' `stats`) instead of the summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &CocoMetricsArgs) -> Result<()> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let eval = semi_eval::CocoEval::from_json(&read(&args.gt)?, &read(&args.results)?)
        .with_context(|| {
            format!(
                "--gt {} --results {}",
                args.gt.display(),
                args.results.display()
            )
        })?;
    let stats = eval.stats();
    if args.json {
        println!("{}", stats.to_json());
    } else {
        print!("{}", stats.summary());
    }
    Ok(())
}
