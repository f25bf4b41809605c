//! Sharded batch generation on disk: where outputs go, resume, shard manifests, merge.
//!
//! ```text
//! <out>/<method>/<id>.png                 the image (tEXt: prompt, seed, method, layout)
//! <out>/<method>/<id>.json                its sidecar (Sidecar): written after the PNG, so a
//!                                         sidecar means a finished image
//! <out>/<method>/_shards/shard-0002-of-0008.json   one manifest per shard run (ShardManifest)
//! <out>/<method>/_merged.json             written by merge once every item is there (Merged)
//! ```
//! Ids and method names cannot start with `_` or `.`, so these names never clash. Every file is
//! written atomically (temporary file + rename). Generation skips an item whose PNG and sidecar
//! exist and whose sidecar matches the plan (method, id, seed, layout hash); a sidecar that
//! does not match is an error (outputs of another plan must not be mixed in silently). A killed
//! shard is resumed by running it again; the images do not depend on which run or which shard
//! count made them, because seeds come from the plan.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use semi_layout::Layout;
use semi_toyworld::RgbImage;
use serde::{Deserialize, Serialize};

use crate::fsutil::{create_dir, write_json_atomic, write_png_atomic};
use crate::plan::{check_name, Plan, PlanItem};
use crate::shard::Shard;

pub const SIDECAR_FORMAT: &str = "semi-eval-image/1";
pub const MANIFEST_FORMAT: &str = "semi-eval-shard/1";
pub const MERGED_FORMAT: &str = "semi-eval-merged/1";
const MANIFEST_DIR: &str = "_shards";
const MERGED_FILE: &str = "_merged.json";
/// How often (seconds) a running shard rewrites its manifest.
const MANIFEST_EVERY_S: f64 = 5.0;

/// The JSON written next to each image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub format: String,
    pub method: String,
    pub id: String,
    pub index: usize,
    pub seed: u64,
    /// The PNG's file name, next to the sidecar.
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub layout_sha256: String,
    pub layout: Layout,
    /// Whatever the generator reported (model, steps, guidance, timings...).
    #[serde(default)]
    pub info: serde_json::Value,
}

/// What the generation callback returns for one item.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Must be `layout.width` x `layout.height`.
    pub image: RgbImage,
    /// Stored in the sidecar's `info`.
    pub info: serde_json::Value,
}

/// How one item of a shard run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Generated,
    /// Already there from an earlier run (resume).
    Existing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestItem {
    pub index: usize,
    pub id: String,
    pub seed: u64,
    pub outcome: Outcome,
    /// Wall time of the generation callback (0 for existing items).
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ShardStatus {
    Running,
    Complete,
    Failed { error: String },
}

/// One shard run's record, rewritten while it runs and at its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    pub format: String,
    pub method: String,
    pub shard: Shard,
    pub plan_fingerprint: String,
    pub base_seed: u64,
    /// Items in the whole plan, and in this shard.
    pub plan_items: usize,
    pub shard_items: usize,
    pub status: ShardStatus,
    pub items: Vec<ManifestItem>,
}

impl ShardManifest {
    pub fn generated(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.outcome == Outcome::Generated)
            .count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedItem {
    pub index: usize,
    pub id: String,
    pub seed: u64,
    /// File names relative to the method directory.
    pub image: String,
    pub sidecar: String,
}

/// The merged record of a complete method directory. Depends only on the plan and the method,
/// not on how the work was sharded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merged {
    pub format: String,
    pub method: String,
    pub plan_fingerprint: String,
    pub base_seed: u64,
    pub items: Vec<MergedItem>,
}

/// What a merge found besides the merged record.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    pub merged: Merged,
    /// The manifests read, in file-name order.
    pub shards: Vec<ShardManifest>,
    /// Sidecars in the directory whose id the plan does not have (left alone, not merged).
    pub unplanned: Vec<String>,
}

/// State of one planned item on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemState {
    Done(Box<Sidecar>),
    Missing,
}

/// `<out>/<method>`: one method's outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodDir {
    dir: PathBuf,
    method: String,
}

