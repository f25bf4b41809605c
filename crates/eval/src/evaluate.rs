//! Scoring a finished method directory: run a detector on every image of the merged record and
//! score the layout's objects.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use semi_layout::{BBox, Layout, LayoutObject};
use serde::Serialize;

use crate::batch::MethodDir;
use crate::coco::CocoInstances;
use crate::detector::{CategoryMap, CocoResults, DetectRequest, Detection, Detector};
use crate::metrics::{score_layout, MetricConfig, ObjectScore, Summary};
use crate::plan::Plan;

/// Everything measured for one method.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodResult {
    pub method: String,
    pub detector: String,
    pub config: MetricConfig,
    pub summary: Summary,
    /// Per object, in plan order.
    pub objects: Vec<ObjectScore>,
}

/// Detections per image, in plan order, for figures (`(id, detections)`).
pub type ImageDetections = Vec<(String, Vec<Detection>)>;

/// Evaluate method `dir` over `plan` (its merge must have been done). Returns the result and
/// the detections of every image.
pub fn evaluate_method(
    dir: &MethodDir,
    plan: &Plan,
    detector: &dyn Detector,
    cfg: &MetricConfig,
) -> Result<(MethodResult, ImageDetections)> {
    let merged = dir.read_merged(plan)?;
    let mut items = Vec::with_capacity(merged.items.len());
    for m in &merged.items {
        let item = plan
            .get(&m.id)
            .with_context(|| format!("merged item {:?} is not in the plan", m.id))?;
        items.push((item, dir.dir().join(&m.image)));
    }
    let requests: Vec<DetectRequest<'_>> = items
        .iter()
        .map(|(item, path)| DetectRequest {
            id: &item.id,
            image_path: path,
            size: Some((item.layout.width, item.layout.height)),
        })
        .collect();
    let found = detector.detect_all(&requests)?;
    if found.len() != items.len() {
        anyhow::bail!(
            "detector {} answered {} of {} images",
            detector.name(),
            found.len(),
            items.len()
        );
    }
    let mut objects = Vec::new();
    let mut all = Vec::with_capacity(items.len());
    for ((item, _), dets) in items.iter().zip(found) {
        objects.extend(score_layout(&item.id, &item.layout, &dets, cfg));
        all.push((item.id.clone(), dets));
    }
    Ok((
        MethodResult {
            method: dir.method().to_string(),
            detector: detector.name(),
            config: *cfg,
            summary: Summary::from_scores(&objects),
            objects,
        },
        all,
    ))
}

