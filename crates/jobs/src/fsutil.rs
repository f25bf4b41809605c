//! Crash-safe file writes: write a temporary file next to the target, fsync it, rename it over
//! the target, fsync the directory. A reader (or a crash) sees the old file or the new one,
//! never a half-written one. Temporary files are named `.tmp.<name>.<pid>.<n>`;
//! [`remove_stale_temps`] deletes the ones a killed process left behind, and after
//! [`remove_temps_on_interrupt`] Ctrl-C (or SIGTERM) removes this process's own before it exits.
//!
//! Only regular files are replaced: a target that is a device (`/dev/null`), a pipe, a socket
//! or a folder is refused ([`check_target`]), and a symbolic link is followed, so the link stays
//! and the file it names is replaced.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

pub const TEMP_PREFIX: &str = ".tmp.";

/// The writes in progress in this process: their temporary files, how many writes are under
/// way, and whether an interrupt came meanwhile.
struct Live {
    temps: Vec<PathBuf>,
    writing: usize,
    interrupted: bool,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    temps: Vec::new(),
    writing: 0,
    interrupted: false,
});

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remove the temporaries and end the process as interrupted (called with the lock held, so
/// no write starts or commits meanwhile).
fn exit_interrupted(live: &mut Live) -> ! {
    for t in live.temps.drain(..) {
        let _ = fs::remove_file(t);
    }
    eprintln!("interrupted");
    std::process::exit(130);
}

/// One write (a file or a group) under way, from its first temporary to its last rename. An
/// interrupt meanwhile is acted on when the last write ends, so no temporary is created after
/// the cleanup and no group is committed in part.
struct Writing;

impl Writing {
    fn start() -> Writing {
        let mut l = live();
        if l.interrupted {
            exit_interrupted(&mut l);
        }
        l.writing += 1;
        Writing
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut l = live();
        l.writing -= 1;
        if l.interrupted && l.writing == 0 {
            exit_interrupted(&mut l);
        }
    }
}

/// On Ctrl-C or SIGTERM, remove the temporary files being written, say so, and exit with 130
/// (the shell's code for an interrupt). A write under way is finished first (a group of files
/// ([`write_atomic_files`]) is committed whole, so an image never lands without its sidecar).
/// For command-line tools; a server with its own shutdown does not call it.
pub fn remove_temps_on_interrupt() -> Result<()> {
    ctrlc::set_handler(|| {
        let mut l = live();
        l.interrupted = true;
        if l.writing == 0 {
            exit_interrupted(&mut l);
        }
    })
    .context("cannot install the interrupt handler")
}

/// Refuse a target that exists and is not a regular file (or a link to one): a device such
/// as `/dev/null`, a pipe, a socket or a folder would be replaced by a regular file.
pub fn check_target(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(md) if md.is_file() => Ok(()),
        Ok(md) => bail!(
            "{} is {}, not a regular file; semi writes files whole (temporary file, then \
             rename) and will not replace it: name a file",
            path.display(),
            if md.is_dir() {
                "a folder"
            } else {
                "a device, pipe or socket"
            }
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if fs::symlink_metadata(path).is_ok() {
                bail!("{} is a broken symbolic link", path.display());
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

/// The file a write to `path` replaces: `path`, or what a symbolic link there points to.
fn write_target(path: &Path) -> Result<PathBuf> {
    check_target(path)?;
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return fs::canonicalize(path)
            .with_context(|| format!("cannot follow the link {}", path.display()));
    }
    Ok(path.to_path_buf())
}

/// Atomically replace `path` with `bytes` (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_files(&[(path, bytes)])
}

/// Atomically replace several files, all or none as far as this process can tell: every file
/// is written to its temporary first, and the renames happen only when all are written, with
/// Ctrl-C held off until the last (a power cut can still fall between two renames). Two
/// entries naming one file are refused.
pub fn write_atomic_files(files: &[(&Path, &[u8])]) -> Result<()> {
    let _writing = Writing::start();
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(files.len());
    let result = (|| {
        for (i, &(path, bytes)) in files.iter().enumerate() {
            if files[..i].iter().any(|(p, _)| same_file_name(p, path)) {
                bail!(
                    "{} is named twice among the files of one write",
                    path.display()
                );
            }
            let target = write_target(path)?;
            let tmp = stage(&target, |tmp| {
                let mut f = File::create(tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                f.write_all(bytes)
                    .with_context(|| format!("cannot write {}", tmp.display()))
            })?;
            staged.push((tmp, target));
        }
        commit(&staged)
    })();
    if result.is_err() {
        discard(staged.iter().map(|(tmp, _)| tmp));
    }
    result
}

/// Whether two paths name the same file as far as their text goes (`a/x.png`, `./a/x.png`).
pub fn same_file_name(a: &Path, b: &Path) -> bool {
    let norm = |p: &Path| -> PathBuf {
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        let mut out = PathBuf::new();
        for c in abs.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    out.pop();
                }
                c => out.push(c),
            }
        }
        out
    };
    norm(a) == norm(b)
}

/// Write a temporary file next to `target` with `write` and fsync it; the temporary is
/// registered for removal on interrupt (and removed here if `write` fails).
fn stage(target: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let dir = parent_dir(target)?;
    let name = target
        .file_name()
        .with_context(|| format!("{} has no file name", target.display()))?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        "{TEMP_PREFIX}{}.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    live().temps.push(tmp.clone());
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", tmp.display()))
    });
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            discard([&tmp]);
            Err(e)
        }
    }
}

