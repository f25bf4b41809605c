//! Detector, metric and report flags shared by `semi eval report`, `semi eval run`,
//! `semi eval detect` and `semi eval coco-metrics`.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;

use anyhow::{bail, Result};
use clap::Args;
use semi_detect::YoloDetector;
use semi_eval::{
    read_image_ids, CategoryMap, CocoResults, Detector, MetricConfig, Plan, ReportOptions,
    ToyDetector,
};

use crate::common::DeviceArg;

/// Gives each method its detector.
pub type DetectorFor = Box<dyn FnMut(&str) -> Result<Box<dyn Detector>>>;

/// Which detector: `toy`, `coco-results[:DIR]` or `yolov8:WEIGHTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectorSpec {
    /// The toy world's exact colour detector (needs no files).
    Toy,
    /// The latent toy world's exact detector, by shape (needs no files).
    ToyShapes,
    /// Detections from any detector, one COCO results file per method: `<DIR>/<method>.json`
    /// (the folder here or in `--results`).
    CocoResults(Option<PathBuf>),
    /// YOLOv8 detect on candle, from a safetensors file of `tools/convert_yolo.py`.
    Yolo(PathBuf),
}

impl FromStr for DetectorSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (word, file) = match s.split_once(':') {
            Some((w, f)) => (w, Some(PathBuf::from(f))),
            None => (s, None),
        };
        match (word, file) {
            ("toy", None) => Ok(DetectorSpec::Toy),
            ("toy-shapes", None) => Ok(DetectorSpec::ToyShapes),
            ("coco-results", dir) => Ok(DetectorSpec::CocoResults(dir)),
            ("yolov8", Some(f)) => Ok(DetectorSpec::Yolo(f)),
            ("yolov8", None) => Err("yolov8 needs its weights: yolov8:FILE.safetensors".into()),
            _ => Err(format!(
                "unknown detector {s:?} (toy, toy-shapes, coco-results[:DIR] or yolov8:WEIGHTS)"
            )),
        }
    }
}

impl std::fmt::Display for DetectorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetectorSpec::Toy => write!(f, "toy"),
            DetectorSpec::ToyShapes => write!(f, "toy-shapes"),
            DetectorSpec::CocoResults(None) => write!(f, "coco-results"),
            DetectorSpec::CocoResults(Some(d)) => write!(f, "coco-results:{}", d.display()),
            DetectorSpec::Yolo(w) => write!(f, "yolov8:{}", w.display()),
        }
    }
}

/// How a network detector runs (`yolov8:`); ultralytics' validation settings by default.
#[derive(Args, Debug, Clone)]
pub struct NetworkArgs {
    /// Images per forward pass of a network detector.
    #[arg(long, default_value_t = 8)]
    pub detect_batch: usize,
    /// The square images are letterboxed to (a multiple of 32; ultralytics' imgsz).
    #[arg(long, default_value_t = semi_detect::detector::IMAGE_SIZE)]
    pub imgsz: usize,
    /// NMS IoU threshold (ultralytics' validation: 0.7).
    #[arg(long, default_value_t = 0.7)]
    pub nms_iou: f32,
    /// At most this many detections per image (ultralytics' validation: 300).
    #[arg(long, default_value_t = 300)]
    pub max_det: usize,
}

impl NetworkArgs {
    /// Open a YOLOv8 weights file with these settings; `conf` is the candidates' threshold.
    pub fn open_yolo(&self, weights: &Path, device: DeviceArg, conf: f32) -> Result<YoloDetector> {
        self.check()?;
        let mut d = YoloDetector::open(weights, &device.device()?)?;
        d.batch = self.detect_batch;
        d.size = self.imgsz;
        d.nms.conf = conf;
        d.nms.iou = self.nms_iou;
        d.nms.max_det = self.max_det;
        Ok(d)
    }

