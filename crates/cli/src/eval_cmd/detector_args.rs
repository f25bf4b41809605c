//! Detector, metric and report flags shared by `semi eval report` and `semi eval run`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use semi_eval::{
    read_image_ids, CategoryMap, CocoResults, Detector, MetricConfig, Plan, ReportOptions,
    ToyDetector,
};

/// Gives each method its detector.
pub type DetectorFor = Box<dyn FnMut(&str) -> Result<Box<dyn Detector>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetectorKind {
    /// The toy world's exact colour detector (needs no files).
    Toy,
    /// Detections from any detector, one COCO results file per method: `<results>/<method>.json`.
    CocoResults,
}

#[derive(Args, Debug, Clone)]
pub struct DetectorArgs {
    #[arg(long, value_enum, default_value_t = DetectorKind::Toy)]
    pub detector: DetectorKind,
    /// Folder of COCO results files, `<method>.json` each (--detector coco-results).
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// The COCO image list the results' image ids refer to (`eval samples --images-out`)
    /// [default: the plan's own ids: COCO image ids, else layout positions].
    #[arg(long, value_name = "FILE")]
    pub images: Option<PathBuf>,
    /// Category ids of the results: `[{"id", "name"}]` or an instances file [default: COCO's 80].
    #[arg(long, value_name = "FILE")]
    pub categories: Option<PathBuf>,
    /// Detections scoring below this are ignored.
    #[arg(long, default_value_t = 0.0)]
    pub min_score: f64,
    /// Success when IoU is above this.
    #[arg(long, default_value_t = 0.5)]
    pub success_iou: f64,
    /// Small boxes: area below this many pixels at --reference-size (the paper: 150^2 at 512).
    #[arg(long, default_value_t = 150.0 * 150.0)]
    pub small_below: f64,
    /// Large boxes: area above this many pixels at --reference-size (the paper: 300^2 at 512).
    #[arg(long, default_value_t = 300.0 * 300.0)]
    pub large_above: f64,
    /// The square image size the size thresholds refer to; boxes of other image sizes are
    /// scaled by their share of the image area.
    #[arg(long, default_value_t = 512)]
    pub reference_size: u32,
    /// Images per contact sheet (0: none).
    #[arg(long, default_value_t = 16)]
    pub sheet: usize,
}

impl DetectorArgs {
    pub fn report_options(&self) -> Result<ReportOptions> {
        let m = MetricConfig {
            success_iou: self.success_iou,
            small_below: self.small_below,
            large_above: self.large_above,
            reference_width: self.reference_size,
            reference_height: self.reference_size,
        };
        if !(0.0..1.0).contains(&m.success_iou) {
            bail!("--success-iou must lie in [0, 1)");
        }
        if !(m.small_below >= 0.0 && m.small_below <= m.large_above && m.large_above.is_finite()) {
            bail!("size thresholds need 0 <= --small-below <= --large-above");
        }
        if m.reference_width == 0 {
            bail!("--reference-size must be positive");
        }
        Ok(ReportOptions {
            metrics: m,
            sheet_images: self.sheet,
            ..ReportOptions::default()
        })
    }

    /// Check the flags against each other before any work starts.
    pub fn check(&self) -> Result<()> {
        match self.detector {
            DetectorKind::Toy => {
                if self.results.is_some() || self.images.is_some() || self.categories.is_some() {
                    bail!("--results, --images and --categories go with --detector coco-results");
                }
            }
            DetectorKind::CocoResults => {
                if self.results.is_none() {
                    bail!("--detector coco-results needs --results DIR (one <method>.json each)");
                }
            }
        }
        self.report_options().map(|_| ())
    }

    /// A function giving each method its detector (see `semi_eval::run_report`).
    pub fn detectors(&self, plan: &Plan) -> Result<DetectorFor> {
        self.check()?;
        match self.detector {
            DetectorKind::Toy => Ok(Box::new(|_: &str| {
                Ok(Box::new(ToyDetector::default()) as Box<dyn Detector>)
            })),
            DetectorKind::CocoResults => {
                let dir = self.results.clone().expect("checked");
                let ids = match &self.images {
                    Some(p) => image_ids_for(p, plan)?,
                    None => plan.image_ids(),
                };
                let categories = match &self.categories {
                    Some(p) => CategoryMap::from_path(p)?,
                    None => CategoryMap::coco(),
                };
                let min_score = self.min_score;
                Ok(Box::new(move |method: &str| {
                    let path = dir.join(format!("{method}.json"));
                    let r = CocoResults::from_path(&path, &ids, &categories, min_score)?;
                    if r.below_threshold > 0 {
                        eprintln!(
                            "{}: {} detections below --min-score {min_score} ignored",
                            path.display(),
                            r.below_threshold
                        );
                    }
                    Ok(Box::new(r) as Box<dyn Detector>)
                }))
            }
        }
    }
}

/// The image list's ids, checked to cover exactly the plan's samples.
fn image_ids_for(path: &Path, plan: &Plan) -> Result<std::collections::BTreeMap<String, i64>> {
    let ids = read_image_ids(path)?;
    if let Some(missing) = plan.items().iter().find(|it| !ids.contains_key(&it.id)) {
        bail!(
            "{}: no image for sample {:?} of the layouts file (made for another layouts file?)",
            path.display(),
            missing.id
        );
    }
    Ok(ids)
}