/// The paper's per-object scores for a COCO ground truth and a COCO results file: every
/// annotation that is not a crowd box is an object, scored with its best IoU against the
/// detections of its category in its image (`min_score` and up). Layouts from
/// `Plan::coco_ground_truth_json` give the same numbers as `semi eval report`. Returns the
/// scores and how many annotations were left out (crowd boxes, boxes of no area).
pub fn evaluate_coco(
    gt: &CocoInstances,
    results_json: &str,
    cfg: &MetricConfig,
    min_score: f64,
) -> Result<(Vec<ObjectScore>, usize)> {
    let categories = CategoryMap::from_instances(gt);
    let ids: BTreeMap<String, i64> = gt.images.iter().map(|i| (i.id.to_string(), i.id)).collect();
    let results = CocoResults::from_json(results_json, &ids, &categories, min_score)?;
    let by_image = gt.annotations_by_image();
    let mut scores = Vec::new();
    let mut left_out = 0;
    for im in &gt.images {
        let (w, h) = (f64::from(im.width), f64::from(im.height));
        let mut objects = Vec::new();
        for a in by_image.get(&im.id).map(Vec::as_slice).unwrap_or_default() {
            let [x, y, bw, bh] = a.bbox;
            let clamped = [x / w, y / h, (x + bw) / w, (y + bh) / h].map(|v| v.clamp(0.0, 1.0));
            let bbox = BBox::new(clamped[0], clamped[1], clamped[2], clamped[3]);
            let name = categories.0.get(&a.category_id);
            match (a.iscrowd, bbox, name) {
                (0, Ok(b), Some(n)) => objects.push(LayoutObject::new(n.clone(), n.clone(), b)),
                _ => left_out += 1,
            }
        }
        let layout = Layout::new("", im.width, im.height, objects);
        let id = im.id.to_string();
        scores.extend(score_layout(&id, &layout, results.for_id(&id), cfg));
    }
    Ok((scores, left_out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    fn layout(id: &str, w: u32, h: u32, objects: &[(&str, [f64; 4])]) -> Layout {
        let objects = objects
            .iter()
            .map(|(c, b)| LayoutObject::new(*c, *c, BBox::new(b[0], b[1], b[2], b[3]).unwrap()))
            .collect();
        let mut l = Layout::new("a picture", w, h, objects);
        l.id = Some(id.to_string());
        l
    }

    /// The plan's ground truth scored through COCO files gives the report's per-object scores.
    #[test]
    fn coco_files_score_as_the_report() {
        let plan = Plan::new(
            vec![
                layout(
                    "139",
                    512,
                    512,
                    &[("dog", [0.0, 0.0, 0.2, 0.2]), ("cat", [0.1, 0.1, 0.9, 0.9])],
                ),
                layout("285", 640, 480, &[("dog", [0.5, 0.25, 0.75, 1.0])]),
            ],
            0,
        )
        .unwrap();
        let gt = CocoInstances::from_json(&plan.coco_ground_truth_json()).unwrap();
        let det = |c: &str, b: [f64; 4], s: f64| Detection {
            category: c.into(),
            bbox: b,
            score: s,
        };
        let found: BTreeMap<&str, Vec<Detection>> = BTreeMap::from([
            (
                "139",
                vec![
                    det("dog", [0.0, 0.0, 102.4, 102.4], 0.9),
                    det("cat", [51.2, 51.2, 256.0, 460.8], 0.8),
                    det("cat", [51.2, 51.2, 460.8, 460.8], 0.1),
                ],
            ),
            (
                "285",
                vec![det("person", [320.0, 120.0, 480.0, 480.0], 0.7)],
            ),
        ]);
        let mut results = Vec::new();
        for (id, dets) in &found {
            for d in dets {
                let cat = crate::COCO_CATEGORIES
                    .iter()
                    .find(|c| c.1 == d.category)
                    .unwrap()
                    .0;
                let [x0, y0, x1, y1] = d.bbox;
                results.push(serde_json::json!({"image_id": id.parse::<i64>().unwrap(),
                    "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": d.score}));
            }
        }
        let results = serde_json::to_string(&results).unwrap();
        let cfg = MetricConfig::default();
        for min_score in [0.0, 0.5] {
            let (got, left_out) = evaluate_coco(&gt, &results, &cfg, min_score).unwrap();
            assert_eq!(left_out, 0);
            let mut want = Vec::new();
            for it in plan.items() {
                let dets: Vec<Detection> = found[it.id.as_str()]
                    .iter()
                    .filter(|d| d.score >= min_score)
                    .cloned()
                    .collect();
                want.extend(score_layout(&it.id, &it.layout, &dets, &cfg));
            }
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    (&g.id, &g.category, g.size, g.success),
                    (&w.id, &w.category, w.size, w.success)
                );
                assert!((g.iou - w.iou).abs() < 1e-6 && (g.area - w.area).abs() < 1e-6);
            }
            let overall = Summary::from_scores(&got).overall;
            // dog 1.0, cat 0.5 (or 1.0 with the low-scoring box), dog in 285: 0.
            let want_iou = if min_score > 0.0 { 0.5 } else { 2.0 / 3.0 };
            assert!((overall.mean_iou().unwrap() - want_iou).abs() < 1e-6);
        }
    }
}
