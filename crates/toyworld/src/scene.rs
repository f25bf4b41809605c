//! The seeded scene generator.
//!
//! A scene is a square RGB image on the mid-grey background with 1-3 objects (by default), each a
//! distinct category (no duplicates by default), each with a random size and position. Objects
//! never overlap: every new object's nominal box must keep `gap` empty pixels to each earlier box;
//! a position is drawn again (with a new size) up to `max_attempts` times, and if one object cannot
//! be placed all boxes are drawn again (the object count and categories are kept, so counts stay
//! uniform). Crowded scenes therefore get somewhat smaller objects than the uniform size range. The random stream depends only on
//! (seed, index), so scene `index` of a run is the same whatever else is generated.

use crate::caption::make_caption;
use crate::category::{Category, BACKGROUND};
use crate::image::RgbImage;
use crate::palette::{Palette, SHARED_COLORS};
use crate::rng::SplitMix64;
use crate::shapes::draw_shape_in;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// How many times a whole layout is redrawn before generation reports the config as too crowded.
const MAX_LAYOUT_RESTARTS: u32 = 1000;

/// Parameters of the world. `WorldConfig::default()` is the 32x32 world the toy model is trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldConfig {
    /// Image width and height in pixels.
    pub size: u32,
    /// Fewest objects per scene.
    pub min_objects: u32,
    /// Most objects per scene.
    pub max_objects: u32,
    /// Smallest nominal box side in pixels (the painted shape's tight box can be a pixel smaller).
    pub min_object_size: u32,
    /// Largest nominal box side in pixels.
    pub max_object_size: u32,
    /// Largest width/height ratio of a nominal box; 1.0 gives square boxes (the default), larger
    /// values stretch shapes into ellipses, rectangles and so on.
    pub max_aspect: f64,
    /// Empty pixels required between nominal boxes. At least 1 keeps same-coloured objects from
    /// merging into one 8-connected component.
    pub gap: u32,
    /// Whether a scene may hold several objects of one category (captioned "two circles").
    pub allow_duplicates: bool,
    /// Position draws per object before the whole layout is redrawn.
    pub max_attempts: u32,
    /// How objects are coloured (absent from the first world's files).
    #[serde(default, skip_serializing_if = "Palette::is_per_category")]
    pub palette: Palette,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            size: 32,
            min_objects: 1,
            max_objects: 3,
            min_object_size: 8,
            max_object_size: 20,
            max_aspect: 1.0,
            gap: 1,
            allow_duplicates: false,
            max_attempts: 100,
            palette: Palette::PerCategory,
        }
    }
}

impl WorldConfig {
    /// The default world at another image size, object sizes scaled proportionally.
    pub fn with_size(size: u32) -> Self {
        let d = Self::default();
        let scale = |v: u32| ((u64::from(v) * u64::from(size)) / u64::from(d.size)) as u32;
        Self {
            size,
            min_object_size: scale(d.min_object_size).max(4),
            max_object_size: scale(d.max_object_size).max(4),
            ..d
        }
    }

    /// The latent world (issue 22): 64x64 images of one or two objects, 16-40 px, each in a
    /// colour of the shared palette drawn independently of its shape. A VAE with a scale
    /// factor of 2 makes 32x32 latents, whose probe grid of 2x2-latent-pixel cells is 16x16, as
    /// SD's 4x4 cells are at 512.
    pub fn latent() -> Self {
        Self {
            max_objects: 2,
            palette: Palette::Shared,
            ..Self::with_size(64)
        }
    }

    /// Checks that scenes can be generated with this config.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.size >= 4, "world size {} is below 4 px", self.size);
        ensure!(
            (1..=self.max_objects).contains(&self.min_objects),
            "objects per scene must satisfy 1 <= min ({}) <= max ({})",
            self.min_objects,
            self.max_objects
        );
        ensure!(
            self.allow_duplicates || self.max_objects as usize <= Category::ALL.len(),
            "max_objects {} needs duplicates: there are only {} categories",
            self.max_objects,
            Category::ALL.len()
        );
        ensure!(
            self.max_objects <= 10,
            "max_objects {} exceeds the caption grammar's limit of 10",
            self.max_objects
        );
        ensure!(
            4 <= self.min_object_size
                && self.min_object_size <= self.max_object_size
                && self.max_object_size <= self.size,
            "object sizes must satisfy 4 <= min ({}) <= max ({}) <= image size ({})",
            self.min_object_size,
            self.max_object_size,
            self.size
        );
        ensure!(
            self.max_aspect.is_finite() && self.max_aspect >= 1.0,
            "max_aspect {} must be a finite number >= 1",
            self.max_aspect
        );
        ensure!(self.max_attempts >= 1, "max_attempts must be at least 1");
        Ok(())
    }
}

