//! `semi eval generate`: one method's images for one shard of a layouts file, through
//! `semi_eval::generate_shard` (ids, seeds, atomic outputs, resume, manifest) with
//! `semi_methods::generate` making each image, the same path as `semi generate`.
//!
//! Each sidecar's `info` holds the generator's `settings` (model fingerprint, steps, guidance,
//! eta, and what the method uses of the strengths, selection rule and ticket store). Resuming
//! into a folder whose finished images were made with other settings is an error: a table must
//! never mix two settings under one method name.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use semi_diffusion::pipeline::GenerateRequest;
use semi_eval::{Generated, ItemState, MethodDir, Plan, PlanItem, Shard, ShardManifest};
use semi_methods::{Guidance, Init, Method, MethodOptions};
use semi_tickets::names::normalize_categories;
use semi_tickets::Store;
use semi_toyworld::RgbImage;
use serde_json::{json, Value};

use crate::common::{load_model, LoadedModel, ProbeArgs, TicketArgs};
use crate::generate::{select_device, DeviceArg};

/// Generation flags shared by `eval generate` and `eval run`.
#[derive(Args, Debug, Clone)]
pub struct GenOpts {
    /// A diffusers folder, a Hugging Face repo id in the local cache, or `toy` (embedded).
    #[arg(long, default_value = crate::embedded::TOY_MODEL)]
    pub model: String,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (<= 1 turns it off).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
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
    /// SemI control experiment: Gaussian blocks matched to each ticket set's per-channel mean
    /// and variance instead of the tickets (is the gain more than colour statistics?).
    #[arg(long)]
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
    /// The strengths and SemI settings of these flags.
    pub fn method_options(&self) -> Result<MethodOptions> {
        let mut o = MethodOptions {
            rule: self.tickets.rule.rule()?,
            recalibrate: self.tickets.recalibrate,
            colour_control: self.colour_control,
            ..MethodOptions::default()
        };
        for (flag, value, slot) in [
            ("--paint-weight", self.paint_weight, &mut o.paint_weight),
            ("--soft-weight", self.soft_weight, &mut o.soft_weight),
        ] {
            if let Some(v) = value {
                if !(v.is_finite() && v >= 0.0) {
                    bail!("{flag} {v} must be a finite number >= 0");
                }
                *slot = v;
            }
        }
        Ok(o)
    }

    /// Flag checks that need no model.
    pub fn check(&self) -> Result<()> {
        if self.steps == 0 {
            bail!("--steps must be at least 1");
        }
        if !self.guidance.is_finite() || !self.eta.is_finite() {
            bail!("--guidance and --eta must be finite numbers");
        }
        if self.tickets.n == 0 {
            bail!("--n must be at least 1 noise image");
        }
        self.method_options().map(|_| ())
    }
}

/// A loaded model, ticket store and options: makes the images of any method.
pub struct Generator {
    model: LoadedModel,
    store: Option<Store>,
    options: MethodOptions,
    opts: GenOpts,
}

impl Generator {
    /// Load the model, and the ticket store when one of `methods` needs it.
    pub fn new(opts: &GenOpts, plan: &Plan, methods: &[Method]) -> Result<Generator> {
        opts.check()?;
        let options = opts.method_options()?;
        let device = select_device(opts.device)?;
        let model = load_model(&opts.model, &device)?;
        let store = if methods.iter().any(Method::needs_store) {
            Some(open_store(opts, &model, plan)?)
        } else {
            None
        };
        Ok(Generator {
            model,
            store,
            options,
            opts: opts.clone(),
        })
    }