impl MethodDir {
    /// Method names follow the id rule, plus `+` ("semi+soft").
    pub fn new(out: impl AsRef<Path>, method: &str) -> Result<MethodDir> {
        check_name("method", method, &['+'])?;
        Ok(MethodDir {
            dir: out.as_ref().join(method),
            method: method.to_string(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn image_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.png"))
    }

    pub fn sidecar_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn manifest_path(&self, shard: Shard) -> PathBuf {
        self.dir
            .join(MANIFEST_DIR)
            .join(format!("{}.json", shard.file_stem()))
    }

    pub fn merged_path(&self) -> PathBuf {
        self.dir.join(MERGED_FILE)
    }

    /// Read a sidecar, `None` when absent.
    pub fn read_sidecar(&self, id: &str) -> Result<Option<Sidecar>> {
        let path = self.sidecar_path(id);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: not a sidecar", path.display()))
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Whether `item` is done. A sidecar made for another method, seed or layout is an error.
    pub fn item_state(&self, item: &PlanItem) -> Result<ItemState> {
        let Some(side) = self.read_sidecar(&item.id)? else {
            return Ok(ItemState::Missing);
        };
        let path = self.sidecar_path(&item.id);
        let mismatch = if side.format != SIDECAR_FORMAT {
            Some(format!(
                "format {:?}, expected {SIDECAR_FORMAT:?}",
                side.format
            ))
        } else if side.method != self.method {
            Some(format!(
                "method {:?}, expected {:?}",
                side.method, self.method
            ))
        } else if side.id != item.id {
            Some(format!("id {:?}, expected {:?}", side.id, item.id))
        } else if side.seed != item.seed {
            Some(format!("seed {}, expected {}", side.seed, item.seed))
        } else if side.layout_sha256 != item.layout_sha256 {
            Some("another layout than the layouts file's".to_string())
        } else {
            None
        };
        if let Some(m) = mismatch {
            bail!(
                "{} was made with {m}: the output directory belongs to another layouts file, \
                 base seed or method; use another --out or delete it",
                path.display()
            );
        }
        // Done means the image decodes at the planned size: an empty or cut file (a disk
        // that filled up, a copy that stopped) is made again.
        let want = (item.layout.width, item.layout.height);
        match RgbImage::load_png(&self.image_path(&item.id)) {
            Ok(img) if (img.width(), img.height()) == want && (side.width, side.height) == want => {
                Ok(ItemState::Done(Box::new(side)))
            }
            _ => Ok(ItemState::Missing),
        }
    }

    /// Every shard manifest in the directory, in file-name order.
    pub fn read_manifests(&self) -> Result<Vec<ShardManifest>> {
        let dir = self.dir.join(MANIFEST_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        let mut paths = Vec::new();
        for e in entries {
            let p = e
                .with_context(|| format!("cannot list {}", dir.display()))?
                .path();
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("shard-") && name.ends_with(".json") {
                paths.push(p);
            }
        }
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a shard manifest", p.display()))
            })
            .collect()
    }

    /// Read `_merged.json` and check that it belongs to `plan`.
    pub fn read_merged(&self, plan: &Plan) -> Result<Merged> {
        let path = self.merged_path();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (run the merge for method {:?} first)",
                path.display(),
                self.method
            )
        })?;
        let m: Merged = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a merged record", path.display()))?;
        if m.plan_fingerprint != plan.fingerprint() || m.method != self.method {
            bail!(
                "{} was merged for another layouts file, base seed or method; merge again",
                path.display()
            );
        }
        Ok(m)
    }
}

/// Generate the items of `shard` that are not done yet, calling `generate` for each, and keep
/// the shard's manifest up to date. The first failing item stops the run: its error is
/// recorded in the manifest and returned; everything finished before it stays on disk.
pub fn generate_shard<F>(
    dir: &MethodDir,
    plan: &Plan,
    shard: Shard,
    mut generate: F,
) -> Result<ShardManifest>
where
    F: FnMut(&PlanItem) -> Result<Generated>,
{
    create_dir(&dir.dir.join(MANIFEST_DIR))?;
    let todo: Vec<&PlanItem> = plan.shard_items(shard).collect();
    let mut manifest = ShardManifest {
        format: MANIFEST_FORMAT.to_string(),
        method: dir.method.clone(),
        shard,
        plan_fingerprint: plan.fingerprint().to_string(),
        base_seed: plan.base_seed(),
        plan_items: plan.len(),
        shard_items: todo.len(),
        status: ShardStatus::Running,
        items: Vec::with_capacity(todo.len()),
    };
    let manifest_path = dir.manifest_path(shard);
    write_json_atomic(&manifest_path, &manifest)?;
    let mut last_write = Instant::now();
    for item in todo {
        match run_item(dir, item, &mut generate) {
            Ok(done) => manifest.items.push(done),
            Err(e) => {
                let e = e.context(format!("method {}, item {:?}", dir.method, item.id));
                manifest.status = ShardStatus::Failed {
                    error: format!("{e:#}"),
                };
                write_json_atomic(&manifest_path, &manifest)?;
                return Err(e);
            }
        }
        if last_write.elapsed().as_secs_f64() > MANIFEST_EVERY_S {
            write_json_atomic(&manifest_path, &manifest)?;
            last_write = Instant::now();
        }
    }
    manifest.status = ShardStatus::Complete;
    write_json_atomic(&manifest_path, &manifest)?;
    Ok(manifest)
}

