//! Reports over several methods: a Markdown table shaped like the paper's Table 1, CSV, JSON.
//!
//! - Table 1 columns: `IoU`, `IoU_s`, `IoU_m`, `IoU_l` (mean IoU, 2 decimals) then `R_suc %`,
//!   `R_suc^s %`, ... (success rate in percent, 2 decimals), one row per method, followed by
//!   the object counts and the split by objects per sample (the paper's 1-object / 2-object
//!   samples). An empty subset prints `-`.
//! - `summary.csv`: `method,subset,objects,successes,mean_iou,success_rate` with subsets `all`,
//!   `small`, `medium`, `large`, `objects=1`, `objects=2`, ...; rates as fractions.
//! - `objects.csv`: one row per target object.
//! - `summary.json`: format tag, detector, thresholds and summaries per method.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::batch::MethodDir;
use crate::detector::Detector;
use crate::evaluate::{evaluate_method, MethodResult};
use crate::figures::{bar_chart, method_sheet};
use crate::fsutil::{create_dir, write_atomic, write_json_atomic, write_png_atomic};
use crate::metrics::{MetricConfig, SizeBucket, Stats, Summary};
use crate::plan::Plan;

pub const REPORT_FORMAT: &str = "semi-eval-report/1";

fn iou(s: &Stats) -> String {
    s.mean_iou().map_or("-".into(), |v| format!("{v:.2}"))
}

fn pct(s: &Stats) -> String {
    s.success_rate()
        .map_or("-".into(), |v| format!("{:.2}", 100.0 * v))
}

fn object_counts(results: &[MethodResult]) -> Vec<usize> {
    let set: BTreeSet<usize> = results
        .iter()
        .flat_map(|r| r.summary.by_object_count.keys().copied())
        .collect();
    set.into_iter().collect()
}

/// The Markdown report (see the module docs).
pub fn markdown_table(results: &[MethodResult]) -> String {
    let mut out = String::new();
    out.push_str(
        "| Method | IoU | IoU_s | IoU_m | IoU_l | R_suc % | R_suc^s % | R_suc^m % | R_suc^l % |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        let s = &r.summary;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.method,
            iou(&s.overall),
            iou(&s.small),
            iou(&s.medium),
            iou(&s.large),
            pct(&s.overall),
            pct(&s.small),
            pct(&s.medium),
            pct(&s.large)
        );
    }
    let counts = object_counts(results);
    out.push_str("\nObjects per subset:\n\n| Method | all | small | medium | large |");
    for n in &counts {
        let _ = write!(out, " in {n}-object samples |");
    }
    out.push_str("\n|---|---:|---:|---:|---:|");
    out.push_str(&"---:|".repeat(counts.len()));
    out.push('\n');
    for r in results {
        let s = &r.summary;
        let _ = write!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.method, s.overall.count, s.small.count, s.medium.count, s.large.count
        );
        for n in &counts {
            let c = s.by_object_count.get(n).map_or(0, |st| st.count);
            let _ = write!(out, " {c} |");
        }
        out.push('\n');
    }
    if !counts.is_empty() {
        out.push_str("\nBy objects per sample:\n\n| Method |");
        for n in &counts {
            let _ = write!(out, " IoU ({n} obj) | R_suc % ({n} obj) |");
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|---:|".repeat(counts.len()));
        out.push('\n');
        for r in results {
            let _ = write!(out, "| {} |", r.method);
            for n in &counts {
                let st = r
                    .summary
                    .by_object_count
                    .get(n)
                    .copied()
                    .unwrap_or_default();
                let _ = write!(out, " {} | {} |", iou(&st), pct(&st));
            }
            out.push('\n');
        }
    }
    if let Some(r) = results.first() {
        let c = &r.config;
        let _ = write!(
            out,
            "\nDetector: {}. Success: IoU > {}. Sizes at {}x{}: small < {} px, large > {} px.\n",
            r.detector,
            c.success_iou,
            c.reference_width,
            c.reference_height,
            c.small_below,
            c.large_above
        );
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.6}"))
}

/// Subsets of a summary in report order, with their CSV names.
pub fn subsets(s: &Summary) -> Vec<(String, Stats)> {
    let mut out = vec![("all".to_string(), s.overall)];
    for b in SizeBucket::ALL {
        out.push((b.name().to_string(), *s.bucket(b)));
    }
    for (n, st) in &s.by_object_count {
        out.push((format!("objects={n}"), *st));
    }
    out
}

/// `summary.csv` (module docs).
pub fn summary_csv(results: &[MethodResult]) -> String {
    let mut out = String::from("method,subset,objects,successes,mean_iou,success_rate\n");
    for r in results {
        for (name, st) in subsets(&r.summary) {
            let _ = writeln!(
                out,
                "{},{name},{},{},{},{}",
                csv_field(&r.method),
                st.count,
                st.successes,
                opt(st.mean_iou()),
                opt(st.success_rate())
            );
        }
    }
    out
}

