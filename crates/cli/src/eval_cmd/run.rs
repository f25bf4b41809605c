//! `semi eval run`: every method of a list over the same layouts and seeds, in one process
//! (the model and ticket store loaded once): generate what is missing, merge, report one table.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use semi_eval::{Plan, Shard};

use super::detector_args::DetectorArgs;
use super::gen::{GenOpts, Generator};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The layouts JSONL (or one JSON layout).
    #[arg(long, value_name = "FILE")]
    pub layouts: PathBuf,
    /// Methods in table order, comma-separated [default: the paper's Table 1 rows].
    #[arg(
        long,
        default_value = "sd,paint,soft,swap,semi,semi+soft,semi+swap,semi+swap+soft"
    )]
    pub methods: String,
    /// Output folder: <out>/<method>/<id>.png; finished images are kept and skipped.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Base seed: a layout without its own seed gets one from (seed, id).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub gen: GenOpts,
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// Where the report goes [default: <out>/report].
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

pub fn run(a: &RunArgs) -> Result<()> {
    let methods = super::parse_methods(&a.methods)?;
    a.gen.check()?;
    a.detector.check()?;
    let plan = Plan::from_path(&a.layouts, a.seed)?;
    let generator = Generator::new(&a.gen, &plan, &methods)?;
    for m in &methods {
        generator.run_shard(&a.out, &plan, m, Shard::ALL)?;
        super::merge::merge_method(&a.out, &plan, &m.name())?;
    }
    let names: Vec<String> = methods.iter().map(|m| m.name()).collect();
    let dir = a.report.clone().unwrap_or_else(|| a.out.join("report"));
    super::report::report(&a.out, &plan, &names, &a.detector, a.gen.device, &dir)
}