fn run_item<F>(dir: &MethodDir, item: &PlanItem, generate: &mut F) -> Result<ManifestItem>
where
    F: FnMut(&PlanItem) -> Result<Generated>,
{
    let record = |outcome, seconds| ManifestItem {
        index: item.index,
        id: item.id.clone(),
        seed: item.seed,
        outcome,
        seconds,
    };
    if let ItemState::Done(_) = dir.item_state(item)? {
        return Ok(record(Outcome::Existing, 0.0));
    }
    let start = Instant::now();
    let g = generate(item)?;
    let seconds = start.elapsed().as_secs_f64();
    let (w, h) = (item.layout.width, item.layout.height);
    if (g.image.width(), g.image.height()) != (w, h) {
        bail!(
            "the generator returned a {}x{} image for a {w}x{h} layout",
            g.image.width(),
            g.image.height()
        );
    }
    let layout_line = item.layout.to_json_line();
    let seed = item.seed.to_string();
    let text = [
        ("prompt", item.layout.prompt.as_str()),
        ("seed", seed.as_str()),
        ("method", dir.method.as_str()),
        ("layout", layout_line.as_str()),
    ];
    write_png_atomic(&dir.image_path(&item.id), &g.image, &text)?;
    let side = Sidecar {
        format: SIDECAR_FORMAT.to_string(),
        method: dir.method.clone(),
        id: item.id.clone(),
        index: item.index,
        seed: item.seed,
        image: format!("{}.png", item.id),
        width: w,
        height: h,
        layout_sha256: item.layout_sha256.clone(),
        layout: item.layout.clone(),
        info: g.info,
    };
    write_json_atomic(&dir.sidecar_path(&item.id), &side)?;
    Ok(record(Outcome::Generated, seconds))
}

/// Check that every planned item of the method is done and consistent, and that every shard
/// manifest belongs to this plan; then write `_merged.json`. Missing items are an error that
/// lists them (first 10) and the shards that own them.
pub fn merge(dir: &MethodDir, plan: &Plan) -> Result<MergeReport> {
    let shards = dir.read_manifests()?;
    if shards.is_empty() {
        bail!(
            "{} has no shard manifests: nothing was generated for method {:?} yet",
            dir.dir.display(),
            dir.method
        );
    }
    for m in &shards {
        let path = dir.manifest_path(m.shard);
        if m.format != MANIFEST_FORMAT || m.method != dir.method {
            bail!(
                "{}: manifest of format {:?}, method {:?}",
                path.display(),
                m.format,
                m.method
            );
        }
        if m.plan_fingerprint != plan.fingerprint() {
            bail!(
                "{} was made from another layouts file or base seed (plan {} vs {}): \
                 its outputs cannot be merged with this plan",
                path.display(),
                &m.plan_fingerprint[..12.min(m.plan_fingerprint.len())],
                &plan.fingerprint()[..12]
            );
        }
    }
    let mut items = Vec::with_capacity(plan.len());
    let mut missing: Vec<&PlanItem> = Vec::new();
    for item in plan.items() {
        match dir.item_state(item)? {
            ItemState::Done(_) => items.push(MergedItem {
                index: item.index,
                id: item.id.clone(),
                seed: item.seed,
                image: format!("{}.png", item.id),
                sidecar: format!("{}.json", item.id),
            }),
            ItemState::Missing => missing.push(item),
        }
    }
    if !missing.is_empty() {
        let ids: Vec<&str> = missing.iter().take(10).map(|i| i.id.as_str()).collect();
        let more = if missing.len() > 10 { ", ..." } else { "" };
        let mut owners: Vec<String> = Vec::new();
        let counts: std::collections::BTreeSet<usize> =
            shards.iter().map(|m| m.shard.count).collect();
        if counts.len() == 1 {
            let n = *counts.iter().next().expect("one count");
            let mut idx: Vec<usize> = missing.iter().map(|i| i.index % n).collect();
            idx.sort_unstable();
            idx.dedup();
            owners = idx.iter().map(|i| format!("{i}/{n}")).collect();
        }
        let hint = if owners.is_empty() {
            String::new()
        } else {
            format!(
                "; rerun shard(s) {} (finished images are kept)",
                owners.join(", ")
            )
        };
        bail!(
            "method {:?}: {} of {} images are missing ({}{more}){hint}",
            dir.method,
            missing.len(),
            plan.len(),
            ids.join(", ")
        );
    }
    let unplanned = unplanned_sidecars(dir, plan)?;
    let merged = Merged {
        format: MERGED_FORMAT.to_string(),
        method: dir.method.clone(),
        plan_fingerprint: plan.fingerprint().to_string(),
        base_seed: plan.base_seed(),
        items,
    };
    write_json_atomic(&dir.merged_path(), &merged)?;
    Ok(MergeReport {
        merged,
        shards,
        unplanned,
    })
}

fn unplanned_sidecars(dir: &MethodDir, plan: &Plan) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in
        std::fs::read_dir(&dir.dir).with_context(|| format!("cannot list {}", dir.dir.display()))?
    {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".json") {
            if !id.starts_with(['_', '.']) && plan.get(id).is_none() {
                out.push(id.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}
