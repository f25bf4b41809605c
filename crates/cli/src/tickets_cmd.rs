//! `semi tickets collect | merge | inspect | bench`: the lottery-ticket store.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use semi_tickets::names::parse_category_list;
use semi_tickets::{
    all_pairs, collect, merge, read_pairs_file, select, CollectRequest, SdProber, Shard, Store,
};

use crate::common::{CollectBar, DeviceArg, ProbeArgs, RuleArgs};

#[derive(Args, Debug)]
pub struct TicketsArgs {
    #[command(subcommand)]
    pub command: TicketsCommand,
}

#[derive(Subcommand, Debug)]
pub enum TicketsCommand {
    /// Probe N noise images against contrastive pairs into a store (resumable, shardable).
    Collect(Box<CollectArgs>),
    /// Merge complete shard stores into one store.
    Merge(MergeArgs),
    /// Show a store: settings, progress, tickets per category, score histograms.
    Inspect(InspectArgs),
    /// Time the probe against full UNet passes, and selection on a 700-pair x 100-image store.
    Bench(crate::tickets_bench::BenchArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["categories", "pairs"])))]
pub struct CollectArgs {
    #[command(flatten)]
    pub model: semi_run::model::ModelArgs,
    /// Categories (comma-separated); every pair of them is collected.
    #[arg(long)]
    pub categories: Option<String>,
    /// A file of pairs, one `a,b` per line (`#` comments).
    #[arg(long, value_name = "FILE")]
    pub pairs: Option<PathBuf>,
    /// Noise images N.
    #[arg(long, default_value_t = 100)]
    pub n: usize,
    /// Noise image k is torch.randn(manual_seed(seed + k)).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image height in pixels [default: the model's native size].
    #[arg(long)]
    pub height: Option<usize>,
    /// Image width in pixels [default: the model's native size].
    #[arg(long)]
    pub width: Option<usize>,
    /// The store folder (created, resumed or extended).
    #[arg(long)]
    pub store: PathBuf,
    /// Collect only shard i of n (`i/n`, 0-based) [default: from SLURM_ARRAY_TASK_ID/COUNT].
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Noise images per chunk file (a new store only; the unit of work lost on a crash).
    #[arg(long)]
    pub chunk: Option<usize>,
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

pub fn run(args: &TicketsArgs) -> Result<()> {
    match &args.command {
        TicketsCommand::Collect(a) => run_collect(a),
        TicketsCommand::Merge(a) => run_merge(a),
        TicketsCommand::Inspect(a) => run_inspect(a),
        TicketsCommand::Bench(a) => crate::tickets_bench::run(a),
    }
}

fn run_collect(args: &CollectArgs) -> Result<()> {
    // Everything that can be checked without the model is checked first: nothing is written
    // for a bad request.
    if args.n == 0 {
        bail!("--n must be at least 1 noise image");
    }
    if args.chunk == Some(0) {
        bail!("--chunk must be at least 1 image");
    }
    let pairs = match (&args.categories, &args.pairs) {
        (Some(list), None) => {
            let cats = parse_category_list(list).context("--categories")?;
            if cats.len() < 2 {
                bail!("--categories needs at least two categories to form contrastive pairs");
            }
            all_pairs(&cats)?
        }
        (None, Some(file)) => read_pairs_file(file)?,
        _ => bail!("give either --categories or --pairs"),
    };
    let shard = Shard::from_arg_or_env(args.shard.as_deref())?;
    args.probe.check()?;
    let device = args.device.device()?;
    let model = semi_run::Model::open(&args.model.spec()?, &device)?;
    let (height, width) = match (args.height, args.width) {
        (Some(h), Some(w)) => (h, w),
        (h, w) => {
            let (nh, nw) = model.native_size()?;
            (h.unwrap_or(nh), w.unwrap_or(nw))
        }
    };
    let settings = model.reference.settings(&args.probe.choices())?;
    let mut opts = semi_run::store::probe_options(
        &settings,
        &model.sd.files.scheduler,
        args.probe.pairs_per_pass,
        height,
        width,
    )?;
    opts.images_per_pass = args.probe.images_per_pass(&device);
    let mut prober = SdProber::new(&model.sd, model.fingerprint()?.to_string(), &opts)?;
    let request = CollectRequest {
        pairs,
        n_images: args.n,
        seed: args.seed,
        shard,
        chunk_images: args.chunk,
        wait_for_lock: None,
    };
    let mut bar = CollectBar::new("probing");
    let started = std::time::Instant::now();
    let summary = collect(&args.store, &mut prober, &request, &mut |p| bar.update(p));
    bar.finish();
    let s = summary?;
    for (pair, why) in &s.dropped_pairs {
        eprintln!("warning: dropped pair {pair} from the store (it had no scores and {why})");
    }
    let m = &s.manifest;
    println!(
        "store {}: {} pairs x {} images ({} categories), grid {}x{}, layer {}, t = {}",
        args.store.display(),
        m.pairs.len(),
        m.n_images,
        semi_tickets::names::categories_of(&m.pairs).len(),
        m.fingerprint.grid[0],
        m.fingerprint.grid[1],
        m.fingerprint.layers.join(","),
        m.fingerprint.timestep
    );
    println!(
        "{} units: {} already done, {} computed ({} probe passes in {:.1} s){}",
        s.units_total,
        s.units_skipped,
        s.units_computed,
        s.passes,
        started.elapsed().as_secs_f64(),
        match m.shard {
            Some(sh) => format!(", shard {sh}"),
            None => String::new(),
        }
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The merged store (new or empty folder).
    #[arg(long)]
    pub out: PathBuf,
    /// The shard stores, all of them, any order.
    #[arg(required = true, num_args = 1..)]
    pub shards: Vec<PathBuf>,
}

fn run_merge(args: &MergeArgs) -> Result<()> {
    let s = merge(&args.shards, &args.out)?;
    println!(
        "merged {} shards into {}: {} pairs x {} images, {} units",
        s.shards,
        args.out.display(),
        s.manifest.pairs.len(),
        s.manifest.n_images,
        s.units
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The store folder.
    pub store: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub rule: RuleArgs,
    /// Write per-category histograms of the average scores (paper Eq. 2) as a PNG.
    #[arg(long, value_name = "PNG")]
    pub histograms: Option<PathBuf>,
}

/// Per-category numbers of `inspect`.
struct CategoryStats {
    name: String,
    partners: usize,
    /// Tickets alone (one-category rule) and background tickets for that category alone.
    tickets: usize,
    background: usize,
    histogram: Vec<usize>,
}

const BINS: usize = 20;

fn run_inspect(args: &InspectArgs) -> Result<()> {
    let settings =
        semi_run::Settings::resolve(&args.rule.choices(), &semi_run::Choices::default())?;
    let rule = args.rule.rule(&settings)?;
    if let Some(p) = &args.histograms {
        semi_run::outputs::check_png_path(p, "--histograms")?;
    }
    let store = Store::open(&args.store)?;
    let status = store.status()?;
    let m = store.manifest();
    let f = store.fingerprint();
    let mut stats = Vec::new();
    // A shard holds only some chunks of each pair: selection needs the merged store.
    if status.is_complete() && m.shard.is_none() {
        for c in store.categories() {
            let sel = select(&store, &[c], &rule)?;
            let (avg, partners) = store.average_scores(c)?;
            let mut histogram = vec![0usize; BINS];
            for v in &avg {
                histogram[((v * BINS as f32) as usize).min(BINS - 1)] += 1;
            }
            stats.push(CategoryStats {
                name: c.clone(),
                partners,
                tickets: sel.report.categories[0].tickets,
                background: sel.report.background.tickets,
                histogram,
            });
        }
    }
    let missing = status.missing.len();
    if args.json {
        let cats: Vec<serde_json::Value> = stats
            .iter()
            .map(|s| {
                serde_json::json!({"name": s.name, "partners": s.partners, "tickets": s.tickets,
                    "background_tickets": s.background, "histogram": s.histogram})
            })
            .collect();
        let out = serde_json::json!({
            "store": args.store.display().to_string(),
            "fingerprint": f,
            "seed": m.seed,
            "n_images": m.n_images,
            "chunk_images": m.chunk_images,
            "shard": m.shard.map(|s| s.to_string()),
            "pairs": m.pairs.len(),
            "categories": store.categories().len(),
            "blocks": store.n_blocks(),
            "complete": status.is_complete(),
            "missing_units": missing,
            "rule": rule.to_string(),
            "histogram_bins": BINS,
            "per_category": cats,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("store {}", args.store.display());
        println!(
            "  model {}  layers {}  t = {}  template {:?}",
            &f.model[..f.model.len().min(16)],
            f.layers.join(","),
            f.timestep,
            f.prompt_template
        );
        println!(
            "  {}x{} images, latent {:?}, grid {}x{}, seed {}, N = {} ({} per chunk){}",
            f.width,
            f.height,
            f.latent,
            f.grid[0],
            f.grid[1],
            m.seed,
            m.n_images,
            m.chunk_images,
            m.shard.map(|s| format!(", shard {s}")).unwrap_or_default()
        );
        println!(
            "  {} pairs, {} categories, {} blocks; {}",
            m.pairs.len(),
            store.categories().len(),
            store.n_blocks(),
            if status.is_complete() {
                "complete".to_string()
            } else {
                format!("{missing} units missing or partial (rerun collect)")
            }
        );
        if store.has_unfinished_change() {
            println!(
                "  a collect that adds pairs or images to it did not finish (manifest.next.json); \
                 rerun it to finish, the store is usable as it is meanwhile"
            );
        }
        if !stats.is_empty() {
            println!("tickets per category alone ({rule}):");
            for s in &stats {
                println!(
                    "  {:<20} {:>7} tickets  {:>7} background  ({} partners)",
                    s.name, s.tickets, s.background, s.partners
                );
            }
        }
    }
    if let Some(path) = &args.histograms {
        if stats.is_empty() {
            bail!(
                "the store is incomplete or a shard: no histograms (finish collect, merge shards)"
            );
        }
        let (t_obj, t_bg) = match rule {
            semi_tickets::Rule::Paper { t_obj, t_bg } => (Some(t_obj), Some(t_bg)),
            _ => (None, None),
        };
        let hists: Vec<&[usize]> = stats.iter().map(|s| s.histogram.as_slice()).collect();
        crate::plot::histograms(&hists, t_obj, t_bg)?
            .save_png(path, &[("Title", "semi tickets inspect")])?;
        if !args.json {
            println!(
                "wrote {} ({} panels in order: {})",
                path.display(),
                stats.len(),
                stats
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}
