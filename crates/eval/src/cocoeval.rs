//! COCO detection metrics (bbox): a port of pycocotools' `COCOeval` (`evaluate`, `accumulate`,
//! `summarize`) that gives the same twelve `stats` (AP, AP50, AP75, AP small/medium/large,
//! AR1/10/100, AR small/medium/large), held to pycocotools to 1e-6 by `tests/cocoeval.rs`.
//!
//! What pycocotools does, and so this does too:
//! - images and categories are those of the ground truth (sorted ids); results for an image the
//!   ground truth does not have are an error, results in a category it does not have are unused;
//! - a crowd box (`iscrowd: 1`) is ignored, and a detection's IoU with it is intersection over
//!   the detection's own area;
//! - a ground-truth box's size bucket uses its `area` field (the segmentation's area in COCO's
//!   own files), a detection's its `w * h`; small < 32^2 <= medium < 96^2 <= large, edges
//!   included on both sides as in pycocotools;
//! - detections are ranked by score with ties kept in file order (a stable sort), at most 100
//!   per image and category;
//! - ten IoU thresholds 0.50:0.05:0.95 and 101 recall points, computed as numpy's `linspace`
//!   computes them (the exact doubles matter where an IoU equals a threshold);
//! - a match stores the ground truth's id, and an id of 0 reads as "no match" (pycocotools'
//!   quirk, kept so the figures agree).
//!
//! Where pycocotools would stop with a `KeyError` (a ground-truth box without `area`), the area
//! is taken as `w * h`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The names of [`CocoStats::values`], in pycocotools' `stats` order.
pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// The twelve figures of `COCOeval.summarize`, as fractions (-1 where there is nothing to
/// measure, as pycocotools).
#[derive(Debug, Clone, PartialEq)]
pub struct CocoStats {
    pub values: [f64; 12],
}

impl CocoStats {
    /// `{"AP": ..., ...}` in [`STAT_NAMES`] order.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in STAT_NAMES.iter().zip(self.values) {
            m.insert(k.to_string(), v.into());
        }
        m.into()
    }

    /// The twelve lines pycocotools prints.
    pub fn summary(&self) -> String {
        let rows = [
            (true, "0.50:0.95", "all", 100),
            (true, "0.50", "all", 100),
            (true, "0.75", "all", 100),
            (true, "0.50:0.95", "small", 100),
            (true, "0.50:0.95", "medium", 100),
            (true, "0.50:0.95", "large", 100),
            (false, "0.50:0.95", "all", 1),
            (false, "0.50:0.95", "all", 10),
            (false, "0.50:0.95", "all", 100),
            (false, "0.50:0.95", "small", 100),
            (false, "0.50:0.95", "medium", 100),
            (false, "0.50:0.95", "large", 100),
        ];
        let mut out = String::new();
        for ((ap, iou, area, dets), v) in rows.iter().zip(self.values) {
            let (title, short) = if *ap {
                ("Average Precision", "(AP)")
            } else {
                ("Average Recall", "(AR)")
            };
            out.push_str(&format!(
                " {title:<18} {short} @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = {v:.3}\n"
            ));
        }
        out
    }
}

#[derive(Deserialize)]
struct GtFile {
    images: Vec<GtImage>,
    annotations: Vec<GtAnnotation>,
    categories: Vec<GtCategory>,
}

#[derive(Deserialize)]
struct GtImage {
    id: i64,
}

#[derive(Deserialize)]
struct GtCategory {
    id: i64,
}

#[derive(Deserialize)]
struct GtAnnotation {
    id: i64,
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    area: Option<f64>,
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct ResultEntry {
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    score: f64,
}

/// One box to match.
#[derive(Debug, Clone)]
struct Obj {
    id: i64,
    bbox: [f64; 4],
    area: f64,
    crowd: bool,
    score: f64,
}

/// A ground truth and its detections, ready to evaluate.
pub struct CocoEval {
    img_ids: Vec<i64>,
    cat_ids: Vec<i64>,
    gts: HashMap<(i64, i64), Vec<Obj>>,
    dts: HashMap<(i64, i64), Vec<Obj>>,
}

/// `numpy.linspace(start, stop, num)` bit for bit: `i * ((stop - start) / (num - 1)) + start`,
/// the last value set to `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

const AREA_RANGES: [(f64, f64); 4] = [(0.0, 1e10), (0.0, 1024.0), (1024.0, 9216.0), (9216.0, 1e10)];
const MAX_DETS: [usize; 3] = [1, 10, 100];

/// IoU of a detection with a ground-truth box (maskUtils.iou for boxes): over the union, or
/// over the detection's area for a crowd box.
fn iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[0] + d[2]).min(g[0] + g[2]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[1] + d[3]).min(g[1] + g[3]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let da = d[2] * d[3];
    let u = if crowd { da } else { da + g[2] * g[3] - i };
    i / u
}

