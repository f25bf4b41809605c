//! Detectors behind one trait: the toy world's exact detector, and detections computed
//! elsewhere and imported from a COCO results file (so any external detector can be used:
//! YOLO, DETR, the paper's YOLOR...).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use semi_toyworld::{DetectorConfig, Palette, RgbImage};
use serde::{Deserialize, Serialize};

use crate::coco::{CocoInstances, COCO_CATEGORIES};

/// One detected object, in pixels of the generated image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Category name, compared case-insensitively with the layout's categories.
    pub category: String,
    /// `[x0, y0, x1, y1]` in pixels, exclusive max.
    pub bbox: [f64; 4],
    pub score: f64,
}

/// What a detector is asked about: one generated image.
#[derive(Debug, Clone, Copy)]
pub struct DetectRequest<'a> {
    /// The sample id (the plan's id).
    pub id: &'a str,
    pub image_path: &'a Path,
    /// The layout's width and height, when there is one: a detector may check the image.
    pub size: Option<(u32, u32)>,
}

/// Finds objects in generated images.
pub trait Detector {
    /// A short description for reports ("toy-exact", "coco-results:yolo.json").
    fn name(&self) -> String;
    fn detect(&self, request: &DetectRequest<'_>) -> Result<Vec<Detection>>;

    /// Detect in many images, in order (a network detector batches them).
    fn detect_all(&self, requests: &[DetectRequest<'_>]) -> Result<Vec<Vec<Detection>>> {
        requests
            .iter()
            .map(|r| {
                self.detect(r)
                    .with_context(|| format!("detecting in {}", r.image_path.display()))
            })
            .collect()
    }
}

/// A detector loaded once serves every method (`semi eval report` asks per method).
impl<T: Detector + ?Sized> Detector for std::rc::Rc<T> {
    fn name(&self) -> String {
        (**self).name()
    }

    fn detect(&self, request: &DetectRequest<'_>) -> Result<Vec<Detection>> {
        (**self).detect(request)
    }

    fn detect_all(&self, requests: &[DetectRequest<'_>]) -> Result<Vec<Vec<Detection>>> {
        (**self).detect_all(requests)
    }
}

/// The toy world's exact detector (`semi_toyworld::detect`): by colour, or by shape in the
/// latent world.
#[derive(Debug, Clone, Default)]
pub struct ToyDetector {
    /// `None`: defaults scaled to each image's size (`DetectorConfig::for_image`) with
    /// `palette`.
    pub config: Option<DetectorConfig>,
    /// The world's colouring when `config` is `None`: `Shared` names objects by shape.
    pub palette: Palette,
}

impl ToyDetector {
    /// The latent world's detector: objects named by shape.
    pub fn shapes() -> Self {
        ToyDetector {
            config: None,
            palette: Palette::Shared,
        }
    }

    /// Detect in an image already in memory.
    pub fn detect_image(&self, image: &RgbImage) -> Vec<Detection> {
        let cfg = self.config.unwrap_or_else(|| DetectorConfig {
            palette: self.palette,
            ..DetectorConfig::for_image(image.width(), image.height())
        });
        semi_toyworld::detect(image, &cfg)
            .into_iter()
            .map(|d| Detection {
                category: d.category.name().to_string(),
                bbox: d.bbox_xyxy().map(f64::from),
                score: f64::from(d.score),
            })
            .collect()
    }
}

impl Detector for ToyDetector {
    fn name(&self) -> String {
        match self.config.map_or(self.palette, |c| c.palette) {
            Palette::PerCategory => "toy-exact".to_string(),
            Palette::Shared => "toy-shapes".to_string(),
        }
    }

    fn detect(&self, request: &DetectRequest<'_>) -> Result<Vec<Detection>> {
        let image = RgbImage::load_png(request.image_path)?;
        if let Some((w, h)) = request.size {
            if (image.width(), image.height()) != (w, h) {
                bail!(
                    "{} is {}x{}, its layout {w}x{h}",
                    request.image_path.display(),
                    image.width(),
                    image.height(),
                );
            }
        }
        Ok(self.detect_image(&image))
    }
}

/// Category id -> name, for results files that name categories by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryMap(pub BTreeMap<i64, String>);

impl CategoryMap {
    /// The 80 COCO categories with their official ids.
    pub fn coco() -> Self {
        CategoryMap(
            COCO_CATEGORIES
                .iter()
                .map(|&(id, n)| (id, n.to_string()))
                .collect(),
        )
    }

    /// The categories of an instances file.
    pub fn from_instances(instances: &CocoInstances) -> Self {
        CategoryMap(instances.category_names())
    }

    /// From JSON: a list `[{"id": 1, "name": "person"}, ...]`, or an object with such a list
    /// under `categories` (an instances file: only that key is read).
    pub fn from_json(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Cat {
            id: i64,
            name: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum File {
            List(Vec<Cat>),
            Wrapped { categories: Vec<Cat> },
        }
        let file: File = serde_json::from_str(text).context(
            "categories: expected [{\"id\": ..., \"name\": ...}] or {\"categories\": [...]}",
        )?;
        let list = match file {
            File::List(l) | File::Wrapped { categories: l } => l,
        };
        let mut map = BTreeMap::new();
        for c in list {
            if map.insert(c.id, c.name).is_some() {
                bail!("categories: id {} appears twice", c.id);
            }
        }
        Ok(CategoryMap(map))
    }

    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("{}", path.display()))
    }
}

/// One entry of a COCO results file; other fields (segmentation, ...) are ignored.
#[derive(Debug, Clone, Deserialize)]
struct ResultEntry {
    image_id: i64,
    category_id: i64,
    /// `[x, y, width, height]` in pixels.
    bbox: [f64; 4],
    score: f64,
}

/// Detections imported from a COCO results file: `[{"image_id", "category_id", "bbox":
/// [x, y, w, h], "score"}, ...]` in pixels of the generated images.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoResults {
    name: String,
    by_id: HashMap<String, Vec<Detection>>,
    /// Entries dropped by the score threshold.
    pub below_threshold: usize,
}

impl CocoResults {
    /// Parse results. `image_ids` maps our sample ids to the integer image ids of the file (see
    /// [`crate::Plan::image_ids`]); `categories` maps category ids to names. An image id or a
    /// category id the maps do not have is an error naming the entry, as is a box that is not
    /// finite or has a negative size. Entries with `score < min_score` are dropped.
    pub fn from_json(
        text: &str,
        image_ids: &BTreeMap<String, i64>,
        categories: &CategoryMap,
        min_score: f64,
    ) -> Result<Self> {
        let entries: Vec<ResultEntry> = serde_json::from_str(text).context(
            "not a COCO results file ([{\"image_id\", \"category_id\", \"bbox\", \"score\"}, ...])",
        )?;
        let mut to_sample: HashMap<i64, &str> = HashMap::new();
        for (sample, &image) in image_ids {
            if let Some(other) = to_sample.insert(image, sample) {
                bail!("image id {image} is given to both {other:?} and {sample:?}");
            }
        }
        let mut by_id: HashMap<String, Vec<Detection>> = HashMap::new();
        let mut below_threshold = 0;
        for (k, e) in entries.into_iter().enumerate() {
            let Some(&sample) = to_sample.get(&e.image_id) else {
                bail!(
                    "results entry {k}: image_id {} is not one of the {} evaluated images \
                     (check the image id map)",
                    e.image_id,
                    image_ids.len()
                );
            };
            let Some(category) = categories.0.get(&e.category_id) else {
                bail!(
                    "results entry {k}: category_id {} is not a known category (pass the \
                     detector's category list)",
                    e.category_id
                );
            };
            let [x, y, w, h] = e.bbox;
            if !e.bbox.iter().all(|v| v.is_finite()) || w < 0.0 || h < 0.0 {
                bail!(
                    "results entry {k}: bbox {:?} is not a box [x, y, w, h]",
                    e.bbox
                );
            }
            if !e.score.is_finite() {
                bail!("results entry {k}: score {} is not a number", e.score);
            }
            if e.score < min_score {
                below_threshold += 1;
                continue;
            }
            by_id
                .entry(sample.to_string())
                .or_default()
                .push(Detection {
                    category: category.clone(),
                    bbox: [x, y, x + w, y + h],
                    score: e.score,
                });
        }
        Ok(CocoResults {
            name: "coco-results".to_string(),
            by_id,
            below_threshold,
        })
    }

