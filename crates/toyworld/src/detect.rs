//! The exact detector: palette classification, connected components, boxes.
//!
//! 1. Each pixel is assigned to the nearest of the seven palette colours (background plus the six
//!    category colours) by Euclidean RGB distance, and kept as that category only if the distance
//!    is at most `max_distance` (default 100). Palette colours are >= 221 apart, so generated
//!    pixels within 100 of a colour are unambiguous, and blends half-way between colours (which a
//!    noisy model produces at edges) are dropped. Uniform noise of +-20 per channel moves a pixel
//!    at most 34.6, well inside the threshold.
//! 2. Pixels of one category are grouped into 8-connected components (diagonal neighbours join),
//!    so thin diagonal edges of triangles and diamonds stay one object; the generator keeps a gap
//!    of at least one pixel between objects, so distinct objects never join.
//! 3. Components smaller than `min_area` pixels (default 8 at 32x32, scaled with image area) are
//!    ignored as specks; the smallest generated object (an 8 px triangle) has about 32 pixels.
//!
//! Each remaining component is one detection with score 1.0, its tight box and its pixel count.
//!
//! In the latent world ([`Palette::Shared`]) a colour names no category: steps 1-3 are the same
//! (components of one palette colour), and each component's category is the shape whose
//! rasterised template, drawn in the component's tight box as the generator draws it, overlaps
//! the component best (IoU; the triangle also with its nominal box one row taller, since its
//! apex row may hold no pixel). The score is that IoU: 1.0 for a generated object.

use crate::category::{Category, BACKGROUND};
use crate::image::RgbImage;
use crate::palette::Palette;
use crate::scene::WorldConfig;
use crate::shapes::inside;
use serde::{Deserialize, Serialize};

/// Detector thresholds; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectorConfig {
    /// Largest Euclidean RGB distance from a pixel to its nearest palette colour.
    pub max_distance: f32,
    /// Smallest component, in pixels, reported as an object.
    pub min_area: u32,
    /// How the world colours objects: by colour or by shape classification.
    #[serde(default, skip_serializing_if = "Palette::is_per_category")]
    pub palette: Palette,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            max_distance: 100.0,
            min_area: 8,
            palette: Palette::PerCategory,
        }
    }
}

impl DetectorConfig {
    /// Defaults with `min_area` scaled from 32x32 to an image of `width` x `height`.
    pub fn for_image(width: u32, height: u32) -> Self {
        let area = u64::from(width) * u64::from(height);
        Self {
            min_area: ((8 * area) / (32 * 32)).max(1) as u32,
            ..Self::default()
        }
    }

    /// The detector for images of `world`.
    pub fn for_world(world: &WorldConfig) -> Self {
        Self {
            palette: world.palette,
            ..Self::for_image(world.size, world.size)
        }
    }
}

/// A COCO-style detection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub category: Category,
    pub category_id: usize,
    /// `[x, y, width, height]` in pixels (COCO convention).
    pub bbox: [f32; 4],
    /// Pixels in the component.
    pub area: u32,
    /// Always 1.0: the detector is exact.
    pub score: f32,
}

impl Detection {
    /// The box as `[x0, y0, x1, y1]` pixels, exclusive max.
    pub fn bbox_xyxy(&self) -> [f32; 4] {
        let [x, y, w, h] = self.bbox;
        [x, y, x + w, y + h]
    }
}

/// The palette index (0 = background, 1 + id = category) nearest to `px`, or `None` when farther
/// than `max_distance` from all of them.
fn classify(px: [u8; 3], max_distance: f32) -> Option<usize> {
    let mut best = (f32::INFINITY, 0);
    let palette = std::iter::once(BACKGROUND).chain(Category::ALL.iter().map(|c| c.color()));
    for (i, color) in palette.enumerate() {
        let d2: f32 = px
            .iter()
            .zip(color)
            .map(|(&a, b)| (f32::from(a) - f32::from(b)).powi(2))
            .sum();
        if d2 < best.0 {
            best = (d2, i);
        }
    }
    (best.0 <= max_distance * max_distance).then_some(best.1)
}

/// Detects all objects in `img`, in raster order of each component's first pixel.
pub fn detect(img: &RgbImage, cfg: &DetectorConfig) -> Vec<Detection> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    // Palette label per pixel; `None` for unclassifiable and background pixels.
    let labels: Vec<Option<usize>> = (0..w * h)
        .map(|i| {
            let px = img.get((i % w) as u32, (i / w) as u32);
            classify(px, cfg.max_distance).filter(|&l| l > 0)
        })
        .collect();
    let mut seen = vec![false; w * h];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    for start in 0..w * h {
        let Some(label) = labels[start] else { continue };
        if seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        let mut area = 0u32;
        let mut pixels = Vec::new();
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            area += 1;
            pixels.push(i);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let j = ny * w + nx;
                    if !seen[j] && labels[j] == Some(label) {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if area >= cfg.min_area {
            let (category, score) = match cfg.palette {
                Palette::PerCategory => (Category::ALL[label - 1], 1.0),
                Palette::Shared => {
                    let (bw, bh) = (x1 - x0, y1 - y0);
                    let mut mask = vec![false; bw * bh];
                    for i in pixels {
                        mask[(i / w - y0) * bw + (i % w - x0)] = true;
                    }
                    shape_of(&mask, bw, bh)
                }
            };
            out.push(Detection {
                category,
                category_id: category.id(),
                bbox: [x0 as f32, y0 as f32, (x1 - x0) as f32, (y1 - y0) as f32],
                area,
                score,
            });
        }
    }
    out
}

