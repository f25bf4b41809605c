//! The ticket store behind `semi generate --init semi`: the one given with `--store` (checked to
//! come from this model), or the on-the-fly cache store for this model and probe settings,
//! `$SEMI_CACHE/stores/<fingerprint digest>`, into which the layout's missing pairs are collected
//! first.

use anyhow::{bail, Result};
use semi_diffusion::pipeline::StableDiffusion;
use semi_layout::Layout;
use semi_tickets::names::{normalize_categories, parse_category_list};
use semi_tickets::{all_pairs, collect, CollectRequest, Pair, SdProber, Store};

use crate::common::CollectBar;
use crate::generate::GenerateArgs;

/// Seed of on-the-fly cache stores (noise image k = randn(manual_seed(k))); fixed so every
/// request for a model shares one store.
const CACHE_SEED: u64 = 0;

/// Refuse a store whose scores came from another model.
pub fn check_store_model(store: &Store, model_fingerprint: &str, model: &str) -> Result<()> {
    let theirs = &store.fingerprint().model;
    if theirs != model_fingerprint {
        bail!(
            "the store {} was made with another model (fingerprint {}...), not {model} ({}...); \
             use a store collected with this model",
            store.dir().display(),
            &theirs[..12.min(theirs.len())],
            &model_fingerprint[..12.min(model_fingerprint.len())]
        );
    }
    Ok(())
}

pub fn store_for(
    args: &GenerateArgs,
    sd: &StableDiffusion,
    model_fingerprint: &str,
    layout: &Layout,
) -> Result<Store> {
    if let Some(dir) = &args.store {
        let store = Store::open(dir)?;
        check_store_model(&store, model_fingerprint, &args.model)?;
        return Ok(store);
    }
    let opts = args
        .probe
        .options(layout.height as usize, layout.width as usize)?;
    let mut prober = SdProber::new(sd, model_fingerprint.to_string(), &opts)?;
    let digest = semi_tickets::Prober::fingerprint(&prober).digest();
    let dir = semi_tickets::cache::store_dir(&digest)?;
    let categories = normalize_categories(&layout.categories())?;
    let mut pairs: Vec<Pair> = if categories.len() >= 2 {
        all_pairs(&categories)?
    } else {
        Vec::new()
    };
    if let Some(list) = &args.partners {
        for p in parse_category_list(list)? {
            for c in &categories {
                if *c != p {
                    pairs.push(Pair::new(c, &p)?);
                }
            }
        }
    }
    let existing = if dir.join("manifest.json").exists() {
        Some(Store::open(&dir)?)
    } else {
        None
    };
    let have_partners = |s: &Store| {
        categories
            .iter()
            .all(|c| s.categories().contains(c) && !s.partners(c).is_empty())
    };
    let up_to_date = existing.as_ref().is_some_and(|s| {
        s.n_images() >= args.n
            && pairs.iter().all(|p| s.pairs().contains(p))
            && have_partners(s)
            && s.status().is_ok_and(|st| st.is_complete())
    });
    if up_to_date {
        println!("cache store {} (up to date)", dir.display());
        return Ok(existing.expect("checked"));
    }
    if pairs.is_empty() {
        match &existing {
            Some(s) if have_partners(s) => {}
            _ => bail!(
                "a layout with the single category {:?} has no partner to contrast it with: pass \
                 --partners (e.g. --partners cat,car) or a collected --store",
                categories[0]
            ),
        }
        // Only more images for the store's own pairs of these categories.
        let s = existing.as_ref().expect("checked");
        pairs = s
            .pairs()
            .iter()
            .filter(|p| categories.iter().any(|c| p.contains(c)))
            .cloned()
            .collect();
    }
    drop(existing);
    std::fs::create_dir_all(dir.parent().expect("stores folder"))?;
    println!(
        "collecting {} pairs x {} images into the cache store {}",
        pairs.len(),
        args.n,
        dir.display()
    );
    let request = CollectRequest {
        pairs,
        n_images: args.n,
        seed: CACHE_SEED,
        shard: None,
        chunk_images: None,
    };
    let mut bar = CollectBar::new("probing");
    let result = collect(&dir, &mut prober, &request, &mut |p| bar.update(p));
    bar.finish();
    result?;
    Store::open(&dir)
}