/// One drawn object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneObject {
    pub category: Category,
    /// Tight pixel box of the painted pixels, `[x0, y0, x1, y1]` with exclusive max.
    pub bbox: [u32; 4],
}

impl SceneObject {
    /// The box normalised by the image size, `[x0, y0, x1, y1]` in [0, 1].
    pub fn bbox_normalized(&self, width: u32, height: u32) -> [f32; 4] {
        let [x0, y0, x1, y1] = self.bbox;
        let (w, h) = (width as f32, height as f32);
        [x0 as f32 / w, y0 as f32 / h, x1 as f32 / w, y1 as f32 / h]
    }

    /// The box in COCO form `[x, y, width, height]`, pixels.
    pub fn bbox_xywh(&self) -> [f32; 4] {
        let [x0, y0, x1, y1] = self.bbox;
        [x0 as f32, y0 as f32, (x1 - x0) as f32, (y1 - y0) as f32]
    }
}

/// A generated scene: image, objects (in drawing order) and caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub seed: u64,
    pub index: u64,
    pub image: RgbImage,
    pub objects: Vec<SceneObject>,
    /// `(category, count)` in caption order.
    pub groups: Vec<(Category, u32)>,
    pub caption: String,
}

/// The JSON form of a scene without its pixels (one line of a dataset's JSONL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneRecord {
    pub index: u64,
    pub seed: u64,
    pub caption: String,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<ObjectRecord>,
}

/// One object of a [`SceneRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub category: Category,
    pub category_id: usize,
    /// Normalised `[x0, y0, x1, y1]`.
    pub bbox: [f32; 4],
    /// Pixel `[x0, y0, x1, y1]`, exclusive max.
    pub bbox_px: [u32; 4],
}

impl Scene {
    /// Generates scene `index` of the run `seed`; deterministic in (seed, index, config).
    pub fn generate(seed: u64, index: u64, cfg: &WorldConfig) -> Result<Scene> {
        cfg.validate().context("invalid world config")?;
        let mut rng = SplitMix64::for_item(seed, index);
        let categories = draw_categories(&mut rng, cfg);
        for _ in 0..MAX_LAYOUT_RESTARTS {
            let Some(boxes) = place_boxes(&mut rng, cfg, categories.len()) else {
                continue;
            };
            // Colours are drawn only in the shared-palette world, after the layout, so the first
            // world's random stream (and every scene of it) is unchanged.
            let colors: Vec<[u8; 3]> = match cfg.palette {
                Palette::PerCategory => categories.iter().map(|c| c.color()).collect(),
                Palette::Shared => (0..categories.len())
                    .map(|_| SHARED_COLORS[rng.below(SHARED_COLORS.len() as u64) as usize])
                    .collect(),
            };
            let mut image = RgbImage::filled(cfg.size, cfg.size, BACKGROUND);
            let mut objects = Vec::with_capacity(boxes.len());
            for ((&category, &nominal), &color) in categories.iter().zip(&boxes).zip(&colors) {
                let bbox = draw_shape_in(&mut image, category, nominal, color)
                    .with_context(|| format!("{category} in box {nominal:?} painted no pixel"))?;
                objects.push(SceneObject { category, bbox });
            }
            // Objects were drawn in random category order, so grouping by first appearance
            // gives a random caption order.
            let mut groups: Vec<(Category, u32)> = Vec::new();
            for o in &objects {
                match groups.iter_mut().find(|(c, _)| *c == o.category) {
                    Some(g) => g.1 += 1,
                    None => groups.push((o.category, 1)),
                }
            }
            let caption = make_caption(&groups)?;
            return Ok(Scene {
                seed,
                index,
                image,
                objects,
                groups,
                caption,
            });
        }
        bail!(
            "could not place {} objects of {}-{} px in a {} px image with gap {} \
             after {MAX_LAYOUT_RESTARTS} layouts (seed {seed}, index {index})",
            categories.len(),
            cfg.min_object_size,
            cfg.max_object_size,
            cfg.size,
            cfg.gap
        )
    }

