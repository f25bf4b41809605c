//! Flags and terminal pieces several commands share: the device, the ticket and probe flags
//! (turned into the run's explicit settings, `semi_run::Choices`), layouts read with their
//! warnings printed, and progress bars. The work itself is in `semi-run`.

use std::path::Path;

use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use semi_layout::{Layout, SizeFrom};
use semi_run::{Choices, Settings};
use semi_tickets::{Progress, Rule};

pub use semi_run::outputs::check_path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    Metal,
}

impl DeviceArg {
    /// The candle device; a backend not compiled in is an error, not a fallback.
    pub fn device(self) -> Result<candle_core::Device> {
        semi_run::model::device(match self {
            DeviceArg::Cpu => "cpu",
            DeviceArg::Cuda => "cuda",
            DeviceArg::Metal => "metal",
        })
    }
}

/// Read and validate a layout file (docs/design.md section 3), sized with `native` (width,
/// height) when it gives no size; warnings go to stderr.
pub fn read_layout(path: &Path, native: Option<(usize, usize)>) -> Result<(Layout, SizeFrom)> {
    let (layout, from, warnings) = semi_run::read_layout(path, native)?;
    for w in warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    Ok((layout, from))
}

/// SemI's control experiments (`--control`): its regions, filled otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ControlArg {
    /// Gaussian blocks matched to each ticket set's per-channel mean and variance.
    ColourMatched,
    /// Each box filled with the next category's tickets (the other one's, for two).
    CategorySwapped,
    /// Each box filled from the union of the layout's categories' tickets.
    AnyObject,
}

