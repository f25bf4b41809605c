//! Boxes: normalised xyxy (the native form) and their pixel views.

use serde::{Deserialize, Serialize};

use crate::error::{LayoutError, Problem};

/// An axis-aligned box in normalised image coordinates: x to the right, y down, both in [0, 1],
/// `x0 < x1`, `y0 < y1`. Serialised as `[x0, y0, x1, y1]`.
///
/// The fields are public so boxes can be built freely; [`BBox::new`] and layout validation
/// enforce the rules.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "[f64; 4]", into = "[f64; 4]")]
pub struct BBox {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

const NAMES: [&str; 4] = ["x0", "y0", "x1", "y1"];

impl From<[f64; 4]> for BBox {
    fn from([x0, y0, x1, y1]: [f64; 4]) -> Self {
        BBox { x0, y0, x1, y1 }
    }
}

impl From<BBox> for [f64; 4] {
    fn from(b: BBox) -> Self {
        b.to_array()
    }
}

impl BBox {
    /// A checked box; the error names the coordinate (`bbox[2]`) or the pair (`bbox`).
    pub fn new(x0: f64, y0: f64, x1: f64, y1: f64) -> Result<Self, LayoutError> {
        let b = BBox { x0, y0, x1, y1 };
        b.check("bbox")?;
        Ok(b)
    }

    /// Box from pixel xyxy in an image of `width` x `height` pixels (checked).
    pub fn from_pixel_xyxy(xyxy: [f64; 4], width: f64, height: f64) -> Result<Self, LayoutError> {
        let [x0, y0, x1, y1] = xyxy;
        BBox::new(x0 / width, y0 / height, x1 / width, y1 / height)
    }

    /// Box from pixel xywh (COCO's `bbox`) in an image of `width` x `height` pixels (checked).
    pub fn from_pixel_xywh(xywh: [f64; 4], width: f64, height: f64) -> Result<Self, LayoutError> {
        let [x, y, w, h] = xywh;
        BBox::from_pixel_xyxy([x, y, x + w, y + h], width, height)
    }

    pub fn to_array(&self) -> [f64; 4] {
        [self.x0, self.y0, self.x1, self.y1]
    }

    pub fn width(&self) -> f64 {
        self.x1 - self.x0
    }

    pub fn height(&self) -> f64 {
        self.y1 - self.y0
    }

    /// Area as a fraction of the image (what overlap resolution compares).
    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }

    pub fn center(&self) -> (f64, f64) {
        ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)
    }

    /// The common part of two boxes, `None` when they do not overlap with positive area
    /// (boxes that only touch along an edge do not overlap).
    pub fn intersection(&self, other: &BBox) -> Option<BBox> {
        let b = BBox {
            x0: self.x0.max(other.x0),
            y0: self.y0.max(other.y0),
            x1: self.x1.min(other.x1),
            y1: self.y1.min(other.y1),
        };
        (b.x0 < b.x1 && b.y0 < b.y1).then_some(b)
    }

    /// Intersection over union, 0 for disjoint boxes.
    pub fn iou(&self, other: &BBox) -> f64 {
        match self.intersection(other) {
            Some(i) => {
                let inter = i.area();
                inter / (self.area() + other.area() - inter)
            }
            None => 0.0,
        }
    }

    /// The box in pixels of a `width` x `height` image (unrounded).
    pub fn to_pixels(&self, width: u32, height: u32) -> PixelBox {
        let (w, h) = (f64::from(width), f64::from(height));
        PixelBox {
            x0: self.x0 * w,
            y0: self.y0 * h,
            x1: self.x1 * w,
            y1: self.y1 * h,
        }
    }

    /// Check the rules; `field` is the name used in errors (`objects[3].bbox`).
    pub fn check(&self, field: &str) -> Result<(), LayoutError> {
        let v = self.to_array();
        for (k, (&value, name)) in v.iter().zip(NAMES).enumerate() {
            if !value.is_finite() {
                return Err(LayoutError::invalid(
                    format!("{field}[{k}]"),
                    Problem::NotFinite { name, value },
                ));
            }
            if !(0.0..=1.0).contains(&value) {
                return Err(LayoutError::invalid(
                    format!("{field}[{k}]"),
                    Problem::OutsideUnit { name, value },
                ));
            }
        }
        for (lo, hi) in [(0, 2), (1, 3)] {
            if v[lo] >= v[hi] {
                return Err(LayoutError::invalid(
                    field,
                    Problem::NotIncreasing {
                        low_name: NAMES[lo],
                        low: v[lo],
                        high_name: NAMES[hi],
                        high: v[hi],
                    },
                ));
            }
        }
        Ok(())
    }
}

