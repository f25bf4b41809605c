//! Selection timings on a synthetic 700-pair x 100-image store (80 categories, SD shapes).
//! `cargo run --release -p semi-bench --example bench_selection [STORE_DIR]`; the store is
//! built there (or in a temporary directory) on first use and reused after.

use std::time::Instant;

use anyhow::Result;
use semi_bench::selection::{bench_requests, ensure_synthetic_store, time_rules};
use semi_tickets::{construct, InitMethod, InitOptions, Rule, Store};

fn main() -> Result<()> {
    let arg = std::env::args().nth(1);
    let tmp = tempfile::tempdir()?;
    let dir = arg
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("store"));
    if let Some(built) = ensure_synthetic_store(&dir)? {
        println!("built synthetic store in {:.1} s", built.as_secs_f64());
    }
    let t = Instant::now();
    let store = Store::open(&dir)?;
    println!(
        "Store::open (manifest, noise maps, randn check of 3 images): {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "store: {} pairs, {} categories, {} images, {} blocks",
        store.pairs().len(),
        store.categories().len(),
        store.n_images(),
        store.n_blocks()
    );
    let requests = bench_requests(&store);
    for (name, timings) in time_rules(&dir, &requests, 20)? {
        println!("rule {name}:");
        for t in timings {
            println!("  {t}");
        }
    }
    // Construction on top of a two-category selection.
    let sel = semi_tickets::select(&store, &requests[1], &Rule::paper(0.5, 0.3)?)?;
    let layout = semi_layout::Layout::new(
        "bench",
        512,
        512,
        vec![
            semi_layout::LayoutObject::new(
                "a",
                &requests[1][0],
                semi_layout::BBox::new(0.0, 0.0, 0.6, 0.6)?,
            ),
            semi_layout::LayoutObject::new(
                "b",
                &requests[1][1],
                semi_layout::BBox::new(0.4, 0.4, 1.0, 1.0)?,
            ),
        ],
    );
    for method in [InitMethod::SemI, InitMethod::ColourMatchedControl] {
        let opts = InitOptions {
            seed: 1,
            method,
            recalibrate: true,
        };
        let t = Instant::now();
        let c = construct(&store, &layout, &sel, &opts)?;
        println!(
            "construct {method:?}: {:.3} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        std::hint::black_box(c);
    }
    Ok(())
}
