//! Success rate and IoU with one standard error, and paired differences, for rows of several
//! `semi eval` reports over the same layouts (docs/toyworld-latent.md).
//!
//! Each row is one method of one report's `objects.csv`. The two objects of a layout share its
//! noise and are not independent, so every standard error is clustered by layout: the figure is
//! the mean over layouts of the layout's mean, and its standard error that of the layout means.
//! A difference between two rows is paired by layout (the same layouts and noise for every row):
//! the mean and standard error of the per-layout differences.
//!
//! Where the reports have `other_success` (another of the layout's categories detected in a
//! box), a second table gives that rate and the balance own − other per box: how much the start
//! decides which object forms where, when the prompt names both.
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

/// Per layout id: sums over its objects.
#[derive(Default)]
struct Sums {
    success: f64,
    iou: f64,
    /// Another of the layout's categories in the box.
    other: f64,
    objects: usize,
}

type ByLayout = BTreeMap<String, Sums>;

struct Row {
    label: String,
    layouts: ByLayout,
    /// The report has `other_success`.
    has_other: bool,
}

/// What a per-layout mean is taken of.
#[derive(Clone, Copy)]
enum Stat {
    Success,
    Iou,
    Other,
    /// Success minus other.
    Balance,
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
    let c_other = header.iter().position(|h| *h == "other_success");
    let flag = |v: &str, what: &str, line: usize| match v {
        "true" => Ok(1.0),
        "false" => Ok(0.0),
        s => bail!("{}:{line}: {what} {s:?}", path.display()),
    };
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
        let e = layouts.entry(f[c_id].to_string()).or_default();
        e.success += flag(f[c_success], "success", n + 2)?;
        if let Some(c) = c_other {
            e.other += flag(f[c], "other_success", n + 2)?;
        }
        e.iou += iou;
        e.objects += 1;
    }
    if layouts.is_empty() {
        bail!("{}: no objects of method {method:?}", path.display());
    }
    Ok(Row {
        label: label.to_string(),
        layouts,
        has_other: c_other.is_some(),
    })
}

/// Mean and standard error of `v`.
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, (var / n).sqrt())
}

/// Per-layout means of `stat`, in layout order.
fn means(row: &Row, stat: Stat) -> Vec<f64> {
    row.layouts
        .values()
        .map(|v| {
            let sum = match stat {
                Stat::Success => v.success,
                Stat::Iou => v.iou,
                Stat::Other => v.other,
                Stat::Balance => v.success - v.other,
            };
            sum / v.objects as f64
        })
        .collect()
}

/// ` {diff} ± {se} | {z} |` cells of `stat`'s paired differences of `r` against each row of
/// `against` (blank against itself).
fn paired_cells(r: &Row, against: &[&Row], stat: Stat) -> String {
    let mut cells = String::new();
    for a in against {
        if a.label == r.label {
            cells.push_str(" | |");
            continue;
        }
        let d: Vec<f64> = means(r, stat)
            .iter()
            .zip(means(a, stat))
            .map(|(x, y)| x - y)
            .collect();
        let (dm, dse) = mean_se(&d);
        let z = if dse > 0.0 { dm / dse } else { 0.0 };
        cells.push_str(&format!(
            " {:+.1} ± {:.1} | {z:+.1} |",
            100.0 * dm,
            100.0 * dse
        ));
    }
    cells
}

/// A table's header and rule: `first` (three columns), then a difference column, named by
/// `diff` with `{}` for the label, and its "in s.e." column per row of `against`.
fn print_head(first: &str, against: &[&Row], diff: &str) {
    let mut head = String::from(first);
    let mut rule = String::from("|---|---:|---:|");
    for a in against {
        head.push_str(&format!(" {} | in s.e. |", diff.replace("{}", &a.label)));
        rule.push_str("---:|---:|");
    }
    println!("{head}\n{rule}");
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
    let objects: usize = rows[0].layouts.values().map(|v| v.objects).sum();
    println!(
        "{} layouts, {objects} objects per row; ± one standard error, clustered by layout; \
         differences paired by layout\n",
        ids.len()
    );
    print_head("| row | R_suc % | IoU |", &against, "R_suc − {} (points)");
    for r in &rows {
        let (s, se) = mean_se(&means(r, Stat::Success));
        let (i, ie) = mean_se(&means(r, Stat::Iou));
        println!(
            "| {} | {:.1} ± {:.1} | {i:.3} ± {ie:.3} |{}",
            r.label,
            100.0 * s,
            100.0 * se,
            paired_cells(r, &against, Stat::Success)
        );
    }
    if !rows.iter().all(|r| r.has_other) {
        return Ok(());
    }
    println!(
        "\nWhich object forms in each box: own = R_suc; other = another of the layout's \
         categories detected in the box; balance = own − other\n"
    );
    print_head(
        "| row | other in the box % | balance (points) |",
        &against,
        "balance − {}'s (points)",
    );
    for r in &rows {
        let (o, oe) = mean_se(&means(r, Stat::Other));
        let (b, be) = mean_se(&means(r, Stat::Balance));
        println!(
            "| {} | {:.1} ± {:.1} | {:+.1} ± {:.1} |{}",
            r.label,
            100.0 * o,
            100.0 * oe,
            100.0 * b,
            100.0 * be,
            paired_cells(r, &against, Stat::Balance)
        );
    }
    Ok(())
}
