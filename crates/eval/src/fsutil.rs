//! Crash-safe writes: write a temporary file next to the target, fsync it, rename it over the
//! target. A reader, a crash or a killed Slurm job sees the old file or the new one, never half
//! of one. Temporary names start with `.tmp.` (ids may not start with `.`, so they never clash
//! with outputs) and carry the process id, so two processes never share one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use semi_toyworld::RgbImage;

fn temp_path(path: &Path) -> Result<PathBuf> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    Ok(dir.join(format!(
        ".tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn commit(tmp: &Path, path: &Path) -> Result<()> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    fs::rename(tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Atomically replace `path` with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path)?;
    let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    commit(&tmp, path)
}

/// Atomically write `image` as a PNG with `tEXt` chunks.
pub fn write_png_atomic(path: &Path, image: &RgbImage, text: &[(&str, &str)]) -> Result<()> {
    let tmp = temp_path(path)?;
    image.save_png(&tmp, text)?;
    commit(&tmp, path)
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