/// A box in pixels, xyxy, unrounded (rounding is the caller's choice: drawing wants
/// [`PixelBox::round_out`], metrics want the exact values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelBox {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl PixelBox {
    pub fn width(&self) -> f64 {
        self.x1 - self.x0
    }

    pub fn height(&self) -> f64 {
        self.y1 - self.y0
    }

    /// Area in square pixels (the paper's small/medium/large split is on this at 512x512).
    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }

    pub fn xyxy(&self) -> [f64; 4] {
        [self.x0, self.y0, self.x1, self.y1]
    }

    /// COCO's `[x, y, w, h]`.
    pub fn xywh(&self) -> [f64; 4] {
        [self.x0, self.y0, self.width(), self.height()]
    }

    /// The smallest whole-pixel box that contains this one: `[x0, y0, x1, y1)` with exclusive
    /// high edges, so `x1 - x0` is the number of pixel columns touched.
    pub fn round_out(&self) -> [u32; 4] {
        let floor = |v: f64| v.floor().max(0.0) as u32;
        let ceil = |v: f64| v.ceil().max(0.0) as u32;
        [floor(self.x0), floor(self.y0), ceil(self.x1), ceil(self.y1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_array() {
        let b = BBox::new(0.1, 0.2, 0.5, 0.75).unwrap();
        assert_eq!(serde_json::to_string(&b).unwrap(), "[0.1,0.2,0.5,0.75]");
        let back: BBox = serde_json::from_str("[0.1,0.2,0.5,0.75]").unwrap();
        assert_eq!(back, b);
        let err = serde_json::from_str::<BBox>("[0.1,0.2,0.5]").unwrap_err();
        assert!(err.to_string().contains("invalid length 3"), "{err}");
    }

    #[test]
    fn checks_name_the_coordinate() {
        let e = BBox::new(0.1, 0.2, 1.5, 0.7).unwrap_err();
        assert_eq!(e.to_string(), "bbox[2]: x1 = 1.5 is outside [0, 1]");
        let e = BBox::new(-0.1, 0.2, 0.5, 0.7).unwrap_err();
        assert_eq!(e.to_string(), "bbox[0]: x0 = -0.1 is outside [0, 1]");
        let e = BBox::new(0.1, f64::NAN, 0.5, 0.7).unwrap_err();
        assert_eq!(e.to_string(), "bbox[1]: y0 is NaN, not a finite number");
        let e = BBox::new(0.1, 0.2, 0.5, f64::INFINITY).unwrap_err();
        assert_eq!(e.to_string(), "bbox[3]: y1 is inf, not a finite number");
        let e = BBox::new(0.6, 0.2, 0.4, 0.7).unwrap_err();
        assert_eq!(e.to_string(), "bbox: x0 = 0.6 must be less than x1 = 0.4");
        let e = BBox::new(0.1, 0.7, 0.5, 0.7).unwrap_err();
        assert_eq!(e.to_string(), "bbox: y0 = 0.7 must be less than y1 = 0.7");
        assert_eq!(e.field(), Some("bbox"));
    }

    #[test]
    fn geometry() {
        let a = BBox::new(0.0, 0.0, 0.5, 0.5).unwrap();
        let b = BBox::new(0.25, 0.25, 0.75, 0.75).unwrap();
        assert_eq!(a.area(), 0.25);
        assert_eq!(a.center(), (0.25, 0.25));
        assert_eq!(
            a.intersection(&b),
            Some(BBox::new(0.25, 0.25, 0.5, 0.5).unwrap())
        );
        assert!((a.iou(&b) - 0.0625 / 0.4375).abs() < 1e-12);
        // Touching along an edge is not overlapping.
        let c = BBox::new(0.5, 0.0, 1.0, 0.5).unwrap();
        assert_eq!(a.intersection(&c), None);
        assert_eq!(a.iou(&c), 0.0);
    }

    #[test]
    fn pixel_round_trip() {
        let b = BBox::from_pixel_xywh([64.0, 32.0, 128.0, 96.0], 640.0, 480.0).unwrap();
        assert_eq!(b.to_array(), [0.1, 32.0 / 480.0, 0.3, 128.0 / 480.0]);
        let p = b.to_pixels(640, 480);
        for (got, want) in p.xywh().iter().zip([64.0, 32.0, 128.0, 96.0]) {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
        let q = BBox::new(0.1, 0.1, 0.3, 0.3).unwrap().to_pixels(100, 50);
        assert_eq!(q.round_out(), [10, 5, 30, 15]);
        let r = PixelBox {
            x0: 10.2,
            y0: 4.9,
            x1: 29.1,
            y1: 15.0,
        };
        assert_eq!(r.round_out(), [10, 4, 30, 15]);
        assert!(BBox::from_pixel_xywh([10.0, 10.0, 0.0, 5.0], 100.0, 100.0).is_err());
    }
}
