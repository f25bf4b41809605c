//! The paper's evaluation samples (section 4.3): COCO images whose every box category is named
//! in a caption, 3000 with one object and 3000 with two, as layouts.
//!
//! The rule, step by step ([`select_samples`]):
//! 1. **Images.** Every image of the instances file, with its annotations in annotation-id
//!    order. An image with a **crowd** annotation (`iscrowd = 1`, one box over many objects) is
//!    excluded: its layout would either hold a box that is not one object or leave out objects
//!    the caption names. An image without annotations is excluded.
//! 2. **Objects.** Every annotation is one object, so the object count is the box count (two dogs
//!    make a two-object sample of category "dog" twice). Boxes are normalised by the image size
//!    and clamped to [0, 1] (COCO boxes overrun their image by a fraction of a pixel now and then).
//!    Coordinates are rounded to 6 decimals (a millionth of the image side, 0.0005 px at 512):
//!    the JSONL stays short and reads back exactly.
//! 3. **Tiny boxes.** An image with a box covering less than `min_box_fraction` of the image
//!    (default 1/256: one cell of the 16 x 16 ticket grid, 32 x 32 px at 512 x 512, the smallest
//!    region SemI can address) is excluded, as is one with a box that is empty after clamping
//!    and rounding. 0 disables the check.
//! 4. **Caption.** The image's captions are tried in caption-id order; the first that names every
//!    box category (see [`crate::naming`] for what "names" means) makes the sample. At most one
//!    sample per image, so no layout is evaluated twice. Whitespace runs in the caption are
//!    collapsed to one space and the ends trimmed; the result is the prompt.
//! 5. **Selection.** Each qualifying image gets the key `mix64(seed ^ mix64(image_id))`
//!    (SplitMix64's mixer, `semi_toyworld::rng::mix64`); for every wanted object count the
//!    samples with that count are sorted by (key, image id) and the first `k` taken. The output
//!    lists the chosen samples of all counts together in (key, image id) order, so any prefix of
//!    the file is itself a random mix. The choice depends only on the files and the seed.
//!
//! Each layout: `id` = the COCO image id (so detections in COCO results format map back
//! without a table), `prompt` = the caption, `width` x `height` (512 x 512 for SD), no seed
//! (the batch assigns one), objects in annotation-id order with `category` = the COCO name,
//! `phrase` = the caption's words that name it ("dogs"), `bbox` normalised.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};
use semi_layout::{BBox, Layout, LayoutObject};
use semi_toyworld::rng::mix64;
use serde::{Deserialize, Serialize};

use crate::coco::{CocoAnnotation, CocoCaptions, CocoInstances};
use crate::naming::NameMatcher;

/// Settings of the sample rule; the default is the paper's protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRule {
    /// Object count -> number of samples wanted (default {1: 3000, 2: 3000}).
    pub counts: BTreeMap<usize, usize>,
    /// Seed of the selection order.
    pub seed: u64,
    /// Size of the layouts produced (and of the images to generate).
    pub width: u32,
    pub height: u32,
    /// Smallest box area allowed, as a fraction of the image area; see the module docs.
    pub min_box_fraction: f64,
    /// Extra names per category (none by default; see [`crate::naming`]).
    pub aliases: BTreeMap<String, Vec<String>>,
}

impl Default for SampleRule {
    fn default() -> Self {
        SampleRule {
            counts: BTreeMap::from([(1, 3000), (2, 3000)]),
            seed: 0,
            width: 512,
            height: 512,
            min_box_fraction: 1.0 / 256.0,
            aliases: BTreeMap::new(),
        }
    }
}

/// Why images were left out, and how many samples each object count had and got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SelectionStats {
    pub images: usize,
    pub without_boxes: usize,
    pub with_crowd: usize,
    pub with_tiny_box: usize,
    /// Images whose box count is not one of the wanted counts.
    pub other_count: usize,
    /// Images none of whose captions names every box category.
    pub not_named: usize,
    /// Object count -> qualifying samples.
    pub available: BTreeMap<usize, usize>,
    /// Object count -> samples chosen (less than wanted when too few qualify).
    pub selected: BTreeMap<usize, usize>,
}

impl SelectionStats {
    /// Counts that got fewer samples than wanted, as (object count, wanted, got).
    pub fn shortfalls(&self, rule: &SampleRule) -> Vec<(usize, usize, usize)> {
        rule.counts
            .iter()
            .map(|(&n, &want)| (n, want, self.selected.get(&n).copied().unwrap_or(0)))
            .filter(|&(_, want, got)| got < want)
            .collect()
    }
}

impl std::fmt::Display for SelectionStats {
    /// A few lines for the terminal: what was excluded and why, what was chosen.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} images: {} without boxes, {} with crowd boxes, {} with tiny boxes, {} with \
             another object count, {} without a caption naming every category",
            self.images,
            self.without_boxes,
            self.with_crowd,
            self.with_tiny_box,
            self.other_count,
            self.not_named
        )?;
        for (n, avail) in &self.available {
            let got = self.selected.get(n).copied().unwrap_or(0);
            writeln!(
                f,
                "{n}-object samples: {got} selected of {avail} qualifying"
            )?;
        }
        Ok(())
    }
}

