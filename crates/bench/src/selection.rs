//! Selection and construction timings on a synthetic store (the 700 pairs x 100 images),
//! for `semi tickets bench` and `cargo run --release -p semi-bench --example bench_selection`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use semi_tickets::{all_pairs, collect, select, CollectRequest, FakeProber, Pair, Rule, Store};

/// `n_pairs` pairs spread evenly over `n_categories` categories `c00`, `c01`, ...: every
/// `k`-th pair of all `n(n-1)/2` in canonical order, so every category has partners.
pub fn synthetic_pairs(n_categories: usize, n_pairs: usize) -> Result<Vec<Pair>> {
    let names: Vec<String> = (0..n_categories).map(|i| format!("c{i:02}")).collect();
    let all = all_pairs(&names)?;
    let step = (all.len() as f64 / n_pairs.max(1) as f64).max(1.0);
    let mut out: Vec<Pair> = (0..n_pairs.min(all.len()))
        .map(|i| all[(i as f64 * step) as usize].clone())
        .collect();
    out.dedup();
    Ok(out)
}

/// Collect a synthetic SD-shaped store (latent 4x64x64, grid 16x16) with [`FakeProber`] into
/// `dir`, one chunk per pair.
pub fn build_synthetic_store(
    dir: &Path,
    n_categories: usize,
    n_pairs: usize,
    n_images: usize,
    seed: u64,
) -> Result<Store> {
    let mut prober = FakeProber::new(FakeProber::sd_fingerprint("synthetic-bench"));
    let request = CollectRequest {
        pairs: synthetic_pairs(n_categories, n_pairs)?,
        n_images,
        seed,
        shard: None,
        chunk_images: Some(n_images),
        wait_for_lock: None,
    };
    collect(dir, &mut prober, &request, &mut |_| {})?;
    Store::open(dir)
}

/// Builds the benches' synthetic store at `dir` (80 categories, 700 pairs x 100 images, seed 0)
/// unless `dir` already holds a store; returns how long the build took, if it built.
pub fn ensure_synthetic_store(dir: &Path) -> Result<Option<Duration>> {
    if dir.join("manifest.json").exists() {
        return Ok(None);
    }
    let t = Instant::now();
    build_synthetic_store(dir, 80, 700, 100, 0)?;
    Ok(Some(t.elapsed()))
}

/// Timings of one selection request.
#[derive(Debug, Clone)]
pub struct SelectionTiming {
    pub categories: Vec<String>,
    /// Partner pairs read (sum over the request's categories).
    pub pairs_read: usize,
    /// On a freshly opened store (includes mapping the score files).
    pub cold: Duration,
    /// Median of `repeats` further runs on the same store.
    pub warm_median: Duration,
    /// Tickets per category, then background.
    pub tickets: Vec<usize>,
}

impl std::fmt::Display for SelectionTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<16} pairs read {:>4}  cold {:>8.3} ms  warm {:>8.3} ms  tickets {:?}",
            self.categories.join(","),
            self.pairs_read,
            self.cold.as_secs_f64() * 1e3,
            self.warm_median.as_secs_f64() * 1e3,
            self.tickets
        )
    }
}

/// Time [`select`] for each request on the store at `dir` (opened afresh per request for the
/// cold time).
pub fn time_selection(
    dir: &Path,
    requests: &[Vec<String>],
    rule: &Rule,
    repeats: usize,
) -> Result<Vec<SelectionTiming>> {
    let mut out = Vec::new();
    for request in requests {
        let store = Store::open(dir)?;
        let t = Instant::now();
        let sel = select(&store, request, rule)?;
        let cold = t.elapsed();
        let mut warm = Vec::with_capacity(repeats);
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            std::hint::black_box(select(&store, request, rule)?);
            warm.push(t.elapsed());
        }
        warm.sort();
        let pairs_read = request.iter().map(|c| store.partners(c).len()).sum();
        out.push(SelectionTiming {
            categories: request.clone(),
            pairs_read,
            cold,
            warm_median: warm[warm.len() / 2],
            tickets: sel
                .report
                .categories
                .iter()
                .chain(std::iter::once(&sel.report.background))
                .map(|s| s.tickets)
                .collect(),
        });
    }
    Ok(out)
}

/// [`time_selection`] under each rule the benches compare: `paper` (thresholds 0.5, 0.1) and
/// `authors`, named.
pub fn time_rules(
    dir: &Path,
    requests: &[Vec<String>],
    repeats: usize,
) -> Result<Vec<(&'static str, Vec<SelectionTiming>)>> {
    [
        ("paper", Rule::paper(0.5, 0.1)?),
        ("authors", Rule::authors()),
    ]
    .into_iter()
    .map(|(name, rule)| Ok((name, time_selection(dir, requests, &rule, repeats)?)))
    .collect()
}

/// Requests of 1, 2 and 3 categories for timing: the best-connected categories of the store (so
/// each request reads as many partner pairs as possible) whose every pair is in the store (as
/// the several-category rule needs).
pub fn bench_requests(store: &Store) -> Vec<Vec<String>> {
    let mut cats: Vec<(usize, String)> = store
        .categories()
        .iter()
        .map(|c| (store.partners(c).len(), c.clone()))
        .collect();
    cats.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let top: Vec<String> = cats.iter().map(|(_, c)| c.clone()).collect();
    let Some(first) = top.first() else {
        return Vec::new();
    };
    let mut pick = vec![first.clone()];
    for c in &top[1..] {
        if pick.len() == 3 {
            break;
        }
        if pick.iter().all(|p| store.partners(p).contains(&c.as_str())) {
            pick.push(c.clone());
        }
    }
    (1..=pick.len()).map(|k| pick[..k].to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_both_rules_on_a_small_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = build_synthetic_store(dir.path(), 4, 6, 2, 0).unwrap();
        assert_eq!(store.pairs().len(), 6);
        let requests = bench_requests(&store);
        assert_eq!(requests.len(), 3);
        let timed = time_rules(dir.path(), &requests, 1).unwrap();
        let names: Vec<&str> = timed.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["paper", "authors"]);
        assert!(timed.iter().all(|(_, t)| t.len() == requests.len()));
        assert_eq!(timed[0].1[0].pairs_read, 3);
    }
}
