//! The on-the-fly ticket store of a model (moved here from the CLI so `semi generate`, `semi
//! eval` and `semi serve` share it): `$SEMI_CACHE/stores/<probe fingerprint digest>`, one per
//! model and probe settings, into which the pairs a layout needs are collected first.

use anyhow::{bail, Result};
use semi_diffusion::family::Family;
use semi_diffusion::pipeline::StableDiffusion;
use semi_tickets::names::normalize_category;
use semi_tickets::{
    all_pairs, collect, CollectRequest, Pair, ProbeOptions, Progress, SdProber, Store,
};

/// Seed of on-the-fly cache stores (noise image k = randn(manual_seed(k))); fixed so every
/// request for a model shares one store.
pub const CACHE_SEED: u64 = 0;

/// How long a run waits for another process filling the same cache store (two `semi generate`
/// runs of one model share it).
pub const CACHE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Refuse a store whose scores came from another model (`model` names it in the message).
pub fn check_store_model(
    store: &Store,
    model_fingerprint: &str,
    family: Family,
    model: &str,
) -> Result<()> {
    let theirs = store.fingerprint();
    if theirs.family != family.name() {
        let label = |name: &str| {
            Family::ALL
                .iter()
                .find(|f| f.name() == name)
                .map_or(name.to_string(), |f| f.label().to_string())
        };
        bail!(
            "the store {} holds {} tickets, but {model} is an {} model: tickets of two model \
             families never mix; use a store collected with this model",
            store.dir().display(),
            label(&theirs.family),
            family.label()
        );
    }
    let theirs = &theirs.model;
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

/// A one-category layout, and nothing to contrast its category with (the probe scores a
/// category against another). The message gives the CLI's remedy; other front ends word their
/// own.
#[derive(Debug, Clone, PartialEq)]
pub struct NoPartner {
    pub category: String,
}

impl std::fmt::Display for NoPartner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a layout with the single category {:?} has no partner to contrast it with: pass \
             partners (e.g. --partners cat,car) or a collected store",
            self.category
        )
    }
}

impl std::error::Error for NoPartner {}

/// [`cache_store_with`] reporting what it does on stderr.
pub fn cache_store(
    sd: &StableDiffusion,
    model_fingerprint: &str,
    probe: &ProbeOptions,
    categories: &[String],
    partners: &[String],
    n: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Store> {
    cache_store_with(
        sd,
        model_fingerprint,
        probe,
        categories,
        partners,
        n,
        progress,
        &mut |line| eprintln!("{line}"),
    )
}

/// Open `$SEMI_CACHE/stores/<probe fingerprint digest>` for `sd` (probe settings `probe`),
/// collecting first what is missing: every pair of `categories`, each category against each of
/// `partners` (needed for a one-category layout unless the store already contrasts it with
/// something), all with at least `n` noise images. `log` gets one line saying whether the store
/// was up to date or what is being collected.
#[allow(clippy::too_many_arguments)]
pub fn cache_store_with(
    sd: &StableDiffusion,
    model_fingerprint: &str,
    probe: &ProbeOptions,
    categories: &[String],
    partners: &[String],
    n: usize,
    progress: &mut dyn FnMut(&Progress),
    log: &mut dyn FnMut(&str),
) -> Result<Store> {
    if n == 0 {
        bail!("the cache store needs at least 1 noise image (n = 0)");
    }
    if categories.is_empty() {
        bail!("the cache store needs at least one category");
    }
    let mut prober = SdProber::new(sd, model_fingerprint.to_string(), probe)?;
    let digest = semi_tickets::Prober::fingerprint(&prober).digest();
    let dir = semi_tickets::cache::store_dir(&digest)?;
    let mut categories: Vec<String> = categories
        .iter()
        .map(|c| normalize_category(c))
        .collect::<Result<_>>()?;
    dedup_in_order(&mut categories);
    let mut pairs: Vec<Pair> = if categories.len() >= 2 {
        all_pairs(&categories)?
    } else {
        Vec::new()
    };
    let mut partners: Vec<String> = partners
        .iter()
        .map(|c| normalize_category(c))
        .collect::<Result<_>>()?;
    dedup_in_order(&mut partners);
    for p in partners {
        for c in &categories {
            if *c != p {
                let pair = Pair::new(c, &p)?;
                if !pairs.contains(&pair) {
                    pairs.push(pair);
                }
            }
        }
    }
    // A store another process is filling may not open yet: collect waits for it below.
    let existing = if dir.join("manifest.json").exists() {
        Store::open(&dir).ok()
    } else {
        None
    };
    let have_partners = |s: &Store| {
        categories
            .iter()
            .all(|c| s.categories().contains(c) && !s.partners(c).is_empty())
    };
    let up_to_date = existing.as_ref().is_some_and(|s| {
        s.n_images() >= n
            && pairs.iter().all(|p| s.pairs().contains(p))
            && have_partners(s)
            && s.status().is_ok_and(|st| st.is_complete())
    });
    if up_to_date {
        log(&format!("cache store {} (up to date)", dir.display()));
        return Ok(existing.expect("checked"));
    }
    if pairs.is_empty() {
        match &existing {
            Some(s) if have_partners(s) => {}
            _ => {
                return Err(NoPartner {
                    category: categories[0].clone(),
                }
                .into())
            }
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
    log(&format!(
        "collecting {} pairs x {n} images into the cache store {}",
        pairs.len(),
        dir.display()
    ));
    let request = CollectRequest {
        pairs,
        n_images: n,
        seed: CACHE_SEED,
        shard: None,
        chunk_images: None,
        wait_for_lock: Some(CACHE_LOCK_WAIT),
    };
    let summary = collect(&dir, &mut prober, &request, progress)?;
    for (pair, why) in &summary.dropped_pairs {
        log(&format!(
            "dropped pair {pair} from the cache store (it had no scores and {why})"
        ));
    }
    Store::open(&dir)
}

/// Drop repeated names, keeping the first occurrence.
fn dedup_in_order(names: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
}
