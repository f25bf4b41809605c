//! `semi eval`: the paper's Table 1 protocol (docs/design.md 1.6) from the command line. The
//! bookkeeping (plans, shards, resume, merge), detectors, metrics and reports are `semi_eval`;
//! images come from `semi_methods::generate`, the generation path `semi generate` uses too.
//!
//! - `samples`: COCO 2017 annotations -> layouts JSONL (+ pairs file, image list).
//! - `toy-layouts`: random toy-world layouts for the embedded toy model.
//! - `generate`: one method over one shard of a layouts file (resumable).
//! - `merge`: check a method's outputs are complete, write `_merged.json`.
//! - `report`: detect, score, write table.md / CSV / JSON / chart / contact sheets.
//! - `run`: generate + merge + report for a list of methods, one table.
//! - `detect`: a detector over a folder of images -> COCO results file.
//! - `coco-metrics`: pycocotools' AP/AR of a results file against annotations, and the paper's
//!   per-object best IoU and success rate by size.

mod coco_metrics;
mod detect;
mod detector_args;
mod gen;
mod merge;
mod report;
mod run;
mod samples;
mod toy_layouts;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Subcommand, Debug)]
enum EvalCommand {
    /// COCO 2017 instances + captions -> evaluation layouts (the paper's sample rule).
    Samples(samples::SamplesArgs),
    /// Random toy-world layouts (distinct categories, a range of box sizes) for the toy model.
    ToyLayouts(toy_layouts::ToyLayoutsArgs),
    /// Generate one method's images for one shard of a layouts file (skips finished images).
    Generate(gen::GenerateArgs),
    /// Check that every image of a method is there and consistent; write `_merged.json`.
    Merge(merge::MergeArgs),
    /// Detect, score and write the Table 1 report for merged methods.
    Report(report::ReportArgs),
    /// Generate (resumable), merge and report several methods over the same layouts.
    Run(run::RunArgs),
    /// Run a detector (yolov8:WEIGHTS) over a folder of images: a COCO results file.
    Detect(detect::DetectArgs),
    /// COCO AP/AR of a detection results file against annotations, as pycocotools computes
    /// them (GLIGEN's "YOLO score" is this AP with the layouts' boxes as the ground truth).
    CocoMetrics(coco_metrics::CocoMetricsArgs),
}

pub fn run(args: &EvalArgs) -> Result<()> {
    match &args.command {
        EvalCommand::Samples(a) => samples::run(a),
        EvalCommand::ToyLayouts(a) => toy_layouts::run(a),
        EvalCommand::Generate(a) => gen::run(a),
        EvalCommand::Merge(a) => merge::run(a),
        EvalCommand::Report(a) => report::run(a),
        EvalCommand::Run(a) => run::run(a),
        EvalCommand::Detect(a) => detect::run(a),
        EvalCommand::CocoMetrics(a) => coco_metrics::run(a),
    }
}

/// A comma-separated list of method names, parsed and canonicalised (`soft+semi` ->
/// `semi+soft`), duplicates refused.
pub(crate) fn parse_methods(list: &str) -> Result<Vec<semi_methods::Method>> {
    let mut out: Vec<semi_methods::Method> = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let m = semi_methods::Method::parse(word)?;
        if out.contains(&m) {
            anyhow::bail!("method {word:?} is listed twice (as {})", m.name());
        }
        out.push(m);
    }
    if out.is_empty() {
        anyhow::bail!("no methods given");
    }
    Ok(out)
}

/// The optional companions of a layouts file: the category pairs for `semi tickets collect
/// --pairs` and the COCO image list for external detectors (`semi eval report --images`).
pub(crate) fn write_extras(
    layouts: &[semi_layout::Layout],
    seed: u64,
    pairs_out: Option<&std::path::Path>,
    images_out: Option<&std::path::Path>,
) -> Result<()> {
    if let Some(path) = pairs_out {
        let pairs = semi_eval::category_pairs(layouts)?;
        for c in &pairs.uncovered {
            eprintln!("warning: category {c:?} has no partner: no pair can collect its tickets");
        }
        semi_eval::write_atomic(path, pairs.to_pairs_file().as_bytes())?;
        println!("wrote {} ({} pairs)", path.display(), pairs.pairs.len());
    }
    if let Some(path) = images_out {
        let plan = semi_eval::Plan::new(layouts.to_vec(), seed)?;
        semi_eval::write_atomic(path, plan.coco_images_json().as_bytes())?;
        println!("wrote {} ({} images)", path.display(), plan.len());
    }
    Ok(())
}
