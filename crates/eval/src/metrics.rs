//! Layout adherence (docs/design.md 1.6, paper 4.3). For each target object of a layout: IoU = the
//! best IoU between its box and a detection of the same category (0 when there is none);
//! success when IoU > 0.5 (strictly; exactly 0.5 fails). Mean IoU and success rate are reported
//! over all objects and by size, and by the number of objects in the sample.
//!
//! **Size buckets** use the target box's area at the reference size (512 x 512 by default):
//! small when < 150^2, large when > 300^2, medium otherwise (so exactly 150^2 and exactly
//! 300^2 are medium). The area is the box's fraction of the image times the reference area, so
//! for an image of another size the thresholds scale with the image area: a box is "small" when
//! it covers less than 150^2 / 512^2 = 8.58% of its image, whatever the resolution (the 32 x 32
//! toy world uses the same buckets as SD at 512 x 512).
//!
//! IoU is computed in pixels of the generated image (`semi_toyworld::iou_xyxy`, f32); targets
//! are the layout's normalised boxes times the layout's size. Categories compare
//! case-insensitively after trimming.

use std::collections::BTreeMap;

use semi_layout::Layout;
use serde::{Deserialize, Serialize};

use crate::detector::Detection;

/// Thresholds of the protocol (defaults: the paper's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricConfig {
    /// Success when IoU is strictly above this.
    pub success_iou: f64,
    /// Small when the area at the reference size is below this (pixels).
    pub small_below: f64,
    /// Large when the area at the reference size is above this (pixels).
    pub large_above: f64,
    /// The size the area thresholds are stated at.
    pub reference_width: u32,
    pub reference_height: u32,
}

impl Default for MetricConfig {
    fn default() -> Self {
        MetricConfig {
            success_iou: 0.5,
            small_below: 150.0 * 150.0,
            large_above: 300.0 * 300.0,
            reference_width: 512,
            reference_height: 512,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeBucket {
    Small,
    Medium,
    Large,
}

impl SizeBucket {
    pub const ALL: [SizeBucket; 3] = [SizeBucket::Small, SizeBucket::Medium, SizeBucket::Large];

    pub fn name(self) -> &'static str {
        match self {
            SizeBucket::Small => "small",
            SizeBucket::Medium => "medium",
            SizeBucket::Large => "large",
        }
    }
}

impl MetricConfig {
    /// The bucket of an area in pixels at the reference size.
    pub fn bucket(&self, reference_area: f64) -> SizeBucket {
        if reference_area < self.small_below {
            SizeBucket::Small
        } else if reference_area > self.large_above {
            SizeBucket::Large
        } else {
            SizeBucket::Medium
        }
    }

    fn reference_area(&self) -> f64 {
        f64::from(self.reference_width) * f64::from(self.reference_height)
    }
}

/// The score of one target object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectScore {
    pub id: String,
    /// Index of the object in its layout.
    pub object: usize,
    /// Objects in the layout (the 1-object / 2-object split).
    pub objects_in_sample: usize,
    pub category: String,
    /// Box area in pixels at the reference size.
    pub area: f64,
    pub size: SizeBucket,
    pub iou: f64,
    pub success: bool,
    /// Best IoU of a detection of one of the layout's *other* categories with this box: the
    /// wrong object in the right place. It shows whether an initialisation decides which
    /// object forms in a box, as the category-swapped control asks (docs/toyworld-latent.md).
    #[serde(default)]
    pub other_iou: f64,
    /// `other_iou` above the success IoU.
    #[serde(default)]
    pub other_success: bool,
}

fn same_category(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Score every object of `layout` against the detections in its generated image (pixels of a
/// `layout.width` x `layout.height` image).
pub fn score_layout(
    id: &str,
    layout: &Layout,
    detections: &[Detection],
    cfg: &MetricConfig,
) -> Vec<ObjectScore> {
    let (w, h) = (f64::from(layout.width), f64::from(layout.height));
    layout
        .objects
        .iter()
        .enumerate()
        .map(|(k, o)| {
            let b = o.bbox;
            let target = [b.x0 * w, b.y0 * h, b.x1 * w, b.y1 * h].map(|v| v as f32);
            let best_iou = |keep: &dyn Fn(&str) -> bool| {
                detections
                    .iter()
                    .filter(|d| keep(&d.category))
                    .map(|d| f64::from(semi_toyworld::iou_xyxy(d.bbox.map(|v| v as f32), target)))
                    .fold(0.0, f64::max)
            };
            let iou = best_iou(&|c| same_category(c, &o.category));
            let other_iou = best_iou(&|c| {
                !same_category(c, &o.category)
                    && layout.objects.iter().any(|p| same_category(c, &p.category))
            });
            let area = b.area() * cfg.reference_area();
            ObjectScore {
                id: id.to_string(),
                object: k,
                objects_in_sample: layout.objects.len(),
                category: o.category.clone(),
                area,
                size: cfg.bucket(area),
                iou,
                success: iou > cfg.success_iou,
                other_iou,
                other_success: other_iou > cfg.success_iou,
            }
        })
        .collect()
}

/// Count, IoU sum and successes of a set of objects.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub count: usize,
    pub iou_sum: f64,
    pub successes: usize,
}

impl Stats {
    pub fn add(&mut self, s: &ObjectScore) {
        self.count += 1;
        self.iou_sum += s.iou;
        self.successes += usize::from(s.success);
    }

    /// `None` for an empty set.
    pub fn mean_iou(&self) -> Option<f64> {
        (self.count > 0).then(|| self.iou_sum / self.count as f64)
    }

    /// Fraction in [0, 1]; `None` for an empty set.
    pub fn success_rate(&self) -> Option<f64> {
        (self.count > 0).then(|| self.successes as f64 / self.count as f64)
    }
}

/// JSON form: `{"count", "successes", "mean_iou", "success_rate"}` (nulls when empty).
impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Stats", 4)?;
        st.serialize_field("count", &self.count)?;
        st.serialize_field("successes", &self.successes)?;
        st.serialize_field("mean_iou", &self.mean_iou())?;
        st.serialize_field("success_rate", &self.success_rate())?;
        st.end()
    }
}