/// Rename every staged temporary over its target (the interrupt handler waits meanwhile),
/// then fsync the folders.
fn commit(staged: &[(PathBuf, PathBuf)]) -> Result<()> {
    {
        let mut live = live();
        for (tmp, target) in staged {
            fs::rename(tmp, target).with_context(|| {
                format!("cannot rename {} to {}", tmp.display(), target.display())
            })?;
            live.temps.retain(|t| t != tmp);
        }
    }
    for (_, target) in staged {
        sync_dir(&parent_dir(target)?)?;
    }
    Ok(())
}

fn discard<'a>(temps: impl IntoIterator<Item = &'a PathBuf>) {
    let mut live = live();
    for tmp in temps {
        let _ = fs::remove_file(tmp);
        live.temps.retain(|t| t != tmp);
    }
}

fn parent_dir(path: &Path) -> Result<PathBuf> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    Ok(if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    })
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
    let _writing = Writing::start();
    let target = write_target(path)?;
    let tmp = stage(&target, write)?;
    let staged = [(tmp, target)];
    let result = commit(&staged);
    if result.is_err() {
        discard([&staged[0].0]);
    }
    result
}

/// Bytes free for this user on the file system of `path` (its nearest existing ancestor), or
/// `None` where that cannot be asked.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut at = path;
    while !at.exists() {
        at = at.parent().filter(|p| !p.as_os_str().is_empty())?;
    }
    free_bytes_at(at)
}

#[cfg(unix)]
fn free_bytes_at(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `s` a buffer statvfs fills on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `s`.
    let s = unsafe { s.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some(s.f_bavail as u64 * s.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes_at(_path: &Path) -> Option<u64> {
    None
}

/// Refuse to start writing `bytes` more into `dir` when its file system has less free (with
/// 1% and 64 MiB to spare); `what` says what would be written.
pub fn ensure_free(dir: &Path, bytes: u64, what: &str) -> Result<()> {
    let Some(free) = free_bytes(dir) else {
        return Ok(());
    };
    let need = bytes.saturating_add(bytes / 100).saturating_add(64 << 20);
    if need > free {
        bail!(
            "{what} needs about {} but {} has {} free; free some space or write elsewhere",
            human_bytes(bytes),
            dir.display(),
            human_bytes(free)
        );
    }
    Ok(())
}

/// `1.5 GiB`, `20.0 MiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
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

    /// Lock `dir`, waiting up to `timeout` while another process holds it; `waiting` gets one
    /// line when the wait begins. Fails naming the folder when the time is up.
    pub fn wait(
        dir: &Path,
        timeout: std::time::Duration,
        waiting: &mut dyn FnMut(&str),
    ) -> Result<DirLock> {
        let file = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
        let start = std::time::Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(DirLock { _file: Some(file) }),
                Err(fs::TryLockError::Error(_)) => return Ok(DirLock { _file: None }),
                Err(fs::TryLockError::WouldBlock) => {}
            }
            if start.elapsed() >= timeout {
                bail!(
                    "{} is still in use by another process after {} s (a collect or merge is \
                     running on it); try again when it is done",
                    dir.display(),
                    timeout.as_secs()
                );
            }
            if !told {
                waiting(&format!(
                    "waiting for another process that is filling {} (up to {} s)",
                    dir.display(),
                    timeout.as_secs()
                ));
                told = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
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
    fn devices_and_folders_are_refused_and_links_followed() {
        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            let err = write_atomic(Path::new("/dev/null"), b"x")
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a regular file"), "{err}");
            let real = dir.path().join("real.bin");
            fs::write(&real, b"old").unwrap();
            let link = dir.path().join("link.bin");
            std::os::unix::fs::symlink(&real, &link).unwrap();
            write_atomic(&link, b"new").unwrap();
            assert!(fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(fs::read(&real).unwrap(), b"new");
        }
        let err = write_atomic(dir.path(), b"x").unwrap_err().to_string();
        assert!(err.contains("a folder"), "{err}");
    }

    #[test]
    fn a_group_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_atomic_files(&[(&a, b"1"), (&b, b"2")]).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"2");
        // The second target is a folder: neither file changes, no temporary stays.
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        assert!(write_atomic_files(&[(&a, b"9"), (&sub, b"9")]).is_err());
        assert_eq!(fs::read(&a).unwrap(), b"1");
        let err = write_atomic_files(&[(&a, b"1"), (&dir.path().join("./a"), b"2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("named twice"), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn free_space_is_checked_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(&dir.path().join("not/yet")).is_some_and(|b| b > 0));
        ensure_free(dir.path(), 1 << 20, "a small file").unwrap();
        let err = ensure_free(dir.path(), u64::MAX / 2, "the store")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("the store needs about"), "{err}");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let l = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(err.contains("in use"), "{err}");
        let mut lines = Vec::new();
        let err = DirLock::wait(
            dir.path(),
            std::time::Duration::from_millis(300),
            &mut |l| lines.push(l.to_string()),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("still in use"), "{err}");
        assert_eq!(lines.len(), 1, "{lines:?}");
        // Released while waiting: the waiter gets it.
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            DirLock::wait(&path, std::time::Duration::from_secs(30), &mut |_| {}).is_ok()
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(l);
        assert!(waiter.join().unwrap());
        DirLock::acquire(dir.path()).unwrap();
    }
}