/// The chosen samples as layouts, in selection order, and the statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub layouts: Vec<Layout>,
    pub stats: SelectionStats,
}

impl Selection {
    /// The layouts as JSONL (one per line), ready for [`crate::write_atomic`].
    pub fn to_jsonl(&self) -> String {
        semi_layout::to_jsonl(&self.layouts)
    }
}

/// A normalised, clamped, rounded box; `None` when nothing is left of it.
fn normalise(a: &CocoAnnotation, width: u32, height: u32) -> Option<BBox> {
    let [x, y, w, h] = a.bbox;
    let (iw, ih) = (f64::from(width), f64::from(height));
    let c = |v: f64| (v.clamp(0.0, 1.0) * 1e6).round() / 1e6;
    let b = [c(x / iw), c(y / ih), c((x + w) / iw), c((y + h) / ih)];
    if b.iter().all(|v| v.is_finite()) && b[0] < b[2] && b[1] < b[3] {
        Some(BBox::from(b))
    } else {
        None
    }
}

/// Collapse whitespace runs and trim.
fn clean_caption(c: &str) -> String {
    c.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Apply the sample rule (module docs) to an instances file and the captions file of the same
/// split. A caption of an image the instances file does not list is an error (the two files are
/// from different splits).
pub fn select_samples(
    instances: &CocoInstances,
    captions: &CocoCaptions,
    rule: &SampleRule,
) -> Result<Selection> {
    if rule.width == 0 || rule.height == 0 {
        bail!(
            "sample size {}x{} must be positive",
            rule.width,
            rule.height
        );
    }
    if rule.counts.contains_key(&0) {
        bail!("an object count of 0 cannot be selected");
    }
    let names = instances.category_names();
    let vocabulary: Vec<String> = names.values().cloned().collect();
    let matcher = NameMatcher::new(&vocabulary, &rule.aliases);
    let anns = instances.annotations_by_image();
    let caps = captions.by_image();
    let images: HashMap<i64, _> = instances.images.iter().map(|i| (i.id, i)).collect();
    if let Some(id) = caps.keys().find(|id| !images.contains_key(id)) {
        bail!(
            "the captions file has captions for image {id}, which the instances file does not \
             list: are they from the same split (e.g. both val2017)?"
        );
    }
    let mut stats = SelectionStats {
        images: instances.images.len(),
        ..Default::default()
    };
    // (key, image id, layout)
    let mut candidates: BTreeMap<usize, Vec<(u64, i64, Layout)>> = BTreeMap::new();
    let mut ids: Vec<i64> = images.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let image = images[&id];
        let Some(boxes) = anns.get(&id) else {
            stats.without_boxes += 1;
            continue;
        };
        if boxes.iter().any(|a| a.iscrowd != 0) {
            stats.with_crowd += 1;
            continue;
        }
        if !rule.counts.contains_key(&boxes.len()) {
            stats.other_count += 1;
            continue;
        }
        let norm: Vec<Option<BBox>> = boxes
            .iter()
            .map(|a| normalise(a, image.width, image.height))
            .collect();
        if norm
            .iter()
            .any(|b| b.is_none_or(|b| b.area() < rule.min_box_fraction))
        {
            stats.with_tiny_box += 1;
            continue;
        }
        let chosen = caps.get(&id).into_iter().flatten().find_map(|c| {
            let prompt = clean_caption(&c.caption);
            let objects: Option<Vec<LayoutObject>> = boxes
                .iter()
                .zip(&norm)
                .map(|(a, b)| {
                    let cat = &names[&a.category_id];
                    let m = matcher.find(&prompt, cat)?;
                    Some(LayoutObject::new(
                        m.text,
                        cat.clone(),
                        b.expect("checked above"),
                    ))
                })
                .collect();
            Some((prompt, objects?))
        });
        let Some((prompt, objects)) = chosen else {
            stats.not_named += 1;
            continue;
        };
        let mut layout = Layout::new(prompt, rule.width, rule.height, objects);
        layout.id = Some(id.to_string());
        layout
            .validate()
            .with_context(|| format!("sample from image {id}"))?;
        let key = mix64(rule.seed ^ mix64(id as u64));
        candidates
            .entry(boxes.len())
            .or_default()
            .push((key, id, layout));
    }

    let mut chosen: Vec<(u64, i64, Layout)> = Vec::new();
    for (&n, &want) in &rule.counts {
        let mut group = candidates.remove(&n).unwrap_or_default();
        stats.available.insert(n, group.len());
        group.sort_by_key(|(key, id, _)| (*key, *id));
        group.truncate(want);
        stats.selected.insert(n, group.len());
        chosen.extend(group);
    }
    chosen.sort_by_key(|(key, id, _)| (*key, *id));
    Ok(Selection {
        layouts: chosen.into_iter().map(|(_, _, l)| l).collect(),
        stats,
    })
}