/// `objects.csv`: `method,id,object,objects_in_sample,category,area,size,iou,success,other_iou,
/// other_success` (the last two: another of the layout's categories in this box).
pub fn objects_csv(results: &[MethodResult]) -> String {
    let mut out = String::from(
        "method,id,object,objects_in_sample,category,area,size,iou,success,other_iou,other_success\n",
    );
    for r in results {
        for o in &r.objects {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{:.1},{},{:.6},{},{:.6},{}",
                csv_field(&r.method),
                csv_field(&o.id),
                o.object,
                o.objects_in_sample,
                csv_field(&o.category),
                o.area,
                o.size.name(),
                o.iou,
                o.success,
                o.other_iou,
                o.other_success
            );
        }
    }
    out
}

#[derive(Serialize)]
struct JsonMethod<'a> {
    method: &'a str,
    detector: &'a str,
    config: &'a MetricConfig,
    summary: &'a Summary,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    format: &'static str,
    methods: Vec<JsonMethod<'a>>,
}

/// `summary.json` as a value (module docs).
pub fn summary_json(results: &[MethodResult]) -> serde_json::Value {
    let report = JsonReport {
        format: REPORT_FORMAT,
        methods: results
            .iter()
            .map(|r| JsonMethod {
                method: &r.method,
                detector: &r.detector,
                config: &r.config,
                summary: &r.summary,
            })
            .collect(),
    };
    serde_json::to_value(report).expect("reports serialise")
}

/// The files [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub table: PathBuf,
    pub summary_csv: PathBuf,
    pub objects_csv: PathBuf,
    pub json: PathBuf,
    pub chart: PathBuf,
}

/// Write `table.md`, `summary.csv`, `objects.csv`, `summary.json` and `chart.png` into `dir`.
pub fn write_report(dir: &Path, results: &[MethodResult]) -> Result<ReportFiles> {
    create_dir(dir)?;
    let files = ReportFiles {
        table: dir.join("table.md"),
        summary_csv: dir.join("summary.csv"),
        objects_csv: dir.join("objects.csv"),
        json: dir.join("summary.json"),
        chart: dir.join("chart.png"),
    };
    write_atomic(&files.table, markdown_table(results).as_bytes())?;
    write_atomic(&files.summary_csv, summary_csv(results).as_bytes())?;
    write_atomic(&files.objects_csv, objects_csv(results).as_bytes())?;
    write_json_atomic(&files.json, &summary_json(results))?;
    let rows: Vec<(String, Summary)> = results
        .iter()
        .map(|r| (r.method.clone(), r.summary.clone()))
        .collect();
    write_png_atomic(&files.chart, &bar_chart(&rows)?, &[("semi", "eval chart")])?;
    Ok(files)
}

/// Settings of [`run_report`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    pub metrics: MetricConfig,
    /// Images per contact sheet (0: no sheets).
    pub sheet_images: usize,
    pub sheet_columns: u32,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            metrics: MetricConfig::default(),
            sheet_images: 16,
            sheet_columns: 4,
        }
    }
}

/// Evaluate every method of `methods` under `out` (each merged beforehand) with the detector
/// `detector_for(method)` gives (one results file per method for COCO results; the same toy
/// detector for all), then write the report files into `report_dir` plus `sheet-<method>.png`
/// per method. Returns the results in `methods` order and the files.
pub fn run_report(
    out: &Path,
    plan: &Plan,
    methods: &[String],
    mut detector_for: impl FnMut(&str) -> Result<Box<dyn Detector>>,
    options: &ReportOptions,
    report_dir: &Path,
) -> Result<(Vec<MethodResult>, ReportFiles)> {
    if methods.is_empty() {
        anyhow::bail!("no methods to report");
    }
    create_dir(report_dir)?;
    let mut results = Vec::with_capacity(methods.len());
    for m in methods {
        let dir = MethodDir::new(out, m)?;
        let detector = detector_for(m).with_context(|| format!("detector for method {m:?}"))?;
        let (result, dets) = evaluate_method(&dir, plan, detector.as_ref(), &options.metrics)
            .with_context(|| format!("evaluating method {m:?}"))?;
        if options.sheet_images > 0 {
            let sheet = method_sheet(
                &dir,
                plan,
                options.sheet_images,
                Some(&dets),
                options.sheet_columns,
            )?;
            write_png_atomic(
                &report_dir.join(format!("sheet-{m}.png")),
                &sheet,
                &[("method", m)],
            )?;
        }
        results.push(result);
    }
    let files = write_report(report_dir, &results)?;
    Ok((results, files))
}
