//! Success rate and IoU with one standard error, and paired differences, for rows of several
//! `semi eval` reports over the same layouts (docs/toyworld-latent.md).
//!
//! Each row is one method of one report's `objects.csv`. The two objects of a layout share its
//! noise and are not independent, so every standard error is clustered by layout: the figure is
//! the mean over layouts of the layout's mean, and its standard error that of the layout means.
//! A difference between two rows is paired by layout (the same layouts and noise for every row):
//! the mean and standard error of the per-layout differences.
//!
//! ```sh
//! cargo run --release -p semi-cli --example paired -- \
//!     --row "Gaussian=out/base/report/objects.csv:sd" \
//!     --row "SemI=out/semi/report/objects.csv:semi" --against SemI
//! ```

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// A row: `LABEL=OBJECTS.csv:METHOD` (the method's objects of that report; repeatable, in
    /// table order).
    #[arg(long = "row", required = true)]
    rows: Vec<String>,
    /// Add a column of paired differences against this row's label (repeatable).
    #[arg(long)]
    against: Vec<String>,
}

/// Per layout id: (sum of success, sum of IoU, objects).
type ByLayout = BTreeMap<String, (f64, f64, usize)>;

struct Row {
    label: String,
    layouts: ByLayout,
}

fn read_row(spec: &str) -> Result<Row> {
    let (label, rest) = spec
        .split_once('=')
        .with_context(|| format!("--row {spec:?}: expected LABEL=OBJECTS.csv:METHOD"))?;
    let (path, method) = rest
        .rsplit_once(':')
        .with_context(|| format!("--row {spec:?}: expected LABEL=OBJECTS.csv:METHOD"))?;
    let path = PathBuf::from(path);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{}: no column {name:?}", path.display()))
    };
    let (c_method, c_id, c_iou, c_success) =
        (col("method")?, col("id")?, col("iou")?, col("success")?);
    let mut layouts = ByLayout::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != header.len() {
            bail!(
                "{}:{}: {} fields, expected {}",
                path.display(),
                n + 2,
                f.len(),
                header.len()
            );
        }
        if f[c_method] != method {
            continue;
        }
        let iou: f64 = f[c_iou]
            .parse()
            .with_context(|| format!("{}:{}: iou", path.display(), n + 2))?;
        let success = match f[c_success] {
            "true" => 1.0,
            "false" => 0.0,
            s => bail!("{}:{}: success {s:?}", path.display(), n + 2),
        };
        let e = layouts.entry(f[c_id].to_string()).or_default();
        e.0 += success;
        e.1 += iou;
        e.2 += 1;
    }
    if layouts.is_empty() {
        bail!("{}: no objects of method {method:?}", path.display());
    }
    Ok(Row {
        label: label.to_string(),
        layouts,
    })
}

/// Mean and standard error of `v`.
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, (var / n).sqrt())
}

/// Per-layout means of success, or of IoU when `iou`, in layout order.
fn means(row: &Row, iou: bool) -> Vec<f64> {
    row.layouts
        .values()
        .map(|(s, i, n)| if iou { i } else { s } / *n as f64)
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rows: Vec<Row> = args
        .rows
        .iter()
        .map(|s| read_row(s))
        .collect::<Result<_>>()?;
    let ids: Vec<&String> = rows[0].layouts.keys().collect();
    for r in &rows[1..] {
        if r.layouts.keys().collect::<Vec<_>>() != ids {
            bail!(
                "rows {:?} and {:?} cover different layouts; paired figures need the same ones",
                rows[0].label,
                r.label
            );
        }
    }
    let against: Vec<&Row> = args
        .against
        .iter()
        .map(|a| {
            rows.iter()
                .find(|r| r.label == *a)
                .with_context(|| format!("--against {a:?}: no row of that label"))
        })
        .collect::<Result<_>>()?;
    let objects: usize = rows[0].layouts.values().map(|v| v.2).sum();
    println!(
        "{} layouts, {objects} objects per row; ± one standard error, clustered by layout; \
         differences paired by layout\n",
        ids.len()
    );
    let mut head = String::from("| row | R_suc % | IoU |");
    let mut rule = String::from("|---|---:|---:|");
    for a in &against {
        head.push_str(&format!(" R_suc − {} (points) | in s.e. |", a.label));
        rule.push_str("---:|---:|");
    }
    println!("{head}\n{rule}");
    for r in &rows {
        let (s, se) = mean_se(&means(r, false));
        let (i, ie) = mean_se(&means(r, true));
        let mut line = format!(
            "| {} | {:.1} ± {:.1} | {i:.3} ± {ie:.3} |",
            r.label,
            100.0 * s,
            100.0 * se
        );
        for a in &against {
            if a.label == r.label {
                line.push_str(" | |");
                continue;
            }
            let d: Vec<f64> = means(r, false)
                .iter()
                .zip(means(a, false))
                .map(|(x, y)| x - y)
                .collect();
            let (dm, dse) = mean_se(&d);
            let z = if dse > 0.0 { dm / dse } else { 0.0 };
            line.push_str(&format!(
                " {:+.1} ± {:.1} | {z:+.1} |",
                100.0 * dm,
                100.0 * dse
            ));
        }
        println!("{line}");
    }
    Ok(())
}
