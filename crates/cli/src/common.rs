//! Pieces shared by the ticket commands: reading layouts, selection rules from flags, loading a
//! model with its (cached) fingerprint and a prober, a progress bar for collect.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use semi_diffusion::loading::{ModelFiles, Variant};
use semi_diffusion::pipeline::StableDiffusion;
use semi_layout::Layout;
use semi_tickets::{LayerChoice, Progress, Rule};

/// Read and validate a layout file (JSON, DESIGN.md section 3); warnings go to stderr.
pub fn read_layout(path: &Path) -> Result<Layout> {
    let layout = Layout::from_path(path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot read layout {}", path.display()))?;
    let warnings = layout
        .check()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("invalid layout {}", path.display()))?;
    for w in warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    Ok(layout)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RulePreset {
    /// Paper Eq. 3-5 with --t-obj / --t-bg.
    Paper,
    /// The official code's per-object-count rules (its own thresholds).
    Authors,
}

/// Where SemI's tickets come from and how they are chosen: the flags `semi generate` and
/// `semi eval generate|run` share.
#[derive(Args, Debug, Clone)]
pub struct TicketArgs {
    /// The ticket store for the SemI methods [default: the on-the-fly cache store of this model
    /// and probe settings under $SEMI_CACHE/stores (~/.cache/semi/stores), filled with the
    /// layouts' missing category pairs first].
    #[arg(long, alias = "tickets", value_name = "DIR")]
    pub store: Option<std::path::PathBuf>,
    /// Noise images N when filling the cache store.
    #[arg(long, default_value_t = 100)]
    pub n: usize,
    /// Extra categories to contrast the layouts' categories with in the cache store (needed
    /// for layouts of a single category).
    #[arg(long)]
    pub partners: Option<String>,
    #[command(flatten)]
    pub rule: RuleArgs,
    /// SemI: standardise each latent channel afterwards.
    #[arg(long)]
    pub recalibrate: bool,
}

/// Selection flags shared by `semi init`, `semi generate --init semi` and `semi tickets inspect`.
#[derive(Args, Debug, Clone)]
pub struct RuleArgs {
    /// Selection rule.
    #[arg(long, value_enum, default_value_t = RulePreset::Paper)]
    pub rule: RulePreset,
    /// Object threshold T_obj in [0, 1] (paper rule).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub t_obj: f32,
    /// Background threshold T_bg in [0, 1] (paper rule).
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub t_bg: f32,
}

impl RuleArgs {
    pub fn rule(&self) -> Result<Rule> {
        match self.rule {
            RulePreset::Paper => {
                Rule::paper(self.t_obj, self.t_bg).context("--t-obj and --t-bg must lie in [0, 1]")
            }
            RulePreset::Authors => {
                if self.t_obj != 0.5 || self.t_bg != 0.1 {
                    bail!("--t-obj/--t-bg apply to --rule paper; --rule authors uses the official code's thresholds");
                }
                Ok(Rule::authors())
            }
        }
    }
}

/// Probe flags shared by collect and on-the-fly generation.
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Probed layers: `default` (the authors' layer, or the second down-path cross-attention at
    /// the level whose grid is nearest 16x16 cells), `all` (every cross-attention layer at that
    /// resolution), or layer paths.
    #[arg(long, default_value = "default")]
    pub layers: String,
    /// Contrastive prompts per UNet pass (batch rows sharing one noise image). On a CPU this
    /// gave no reliable gain (`semi tickets bench`), hence 1; try it on a GPU.
    #[arg(long, default_value_t = 1)]
    pub pairs_per_pass: usize,
}

impl ProbeArgs {
    pub fn options(&self, height: usize, width: usize) -> Result<semi_tickets::ProbeOptions> {
        let mut o = semi_tickets::ProbeOptions::new(height, width);
        o.layers = LayerChoice::parse(&self.layers)?;
        if self.pairs_per_pass == 0 {
            bail!("--pairs-per-pass must be at least 1");
        }
        o.pairs_per_pass = self.pairs_per_pass;
        Ok(o)
    }
}

/// A loaded model and its weights' fingerprint (computed once, cached on disk).
pub struct LoadedModel {
    pub sd: StableDiffusion,
    pub fingerprint: String,
}

/// Resolve (folder or HF cache repo id), check, fingerprint and load a model in f32.
pub fn load_model(spec: &str, device: &Device) -> Result<LoadedModel> {
    let dir = crate::embedded::resolve_model_arg(spec)?;
    let files = ModelFiles::check(&dir, Variant::Full)?;
    let fingerprint = semi_tickets::cache::model_fingerprint(&files)
        .with_context(|| format!("cannot fingerprint the model {spec}"))?;
    let sd = StableDiffusion::from_files(files, device, DType::F32)?;
    Ok(LoadedModel { sd, fingerprint })
}

/// The image size: given, or the model's default.
pub fn image_size(
    sd: &StableDiffusion,
    height: Option<usize>,
    width: Option<usize>,
) -> Result<(usize, usize)> {
    match (height, width, sd.default_size()) {
        (Some(h), Some(w), _) => Ok((h, w)),
        (h, w, Some((dh, dw))) => Ok((h.unwrap_or(dh), w.unwrap_or(dw))),
        _ => bail!("the model's unet/config.json has no sample_size; pass --height and --width"),
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
