//! The evaluation plan: which layouts, under which ids and seeds. Everything a shard, a merge
//! and a report must agree on is fixed here, before any image exists.
//!
//! - **Ids** name output files, so they must be safe file names: a letter or digit, then
//!   letters, digits, `.`, `_`, `-` (at most 128 characters). A layout without an id is named
//!   by its position, `000042` (zero-padded to 6). Duplicate ids are an error.
//! - **Seeds**: the layout's own `seed` when it has one; otherwise the first 4 bytes (big-endian)
//!   of `SHA-256("semi-eval-seed/1" 0x00 base_seed as u64 little-endian, 0x00, id)`, a number
//!   below 2^32 so that every tool (torch, numpy) accepts it. It depends on the base seed and
//!   the id only, never on the shard count or the order of work.
//! - **Fingerprint**: SHA-256 over every item's index, id, seed and layout (as one JSON line):
//!   shard manifests carry it, so a merge refuses shards made from another file or base seed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use semi_layout::{BatchEntry, Layout};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::shard::Shard;

/// One layout to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanItem {
    /// Position in the layouts file (0-based); decides the shard.
    pub index: usize,
    pub id: String,
    pub seed: u64,
    pub layout: Layout,
    /// SHA-256 of the layout's JSON line: how outputs are matched to the layout that made them.
    pub layout_sha256: String,
}

/// The items of a batch; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    items: Vec<PlanItem>,
    base_seed: u64,
    fingerprint: String,
    by_id: HashMap<String, usize>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The seed of a layout without its own (see the module docs).
pub fn item_seed(base_seed: u64, id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(b"semi-eval-seed/1\0");
    h.update(base_seed.to_le_bytes());
    h.update(b"\0");
    h.update(id.as_bytes());
    let d = h.finalize();
    u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
}

/// Check that `name` can be a file or directory name (ids and method names). `extra` lists
/// punctuation allowed besides `.`, `_`, `-`.
pub(crate) fn check_name(what: &str, name: &str, extra: &[char]) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c);
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || name.len() > 128 || !name.chars().all(ok_char) {
        let allowed: String = extra.iter().map(|c| format!(" '{c}'")).collect();
        bail!(
            "{what} {name:?} cannot name a file: use a letter or digit, then letters, digits, \
             '.', '_', '-'{allowed} (at most 128 characters)"
        );
    }
    Ok(())
}

impl Plan {
    /// A plan for layouts numbered in order (line `index + 1` in messages).
    pub fn new(layouts: Vec<Layout>, base_seed: u64) -> Result<Plan> {
        let entries = layouts
            .into_iter()
            .enumerate()
            .map(|(i, layout)| BatchEntry {
                line: i + 1,
                layout,
            })
            .collect();
        Plan::from_entries(entries, base_seed)
    }

    /// A plan for layouts read from a file (errors name their line).
    pub fn from_entries(entries: Vec<BatchEntry>, base_seed: u64) -> Result<Plan> {
        if entries.is_empty() {
            bail!("the batch has no layouts");
        }
        let mut items = Vec::with_capacity(entries.len());
        let mut by_id: HashMap<String, usize> = HashMap::new();
        let mut lines: Vec<usize> = Vec::with_capacity(entries.len());
        let mut fp = Sha256::new();
        fp.update(b"semi-eval-plan/1\0");
        for (index, e) in entries.into_iter().enumerate() {
            let id = e.layout.id.clone().unwrap_or_else(|| format!("{index:06}"));
            check_name("id", &id, &[]).with_context(|| format!("line {}", e.line))?;
            if let Some(&first) = by_id.get(&id) {
                bail!(
                    "line {}: id {id:?} is already used on line {}",
                    e.line,
                    lines[first]
                );
            }
            let seed = e.layout.seed.unwrap_or_else(|| item_seed(base_seed, &id));
            let line = e.layout.to_json_line();
            let layout_sha256 = sha256_hex(line.as_bytes());
            fp.update(format!("{index}\t{id}\t{seed}\t{layout_sha256}\n").as_bytes());
            by_id.insert(id.clone(), index);
            lines.push(e.line);
            items.push(PlanItem {
                index,
                id,
                seed,
                layout: e.layout,
                layout_sha256,
            });
        }
        Ok(Plan {
            items,
            base_seed,
            fingerprint: hex(&fp.finalize()),
            by_id,
        })
    }

    /// Read a layouts file (JSONL, or one JSON layout) and plan it. A bad or truncated line is
    /// an error naming the file and the line.
    pub fn from_path(path: impl AsRef<Path>, base_seed: u64) -> Result<Plan> {
        let path = path.as_ref();
        let entries = semi_layout::read_layouts(path)?;
        Plan::from_entries(entries, base_seed).with_context(|| format!("{}", path.display()))
    }

