//! Aliasing-free rasterisation of the six shapes.
//!
//! A pixel belongs to a shape when its centre lies inside the shape's outline, with the outline
//! scaled to the nominal box. There is no anti-aliasing: every pixel is either the exact category
//! colour or untouched, so the detector can recover boxes exactly. Because a thin tip may contain
//! no pixel centre, the box we record for an object is the tight box of the pixels actually
//! painted (always inside the nominal box).

use crate::category::Category;
use crate::image::RgbImage;

/// Inner radius of the ring as a fraction of its outer radius (a thickness of half the radius
/// keeps the hole visible and the band at least 2 px wide at the smallest default size).
pub const RING_INNER: f64 = 0.5;

/// Half-width of the cross's bars as a fraction of the half box size (bars one third wide).
pub const CROSS_HALF_BAR: f64 = 1.0 / 3.0;

/// Whether the point (a, b), in box coordinates scaled to [-1, 1] with y pointing down, is inside
/// the category's shape.
pub fn inside(category: Category, a: f64, b: f64) -> bool {
    match category {
        Category::Circle => a * a + b * b <= 1.0,
        Category::Square => a.abs() <= 1.0 && b.abs() <= 1.0,
        // Apex at the top centre, base along the bottom edge.
        Category::Triangle => b <= 1.0 && a.abs() <= (b + 1.0) / 2.0,
        Category::Cross => {
            (a.abs() <= CROSS_HALF_BAR && b.abs() <= 1.0)
                || (b.abs() <= CROSS_HALF_BAR && a.abs() <= 1.0)
        }
        Category::Ring => {
            let r2 = a * a + b * b;
            (RING_INNER * RING_INNER..=1.0).contains(&r2)
        }
        Category::Diamond => a.abs() + b.abs() <= 1.0,
    }
}

/// Paints `category` in its colour into the nominal pixel box `[x0, y0, x1, y1)` (exclusive max,
/// clipped to the image) and returns the tight box of the painted pixels, or `None` when the box
/// is too small to contain any pixel centre of the shape.
pub fn draw_shape(img: &mut RgbImage, category: Category, bbox: [u32; 4]) -> Option<[u32; 4]> {
    draw_shape_in(img, category, bbox, category.color())
}

/// [`draw_shape`] in `color` (the latent world's shared palette).
pub fn draw_shape_in(
    img: &mut RgbImage,
    category: Category,
    bbox: [u32; 4],
    color: [u8; 3],
) -> Option<[u32; 4]> {
    let [x0, y0, x1, y1] = bbox;
    let (x1, y1) = (x1.min(img.width()), y1.min(img.height()));
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let (w, h) = (f64::from(x1 - x0), f64::from(y1 - y0));
    let mut tight: Option<[u32; 4]> = None;
    for y in y0..y1 {
        let b = 2.0 * (f64::from(y - y0) + 0.5) / h - 1.0;
        for x in x0..x1 {
            let a = 2.0 * (f64::from(x - x0) + 0.5) / w - 1.0;
            if inside(category, a, b) {
                img.put(x, y, color);
                tight = Some(match tight {
                    None => [x, y, x + 1, y + 1],
                    Some([tx0, ty0, tx1, ty1]) => {
                        [tx0.min(x), ty0.min(y), tx1.max(x + 1), ty1.max(y + 1)]
                    }
                });
            }
        }
    }
    tight
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::BACKGROUND;

    fn painted(img: &RgbImage, c: Category) -> usize {
        let mut n = 0;
        for y in 0..img.height() {
            for x in 0..img.width() {
                n += usize::from(img.get(x, y) == c.color());
            }
        }
        n
    }

    #[test]
    fn shapes_have_expected_areas() {
        // Fractions of the box area, for a 20x20 box: circle pi/4, square 1, triangle 1/2,
        // cross 1 - 4 (1/3)^2 = 5/9, ring (pi/4)(1 - 0.25), diamond 1/2.
        let expected = [
            (Category::Circle, 0.785),
            (Category::Square, 1.0),
            (Category::Triangle, 0.5),
            (Category::Cross, 0.556),
            (Category::Ring, 0.589),
            (Category::Diamond, 0.5),
        ];
        for (c, frac) in expected {
            let mut img = RgbImage::filled(24, 24, BACKGROUND);
            let tight = draw_shape(&mut img, c, [2, 2, 22, 22]).unwrap();
            let got = painted(&img, c) as f64 / 400.0;
            // Pixel-centre sampling of a 20 px box adds up to ~1 boundary row: 0.06 tolerance.
            assert!((got - frac).abs() < 0.06, "{c}: {got} vs {frac}");
            // Symmetric shapes reach every edge of the nominal box; the triangle's apex row may
            // contain no pixel centre, but its base spans the box.
            let [x0, y0, x1, y1] = tight;
            assert_eq!((x0, x1, y1), (2, 22, 22), "{c}");
            assert!(y0 <= 3, "{c}: top {y0}");
        }
    }

    #[test]
    fn ring_has_a_hole_and_circle_does_not() {
        for (c, centre_painted) in [(Category::Ring, false), (Category::Circle, true)] {
            let mut img = RgbImage::filled(10, 10, BACKGROUND);
            draw_shape(&mut img, c, [1, 1, 9, 9]).unwrap();
            assert_eq!(img.get(4, 4) == c.color(), centre_painted, "{c}");
        }
    }

    #[test]
    fn empty_box_draws_nothing() {
        let mut img = RgbImage::filled(4, 4, BACKGROUND);
        assert_eq!(draw_shape(&mut img, Category::Circle, [2, 2, 2, 3]), None);
        assert_eq!(img, RgbImage::filled(4, 4, BACKGROUND));
    }
}