    pub fn check(&self) -> Result<()> {
        if self.imgsz == 0 || !self.imgsz.is_multiple_of(32) {
            bail!("--imgsz must be a positive multiple of 32 (YOLOv8's largest stride)");
        }
        if self.detect_batch == 0 || self.max_det == 0 {
            bail!("--detect-batch and --max-det must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.nms_iou) {
            bail!("--nms-iou must lie in [0, 1]");
        }
        Ok(())
    }
}

/// The per-object metric's thresholds (the paper's by default).
#[derive(Args, Debug, Clone)]
pub struct MetricArgs {
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
}

impl MetricArgs {
    pub fn config(&self) -> Result<MetricConfig> {
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
        Ok(m)
    }
}

#[derive(Args, Debug, Clone)]
pub struct DetectorArgs {
    /// toy, toy-shapes (the latent toy world), coco-results[:DIR] (one <method>.json per method,
    /// from any detector) or yolov8:WEIGHTS (YOLOv8 on candle; tools/convert_yolo.py makes the
    /// safetensors).
    #[arg(long, default_value = "toy", value_name = "DETECTOR")]
    pub detector: DetectorSpec,
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
    /// Detections scoring below this are ignored (for yolov8: its candidates' threshold, at
    /// least ultralytics' 0.001).
    #[arg(long, default_value_t = 0.0)]
    pub min_score: f64,
    /// Where a network detector runs [default: --device where the command has one, else cpu].
    #[arg(long, value_enum)]
    pub detector_device: Option<DeviceArg>,
    #[command(flatten)]
    pub network: NetworkArgs,
    #[command(flatten)]
    pub metric: MetricArgs,
    /// Images per contact sheet (0: none).
    #[arg(long, default_value_t = 16)]
    pub sheet: usize,
}

/// A network detector's candidate threshold for `--min-score`: ultralytics' 0.001 at least.
pub fn yolo_conf(min_score: f64) -> f32 {
    (min_score as f32).max(semi_detect::yolo::Nms::default().conf)
}

impl DetectorArgs {
    pub fn report_options(&self) -> Result<ReportOptions> {
        Ok(ReportOptions {
            metrics: self.metric.config()?,
            sheet_images: self.sheet,
            ..ReportOptions::default()
        })
    }

    /// Check the flags against each other before any work starts.
    pub fn check(&self) -> Result<()> {
        let results_flags =
            self.results.is_some() || self.images.is_some() || self.categories.is_some();
        match &self.detector {
            DetectorSpec::Toy | DetectorSpec::ToyShapes | DetectorSpec::Yolo(_)
                if results_flags =>
            {
                bail!("--results, --images and --categories go with --detector coco-results")
            }
            DetectorSpec::CocoResults(dir) => match (dir, &self.results) {
                (None, None) => bail!(
                    "--detector coco-results needs its folder: coco-results:DIR or --results DIR \
                     (one <method>.json each)"
                ),
                (Some(_), Some(_)) => {
                    bail!("give the results folder once: coco-results:DIR or --results")
                }
                _ => {}
            },
            DetectorSpec::Yolo(w) if !w.is_file() => {
                bail!("--detector yolov8: no weights file {}", w.display())
            }
            _ => {}
        }
        if !self.min_score.is_finite() {
            bail!("--min-score must be a number");
        }
        self.network.check()?;
        self.report_options().map(|_| ())
    }

    /// A function giving each method its detector (see `semi_eval::run_report`). A network is
    /// loaded once, on `--detector-device`, else `device`.
    pub fn detectors(&self, plan: &Plan, device: DeviceArg) -> Result<DetectorFor> {
        self.check()?;
        match &self.detector {
            DetectorSpec::Toy => Ok(Box::new(|_: &str| {
                Ok(Box::new(ToyDetector::default()) as Box<dyn Detector>)
            })),
            DetectorSpec::ToyShapes => Ok(Box::new(|_: &str| {
                Ok(Box::new(ToyDetector::shapes()) as Box<dyn Detector>)
            })),
            DetectorSpec::Yolo(weights) => {
                let device = self.detector_device.unwrap_or(device);
                let yolo = Rc::new(self.network.open_yolo(
                    weights,
                    device,
                    yolo_conf(self.min_score),
                )?);
                Ok(Box::new(move |_: &str| {
                    Ok(Box::new(Rc::clone(&yolo)) as Box<dyn Detector>)
                }))
            }
            DetectorSpec::CocoResults(dir) => {
                let dir = dir.clone().or(self.results.clone()).expect("checked");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_words() {
        let p = |s: &str| s.parse::<DetectorSpec>();
        assert_eq!(p("toy"), Ok(DetectorSpec::Toy));
        assert_eq!(p("toy-shapes"), Ok(DetectorSpec::ToyShapes));
        assert_eq!(p("coco-results"), Ok(DetectorSpec::CocoResults(None)));
        assert_eq!(
            p("coco-results:out/det"),
            Ok(DetectorSpec::CocoResults(Some("out/det".into())))
        );
        assert_eq!(
            p("yolov8:w/yolov8m.safetensors"),
            Ok(DetectorSpec::Yolo("w/yolov8m.safetensors".into()))
        );
        assert!(p("yolov8").unwrap_err().contains("yolov8:FILE"));
        assert!(p("detr").unwrap_err().starts_with("unknown detector"));
        assert_eq!(
            p("yolov8:a.safetensors").unwrap().to_string(),
            "yolov8:a.safetensors"
        );
    }
}
