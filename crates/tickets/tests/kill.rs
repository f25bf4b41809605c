//! A collect killed with SIGKILL mid-run resumes to a store byte-identical to an uninterrupted
//! one. The test re-runs this test binary as a child process that collects slowly, kills it once
//! a few units are on disk, then resumes in-process.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use common::tree;
use semi_tickets::{all_pairs, collect, CollectRequest, FakeProber, ProbeFingerprint, Prober};

const CHILD_DIR: &str = "SEMI_TICKETS_KILL_TEST_DIR";

fn request() -> CollectRequest {
    CollectRequest {
        pairs: all_pairs(&["dog", "car", "cat", "bus"]).unwrap(),
        n_images: 8,
        seed: 11,
        shard: None,
        chunk_images: Some(2),
        wait_for_lock: None,
    }
}

fn fingerprint() -> ProbeFingerprint {
    FakeProber::small_fingerprint("fake-kill")
}

/// The fake prober, 15 ms per call, so the child is still busy when it is killed.
struct Slow(FakeProber);

impl Prober for Slow {
    fn fingerprint(&self) -> ProbeFingerprint {
        self.0.fingerprint()
    }

    fn probe(
        &mut self,
        noise: &Tensor,
        pair: (&str, &str),
    ) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        std::thread::sleep(Duration::from_millis(15));
        self.0.probe(noise, pair)
    }
}

#[test]
#[ignore = "runs only as the child process of killed_collect_resumes_byte_identical"]
fn child_collect() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let mut p = Slow(FakeProber::new(fingerprint()));
    collect(Path::new(&dir), &mut p, &request(), &mut |_| {}).unwrap();
}

fn finished_units(dir: &Path) -> usize {
    let Ok(pairs) = std::fs::read_dir(dir.join("scores")) else {
        return 0;
    };
    pairs
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_dir(e.path()).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count()
}

#[test]
fn killed_collect_resumes_byte_identical() {
    let whole = tempfile::tempdir().unwrap();
    collect(
        whole.path(),
        &mut FakeProber::new(fingerprint()),
        &request(),
        &mut |_| {},
    )
    .unwrap();
    let total_units = 6 * 4;

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_collect", "--ignored", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while finished_units(dir.path()) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child made no progress"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited before it was killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done = finished_units(dir.path());
    assert!(
        (3..total_units).contains(&done),
        "killed after {done} of {total_units} units"
    );

    let summary = collect(
        dir.path(),
        &mut FakeProber::new(fingerprint()),
        &request(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(summary.units_skipped, done);
    assert_eq!(summary.units_computed, total_units - done);
    assert_eq!(tree(dir.path()), tree(whole.path()));
}
