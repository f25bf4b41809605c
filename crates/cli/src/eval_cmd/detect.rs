//! `semi eval detect`: run a detector over a folder of images and write a COCO results file,
//! for `semi eval coco-metrics` (the YOLO score) or `--detector coco-results` in reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use semi_eval::{CategoryMap, DetectRequest, Detection, Detector, ToyDetector};

use super::detector_args::{yolo_conf, DetectorSpec, NetworkArgs};
use crate::common::DeviceArg;

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// yolov8:WEIGHTS (tools/convert_yolo.py's safetensors) or toy.
    #[arg(long, value_name = "DETECTOR")]
    pub detector: DetectorSpec,
    /// The folder of PNG images (a method's output folder, or any other).
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Where the COCO results JSON goes.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// A COCO file whose `images` give each file its image id (by file name without extension;
    /// `eval samples --gt-out` or `--images-out`) [default: file names that are integers].
    #[arg(long, value_name = "ANNOTATIONS.json")]
    pub coco: Option<PathBuf>,
    /// Category ids for the results: `[{"id", "name"}]` or an instances file [default: the
    /// detector's own: COCO's 1-90 for COCO's 80 classes, else 1..n in class order].
    #[arg(long, value_name = "FILE")]
    pub categories: Option<PathBuf>,
    /// Candidates' score threshold (ultralytics' validation: 0.001).
    #[arg(long, default_value_t = 0.001)]
    pub conf: f32,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Where a network detector runs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// Image files of `dir` (PNG), sorted by name.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?;
    let mut files = Vec::new();
    for e in entries {
        let path = e?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if ext.eq_ignore_ascii_case("png") && path.is_file() {
            files.push(path);
        } else if ["jpg", "jpeg"].iter().any(|j| ext.eq_ignore_ascii_case(j)) {
            bail!(
                "{}: JPEG is not read (semi reads PNG; convert with e.g. `mogrify -format png`)",
                path.display()
            );
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("{}: no PNG images", dir.display());
    }
    Ok(files)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Each file's image id: from the COCO file's `images` by name, or the file name as an integer.
fn image_ids(files: &[PathBuf], coco: Option<&Path>) -> Result<Vec<i64>> {
    let by_name: Option<BTreeMap<String, i64>> = coco.map(semi_eval::read_image_ids).transpose()?;
    files
        .iter()
        .map(|f| {
            let s = stem(f);
            match (&by_name, coco) {
                (Some(map), Some(c)) => map.get(&s).copied().with_context(|| {
                    format!(
                        "{}: no image named {s:?} in {} (an annotations file of other images?)",
                        f.display(),
                        c.display()
                    )
                }),
                _ => s.trim_start_matches('0').parse::<i64>().or_else(|_| {
                    if s.chars().all(|c| c == '0') && !s.is_empty() {
                        Ok(0)
                    } else {
                        bail!(
                            "{}: the file name is not an image id; give --coco with the \
                             images' ids",
                            f.display()
                        )
                    }
                }),
            }
        })
        .collect()
}

/// One COCO results entry, rounded as ultralytics writes them (boxes to 1e-3 px, scores to
/// 1e-5).
fn entry(image_id: i64, category_id: i64, d: &Detection) -> serde_json::Value {
    let r = |v: f64, digits: i32| {
        let k = 10f64.powi(digits);
        (v * k).round() / k
    };
    let [x0, y0, x1, y1] = d.bbox;
    serde_json::json!({
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [r(x0, 3), r(y0, 3), r(x1 - x0, 3), r(y1 - y0, 3)],
        "score": r(d.score, 5),
    })
}

pub fn run(a: &DetectArgs) -> Result<()> {
    crate::common::check_path(&a.out, "--out")?;
    let files = list_images(&a.images)?;
    let ids = image_ids(&files, a.coco.as_deref())?;
    let (detector, own_categories): (Box<dyn Detector>, Option<CategoryMap>) = match &a.detector {
        DetectorSpec::Yolo(w) => {
            if !(0.0..=1.0).contains(&a.conf) {
                bail!("--conf must lie in [0, 1]");
            }
            let y = a
                .network
                .open_yolo(w, a.device, yolo_conf(f64::from(a.conf)))?;
            let map = y.category_map();
            (Box::new(y), Some(map))
        }
        DetectorSpec::Toy => (Box::new(ToyDetector::default()), None),
        DetectorSpec::ToyShapes => (Box::new(ToyDetector::shapes()), None),
        DetectorSpec::CocoResults(_) => {
            bail!("--detector coco-results has its detections already: nothing to detect")
        }
    };
    let categories = match (&a.categories, own_categories) {
        (Some(p), _) => CategoryMap::from_path(p)?,
        (None, Some(m)) => m,
        (None, None) => bail!(
            "--detector {}: give --categories (ids for its names)",
            a.detector
        ),
    };
    let id_of: BTreeMap<String, i64> = categories
        .0
        .iter()
        .map(|(id, n)| (n.to_lowercase(), *id))
        .collect();

    let bar = crate::common::bar(
        "{msg} {pos}/{len} [{bar:30}] ETA {eta_precise}",
        files.len(),
        &detector.name(),
    );
    let chunk = a.network.detect_batch.max(1);
    let mut results = Vec::new();
    let mut count = 0usize;
    for (paths, ids) in files.chunks(chunk).zip(ids.chunks(chunk)) {
        let names: Vec<String> = paths.iter().map(|p| stem(p)).collect();
        let requests: Vec<DetectRequest<'_>> = paths
            .iter()
            .zip(&names)
            .map(|(p, n)| DetectRequest {
                id: n,
                image_path: p,
                size: None,
            })
            .collect();
        let found = detector.detect_all(&requests)?;
        for ((path, &image_id), dets) in paths.iter().zip(ids).zip(&found) {
            for d in dets {
                let Some(&cat) = id_of.get(&d.category.to_lowercase()) else {
                    bail!(
                        "{}: category {:?} has no id in the category list",
                        path.display(),
                        d.category
                    );
                };
                results.push(entry(image_id, cat, d));
                count += 1;
            }
        }
        bar.inc(paths.len() as u64);
    }
    bar.finish_and_clear();
    let text = serde_json::to_string(&results)? + "\n";
    semi_eval::write_atomic(&a.out, text.as_bytes())?;
    println!(
        "{}: {count} detections in {} images -> {}",
        detector.name(),
        files.len(),
        a.out.display()
    );
    Ok(())
}
