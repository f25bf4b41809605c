//! Crash-safe writes of the evaluation's outputs, on `semi-jobs`' atomic write: a reader, a crash
//! or a killed Slurm job sees the old file or the new one, never half of one. Temporary names
//! start with `.tmp.` (ids may not start with `.`, so they never clash with outputs).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use semi_toyworld::RgbImage;

pub use semi_jobs::fsutil::write_atomic;

/// Atomically write `image` as a PNG with `tEXt` chunks.
pub fn write_png_atomic(path: &Path, image: &RgbImage, text: &[(&str, &str)]) -> Result<()> {
    image.save_png(path, text)
}

/// Pretty JSON, newline-terminated, written atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .with_context(|| format!("cannot serialise {}", path.display()))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Create `dir` and its parents.
pub fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let img = RgbImage::filled(3, 2, [1, 2, 3]);
        let q = dir.path().join("a.png");
        write_png_atomic(&q, &img, &[("k", "v")]).unwrap();
        assert_eq!(RgbImage::load_png(&q).unwrap(), img);
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".tmp.")), "{names:?}");
        assert!(write_atomic(&dir.path().join("missing/x"), b"").is_err());
    }
}