    pub fn items(&self) -> &[PlanItem] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn base_seed(&self) -> u64 {
        self.base_seed
    }

    /// Hex SHA-256 identifying the plan (module docs).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn get(&self, id: &str) -> Option<&PlanItem> {
        self.by_id.get(id).map(|&i| &self.items[i])
    }

    /// The items shard `shard` must produce, in plan order.
    pub fn shard_items(&self, shard: Shard) -> impl Iterator<Item = &PlanItem> + '_ {
        self.items.iter().filter(move |it| shard.owns(it.index))
    }

    /// Integer image ids for external detectors (COCO results files need integers): each id
    /// itself when every id is a non-negative integer (COCO samples are named by their COCO
    /// image id), otherwise the item's index.
    pub fn image_ids(&self) -> BTreeMap<String, i64> {
        let numeric: Option<Vec<i64>> = self
            .items
            .iter()
            .map(|it| it.id.parse::<i64>().ok().filter(|n| *n >= 0))
            .collect();
        match numeric {
            Some(nums) => self
                .items
                .iter()
                .map(|it| it.id.clone())
                .zip(nums)
                .collect(),
            None => self
                .items
                .iter()
                .map(|it| (it.id.clone(), it.index as i64))
                .collect(),
        }
    }
}

/// One entry of the image list for external detectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoImageEntry {
    pub id: i64,
    /// `<sample id>.png`, relative to a method directory.
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CocoImageList {
    images: Vec<CocoImageEntry>,
}

impl Plan {
    /// The plan's images as a COCO `images` list (`{"images": [{"id", "file_name", "width",
    /// "height"}]}`, ids from [`Plan::image_ids`]): what an external detector needs to write
    /// a COCO results file for the images of any method directory.
    pub fn coco_images_json(&self) -> String {
        let ids = self.image_ids();
        let list = CocoImageList {
            images: self
                .items
                .iter()
                .map(|it| CocoImageEntry {
                    id: ids[&it.id],
                    file_name: format!("{}.png", it.id),
                    width: it.layout.width,
                    height: it.layout.height,
                })
                .collect(),
        };
        serde_json::to_string_pretty(&list).expect("image lists serialise") + "\n"
    }
}

