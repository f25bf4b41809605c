//! `semi eval coco-metrics`: COCO's AP/AR of a detection results file against an annotations
//! file, as pycocotools' COCOeval (bbox) computes them (`semi_eval::cocoeval`), and the paper's
//! per-object best IoU and success rate by size over the same files (`semi_eval::evaluate_coco`).

use anyhow::{Context, Result};
use clap::Args;
use semi_eval::{evaluate_coco, markdown_table, CocoInstances, MethodResult, Summary};
use std::path::PathBuf;

use super::detector_args::MetricArgs;

#[derive(Args, Debug)]
pub struct CocoMetricsArgs {
    /// Ground truth: a COCO instances file (`images`, `annotations`, `categories`).
    #[arg(long, value_name = "ANNOTATIONS.json")]
    pub gt: PathBuf,
    /// Detections: a COCO results file (`[{"image_id", "category_id", "bbox", "score"}]`).
    #[arg(long, value_name = "RESULTS.json")]
    pub results: PathBuf,
    /// Print one JSON object (`AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`, `AR1`, `AR10`, `AR100`,
    /// `ARs`, `ARm`, `ARl`, as fractions like pycocotools' `stats`, and `per_object`: the
    /// paper's figures) instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// The per-object figures count detections from this score up (AP uses them all).
    #[arg(long, default_value_t = 0.0)]
    pub min_score: f64,
    #[command(flatten)]
    pub metric: MetricArgs,
}

pub fn run(args: &CocoMetricsArgs) -> Result<()> {
    let cfg = args.metric.config()?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let (gt, results) = (read(&args.gt)?, read(&args.results)?);
    let files = || {
        format!(
            "--gt {} --results {}",
            args.gt.display(),
            args.results.display()
        )
    };
    let eval = semi_eval::CocoEval::from_json(&gt, &results).with_context(files)?;
    let stats = eval.stats();
    // pycocotools takes files the per-object figures cannot (annotations of unknown images or
    // categories, which it skips): AP is still given, the per-object figures are left out.
    let per_object = CocoInstances::from_json(&gt)
        .and_then(|instances| evaluate_coco(&instances, &results, &cfg, args.min_score));
    let (objects, left_out) = match per_object {
        Ok(v) => (Some(v.0), v.1),
        Err(e) => {
            eprintln!("warning: no per-object figures: {} ({e:#})", files());
            (None, 0)
        }
    };
    let summary = objects.as_deref().map(Summary::from_scores);
    if args.json {
        let mut doc = stats.to_json();
        doc["per_object"] = serde_json::to_value(&summary)?;
        println!("{doc}");
        return Ok(());
    }
    print!("{}", stats.summary());
    let (Some(objects), Some(summary)) = (objects, summary) else {
        return Ok(());
    };
    let name = args
        .results
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let result = MethodResult {
        method: name.clone(),
        detector: name,
        config: cfg,
        summary,
        objects,
    };
    println!(
        "\nPer object (best IoU with a detection of its category scoring {} or more; success: \
         IoU > {}):\n",
        args.min_score, cfg.success_iou
    );
    print!("{}", markdown_table(&[result]));
    if left_out > 0 {
        println!("({left_out} crowd or empty annotations are not objects here)");
    }
    Ok(())
}
