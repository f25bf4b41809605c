//! Scoring a finished method directory: run a detector on every image of the merged record and
//! score the layout's objects.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::batch::MethodDir;
use crate::detector::{DetectRequest, Detection, Detector};
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
            width: item.layout.width,
            height: item.layout.height,
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