impl Plan {
    /// The layouts' boxes as a COCO instances file (the images of [`Plan::coco_images_json`],
    /// one annotation per object in pixels with `area = w * h` and `iscrowd: 0`, COCO's category
    /// ids for COCO's names, ids from 1001 in name order for other names): the ground truth of
    /// `semi eval coco-metrics`, whose AP against a detector's results on the generated images
    /// is GLIGEN's "YOLO score".
    pub fn coco_ground_truth_json(&self) -> String {
        let ids = self.image_ids();
        let mut names: BTreeMap<String, i64> = crate::coco::COCO_CATEGORIES
            .iter()
            .map(|(id, n)| (n.to_string(), *id))
            .collect();
        let mut next = 1001;
        for it in &self.items {
            for o in &it.layout.objects {
                if !names.contains_key(&o.category) {
                    names.insert(o.category.clone(), next);
                    next += 1;
                }
            }
        }
        let mut annotations = Vec::new();
        let mut used = std::collections::BTreeSet::new();
        for it in &self.items {
            let (w, h) = (it.layout.width as f64, it.layout.height as f64);
            for o in &it.layout.objects {
                let b = &o.bbox;
                let (bw, bh) = ((b.x1 - b.x0) * w, (b.y1 - b.y0) * h);
                used.insert(o.category.clone());
                annotations.push(serde_json::json!({
                    "id": annotations.len() + 1,
                    "image_id": ids[&it.id],
                    "category_id": names[&o.category],
                    "bbox": [b.x0 * w, b.y0 * h, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }));
            }
        }
        // COCO's 80 categories always (a detector of COCO finds any of them), others when used.
        let categories: Vec<serde_json::Value> = names
            .iter()
            .filter(|(n, id)| **id <= 90 || used.contains(*n))
            .map(|(n, id)| serde_json::json!({"id": id, "name": n}))
            .collect();
        let images: serde_json::Value =
            serde_json::from_str(&self.coco_images_json()).expect("image list is JSON");
        let doc = serde_json::json!({
            "images": images["images"],
            "annotations": annotations,
            "categories": categories,
        });
        serde_json::to_string(&doc).expect("ground truth serialises") + "\n"
    }
}

/// Read an image list written by [`Plan::coco_images_json`] (or any COCO file with an
/// `images` list whose file names are `<sample id>.<ext>`, e.g. COCO's own `.jpg` names) as
/// sample id -> image id. The extension is dropped, so generated PNGs match JPEG names.
pub fn read_image_ids(path: impl AsRef<Path>) -> Result<BTreeMap<String, i64>> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let list: CocoImageList = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected {{\"images\": [{{\"id\", \"file_name\", ...}}]}}",
            path.display()
        )
    })?;
    let mut out = BTreeMap::new();
    for (k, im) in list.images.iter().enumerate() {
        let id = Path::new(&im.file_name)
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy();
        if out.insert(id.into_owned(), im.id).is_some() {
            bail!(
                "{}: images[{k}]: file name {:?} appears twice",
                path.display(),
                im.file_name
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use semi_layout::{BBox, LayoutObject};

    pub(crate) fn layout(id: Option<&str>, seed: Option<u64>) -> Layout {
        let mut l = Layout::new(
            "a circle",
            32,
            32,
            vec![LayoutObject::new(
                "circle",
                "circle",
                BBox::new(0.1, 0.1, 0.5, 0.5).unwrap(),
            )],
        );
        l.id = id.map(str::to_string);
        l.seed = seed;
        l
    }

    #[test]
    fn ids_and_seeds() {
        let p = Plan::new(
            vec![
                layout(Some("a"), None),
                layout(None, Some(7)),
                layout(None, None),
            ],
            42,
        )
        .unwrap();
        let ids: Vec<&str> = p.items().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "000001", "000002"]);
        assert_eq!(p.items()[1].seed, 7);
        assert_eq!(p.items()[0].seed, item_seed(42, "a"));
        // Reference values computed independently (Python hashlib) from the rule in the module
        // docs, so the seed rule cannot drift silently.
        assert_eq!(item_seed(0, "139"), 219_490_294);
        assert_eq!(item_seed(42, "a"), 2_953_097_573);
        assert_ne!(item_seed(0, "a"), item_seed(1, "a"));
        assert_ne!(item_seed(0, "a"), item_seed(0, "b"));
        // Non-numeric ids: image ids are indices.
        assert_eq!(p.image_ids()["000002"], 2);
        let q = Plan::new(vec![layout(Some("139"), None), layout(Some("7"), None)], 0).unwrap();
        assert_eq!(q.image_ids()["139"], 139);
        assert_eq!(q.get("7").unwrap().index, 1);
        // The image list for external detectors reads back as the same map.
        let dir = tempfile::tempdir().unwrap();
        for plan in [&p, &q] {
            let path = dir.path().join("images.json");
            std::fs::write(&path, plan.coco_images_json()).unwrap();
            assert_eq!(read_image_ids(&path).unwrap(), plan.image_ids());
        }
        assert!(q.coco_images_json().contains("\"file_name\": \"139.png\""));
        // COCO's own file names (JPEG, in a folder) name the same samples.
        let path = dir.path().join("coco.json");
        std::fs::write(
            &path,
            r#"{"images": [{"id": 139, "file_name": "val2017/000000000139.jpg", "width": 640, "height": 426}]}"#,
        )
        .unwrap();
        assert_eq!(read_image_ids(&path).unwrap()["000000000139"], 139);
    }

    #[test]
    fn fingerprint_tracks_layouts_and_seeds() {
        let a = Plan::new(vec![layout(Some("a"), None)], 0).unwrap();
        assert_eq!(
            a.fingerprint(),
            Plan::new(vec![layout(Some("a"), None)], 0)
                .unwrap()
                .fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            Plan::new(vec![layout(Some("a"), None)], 1)
                .unwrap()
                .fingerprint()
        );
        let mut l = layout(Some("a"), None);
        l.prompt = "a square".into();
        assert_ne!(
            a.fingerprint(),
            Plan::new(vec![l], 0).unwrap().fingerprint()
        );
    }

    #[test]
    fn bad_ids_are_refused_with_their_line() {
        let e = format!(
            "{:#}",
            Plan::new(vec![layout(Some("a"), None), layout(Some("a"), None)], 0).unwrap_err()
        );
        assert_eq!(e, "line 2: id \"a\" is already used on line 1");
        for bad in ["../x", ".hidden", "_merged", "a b", ""] {
            let e = format!(
                "{:#}",
                Plan::new(vec![layout(Some(bad), None)], 0).unwrap_err()
            );
            assert!(
                e.starts_with("line 1: id ") && e.contains("cannot name a file"),
                "{e}"
            );
        }
        assert!(Plan::new(vec![], 0).is_err());
    }
}
