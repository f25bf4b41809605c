//! `semi eval generate`: one method's images for one shard of a layouts file, through
//! `semi_eval::generate_shard` (ids, seeds, atomic outputs, resume, manifest) with
//! `semi_run::Run` making each image, the same path as `semi generate`.
//!
//! Each sidecar's `info` holds the generator's `settings` (model fingerprint, steps, guidance,
//! eta, and what the method uses of the strengths, selection rule and ticket store). Resuming
//! into a folder whose finished images were made with other settings is an error: a table must
//! never mix two settings under one method name.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use semi_eval::{Generated, ItemState, MethodDir, Plan, PlanItem, Shard, ShardManifest};
use semi_methods::Method;
use semi_run::{Choices, Model, ModelRef, Request, Run, StoreSpec};
use semi_tickets::Store;
use semi_toyworld::RgbImage;
use serde_json::{json, Value};

use crate::common::{ControlArg, DeviceArg, ProbeArgs, TicketArgs};

/// Generation flags shared by `eval generate` and `eval run`.
#[derive(Args, Debug, Clone)]
pub struct GenOpts {
    #[command(flatten)]
    pub model: semi_run::model::ModelArgs,
    /// DDIM steps [default: the model's, else 50].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale (<= 1 turns it off) [default: the model's, else 7.5].
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    /// DDIM eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Paint-with-words strength w [default: semi_guidance::PAINT_DEFAULT_WEIGHT].
    #[arg(long, allow_negative_numbers = true)]
    pub paint_weight: Option<f64>,
    /// Soft guidance strength w [default: semi_guidance::SOFT_DEFAULT_WEIGHT].
    #[arg(long, allow_negative_numbers = true)]
    pub soft_weight: Option<f64>,
    #[command(flatten)]
    pub tickets: TicketArgs,
    /// A SemI control experiment in place of the tickets: colour-matched (is the gain more than
    /// colour statistics?), category-swapped (are tickets specific to their category?) or
    /// any-object.
    #[arg(long, value_enum)]
    pub control: Option<ControlArg>,
    /// The same as `--control colour-matched`.
    #[arg(long, conflicts_with = "control")]
    pub colour_control: bool,
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The layouts JSONL (or one JSON layout).
    #[arg(long, value_name = "FILE")]
    pub layouts: PathBuf,
    /// Output folder: images go to <out>/<method>/<id>.png.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The method: sd, paint, soft, swap, semi, semi+soft, semi+swap, semi+swap+soft, ...
    #[arg(long)]
    pub method: String,
    /// Base seed: a layout without its own seed gets one from (seed, id).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// This task's shard `i/n` [default: from SLURM_ARRAY_TASK_ID/COUNT, else everything].
    #[arg(long)]
    pub shard: Option<String>,
    #[command(flatten)]
    pub gen: GenOpts,
}

impl GenOpts {
    /// The settings given explicitly.
    fn choices(&self) -> Result<Choices> {
        Ok(Choices {
            guidance_scale: self.guidance,
            num_inference_steps: self.steps,
            ..Choices {
                probe_layers: self.probe.layers.clone(),
                scheduler: self.probe.scheduler.scheduler.clone(),
                scheduler_options: self.probe.choices().scheduler_options,
                ..self.tickets.choices()?
            }
        })
    }

    /// Flag checks that need no model.
    pub fn check(&self) -> Result<()> {
        if self.steps == Some(0) {
            bail!("--steps must be at least 1");
        }
        if !self.guidance.unwrap_or(0.0).is_finite() || !self.eta.is_finite() {
            bail!("--guidance and --eta must be finite numbers");
        }
        for (flag, value) in [
            ("--paint-weight", self.paint_weight),
            ("--soft-weight", self.soft_weight),
        ] {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                bail!("{flag} {v} must be a finite number >= 0");
            }
        }
        self.probe.check()?;
        self.choices().map(|_| ())
    }

    /// `method`'s run for the plan's first layout (each item then gets its own layout and seed).
    fn run(&self, model: &ModelRef, plan: &Plan, method: Method) -> Result<Run> {
        let first = plan.items().first().context("the plan has no layouts")?;
        Run::plan(
            model,
            Request {
                layout: Some((first.layout.clone(), semi_layout::SizeFrom::Layout)),
                seed: Some(first.seed),
                method: Some(method),
                flags: self.choices()?,
                authors_rule: self.tickets.rule.authors(),
                eta: self.eta,
                paint_weight: self.paint_weight,
                soft_weight: self.soft_weight,
                fill: match (self.control, self.colour_control) {
                    (Some(c), _) => c.fill(),
                    (None, true) => semi_tickets::InitMethod::ColourMatchedControl,
                    (None, false) => semi_tickets::InitMethod::SemI,
                },
                ..Request::default()
            },
        )
    }
}

/// A loaded model and ticket store: makes the images of any method.
pub struct Generator {
    model: Model,
    store: Option<Store>,
    opts: GenOpts,
}

impl Generator {
    /// Load the model, and the ticket store when one of `methods` needs it: `--store`, checked
    /// against the model, or the cache store filled with every category pair of the plan.
    pub fn new(opts: &GenOpts, plan: &Plan, methods: &[Method]) -> Result<Generator> {
        opts.check()?;
        let device = opts.device.device()?;
        let reference =
            ModelRef::resolve(&opts.model.spec()?, semi_diffusion::loading::Variant::Full)?;
        // Every method's flags are checked before the weights are read.
        let runs: Vec<Run> = methods
            .iter()
            .map(|m| opts.run(&reference, plan, *m))
            .collect::<Result<_>>()?;
        let model = reference.load(
            &device,
            semi_diffusion::precision::Precision::uniform(candle_core::DType::F32),
        )?;
        let store = match runs.iter().find(|r| r.needs_store()) {
            Some(run) => Some(open_store(opts, &model, run, plan)?),
            None => None,
        };
        Ok(Generator {
            model,
            store,
            opts: opts.clone(),
        })
    }