    /// The scene without its pixels, for JSONL.
    pub fn record(&self) -> SceneRecord {
        let (w, h) = (self.image.width(), self.image.height());
        SceneRecord {
            index: self.index,
            seed: self.seed,
            caption: self.caption.clone(),
            width: w,
            height: h,
            objects: self
                .objects
                .iter()
                .map(|o| ObjectRecord {
                    category: o.category,
                    category_id: o.category.id(),
                    bbox: o.bbox_normalized(w, h),
                    bbox_px: o.bbox,
                })
                .collect(),
        }
    }
}

fn draw_categories(rng: &mut SplitMix64, cfg: &WorldConfig) -> Vec<Category> {
    let n = rng.range_inclusive(cfg.min_objects, cfg.max_objects) as usize;
    if cfg.allow_duplicates {
        (0..n)
            .map(|_| Category::ALL[rng.below(Category::ALL.len() as u64) as usize])
            .collect()
    } else {
        let mut all = Category::ALL;
        rng.shuffle(&mut all);
        all[..n].to_vec()
    }
}

/// Draws `n` nominal boxes that keep `cfg.gap` pixels apart, or `None` if one cannot be placed.
fn place_boxes(rng: &mut SplitMix64, cfg: &WorldConfig, n: usize) -> Option<Vec<[u32; 4]>> {
    let mut boxes: Vec<[u32; 4]> = Vec::with_capacity(n);
    for _ in 0..n {
        let placed = (0..cfg.max_attempts).find_map(|_| {
            let (w, h) = draw_box_size(rng, cfg);
            let x0 = rng.range_inclusive(0, cfg.size - w);
            let y0 = rng.range_inclusive(0, cfg.size - h);
            let b = [x0, y0, x0 + w, y0 + h];
            boxes.iter().all(|o| apart(&b, o, cfg.gap)).then_some(b)
        })?;
        boxes.push(placed);
    }
    Some(boxes)
}

/// Side drawn uniformly in the size range; with `max_aspect > 1` the box is stretched by a
/// log-uniform ratio while keeping its area, then clamped to the image.
fn draw_box_size(rng: &mut SplitMix64, cfg: &WorldConfig) -> (u32, u32) {
    let side = rng.range_inclusive(cfg.min_object_size, cfg.max_object_size);
    if cfg.max_aspect <= 1.0 {
        return (side, side);
    }
    let log_ratio = (2.0 * rng.next_f64() - 1.0) * cfg.max_aspect.ln();
    let r = log_ratio.exp().sqrt();
    let clamp = |v: f64| (v.round() as u32).clamp(4, cfg.size);
    (clamp(f64::from(side) * r), clamp(f64::from(side) / r))
}

/// Whether two boxes leave at least `gap` empty pixels between them on some axis.
fn apart(a: &[u32; 4], b: &[u32; 4], gap: u32) -> bool {
    a[0] >= b[2] + gap || b[0] >= a[2] + gap || a[1] >= b[3] + gap || b[1] >= a[3] + gap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_bad_ones_are_not() {
        WorldConfig::default().validate().unwrap();
        WorldConfig::with_size(64).validate().unwrap();
        assert_eq!(WorldConfig::with_size(64).max_object_size, 40);
        let bad = [
            WorldConfig {
                min_objects: 0,
                ..Default::default()
            },
            WorldConfig {
                max_objects: 7,
                ..Default::default()
            },
            WorldConfig {
                max_object_size: 33,
                ..Default::default()
            },
            WorldConfig {
                min_object_size: 3,
                ..Default::default()
            },
            WorldConfig {
                max_aspect: 0.5,
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(Scene::generate(0, 0, &cfg).is_err(), "{cfg:?}");
        }
    }

    #[test]
    fn apart_respects_gap() {
        let a = [0, 0, 4, 4];
        assert!(apart(&a, &[5, 0, 8, 4], 1));
        assert!(!apart(&a, &[4, 0, 8, 4], 1));
        assert!(apart(&a, &[4, 0, 8, 4], 0));
        assert!(!apart(&a, &[3, 3, 8, 8], 0));
    }

    #[test]
    fn impossible_layout_is_a_clear_error() {
        let cfg = WorldConfig {
            size: 8,
            min_objects: 3,
            max_objects: 3,
            min_object_size: 8,
            max_object_size: 8,
            ..Default::default()
        };
        let err = Scene::generate(1, 2, &cfg).unwrap_err().to_string();
        assert!(err.contains("could not place"), "{err}");
    }
}
