//! Pick the paper's evaluation samples from COCO annotation files (what `semi eval samples`
//! does), and time the reading.
//!
//! ```text
//! cargo run --release -p semi-eval --example coco_samples -- \
//!     instances_val2017.json captions_val2017.json OUT_DIR [ONE TWO SEED]
//! ```
//! Writes `OUT_DIR/layouts.jsonl`, `OUT_DIR/pairs.txt` and `OUT_DIR/images.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use semi_eval::{
    category_pairs, select_samples, write_atomic, CocoCaptions, CocoInstances, Plan, SampleRule,
};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: coco_samples INSTANCES CAPTIONS OUT_DIR [ONE TWO SEED]");
    }
    let num = |k: usize, default: u64| -> Result<u64> {
        args.get(k).map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("argument {v:?}"))
        })
    };
    let rule = SampleRule {
        counts: BTreeMap::from([(1, num(3, 3000)? as usize), (2, num(4, 3000)? as usize)]),
        seed: num(5, 0)?,
        ..Default::default()
    };
    let t = Instant::now();
    let instances = CocoInstances::from_path(&args[0])?;
    println!(
        "{}: {} images, {} boxes in {:.1} s",
        args[0],
        instances.images.len(),
        instances.annotations.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let captions = CocoCaptions::from_path(&args[1])?;
    println!(
        "{}: {} captions in {:.1} s",
        args[1],
        captions.annotations.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let selection = select_samples(&instances, &captions, &rule)?;
    print!("{}", selection.stats);
    println!("selection in {:.1} s", t.elapsed().as_secs_f64());
    for (n, want, got) in selection.stats.shortfalls(&rule) {
        println!("warning: only {got} of {want} wanted {n}-object samples qualify");
    }
    let out = PathBuf::from(&args[2]);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join("layouts.jsonl"), selection.to_jsonl().as_bytes())?;
    let pairs = category_pairs(&selection.layouts)?;
    write_atomic(&out.join("pairs.txt"), pairs.to_pairs_file().as_bytes())?;
    let plan = Plan::new(selection.layouts, 0)?;
    write_atomic(&out.join("images.json"), plan.coco_images_json().as_bytes())?;
    println!(
        "{} layouts, {} category pairs -> {}",
        plan.len(),
        pairs.pairs.len(),
        out.display()
    );
    Ok(())
}