    /// Read a results file; its name goes into the detector's name.
    pub fn from_path(
        path: impl AsRef<Path>,
        image_ids: &BTreeMap<String, i64>,
        categories: &CategoryMap,
        min_score: f64,
    ) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut r = Self::from_json(&text, image_ids, categories, min_score)
            .with_context(|| format!("{}", path.display()))?;
        r.name = format!(
            "coco-results:{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        Ok(r)
    }

    /// The detections of one sample (none when the file has none for it).
    pub fn for_id(&self, id: &str) -> &[Detection] {
        self.by_id.get(id).map(Vec::as_slice).unwrap_or(&[])
    }
}

impl Detector for CocoResults {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn detect(&self, request: &DetectRequest<'_>) -> Result<Vec<Detection>> {
        Ok(self.for_id(request.id).to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> BTreeMap<String, i64> {
        BTreeMap::from([("139".to_string(), 139), ("a".to_string(), 1)])
    }

    #[test]
    fn imports_results_with_threshold() {
        let text = r#"[{"image_id": 139, "category_id": 18, "bbox": [10, 20, 30, 40], "score": 0.9},
            {"image_id": 139, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.1, "segmentation": []},
            {"image_id": 1, "category_id": 88, "bbox": [1, 2, 3, 4], "score": 0.5}]"#;
        let r = CocoResults::from_json(text, &ids(), &CategoryMap::coco(), 0.3).unwrap();
        assert_eq!(r.below_threshold, 1);
        assert_eq!(
            r.for_id("139"),
            &[Detection {
                category: "dog".into(),
                bbox: [10.0, 20.0, 40.0, 60.0],
                score: 0.9
            }]
        );
        assert_eq!(r.for_id("a")[0].category, "teddy bear");
        assert!(r.for_id("nothing").is_empty());
    }

    #[test]
    fn unknown_images_and_categories_are_errors() {
        let e = format!(
            "{:#}",
            CocoResults::from_json(
                r#"[{"image_id": 139, "category_id": 18, "bbox": [0,0,1,1], "score": 1},
                {"image_id": 140, "category_id": 18, "bbox": [0,0,1,1], "score": 1}]"#,
                &ids(),
                &CategoryMap::coco(),
                0.0
            )
            .unwrap_err()
        );
        assert_eq!(e, "results entry 1: image_id 140 is not one of the 2 evaluated images (check the image id map)");
        let e = format!(
            "{:#}",
            CocoResults::from_json(
                r#"[{"image_id": 139, "category_id": 12, "bbox": [0,0,1,1], "score": 1}]"#,
                &ids(),
                &CategoryMap::coco(),
                0.0
            )
            .unwrap_err()
        );
        assert!(
            e.starts_with("results entry 0: category_id 12 is not a known category"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            CocoResults::from_json(
                r#"[{"image_id": 139, "category_id": 18, "bbox": [0,0,-1,1], "score": 1}]"#,
                &ids(),
                &CategoryMap::coco(),
                0.0
            )
            .unwrap_err()
        );
        assert!(e.contains("is not a box"), "{e}");
        let e = format!(
            "{:#}",
            CocoResults::from_json(
                r#"[{"image_id": 139, "category_id": 18, "bbox": [0,0,1,1]}]"#,
                &ids(),
                &CategoryMap::coco(),
                0.0
            )
            .unwrap_err()
        );
        assert!(e.contains("missing field `score`"), "{e}");
    }

    #[test]
    fn category_maps_from_json() {
        let m = CategoryMap::from_json(r#"[{"id": 0, "name": "circle"}]"#).unwrap();
        assert_eq!(m.0[&0], "circle");
        let m = CategoryMap::from_json(r#"{"images": [], "categories": [{"id": 3, "name": "car", "supercategory": "vehicle"}]}"#).unwrap();
        assert_eq!(m.0[&3], "car");
        assert!(
            CategoryMap::from_json(r#"[{"id": 0, "name": "a"}, {"id": 0, "name": "b"}]"#).is_err()
        );
    }

    #[test]
    fn toy_detector_names_categories() {
        let mut img = RgbImage::filled(32, 32, semi_toyworld::BACKGROUND);
        for y in 4..12 {
            for x in 6..16 {
                img.put(x, y, semi_toyworld::Category::Square.color());
            }
        }
        let d = ToyDetector::default().detect_image(&img);
        assert_eq!(
            d,
            vec![Detection {
                category: "square".into(),
                bbox: [6.0, 4.0, 16.0, 12.0],
                score: 1.0
            }]
        );
        // In the latent world the same pixels in the circle's colour are still a square.
        let mut img = RgbImage::filled(32, 32, semi_toyworld::BACKGROUND);
        for y in 4..12 {
            for x in 6..16 {
                img.put(x, y, semi_toyworld::Category::Circle.color());
            }
        }
        let shapes = ToyDetector::shapes();
        assert_eq!(shapes.name(), "toy-shapes");
        assert_eq!(shapes.detect_image(&img)[0].category, "square");
        assert_eq!(
            ToyDetector::default().detect_image(&img)[0].category,
            "circle"
        );
    }
}