/// The aggregates of one method.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub overall: Stats,
    pub small: Stats,
    pub medium: Stats,
    pub large: Stats,
    /// Objects in the sample -> stats over those samples' objects.
    pub by_object_count: BTreeMap<usize, Stats>,
}

impl Summary {
    pub fn from_scores(scores: &[ObjectScore]) -> Summary {
        let mut s = Summary::default();
        for o in scores {
            s.overall.add(o);
            s.bucket_mut(o.size).add(o);
            s.by_object_count
                .entry(o.objects_in_sample)
                .or_default()
                .add(o);
        }
        s
    }

    pub fn bucket(&self, b: SizeBucket) -> &Stats {
        match b {
            SizeBucket::Small => &self.small,
            SizeBucket::Medium => &self.medium,
            SizeBucket::Large => &self.large,
        }
    }

    fn bucket_mut(&mut self, b: SizeBucket) -> &mut Stats {
        match b {
            SizeBucket::Small => &mut self.small,
            SizeBucket::Medium => &mut self.medium,
            SizeBucket::Large => &mut self.large,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use semi_layout::{BBox, LayoutObject};

    /// A 100 x 100 layout with pixel boxes.
    fn layout(objects: &[(&str, [f64; 4])]) -> Layout {
        Layout::new(
            "test",
            100,
            100,
            objects
                .iter()
                .map(|(c, b)| LayoutObject::new(*c, *c, BBox::from(b.map(|v| v / 100.0))))
                .collect(),
        )
    }

    fn det(c: &str, bbox: [f64; 4]) -> Detection {
        Detection {
            category: c.into(),
            bbox,
            score: 1.0,
        }
    }

    fn ious(l: &Layout, d: &[Detection]) -> Vec<f64> {
        score_layout("x", l, d, &MetricConfig::default())
            .iter()
            .map(|s| s.iou)
            .collect()
    }

    #[test]
    fn no_detection_or_wrong_category_scores_zero() {
        let l = layout(&[("dog", [0.0, 0.0, 50.0, 50.0])]);
        assert_eq!(ious(&l, &[]), [0.0]);
        assert_eq!(ious(&l, &[det("cat", [0.0, 0.0, 50.0, 50.0])]), [0.0]);
        let s = score_layout("x", &l, &[], &MetricConfig::default());
        assert!(!s[0].success);
    }

    #[test]
    fn best_of_several_same_category_detections() {
        let l = layout(&[
            ("dog", [0.0, 0.0, 40.0, 40.0]),
            ("Cat", [50.0, 50.0, 70.0, 70.0]),
        ]);
        let d = [
            det("dog", [0.0, 0.0, 20.0, 40.0]),   // 800 / 1600 = 0.5
            det("dog", [10.0, 0.0, 40.0, 40.0]),  // 1200 / 1600 = 0.75
            det("DOG ", [0.0, 0.0, 40.0, 10.0]),  // 0.25
            det("cat", [60.0, 50.0, 80.0, 70.0]), // 200 / 600 = 1/3
        ];
        let got = ious(&l, &d);
        assert_eq!(got[0], 0.75);
        assert!((got[1] - 1.0 / 3.0).abs() < 1e-6, "{got:?}");
    }

    /// The other object's shape in a box counts only for the layout's other categories.
    #[test]
    fn other_category_in_the_box() {
        let l = layout(&[
            ("dog", [0.0, 0.0, 40.0, 40.0]),
            ("cat", [50.0, 50.0, 90.0, 90.0]),
        ]);
        let d = [
            det("Cat", [10.0, 0.0, 40.0, 40.0]),   // in the dog's box: 0.75
            det("bird", [50.0, 50.0, 90.0, 90.0]), // not in the layout
            det("cat", [50.0, 50.0, 90.0, 90.0]),  // the cat's own
        ];
        let s = score_layout("x", &l, &d, &MetricConfig::default());
        assert_eq!((s[0].iou, s[0].other_iou), (0.0, 0.75));
        assert!(!s[0].success && s[0].other_success);
        assert_eq!((s[1].iou, s[1].other_iou), (1.0, 0.0));
        assert!(s[1].success && !s[1].other_success);
        // Two boxes of one category: neither is the other's "other".
        let same = layout(&[
            ("dog", [0.0, 0.0, 40.0, 40.0]),
            ("dog", [50.0, 50.0, 90.0, 90.0]),
        ]);
        let s = score_layout(
            "x",
            &same,
            &[det("dog", [0.0, 0.0, 40.0, 40.0])],
            &MetricConfig::default(),
        );
        assert_eq!((s[1].other_iou, s[0].other_iou), (0.0, 0.0));
    }

    #[test]
    fn touching_boxes_have_zero_iou_and_half_is_not_success() {
        let l = layout(&[("dog", [0.0, 0.0, 50.0, 50.0])]);
        assert_eq!(ious(&l, &[det("dog", [50.0, 0.0, 90.0, 50.0])]), [0.0]);
        assert_eq!(ious(&l, &[det("dog", [0.0, 50.0, 50.0, 90.0])]), [0.0]);
        // IoU exactly 0.5: the detection covers half the target and nothing else.
        let s = score_layout(
            "x",
            &l,
            &[det("dog", [0.0, 0.0, 25.0, 50.0])],
            &MetricConfig::default(),
        );
        assert_eq!(s[0].iou, 0.5);
        assert!(!s[0].success);
        let s = score_layout(
            "x",
            &l,
            &[det("dog", [0.0, 0.0, 26.0, 50.0])],
            &MetricConfig::default(),
        );
        assert!(s[0].success);
        // The threshold is configurable.
        let cfg = MetricConfig {
            success_iou: 0.4,
            ..Default::default()
        };
        assert!(score_layout("x", &l, &[det("dog", [0.0, 0.0, 25.0, 50.0])], &cfg)[0].success);
    }

    #[test]
    fn size_bucket_edges() {
        let cfg = MetricConfig::default();
        assert_eq!(cfg.bucket(22_499.999), SizeBucket::Small);
        assert_eq!(cfg.bucket(22_500.0), SizeBucket::Medium);
        assert_eq!(cfg.bucket(90_000.0), SizeBucket::Medium);
        assert_eq!(cfg.bucket(90_000.001), SizeBucket::Large);
        // A 150 x 150 box at 512 x 512 is exactly on the edge: medium; 149 wide: small.
        let side = |w: f64, h: f64| {
            let mut l = Layout::new(
                "t",
                512,
                512,
                vec![LayoutObject::new(
                    "a",
                    "a",
                    BBox::from([0.0, 0.0, w / 512.0, h / 512.0]),
                )],
            );
            l.id = None;
            score_layout("x", &l, &[], &cfg)[0].size
        };
        assert_eq!(side(150.0, 150.0), SizeBucket::Medium);
        assert_eq!(side(149.0, 150.0), SizeBucket::Small);
        assert_eq!(side(300.0, 300.0), SizeBucket::Medium);
        assert_eq!(side(301.0, 300.0), SizeBucket::Large);
        // Other image sizes: by fraction of the image. Half the side of a 64 x 64 image is a
        // quarter of its area = 65536 px at 512 x 512: medium.
        let l = Layout::new(
            "t",
            64,
            64,
            vec![LayoutObject::new(
                "a",
                "a",
                BBox::from([0.0, 0.0, 0.5, 0.5]),
            )],
        );
        let s = score_layout("x", &l, &[], &cfg);
        assert_eq!((s[0].area, s[0].size), (65_536.0, SizeBucket::Medium));
    }

    #[test]
    fn summary_counts_and_means() {
        let one = layout(&[("dog", [0.0, 0.0, 10.0, 10.0])]); // 1% of the image: small
        let two = layout(&[
            ("dog", [0.0, 0.0, 100.0, 100.0]),
            ("cat", [0.0, 0.0, 50.0, 50.0]),
        ]);
        let cfg = MetricConfig::default();
        let mut scores = score_layout("a", &one, &[det("dog", [0.0, 0.0, 10.0, 10.0])], &cfg);
        scores.extend(score_layout(
            "b",
            &two,
            &[det("dog", [0.0, 0.0, 100.0, 50.0])],
            &cfg,
        ));
        let s = Summary::from_scores(&scores);
        assert_eq!((s.overall.count, s.overall.successes), (3, 1));
        assert!((s.overall.mean_iou().unwrap() - 0.5).abs() < 1e-12);
        assert_eq!((s.small.count, s.medium.count, s.large.count), (1, 1, 1));
        assert_eq!(s.large.mean_iou(), Some(0.5));
        assert_eq!(s.large.success_rate(), Some(0.0));
        assert_eq!(s.by_object_count[&1].success_rate(), Some(1.0));
        assert_eq!(s.by_object_count[&2].count, 2);
        assert_eq!(Stats::default().mean_iou(), None);
        let json = serde_json::to_value(s.small).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"count": 1, "successes": 1, "mean_iou": 1.0, "success_rate": 1.0})
        );
    }
}