/// What `evaluateImg` keeps of one (image, category, area range).
struct ImgEval {
    /// Per IoU threshold, per detection: the matched ground truth's id (0: none).
    dt_matches: Vec<Vec<f64>>,
    dt_ignore: Vec<Vec<bool>>,
    dt_scores: Vec<f64>,
    gt_ignore: Vec<bool>,
}

impl CocoEval {
    /// Reads a ground-truth instances file and a results file (both JSON text).
    pub fn from_json(gt: &str, results: &str) -> Result<CocoEval> {
        let gt: GtFile = serde_json::from_str(gt).context(
            "the annotations are not a COCO instances file ({\"images\", \"annotations\", \
             \"categories\"})",
        )?;
        let results: Vec<ResultEntry> = serde_json::from_str(results).context(
            "not a COCO results file ([{\"image_id\", \"category_id\", \"bbox\", \"score\"}, ...])",
        )?;
        let img_ids: BTreeSet<i64> = gt.images.iter().map(|i| i.id).collect();
        let cat_ids: BTreeSet<i64> = gt.categories.iter().map(|c| c.id).collect();
        if let Some(r) = results.iter().find(|r| !img_ids.contains(&r.image_id)) {
            let n = results
                .iter()
                .filter(|r| !img_ids.contains(&r.image_id))
                .count();
            bail!(
                "the results name image ids the annotations do not have ({n} entries, e.g. \
                 image_id {}): they are for another set of images",
                r.image_id
            );
        }
        let mut gts: HashMap<(i64, i64), Vec<Obj>> = HashMap::new();
        // pycocotools groups annotations by image in file order (imgToAnns), keeps the
        // categories it evaluates, and keys each annotation by id (a repeated id reads as the
        // last one with it).
        let mut by_id: HashMap<i64, &GtAnnotation> = HashMap::new();
        for a in &gt.annotations {
            by_id.insert(a.id, a);
        }
        let mut by_image: BTreeMap<i64, Vec<&GtAnnotation>> = BTreeMap::new();
        for a in &gt.annotations {
            by_image.entry(a.image_id).or_default().push(a);
        }
        for id in &img_ids {
            for a in by_image.get(id).map(Vec::as_slice).unwrap_or_default() {
                if !cat_ids.contains(&a.category_id) {
                    continue;
                }
                let a = by_id[&a.id];
                gts.entry((a.image_id, a.category_id))
                    .or_default()
                    .push(Obj {
                        id: a.id,
                        bbox: a.bbox,
                        area: a.area.unwrap_or(a.bbox[2] * a.bbox[3]),
                        crowd: a.iscrowd != 0,
                        score: 0.0,
                    });
            }
        }
        let mut dts: HashMap<(i64, i64), Vec<Obj>> = HashMap::new();
        for (k, r) in results.iter().enumerate() {
            if !r.score.is_finite() || r.bbox.iter().any(|v| !v.is_finite()) {
                bail!("results entry {k}: its bbox or score is not a finite number");
            }
            dts.entry((r.image_id, r.category_id))
                .or_default()
                .push(Obj {
                    id: k as i64 + 1,
                    bbox: r.bbox,
                    area: r.bbox[2] * r.bbox[3],
                    crowd: false,
                    score: r.score,
                });
        }
        Ok(CocoEval {
            img_ids: img_ids.into_iter().collect(),
            cat_ids: cat_ids.into_iter().collect(),
            gts,
            dts,
        })
    }

