//! Runs the `semi bench` table from the library: `cargo run --release -p semi-bench --example
//! bench -- [--runs N] [--only SUBSTRING]... [--torch PYTHON] [--size PIXELS]
//! [--weights f32,f16]`.

use anyhow::{bail, Context, Result};
use semi_bench::models::{self as bench, BenchOptions};

fn main() -> Result<()> {
    let mut opts = BenchOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => opts.runs = value()?.parse().context("--runs")?,
            "--size" => {
                let s: usize = value()?.parse().context("--size")?;
                (opts.height, opts.width) = (s, s);
            }
            "--only" => opts.only.push(value()?),
            "--torch" => opts.torch = Some(value()?),
            "--weights" => opts.weights = bench::parse_weights(&value()?)?,
            other => bail!("unknown argument `{other}`"),
        }
    }
    let rows = semi_bench::run(&opts, &mut |m| eprintln!("[bench] {m}"))?;
    println!("{}", bench::markdown(&rows));
    Ok(())
}
