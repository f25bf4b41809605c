//! `semi init`: initial latents for a layout from a ticket store (SemI, paper 3.2).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use semi_layout::Layout;
use semi_tickets::{semi_init, Construction, InitMethod, InitOptions, Rule, Store};

use crate::common::{check_path, read_layout, ControlArg, RuleArgs};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The ticket store.
    #[arg(long)]
    pub store: PathBuf,
    /// The layout (JSON: prompt, objects with phrase, category, bbox; optionally width, height
    /// and seed: a layout without a size gets the store's).
    #[arg(long)]
    pub layout: PathBuf,
    #[command(flatten)]
    pub rule: RuleArgs,
    /// Construction seed [default: the layout's seed, else 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Standardise each latent channel to zero mean and unit variance afterwards
    /// [default: the model's (with --model), else off].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub recalibrate: Option<bool>,
    /// Build a control instead of SemI latents.
    #[arg(long, value_enum)]
    pub control: Option<ControlArg>,
    /// Refuse a store not made with this model (folder, HF cache repo id or `toy`); its
    /// `semi.json` then gives the thresholds and recalibration not set by flags.
    #[arg(long)]
    pub model: Option<String>,
    /// Output: .safetensors (key `latents`) or .npy, f32 [1, C, H/8, W/8].
    #[arg(long)]
    pub out: PathBuf,
}

/// Selection and construction with the report printed; the latents are `[1, C, h, w]`.
pub fn build_latents(
    store: &Store,
    layout: &Layout,
    rule: &Rule,
    options: &InitOptions,
) -> Result<Construction> {
    let (selection, construction) = semi_init(store, layout, rule, options)?;
    print!("{}", selection.report);
    println!("construction ({}):", method_name(options));
    print!("{construction}");
    Ok(construction)
}

fn method_name(o: &InitOptions) -> String {
    let m = match o.method {
        InitMethod::SemI => "SemI".to_string(),
        other => format!("{} control", other.name()),
    };
    format!(
        "{m}, seed {}{}",
        o.seed,
        if o.recalibrate { ", recalibrated" } else { "" }
    )
}

/// Metadata recorded in the latents file.
pub fn metadata(
    store: &Store,
    layout_path: &std::path::Path,
    rule: &Rule,
    options: &InitOptions,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("layout".to_string(), layout_path.display().to_string()),
        ("store".to_string(), store.dir().display().to_string()),
        (
            "store_fingerprint".to_string(),
            store.fingerprint().digest(),
        ),
        ("model".to_string(), store.fingerprint().model.clone()),
        ("rule".to_string(), rule.to_string()),
        ("method".to_string(), method_name(options)),
    ])
}

pub fn run(args: &InitArgs) -> Result<()> {
    check_path(&args.out, "--out")?;
    semi_diffusion::latents_io::check_latents_path(&args.out).context("--out")?;
    if semi_jobs::same_file_name(&args.out, &args.layout) {
        bail!("--out would overwrite --layout {}", args.layout.display());
    }
    let flags = semi_run::Choices {
        recalibrate: args.recalibrate,
        ..args.rule.choices()
    };
    let store = Store::open(&args.store)?;
    let settings = match &args.model {
        Some(spec) => {
            let model = semi_run::ModelRef::resolve(
                &spec.as_str().into(),
                semi_diffusion::loading::Variant::Full,
            )?;
            semi_methods::check_store_model(
                &store,
                &model.fingerprint()?,
                model.files.family,
                spec,
            )?;
            model.settings(&flags)?
        }
        None => semi_run::Settings::resolve(&flags, &semi_run::Choices::default())?,
    };
    let rule = args.rule.rule(&settings)?;
    let f = store.fingerprint();
    let (layout, _) = read_layout(&args.layout, Some((f.width as usize, f.height as usize)))?;
    let options = InitOptions {
        seed: args.seed.or(layout.seed).unwrap_or(0),
        method: args.control.map_or(InitMethod::SemI, ControlArg::fill),
        recalibrate: settings.recalibrate.value,
    };
    let c = build_latents(&store, &layout, &rule, &options)?;
    semi_diffusion::latents_io::save_latents(
        &args.out,
        &c.latents,
        &c.shape,
        &metadata(&store, &args.layout, &rule, &options),
    )
    .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("wrote {} {:?}", args.out.display(), c.shape);
    Ok(())
}