    /// One image (the generation callback).
    fn image(&self, item: &PlanItem, run: &Run, settings: &Value) -> Result<Generated> {
        let run = run.for_layout(&item.layout, item.seed);
        let start = Instant::now();
        let g = run.generate(&self.model, self.store.as_ref(), &mut |_| Ok(()))?;
        let seconds = start.elapsed().as_secs_f64();
        let (w, h, rgb) = semi_diffusion::image::to_rgb8(&g.image)?;
        let image = RgbImage::from_raw(w, h, rgb)?;
        Ok(Generated {
            image,
            info: json!({
                "model": self.opts.model.model,
                "settings": settings,
                "method": g.prepared_metadata,
                "seconds": seconds,
            }),
        })
    }

    /// Generate `method`'s images of `shard` under `out` (resumable; module docs).
    pub fn run_shard(
        &self,
        out: &Path,
        plan: &Plan,
        method: &Method,
        shard: Shard,
    ) -> Result<ShardManifest> {
        let name = method.name();
        let dir = MethodDir::new(out, &name)?;
        let run = self.opts.run(&self.model.reference, plan, *method)?;
        let settings = run.decisive_settings(self.model.fingerprint()?, self.store.as_ref());
        check_settings(&dir, plan, shard, &settings)?;
        let todo = plan.shard_items(shard).count();
        let bar = crate::common::bar(
            "{msg} {pos}/{len} [{bar:30}] ETA {eta_precise}",
            todo,
            &name,
        );
        let manifest = semi_eval::generate_shard(&dir, plan, shard, |item| {
            let r = self.image(item, &run, &settings);
            bar.inc(1);
            r
        });
        bar.finish_and_clear();
        let manifest = manifest?;
        let generated = manifest.generated();
        let seconds: f64 = manifest.items.iter().map(|i| i.seconds).sum();
        println!(
            "{name} shard {}/{}: {generated} generated{}, {} already there; {}",
            shard.index,
            shard.count,
            if generated > 0 {
                format!(" ({:.2} s each)", seconds / generated as f64)
            } else {
                String::new()
            },
            manifest.items.len() - generated,
            dir.dir().display()
        );
        Ok(manifest)
    }
}

/// Finished images of this shard made with other settings are an error (module docs).
fn check_settings(dir: &MethodDir, plan: &Plan, shard: Shard, settings: &Value) -> Result<()> {
    for item in plan.shard_items(shard) {
        if let ItemState::Done(side) = dir.item_state(item)? {
            let theirs = side.info.get("settings").unwrap_or(&Value::Null);
            if theirs != settings {
                bail!(
                    "{} was made with other settings than this run's ({}): use another --out, \
                     the same flags, or delete the folder",
                    dir.sidecar_path(&item.id).display(),
                    differences(theirs, settings)
                );
            }
        }
    }
    Ok(())
}

/// `key: theirs -> ours` for the keys that differ.
fn differences(theirs: &Value, ours: &Value) -> String {
    let empty = serde_json::Map::new();
    let a = theirs.as_object().unwrap_or(&empty);
    let b = ours.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.iter()
        .filter(|k| a.get(**k) != b.get(**k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("none".to_string(), Value::to_string);
            format!("{k} {} vs {}", show(a.get(*k)), show(b.get(*k)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The store of a batch (see [`Generator::new`]).
fn open_store(opts: &GenOpts, model: &Model, run: &Run, plan: &Plan) -> Result<Store> {
    let spec = StoreSpec {
        given: opts.tickets.store.as_deref(),
        partners: opts.tickets.partners()?,
        pairs_per_pass: opts.probe.pairs_per_pass,
        images_per_pass: opts.probe.images_per_pass(&model.sd.device),
    };
    let (height, width) = if spec.given.is_some() {
        (run.layout.height as usize, run.layout.width as usize)
    } else {
        semi_run::store::one_size(
            plan.items()
                .iter()
                .map(|it| (it.id.as_str(), it.layout.width, it.layout.height)),
        )?
        .context("the plan has no layouts")?
    };
    let mut names: Vec<String> = plan
        .items()
        .iter()
        .flat_map(|it| it.layout.categories())
        .collect();
    names.sort();
    names.dedup();
    let mut bar = crate::common::CollectBar::new("cache store");
    let store = semi_run::store::open(
        model,
        &spec,
        &run.settings,
        &names,
        height,
        width,
        &mut |p| bar.update(p),
        &mut |line| eprintln!("{line}"),
    );
    bar.finish();
    store.context("filling the cache ticket store")
}

pub fn run(a: &GenerateArgs) -> Result<()> {
    let method = Method::parse(&a.method)?;
    let shard = Shard::from_arg_or_env(a.shard.as_deref())?.unwrap_or(Shard::ALL);
    a.gen.check()?;
    let plan = Plan::from_path(&a.layouts, a.seed)?;
    let generator = Generator::new(&a.gen, &plan, &[method])?;
    generator.run_shard(&a.out, &plan, &method, shard)?;
    Ok(())
}