impl ControlArg {
    pub fn fill(self) -> semi_tickets::InitMethod {
        use semi_tickets::InitMethod as M;
        match self {
            ControlArg::ColourMatched => M::ColourMatchedControl,
            ControlArg::CategorySwapped => M::CategorySwappedControl,
            ControlArg::AnyObject => M::AnyObjectControl,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RulePreset {
    /// Paper Eq. 3-5 with --t-obj / --t-bg.
    Paper,
    /// The official code's per-object-count rules (its own thresholds).
    Authors,
}

/// Where SemI's tickets come from and how they are chosen: the flags `semi generate` and
/// `semi eval generate|run` share. Unset values come from the model's `semi.json`, else the
/// paper's defaults.
#[derive(Args, Debug, Clone)]
pub struct TicketArgs {
    /// The ticket store for the SemI methods [default: the on-the-fly cache store of this model
    /// and probe settings under $SEMI_CACHE/stores (~/.cache/semi/stores), filled with the
    /// layouts' missing category pairs first].
    #[arg(long, alias = "tickets", value_name = "DIR")]
    pub store: Option<std::path::PathBuf>,
    /// Noise images N when filling the cache store [default: the model's, else 100].
    #[arg(long)]
    pub n: Option<usize>,
    /// Extra categories to contrast the layouts' categories with in the cache store (needed
    /// for layouts of a single category; the toy model uses its other shapes).
    #[arg(long)]
    pub partners: Option<String>,
    #[command(flatten)]
    pub rule: RuleArgs,
    /// SemI: standardise each latent channel afterwards (`--recalibrate false` turns off a
    /// model's default) [default: the model's, else off].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub recalibrate: Option<bool>,
}

impl TicketArgs {
    /// The explicit settings of these flags.
    pub fn choices(&self) -> Result<Choices> {
        if self.n == Some(0) {
            anyhow::bail!("--n must be at least 1 noise image");
        }
        Ok(Choices {
            cache_images: self.n,
            recalibrate: self.recalibrate,
            ..self.rule.choices()
        })
    }

    /// `--partners`, parsed.
    pub fn partners(&self) -> Result<Vec<String>> {
        match &self.partners {
            Some(list) => semi_tickets::names::parse_category_list(list),
            None => Ok(Vec::new()),
        }
    }
}

/// Selection flags shared by `semi init`, `semi generate --init semi` and `semi tickets inspect`.
#[derive(Args, Debug, Clone)]
pub struct RuleArgs {
    /// Selection rule.
    #[arg(long, value_enum, default_value_t = RulePreset::Paper)]
    pub rule: RulePreset,
    /// Object threshold T_obj in [0, 1] (paper rule) [default: the model's, else 0.5].
    #[arg(long, allow_negative_numbers = true)]
    pub t_obj: Option<f64>,
    /// Background threshold T_bg in [0, 1] (paper rule) [default: the model's, else 0.1].
    #[arg(long, allow_negative_numbers = true)]
    pub t_bg: Option<f64>,
}

impl RuleArgs {
    /// The explicit thresholds.
    pub fn choices(&self) -> Choices {
        Choices {
            t_obj: self.t_obj,
            t_bg: self.t_bg,
            ..Choices::default()
        }
    }

    pub fn authors(&self) -> bool {
        self.rule == RulePreset::Authors
    }

    /// The rule with `settings`' thresholds (resolved from these flags).
    pub fn rule(&self, settings: &Settings) -> Result<Rule> {
        if !self.authors() {
            return settings.paper_rule();
        }
        if self.t_obj.is_some() || self.t_bg.is_some() {
            anyhow::bail!("--t-obj/--t-bg apply to --rule paper; --rule authors uses the official code's thresholds");
        }
        Ok(Rule::authors())
    }
}

/// Probe flags shared by collect and on-the-fly generation.
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Probed layers: `default` (the authors' layer, or the second down-path cross-attention at
    /// the level whose grid is nearest 16x16 cells), `all` (every cross-attention layer at that
    /// resolution), or layer paths [default: the model's, else `default`].
    #[arg(long)]
    pub layers: Option<String>,
    /// Contrastive prompts per UNet pass (batch rows sharing one noise image). On a CPU this
    /// gave no reliable gain (`semi tickets bench`), hence 1; try it on a GPU.
    #[arg(long, default_value_t = 1)]
    pub pairs_per_pass: usize,
    /// Noise images per probe pass (batch rows, times --pairs-per-pass); the store is
    /// byte-identical for any value [default: 1 on the CPU, 16 on CUDA].
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
}

/// Noise images per probe pass when `--batch` is not given: batching pays on a GPU, and on a
/// 2-core CPU one image per pass keeps memory lowest.
pub const CUDA_PROBE_BATCH: usize = 16;

/// The sampler, which also decides the probe's timestep (the first of its schedule).
#[derive(Args, Debug, Clone)]
pub struct SchedulerArgs {
    /// Sampler: ddim, pndm, euler, euler-a, dpm++2m, dpm++2m-karras, unipc, a diffusers class
    /// name (e.g. EulerDiscreteScheduler), or `model` (the model's scheduler config's class),
    /// configured from the model's scheduler_config.json [default: the model's, else ddim, the
    /// paper's].
    #[arg(long, value_name = "NAME")]
    pub scheduler: Option<String>,
    /// Override a scheduler config field, `key=value` (repeatable), e.g.
    /// `--scheduler-option use_karras_sigmas=true`.
    #[arg(long = "scheduler-option", value_name = "KEY=VALUE")]
    pub scheduler_options: Vec<String>,
}

impl ProbeArgs {
    /// `--batch`, else the device's default.
    pub fn images_per_pass(&self, device: &candle_core::Device) -> usize {
        self.batch.unwrap_or(if device.is_cuda() {
            CUDA_PROBE_BATCH
        } else {
            1
        })
    }

    /// The explicit probe and sampler settings.
    pub fn choices(&self) -> Choices {
        Choices {
            probe_layers: self.layers.clone(),
            scheduler: self.scheduler.scheduler.clone(),
            scheduler_options: (!self.scheduler.scheduler_options.is_empty())
                .then(|| self.scheduler.scheduler_options.clone()),
            ..Choices::default()
        }
    }

    pub fn check(&self) -> Result<()> {
        if self.pairs_per_pass == 0 {
            anyhow::bail!("--pairs-per-pass must be at least 1");
        }
        if self.batch == Some(0) {
            anyhow::bail!("--batch must be at least 1");
        }
        Ok(())
    }
}

/// A progress bar over probe passes with an ETA from this run's rate (passes done before a
/// resume do not count towards the rate). Hidden when stderr is not a terminal.
pub struct CollectBar {
    bar: ProgressBar,
    started: bool,
}

impl CollectBar {
    pub fn new(what: &str) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} {pos}/{len} passes [{bar:30}] {per_sec}, ETA {eta_precise}",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        CollectBar {
            bar,
            started: false,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        if !self.started {
            self.bar.set_length(p.passes_total as u64);
            self.bar.set_position(p.passes_done as u64);
            self.bar.reset_eta();
            self.started = true;
        }
        self.bar.set_position(p.passes_done as u64);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A bar over `len` items with a message and an ETA.
pub fn bar(template: &str, len: usize, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}
