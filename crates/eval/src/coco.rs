//! COCO 2017 annotation files: `instances_*.json` (images, boxes, categories) and
//! `captions_*.json` (five captions per image).
//!
//! Only the fields the evaluation uses are kept; everything else (segmentation polygons and RLE
//! masks, licenses, urls) is skipped by serde without being built, and files are parsed from a
//! buffered reader, so the 450 MB `instances_train2017.json` costs little more memory than its
//! boxes. Ids are `i64` as in the files.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One image entry (`images[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: i64,
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub file_name: String,
}

/// One instance annotation (`annotations[]` of an instances file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, width, height]` in pixels of the original image.
    pub bbox: [f64; 4],
    #[serde(default)]
    pub area: f64,
    /// 1 for a crowd region (one box over many objects), 0 for one object.
    #[serde(default)]
    pub iscrowd: u8,
}

/// One category (`categories[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoCategory {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub supercategory: String,
}

/// An instances file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoInstances {
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoAnnotation>,
    pub categories: Vec<CocoCategory>,
}

/// One caption (`annotations[]` of a captions file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoCaption {
    pub id: i64,
    pub image_id: i64,
    pub caption: String,
}

/// A captions file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCaptions {
    #[serde(default)]
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoCaption>,
}

fn parse_reader<T: serde::de::DeserializeOwned>(reader: impl Read, what: &str) -> Result<T> {
    serde_json::from_reader(reader).with_context(|| format!("not a COCO {what} file"))
}

fn open(path: &Path) -> Result<BufReader<File>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(BufReader::with_capacity(1 << 20, f))
}

impl CocoInstances {
    /// Parse an instances file from any reader (buffer it).
    pub fn from_reader(reader: impl Read) -> Result<Self> {
        let v: Self = parse_reader(reader, "instances")?;
        v.check()?;
        Ok(v)
    }

    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_reader(text.as_bytes())
    }

    /// Read `instances_*.json`; errors name the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_reader(open(path)?).with_context(|| format!("reading {}", path.display()))
    }

    /// Duplicate ids and references to unknown images or categories are errors: they mean a
    /// broken or mixed-up file, and would silently change which samples qualify.
    fn check(&self) -> Result<()> {
        let mut images = HashMap::new();
        for im in &self.images {
            if images.insert(im.id, im).is_some() {
                bail!("images: id {} appears twice", im.id);
            }
        }
        let mut cats = HashMap::new();
        for c in &self.categories {
            if cats.insert(c.id, c).is_some() {
                bail!("categories: id {} appears twice", c.id);
            }
        }
        for (k, a) in self.annotations.iter().enumerate() {
            if !images.contains_key(&a.image_id) {
                bail!(
                    "annotations[{k}] (id {}): image_id {} is not in `images`",
                    a.id,
                    a.image_id
                );
            }
            if !cats.contains_key(&a.category_id) {
                bail!(
                    "annotations[{k}] (id {}): category_id {} is not in `categories`",
                    a.id,
                    a.category_id
                );
            }
        }
        Ok(())
    }

    /// Category id -> name.
    pub fn category_names(&self) -> BTreeMap<i64, String> {
        self.categories
            .iter()
            .map(|c| (c.id, c.name.clone()))
            .collect()
    }

    /// Annotations grouped by image id, each group sorted by annotation id.
    pub fn annotations_by_image(&self) -> BTreeMap<i64, Vec<&CocoAnnotation>> {
        let mut out: BTreeMap<i64, Vec<&CocoAnnotation>> = BTreeMap::new();
        for a in &self.annotations {
            out.entry(a.image_id).or_default().push(a);
        }
        for v in out.values_mut() {
            v.sort_by_key(|a| a.id);
        }
        out
    }
}

impl CocoCaptions {
    pub fn from_reader(reader: impl Read) -> Result<Self> {
        parse_reader(reader, "captions")
    }

    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_reader(text.as_bytes())
    }

    /// Read `captions_*.json`; errors name the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_reader(open(path)?).with_context(|| format!("reading {}", path.display()))
    }

    /// Captions grouped by image id, each group sorted by caption id.
    pub fn by_image(&self) -> BTreeMap<i64, Vec<&CocoCaption>> {
        let mut out: BTreeMap<i64, Vec<&CocoCaption>> = BTreeMap::new();
        for c in &self.annotations {
            out.entry(c.image_id).or_default().push(c);
        }
        for v in out.values_mut() {
            v.sort_by_key(|c| c.id);
        }
        out
    }
}

