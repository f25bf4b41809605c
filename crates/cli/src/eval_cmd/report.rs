//! `semi eval report`: run a detector over merged methods and write the Table 1 report
//! (`semi_eval::run_report`): table.md, summary.csv, objects.csv, summary.json, chart.png and a
//! contact sheet per method.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use semi_eval::{markdown_table, run_report, Plan};

use super::detector_args::DetectorArgs;
use crate::common::DeviceArg;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The layouts JSONL the images were generated from.
    #[arg(long, value_name = "FILE")]
    pub layouts: PathBuf,
    /// The output folder given to `eval generate`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The base seed given to `eval generate`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Methods in table order, comma-separated (each merged first).
    #[arg(long, alias = "method")]
    pub methods: String,
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// Where the report goes [default: <out>/report].
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

/// Evaluate `methods` and write the report into `report_dir`; prints the table.
pub fn report(
    out: &Path,
    plan: &Plan,
    methods: &[String],
    detector: &DetectorArgs,
    device: DeviceArg,
    report_dir: &Path,
) -> Result<()> {
    let options = detector.report_options()?;
    let mut detector_for = detector.detectors(plan, device)?;
    let (results, files) = run_report(
        out,
        plan,
        methods,
        |m| detector_for(m),
        &options,
        report_dir,
    )?;
    print!("{}", markdown_table(&results));
    println!(
        "wrote {}, {}, {}, {}, {} and {} contact sheet(s) in {}",
        name(&files.table),
        name(&files.summary_csv),
        name(&files.objects_csv),
        name(&files.json),
        name(&files.chart),
        if options.sheet_images > 0 {
            methods.len()
        } else {
            0
        },
        report_dir.display()
    );
    Ok(())
}

fn name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

pub fn run(a: &ReportArgs) -> Result<()> {
    a.detector.check()?;
    let methods: Vec<String> = super::parse_methods(&a.methods)?
        .iter()
        .map(|m| m.name())
        .collect();
    let plan = Plan::from_path(&a.layouts, a.seed)?;
    let dir = a.report.clone().unwrap_or_else(|| a.out.join("report"));
    report(&a.out, &plan, &methods, &a.detector, DeviceArg::Cpu, &dir)
}
