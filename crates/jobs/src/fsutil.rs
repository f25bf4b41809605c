//! Crash-safe file writes: write a temporary file next to the target, fsync it, rename it over
//! the target, fsync the directory. A reader (or a crash) sees the old file or the new one,
//! never a half-written one. Temporary files are named `.tmp.<name>.<pid>.<n>`;
//! [`remove_stale_temps`] deletes the ones a killed process left behind.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

pub const TEMP_PREFIX: &str = ".tmp.";

/// Atomically replace `path` with `bytes` (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_file(path, |f| Ok(f.write_all(bytes)?))
}

/// Atomically replace `path` with whatever `write` puts into the open temporary file it is
/// given (for writers that stream into a `File`).
pub fn write_atomic_file(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f =
            File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        write(&mut f).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

/// Atomically replace `path` with whatever `write` puts into the temporary path it is given
/// (for writers that want a path, such as PNG or safetensors encoders). The temporary name
/// carries the process id and a per-process counter, so two processes, or two threads of one,
/// never share one.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        "{TEMP_PREFIX}{}.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// fsync a directory so a rename or creation in it survives a power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// Create `dir` (and parents) and make the creation durable.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Delete `.tmp.*` files in `dir` and its subdirectories (one level deep is all a store has,
/// but this walks any depth). Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", d.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", d.display()))?;
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot remove stale {}", path.display()))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// An exclusive advisory lock on a directory (flock on the directory itself, so no lock file
/// is left behind and a killed process releases it). Held until dropped. On a file system that
/// cannot lock (some network file systems) the lock is skipped rather than failing the run.
pub struct DirLock {
    _file: Option<File>,
}

impl DirLock {
    /// Lock `dir` or fail at once with a message naming it.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let file = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: Some(file) }),
            Err(fs::TryLockError::WouldBlock) => bail!(
                "{} is in use by another process (a collect or merge is running on it)",
                dir.display()
            ),
            Err(fs::TryLockError::Error(_)) => Ok(DirLock { _file: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/.tmp.x"), b"half").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 1);
        assert!(!dir.path().join("sub/.tmp.x").exists());
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let l = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(err.contains("in use"), "{err}");
        drop(l);
        DirLock::acquire(dir.path()).unwrap();
    }
}
