//! Dataset export for training: scenes `0..n` of a seed as one safetensors file plus a JSONL of
//! captions and boxes.
//!
//! Tensors (M = `cfg.max_objects`, S = `cfg.size`):
//! - `images`: u8 `[N, S, S, 3]`, HWC, raw 0-255 values (the trainer maps them to [-1, 1]);
//! - `boxes`: f32 `[N, M, 4]`, normalised `[x0, y0, x1, y1]` (exclusive max), zero rows as padding;
//! - `categories`: i64 `[N, M]`, category ids (0 circle .. 5 diamond, see `Category`), -1 padding;
//! - `num_objects`: i64 `[N]`.
//!
//! Objects are in drawing order (random), the same order as the JSONL's `objects`. The header
//! metadata holds `format`, `seed`, `n`, `world_config` (JSON), `categories` (JSON list of names)
//! and `captions` (the JSONL's file name). The JSONL (same path with extension `.jsonl`) has one
//! [`SceneRecord`] per line, in index order.
//!
//! Both files are written to temporary names in the target directory and renamed into place, the
//! JSONL first, so a present safetensors file always has a complete JSONL beside it.

use crate::category::Category;
use crate::scene::{Scene, SceneRecord, WorldConfig};
use anyhow::{ensure, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use semi_jobs::write_atomic;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The `format` metadata value; bump it if the layout above changes.
pub const DATASET_FORMAT: &str = "semi-toyworld-dataset/1";

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSummary {
    pub safetensors: PathBuf,
    pub jsonl: PathBuf,
    pub n: usize,
    /// Scenes per object count: `objects_histogram[k]` scenes have `k` objects.
    pub objects_histogram: Vec<usize>,
}

/// The JSONL path that goes with a dataset's safetensors path.
pub fn captions_path(path: &Path) -> PathBuf {
    path.with_extension("jsonl")
}

/// Writes scenes `0..n` of `seed` to `path` (safetensors) and [`captions_path`]`(path)` (JSONL).
pub fn write_dataset(
    path: &Path,
    n: usize,
    seed: u64,
    cfg: &WorldConfig,
) -> Result<DatasetSummary> {
    ensure!(n > 0, "dataset size must be positive");
    cfg.validate().context("invalid world config")?;
    let jsonl = captions_path(path);
    ensure!(
        jsonl != path,
        "dataset path {} must not end in .jsonl (the captions go there)",
        path.display()
    );
    let m = cfg.max_objects as usize;
    let s = cfg.size as usize;
    let mut images = Vec::with_capacity(n * s * s * 3);
    let mut boxes = vec![0f32; n * m * 4];
    let mut categories = vec![-1i64; n * m];
    let mut counts = vec![0i64; n];
    let mut histogram = vec![0usize; m + 1];
    let mut lines = Vec::with_capacity(n * 160);
    for i in 0..n {
        let scene = Scene::generate(seed, i as u64, cfg)?;
        images.extend_from_slice(scene.image.as_raw());
        for (k, o) in scene.objects.iter().enumerate() {
            boxes[(i * m + k) * 4..(i * m + k + 1) * 4]
                .copy_from_slice(&o.bbox_normalized(cfg.size, cfg.size));
            categories[i * m + k] = o.category.id() as i64;
        }
        counts[i] = scene.objects.len() as i64;
        histogram[scene.objects.len()] += 1;
        let record: SceneRecord = scene.record();
        serde_json::to_writer(&mut lines, &record).context("encoding scene record")?;
        lines.push(b'\n');
    }

    let le_f32: Vec<u8> = boxes.iter().flat_map(|v| v.to_le_bytes()).collect();
    let le_cat: Vec<u8> = categories.iter().flat_map(|v| v.to_le_bytes()).collect();
    let le_cnt: Vec<u8> = counts.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = vec![
        (
            "images",
            TensorView::new(Dtype::U8, vec![n, s, s, 3], &images)?,
        ),
        (
            "boxes",
            TensorView::new(Dtype::F32, vec![n, m, 4], &le_f32)?,
        ),
        (
            "categories",
            TensorView::new(Dtype::I64, vec![n, m], &le_cat)?,
        ),
        (
            "num_objects",
            TensorView::new(Dtype::I64, vec![n], &le_cnt)?,
        ),
    ];
    let names: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
    let jsonl_name = jsonl
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let metadata = HashMap::from([
        ("format".to_string(), DATASET_FORMAT.to_string()),
        ("seed".to_string(), seed.to_string()),
        ("n".to_string(), n.to_string()),
        ("world_config".to_string(), serde_json::to_string(cfg)?),
        ("categories".to_string(), serde_json::to_string(&names)?),
        ("captions".to_string(), jsonl_name),
    ]);
    let bytes =
        safetensors::serialize(tensors, Some(metadata)).context("serialising dataset tensors")?;

    write_atomic(&jsonl, &lines)?;
    write_atomic(path, &bytes)?;
    Ok(DatasetSummary {
        safetensors: path.to_path_buf(),
        jsonl,
        n,
        objects_histogram: histogram,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;
    use std::fs;

    fn i64s(bytes: &[u8]) -> Vec<i64> {
        bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn writes_scenes_that_match_the_generator() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.safetensors");
        let cfg = WorldConfig::default();
        let summary = write_dataset(&path, 25, 9, &cfg).unwrap();
        assert_eq!(summary.objects_histogram.iter().sum::<usize>(), 25);
        assert_eq!(summary.objects_histogram[0], 0);

        let bytes = fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().as_ref().unwrap();
        assert_eq!(meta["format"], DATASET_FORMAT);
        assert_eq!(meta["seed"], "9");
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let images = st.tensor("images").unwrap();
        assert_eq!(images.shape(), &[25, 32, 32, 3]);
        assert_eq!(st.tensor("boxes").unwrap().shape(), &[25, 3, 4]);
        let cats = i64s(st.tensor("categories").unwrap().data());
        let counts = i64s(st.tensor("num_objects").unwrap().data());
        let boxes: Vec<f32> = st
            .tensor("boxes")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();

        let lines: Vec<String> = fs::read_to_string(&summary.jsonl)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(lines.len(), 25);
        for i in [0usize, 7, 24] {
            let scene = Scene::generate(9, i as u64, &cfg).unwrap();
            let px = 32 * 32 * 3;
            assert_eq!(&images.data()[i * px..(i + 1) * px], scene.image.as_raw());
            assert_eq!(counts[i], scene.objects.len() as i64);
            for k in 0..3 {
                match scene.objects.get(k) {
                    Some(o) => {
                        assert_eq!(cats[i * 3 + k], o.category.id() as i64);
                        assert_eq!(&boxes[(i * 3 + k) * 4..][..4], &o.bbox_normalized(32, 32));
                    }
                    None => {
                        assert_eq!(cats[i * 3 + k], -1);
                        assert_eq!(&boxes[(i * 3 + k) * 4..][..4], &[0.0; 4]);
                    }
                }
            }
            let rec: SceneRecord = serde_json::from_str(&lines[i]).unwrap();
            assert_eq!(rec, scene.record());
        }
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn rejects_bad_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WorldConfig::default();
        assert!(write_dataset(&dir.path().join("a.safetensors"), 0, 1, &cfg).is_err());
        assert!(write_dataset(&dir.path().join("a.jsonl"), 3, 1, &cfg).is_err());
        let missing = dir.path().join("no/such/dir/a.safetensors");
        let err = format!("{:#}", write_dataset(&missing, 3, 1, &cfg).unwrap_err());
        assert!(
            err.contains("cannot create") && err.contains("no/such/dir"),
            "{err}"
        );
    }
}