/// The shape whose template best overlaps `mask` (`bw` x `bh`, row-major), and that IoU.
fn shape_of(mask: &[bool], bw: usize, bh: usize) -> (Category, f32) {
    let mut best = (Category::Circle, -1.0f32);
    for c in Category::ALL {
        let taller = if c == Category::Triangle { 1 } else { 0 };
        for extra_top in 0..=taller {
            let iou = template_iou(mask, bw, bh, c, extra_top);
            if iou > best.1 {
                best = (c, iou);
            }
        }
    }
    best
}

/// IoU of `mask` with `c` rasterised as the generator draws it into a nominal box `bw` wide
/// and `bh + extra_top` tall whose bottom `bh` rows are the mask's.
fn template_iou(mask: &[bool], bw: usize, bh: usize, c: Category, extra_top: usize) -> f32 {
    let nh = (bh + extra_top) as f64;
    let (mut inter, mut union) = (0u32, 0u32);
    for yy in 0..bh + extra_top {
        let b = 2.0 * (yy as f64 + 0.5) / nh - 1.0;
        for x in 0..bw {
            let a = 2.0 * (x as f64 + 0.5) / bw as f64 - 1.0;
            let t = inside(c, a, b);
            let m = yy >= extra_top && mask[(yy - extra_top) * bw + x];
            inter += u32::from(t && m);
            union += u32::from(t || m);
        }
    }
    if union == 0 {
        0.0
    } else {
        inter as f32 / union as f32
    }
}

/// Per-category counts (indexed by category id).
fn histogram(items: impl IntoIterator<Item = (Category, u32)>) -> [u32; Category::ALL.len()] {
    let mut h = [0; Category::ALL.len()];
    for (c, n) in items {
        h[c.id()] += n;
    }
    h
}

/// Whether the detections name exactly the caption's categories with the caption's counts.
pub fn caption_matches(detections: &[Detection], groups: &[(Category, u32)]) -> bool {
    histogram(detections.iter().map(|d| (d.category, 1))) == histogram(groups.iter().copied())
}

/// The best IoU between a requested pixel box `[x0, y0, x1, y1]` and any detection of `category`
/// (0 when there is none): the layout-adherence score, success being IoU > 0.5.
pub fn best_iou(detections: &[Detection], category: Category, bbox_xyxy: [f32; 4]) -> f32 {
    detections
        .iter()
        .filter(|d| d.category == category)
        .map(|d| iou_xyxy(d.bbox_xyxy(), bbox_xyxy))
        .fold(0.0, f32::max)
}

/// Intersection over union of two `[x0, y0, x1, y1]` boxes; 0 when either is empty.
pub fn iou_xyxy(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_nearest_colour_within_threshold() {
        assert_eq!(classify([128, 128, 128], 100.0), Some(0));
        assert_eq!(
            classify([230, 20, 30], 100.0),
            Some(1 + Category::Circle.id())
        );
        // Half-way between red and the background: too far from both.
        assert_eq!(classify([192, 64, 64], 100.0), None);
        assert_eq!(classify([0, 0, 0], 100.0), None);
    }

    #[test]
    fn components_are_8_connected_and_specks_dropped() {
        let mut img = RgbImage::filled(12, 12, BACKGROUND);
        let red = Category::Circle.color();
        // A diagonal line of 9 pixels is one component.
        for i in 0..9 {
            img.put(i, i, red);
        }
        // A 2x2 speck (4 pixels) is below the default minimum area.
        for (x, y) in [(10, 0), (11, 0), (10, 1), (11, 1)] {
            img.put(x, y, Category::Ring.color());
        }
        let dets = detect(&img, &DetectorConfig::default());
        assert_eq!(dets.len(), 1, "{dets:?}");
        assert_eq!(dets[0].category, Category::Circle);
        assert_eq!(dets[0].bbox, [0.0, 0.0, 9.0, 9.0]);
        assert_eq!(dets[0].area, 9);
    }

    #[test]
    fn caption_match_compares_counts() {
        let det = |c: Category| Detection {
            category: c,
            category_id: c.id(),
            bbox: [0.0; 4],
            area: 10,
            score: 1.0,
        };
        let dets = [
            det(Category::Ring),
            det(Category::Circle),
            det(Category::Ring),
        ];
        assert!(caption_matches(
            &dets,
            &[(Category::Circle, 1), (Category::Ring, 2)]
        ));
        assert!(!caption_matches(
            &dets,
            &[(Category::Circle, 1), (Category::Ring, 1)]
        ));
        assert!(!caption_matches(&dets[..2], &[(Category::Circle, 1)]));
        assert!(caption_matches(&[], &[]));
    }

    #[test]
    fn best_iou_picks_the_matching_category() {
        let det = |c: Category, x: f32| Detection {
            category: c,
            category_id: c.id(),
            bbox: [x, 0.0, 2.0, 2.0],
            area: 4,
            score: 1.0,
        };
        let dets = [
            det(Category::Ring, 0.0),
            det(Category::Circle, 1.0),
            det(Category::Circle, 0.0),
        ];
        let want = [0.0, 0.0, 2.0, 2.0];
        assert_eq!(best_iou(&dets, Category::Circle, want), 1.0);
        assert_eq!(best_iou(&dets[..2], Category::Circle, want), 1.0 / 3.0);
        assert_eq!(best_iou(&dets, Category::Square, want), 0.0);
    }

    #[test]
    fn iou_basics() {
        assert_eq!(iou_xyxy([0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]), 1.0);
        assert_eq!(iou_xyxy([0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0]), 0.0);
        assert!((iou_xyxy([0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou_xyxy([0.0; 4], [0.0; 4]), 0.0);
    }
}