    /// What decides an image besides its layout and seed (see the module docs).
    pub fn settings(&self, method: &Method) -> Value {
        let mut s = json!({
            "model_fingerprint": self.model.fingerprint,
            "steps": self.opts.steps,
            "guidance": self.opts.guidance,
            "eta": self.opts.eta,
        });
        let map = s.as_object_mut().expect("an object");
        match method.guidance {
            Guidance::None => {}
            Guidance::Paint => {
                map.insert("paint_weight".into(), self.options.paint_weight.into());
            }
            Guidance::Soft => {
                map.insert("soft_weight".into(), self.options.soft_weight.into());
            }
        }
        if matches!(method.init, Init::Swap | Init::SemiSwap) {
            map.insert("swap".into(), format!("{:?}", self.options.swap).into());
        }
        if method.needs_store() {
            map.insert("rule".into(), format!("{:?}", self.options.rule).into());
            map.insert("recalibrate".into(), self.options.recalibrate.into());
            if self.options.colour_control {
                map.insert("colour_control".into(), true.into());
            }
            if let Some(store) = &self.store {
                map.insert(
                    "store".into(),
                    json!({
                        "probe": store.fingerprint().digest(),
                        "images": store.n_images(),
                        "pairs": store.pairs().len(),
                    }),
                );
            }
        }
        s
    }

    /// One image (the generation callback).
    pub fn image(&self, item: &PlanItem, method: &Method, settings: &Value) -> Result<Generated> {
        let layout = &item.layout;
        let mut req = GenerateRequest::new(
            layout.prompt.clone(),
            layout.height as usize,
            layout.width as usize,
        );
        req.negative_prompt = layout.negative_prompt.clone().unwrap_or_default();
        req.seed = item.seed;
        req.steps = self.opts.steps;
        req.guidance_scale = self.opts.guidance;
        req.eta = self.opts.eta;
        let start = Instant::now();
        let g = semi_methods::generate(
            &self.model.sd,
            layout,
            &req,
            method,
            self.store.as_ref(),
            &self.options,
            &mut |_| Ok(()),
        )?;
        let seconds = start.elapsed().as_secs_f64();
        let (w, h, rgb) = semi_diffusion::image::to_rgb8(&g.image)?;
        let image = RgbImage::from_raw(w, h, rgb)?;
        Ok(Generated {
            image,
            info: json!({
                "model": self.opts.model,
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
        let settings = self.settings(method);
        check_settings(&dir, plan, shard, &settings)?;
        let todo = plan.shard_items(shard).count();
        let bar = progress_bar(&name, todo);
        let manifest = semi_eval::generate_shard(&dir, plan, shard, |item| {
            let r = self.image(item, method, &settings);
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

fn progress_bar(name: &str, len: usize) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} {pos}/{len} [{bar:30}] ETA {eta_precise}")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    pb.set_message(name.to_string());
    pb
}

/// `--store`, checked against the model, or the cache store filled with every category pair
/// of the plan.
fn open_store(opts: &GenOpts, model: &LoadedModel, plan: &Plan) -> Result<Store> {
    if let Some(dir) = &opts.tickets.store {
        let store = Store::open(dir)?;
        semi_methods::check_store_model(&store, &model.fingerprint, &opts.model)?;
        return Ok(store);
    }
    let first = &plan.items()[0].layout;
    if let Some(other) = plan
        .items()
        .iter()
        .find(|it| (it.layout.width, it.layout.height) != (first.width, first.height))
    {
        bail!(
            "layouts of several sizes ({}x{} and {}x{} for {:?}) need a collected --store: \
             the cache store serves one size",
            first.width,
            first.height,
            other.layout.width,
            other.layout.height,
            other.id
        );
    }
    let probe = opts
        .probe
        .options(first.height as usize, first.width as usize)?;
    let mut names: Vec<String> = plan
        .items()
        .iter()
        .flat_map(|it| it.layout.categories())
        .collect();
    names.sort();
    names.dedup();
    let categories = normalize_categories(&names)?;
    let partners = match &opts.tickets.partners {
        Some(list) => semi_tickets::names::parse_category_list(list)?,
        None => Vec::new(),
    };
    let mut bar = crate::common::CollectBar::new("cache store");
    let store = semi_methods::cache_store(
        &model.sd,
        &model.fingerprint,
        &probe,
        &categories,
        &partners,
        opts.tickets.n,
        &mut |p| bar.update(p),
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