/// The 80 COCO 2017 detection categories as (id, name); ids run 1..=90 with gaps, as in the
/// official files and every COCO-trained detector's results.
pub const COCO_CATEGORIES: [(i64, &str); 80] = [
    (1, "person"),
    (2, "bicycle"),
    (3, "car"),
    (4, "motorcycle"),
    (5, "airplane"),
    (6, "bus"),
    (7, "train"),
    (8, "truck"),
    (9, "boat"),
    (10, "traffic light"),
    (11, "fire hydrant"),
    (13, "stop sign"),
    (14, "parking meter"),
    (15, "bench"),
    (16, "bird"),
    (17, "cat"),
    (18, "dog"),
    (19, "horse"),
    (20, "sheep"),
    (21, "cow"),
    (22, "elephant"),
    (23, "bear"),
    (24, "zebra"),
    (25, "giraffe"),
    (27, "backpack"),
    (28, "umbrella"),
    (31, "handbag"),
    (32, "tie"),
    (33, "suitcase"),
    (34, "frisbee"),
    (35, "skis"),
    (36, "snowboard"),
    (37, "sports ball"),
    (38, "kite"),
    (39, "baseball bat"),
    (40, "baseball glove"),
    (41, "skateboard"),
    (42, "surfboard"),
    (43, "tennis racket"),
    (44, "bottle"),
    (46, "wine glass"),
    (47, "cup"),
    (48, "fork"),
    (49, "knife"),
    (50, "spoon"),
    (51, "bowl"),
    (52, "banana"),
    (53, "apple"),
    (54, "sandwich"),
    (55, "orange"),
    (56, "broccoli"),
    (57, "carrot"),
    (58, "hot dog"),
    (59, "pizza"),
    (60, "donut"),
    (61, "cake"),
    (62, "chair"),
    (63, "couch"),
    (64, "potted plant"),
    (65, "bed"),
    (67, "dining table"),
    (70, "toilet"),
    (72, "tv"),
    (73, "laptop"),
    (74, "mouse"),
    (75, "remote"),
    (76, "keyboard"),
    (77, "cell phone"),
    (78, "microwave"),
    (79, "oven"),
    (80, "toaster"),
    (81, "sink"),
    (82, "refrigerator"),
    (84, "book"),
    (85, "clock"),
    (86, "vase"),
    (87, "scissors"),
    (88, "teddy bear"),
    (89, "hair drier"),
    (90, "toothbrush"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn builtin_categories_are_the_80_distinct_coco_ones() {
        let ids: HashSet<i64> = COCO_CATEGORIES.iter().map(|c| c.0).collect();
        let names: HashSet<&str> = COCO_CATEGORIES.iter().map(|c| c.1).collect();
        assert_eq!((ids.len(), names.len()), (80, 80));
        assert!(ids.iter().all(|&i| (1..=90).contains(&i)));
        // The 10 unused ids of the 2014 paper's 91-category list.
        let unused: Vec<i64> = (1..=90).filter(|i| !ids.contains(i)).collect();
        assert_eq!(unused, vec![12, 26, 29, 30, 45, 66, 68, 69, 71, 83]);
    }

    #[test]
    fn broken_references_are_errors() {
        let text = r#"{"images": [{"id": 1, "width": 10, "height": 10}],
            "categories": [{"id": 18, "name": "dog"}],
            "annotations": [{"id": 5, "image_id": 2, "category_id": 18, "bbox": [0,0,1,1]}]}"#;
        let e = format!("{:#}", CocoInstances::from_json(text).unwrap_err());
        assert_eq!(e, "annotations[0] (id 5): image_id 2 is not in `images`");
        let text = text
            .replace("\"image_id\": 2", "\"image_id\": 1")
            .replace("18, \"bbox", "17, \"bbox");
        let e = format!("{:#}", CocoInstances::from_json(&text).unwrap_err());
        assert_eq!(
            e,
            "annotations[0] (id 5): category_id 17 is not in `categories`"
        );
        let e = format!(
            "{:#}",
            CocoInstances::from_json("{\"images\": [").unwrap_err()
        );
        assert!(e.starts_with("not a COCO instances file: EOF"), "{e}");
    }
}