    /// Detections of (image, category) ranked by score, ties in file order, at most `max`.
    fn ranked(&self, key: (i64, i64), max: usize) -> Vec<&Obj> {
        let mut d: Vec<&Obj> = self
            .dts
            .get(&key)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        // Stable: equal scores keep their order, as numpy's mergesort.
        d.sort_by(|a, b| {
            b.score
                .partial_cmp(&a.score)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        d.truncate(max);
        d
    }

    fn evaluate_img(
        &self,
        key: (i64, i64),
        range: (f64, f64),
        max_det: usize,
        thresholds: &[f64],
    ) -> Option<ImgEval> {
        let empty = Vec::new();
        let gt_all = self.gts.get(&key).unwrap_or(&empty);
        let dt = self.ranked(key, max_det);
        if gt_all.is_empty() && dt.is_empty() {
            return None;
        }
        let ignore = |g: &Obj| g.crowd || g.area < range.0 || g.area > range.1;
        // Ground truth not ignored first, in order (a stable sort on the ignore flag).
        let mut gt: Vec<&Obj> = gt_all.iter().filter(|g| !ignore(g)).collect();
        gt.extend(gt_all.iter().filter(|g| ignore(g)));
        let gt_ignore: Vec<bool> = gt.iter().map(|g| ignore(g)).collect();
        let ious: Vec<Vec<f64>> = dt
            .iter()
            .map(|d| gt.iter().map(|g| iou(&d.bbox, &g.bbox, g.crowd)).collect())
            .collect();
        let t_n = thresholds.len();
        let mut gtm = vec![vec![0.0f64; gt.len()]; t_n];
        let mut dtm = vec![vec![0.0f64; dt.len()]; t_n];
        let mut dt_ig = vec![vec![false; dt.len()]; t_n];
        if !gt.is_empty() && !dt.is_empty() {
            for (ti, &t) in thresholds.iter().enumerate() {
                for (di, d) in dt.iter().enumerate() {
                    let mut best = t.min(1.0 - 1e-10);
                    let mut m: Option<usize> = None;
                    for (gi, g) in gt.iter().enumerate() {
                        if gtm[ti][gi] > 0.0 && !g.crowd {
                            continue;
                        }
                        if let Some(m) = m {
                            if !gt_ignore[m] && gt_ignore[gi] {
                                break;
                            }
                        }
                        if ious[di][gi] < best {
                            continue;
                        }
                        best = ious[di][gi];
                        m = Some(gi);
                    }
                    if let Some(m) = m {
                        dt_ig[ti][di] = gt_ignore[m];
                        dtm[ti][di] = gt[m].id as f64;
                        gtm[ti][m] = d.id as f64;
                    }
                }
            }
        }
        // Unmatched detections outside the area range are ignored.
        for ti in 0..t_n {
            for (di, d) in dt.iter().enumerate() {
                let out = d.area < range.0 || d.area > range.1;
                dt_ig[ti][di] = dt_ig[ti][di] || (dtm[ti][di] == 0.0 && out);
            }
        }
        Some(ImgEval {
            dt_matches: dtm,
            dt_ignore: dt_ig,
            dt_scores: dt.iter().map(|d| d.score).collect(),
            gt_ignore,
        })
    }

    /// `evaluate` + `accumulate` + `summarize`.
    pub fn stats(&self) -> CocoStats {
        let thresholds = linspace(0.5, 0.95, 10);
        let rec_thrs = linspace(0.0, 1.0, 101);
        let (t_n, r_n, k_n, a_n, m_n) = (
            thresholds.len(),
            rec_thrs.len(),
            self.cat_ids.len(),
            AREA_RANGES.len(),
            MAX_DETS.len(),
        );
        // precision[t][r][k][a][m], recall[t][k][a][m], -1 where undefined.
        let idx5 = |t: usize, r: usize, k: usize, a: usize, m: usize| {
            (((t * r_n + r) * k_n + k) * a_n + a) * m_n + m
        };
        let idx4 = |t: usize, k: usize, a: usize, m: usize| ((t * k_n + k) * a_n + a) * m_n + m;
        let mut precision = vec![-1.0f64; t_n * r_n * k_n * a_n * m_n];
        let mut recall = vec![-1.0f64; t_n * k_n * a_n * m_n];
        let max_all = MAX_DETS[MAX_DETS.len() - 1];
        for (k, &cat) in self.cat_ids.iter().enumerate() {
            for (a, &range) in AREA_RANGES.iter().enumerate() {
                let evals: Vec<ImgEval> = self
                    .img_ids
                    .iter()
                    .filter_map(|&img| self.evaluate_img((img, cat), range, max_all, &thresholds))
                    .collect();
                if evals.is_empty() {
                    continue;
                }
                for (m, &max_det) in MAX_DETS.iter().enumerate() {
                    let mut scores = Vec::new();
                    let mut rows: Vec<(usize, usize)> = Vec::new(); // (eval, detection)
                    for (e, ev) in evals.iter().enumerate() {
                        for (d, &s) in ev.dt_scores.iter().take(max_det).enumerate() {
                            scores.push(s);
                            rows.push((e, d));
                        }
                    }
                    let mut order: Vec<usize> = (0..scores.len()).collect();
                    order.sort_by(|&x, &y| {
                        scores[y]
                            .partial_cmp(&scores[x])
                            .unwrap_or(std::cmp::Ordering::Equal)
                    });
                    let npig = evals
                        .iter()
                        .flat_map(|e| e.gt_ignore.iter())
                        .filter(|&&i| !i)
                        .count();
                    if npig == 0 {
                        continue;
                    }
                    for t in 0..t_n {
                        let (mut tp, mut fp) = (0usize, 0usize);
                        let mut rc = Vec::with_capacity(order.len());
                        let mut pr = Vec::with_capacity(order.len());
                        for &o in &order {
                            let (e, d) = rows[o];
                            let matched = evals[e].dt_matches[t][d] != 0.0;
                            let ignored = evals[e].dt_ignore[t][d];
                            if matched && !ignored {
                                tp += 1;
                            }
                            if !matched && !ignored {
                                fp += 1;
                            }
                            let (tpf, fpf) = (tp as f64, fp as f64);
                            rc.push(tpf / npig as f64);
                            pr.push(tpf / (fpf + tpf + f64::EPSILON));
                        }
                        let nd = rc.len();
                        recall[idx4(t, k, a, m)] = if nd > 0 { rc[nd - 1] } else { 0.0 };
                        for i in (1..nd).rev() {
                            if pr[i] > pr[i - 1] {
                                pr[i - 1] = pr[i];
                            }
                        }
                        for (r, &thr) in rec_thrs.iter().enumerate() {
                            // searchsorted(rc, thr, side="left"); past the end, 0 from there on.
                            let pi = rc.partition_point(|&x| x < thr);
                            let q = if pi < nd { pr[pi] } else { 0.0 };
                            precision[idx5(t, r, k, a, m)] = q;
                        }
                    }
                }
            }
        }
        let summarize = |ap: bool, thr: Option<f64>, area: usize, max_det: usize| -> f64 {
            let m = MAX_DETS.iter().position(|&d| d == max_det).unwrap_or(0);
            let ts: Vec<usize> = (0..t_n)
                .filter(|&t| thr.is_none_or(|v| thresholds[t] == v))
                .collect();
            let mut vals = Vec::new();
            for &t in &ts {
                for k in 0..k_n {
                    if ap {
                        for r in 0..r_n {
                            vals.push(precision[idx5(t, r, k, area, m)]);
                        }
                    } else {
                        vals.push(recall[idx4(t, k, area, m)]);
                    }
                }
            }
            let kept: Vec<f64> = vals.into_iter().filter(|&v| v > -1.0).collect();
            if kept.is_empty() {
                -1.0
            } else {
                kept.iter().sum::<f64>() / kept.len() as f64
            }
        };
        CocoStats {
            values: [
                summarize(true, None, 0, 100),
                summarize(true, Some(0.5), 0, 100),
                summarize(true, Some(0.75), 0, 100),
                summarize(true, None, 1, 100),
                summarize(true, None, 2, 100),
                summarize(true, None, 3, 100),
                summarize(false, None, 0, 1),
                summarize(false, None, 0, 10),
                summarize(false, None, 0, 100),
                summarize(false, None, 1, 100),
                summarize(false, None, 2, 100),
                summarize(false, None, 3, 100),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_is_numpys() {
        let t = linspace(0.5, 0.95, 10);
        assert_eq!(t[0], 0.5);
        assert_eq!(t[5], 0.75);
        assert_eq!(t[9], 0.95);
        // numpy 2.4's values, printed with repr.
        assert_eq!(t[3], 0.65);
        assert_eq!(t[8], 0.8999999999999999);
        let r = linspace(0.0, 1.0, 101);
        assert_eq!((r[7], r[29], r[57]), (0.07, 0.29, 0.5700000000000001));
    }

    #[test]
    fn crowd_iou_is_over_the_detections_area() {
        let d = [0.0, 0.0, 10.0, 10.0];
        let g = [5.0, 0.0, 100.0, 100.0];
        assert_eq!(iou(&d, &g, true), 0.5);
        assert!((iou(&d, &g, false) - 50.0 / 10050.0).abs() < 1e-15);
        assert_eq!(iou(&d, &[10.0, 0.0, 5.0, 5.0], false), 0.0);
    }
}
