//! The store: noise equals torch.randn, crash and resume, extension, shards and merge, refusals.

mod common;

use std::path::{Path, PathBuf};

use common::tree;
use semi_tickets::store::{image_to_blocks, noise_values};
use semi_tickets::{
    all_pairs, collect, merge, parse_pairs, CollectRequest, FakeProber, Progress, Shard, Store,
};

fn fp() -> semi_tickets::ProbeFingerprint {
    FakeProber::small_fingerprint("fake-model")
}

fn request(n: usize, shard: Option<Shard>) -> CollectRequest {
    CollectRequest {
        pairs: all_pairs(&["dog", "car", "cat", "traffic light"]).unwrap(),
        n_images: n,
        seed: 42,
        shard,
        chunk_images: Some(3),
        wait_for_lock: None,
    }
}

fn run(dir: &Path, req: &CollectRequest) -> semi_tickets::CollectSummary {
    collect(dir, &mut FakeProber::new(fp()), req, &mut |_| {}).unwrap()
}

#[test]
fn noise_equals_torch_randn_and_blocks_are_addressable() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &request(7, None));
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.n_images(), 7);
    let f = fp();
    for k in 0..7 {
        let want = noise_values(&f, 42, k);
        assert_eq!(s.noise_image(k).unwrap(), want);
        // torch.randn((1,4,16,16), generator=manual_seed(42 + k)) through the runtime's generator.
        let t =
            semi_diffusion::noise::randn(42 + k as u64, &[1, 4, 16, 16], &candle_core::Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
        assert_eq!(want, t);
        let blocks = image_to_blocks(&f, &want);
        assert_eq!(s.block(k, 5).unwrap(), &blocks[5 * 64..6 * 64]);
    }
    assert!(s.block(7, 0).is_err());
    // Damage one noise value of the middle image: open refuses.
    let path = dir.path().join("noise/c00001.f32");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = Store::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("differs from torch.randn"), "{err}");
}

#[test]
fn crash_then_resume_is_byte_identical() {
    let whole = tempfile::tempdir().unwrap();
    run(whole.path(), &request(7, None));

    let dir = tempfile::tempdir().unwrap();
    let req = request(7, None);
    // 6 pairs x 7 images = 42 passes; fail on the 20th.
    let mut failing = FakeProber::new(fp()).fail_after(19);
    let err = collect(dir.path(), &mut failing, &req, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("simulated failure"), "{err}");
    // A temp file left behind by the killed writer, and a half-written unit.
    let stale = dir
        .path()
        .join("scores")
        .join(req.pairs[0].dir_name())
        .join(".tmp.c00002.f32");
    std::fs::write(&stale, b"half").unwrap();
    let partial = Store::open(dir.path()).unwrap().status().unwrap();
    assert!(!partial.is_complete());
    assert_eq!(partial.units_done, 18 / 3); // 19 passes = 6 whole units of 3 images + 1

    let mut seen = Vec::new();
    let summary = collect(
        dir.path(),
        &mut FakeProber::new(fp()),
        &req,
        &mut |p: &Progress| seen.push(*p),
    )
    .unwrap();
    assert_eq!(summary.stale_temps_removed, 1);
    assert_eq!(summary.units_skipped, 6);
    assert_eq!(summary.units_computed, 18 - 6);
    assert_eq!(summary.passes, 42 - 18);
    let first = seen.first().unwrap();
    assert_eq!(
        (first.passes_done, first.passes_at_start, first.passes_total),
        (18, 18, 42)
    );
    let last = seen.last().unwrap();
    assert_eq!(
        (last.units_done, last.units_total, last.passes_done),
        (18, 18, 42)
    );
    assert_eq!(tree(dir.path()), tree(whole.path()));

    // A rerun of a complete store does nothing.
    let again = run(dir.path(), &req);
    assert_eq!((again.units_computed, again.passes), (0, 0));
    assert_eq!(tree(dir.path()), tree(whole.path()));
}

#[test]
fn batched_probing_gives_the_same_store() {
    let a = tempfile::tempdir().unwrap();
    run(a.path(), &request(5, None));
    let b = tempfile::tempdir().unwrap();
    let mut p = FakeProber::new(fp()).with_pairs_per_pass(4);
    collect(b.path(), &mut p, &request(5, None), &mut |_| {}).unwrap();
    assert_eq!(tree(a.path()), tree(b.path()));
}

#[test]
fn extending_pairs_and_images_equals_one_run() {
    let whole = tempfile::tempdir().unwrap();
    let full = request(8, None);
    run(whole.path(), &full);

    let dir = tempfile::tempdir().unwrap();
    let few = CollectRequest {
        pairs: all_pairs(&["dog", "car"]).unwrap(),
        n_images: 4,
        ..full.clone()
    };
    run(dir.path(), &few);
    // More images for the existing pair only: chunk 1 grows from 1 to 3 images, chunk 2 appears.
    let more = CollectRequest {
        n_images: 8,
        ..few.clone()
    };
    let s = run(dir.path(), &more);
    assert_eq!(s.passes, 4);
    // Then the other pairs; the store keeps N = 8.
    let rest = CollectRequest {
        n_images: 2,
        ..full.clone()
    };
    let s = run(dir.path(), &rest);
    assert_eq!(s.passes, 5 * 8);
    assert_eq!(tree(dir.path()), tree(whole.path()));
}

fn shard_dirs(n: usize, root: &Path) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let d = root.join(format!("shard{i}"));
            run(&d, &request(7, Some(Shard::new(i, n).unwrap())));
            d
        })
        .collect()
}

#[test]
fn shards_merge_to_the_single_run() {
    let whole = tempfile::tempdir().unwrap();
    run(whole.path(), &request(7, None));
    let root = tempfile::tempdir().unwrap();
    let shards = shard_dirs(2, root.path());
    // Each shard did about half the work and is complete by itself.
    let s0 = Store::open(&shards[0]).unwrap().status().unwrap();
    assert!(s0.is_complete());
    assert_eq!(s0.units_total, 9);
    let out = root.path().join("merged");
    let m = merge(&[shards[1].clone(), shards[0].clone()], &out).unwrap();
    assert_eq!((m.shards, m.units), (2, 18));
    assert_eq!(tree(&out), tree(whole.path()));
    // A merged store is a whole store.
    assert!(Store::open(&out).unwrap().status().unwrap().is_complete());
}

#[test]
fn merge_checks_shards() {
    let root = tempfile::tempdir().unwrap();
    let shards = shard_dirs(3, root.path());
    let err = merge(&shards[..2], &root.path().join("m1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("shard(s) 2/3 missing"), "{err}");
    let err = merge(
        &[shards[0].clone(), shards[0].clone()],
        &root.path().join("m2"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("given twice"), "{err}");
    // An incomplete shard.
    let victim = Store::open(&shards[1]).unwrap();
    let unit = victim.manifest().units_of(victim.manifest().shard)[0];
    let pair = victim.manifest().pairs[unit.pair].clone();
    std::fs::remove_file(semi_tickets::store::manifest::score_path(
        &shards[1], &pair, unit.chunk,
    ))
    .unwrap();
    let err = merge(&shards, &root.path().join("m3"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shard 1/3") && err.contains("incomplete"),
        "{err}"
    );
    assert!(!root.path().join("m3").exists());
    // A shard made with another model.
    let other = root.path().join("other");
    let mut p = FakeProber::new(FakeProber::small_fingerprint("another-model"));
    collect(
        &other,
        &mut p,
        &request(7, Some(Shard::new(1, 3).unwrap())),
        &mut |_| {},
    )
    .unwrap();
    let err = merge(
        &[shards[0].clone(), other, shards[2].clone()],
        &root.path().join("m4"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model: fake-model vs another-model"), "{err}");
    // Not shards at all.
    let whole = root.path().join("whole");
    run(&whole, &request(7, None));
    assert!(merge(&[whole], &root.path().join("m5")).is_err());
}

#[test]
fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &request(4, None));
    // Another model on the same store.
    let mut other = FakeProber::new(FakeProber::small_fingerprint("another-model"));
    let err = collect(dir.path(), &mut other, &request(4, None), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("model: fake-model vs another-model"), "{err}");
    let err = Store::open_for(dir.path(), &other.fingerprint_clone())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot be mixed"), "{err}");
    // Another seed, another shard.
    let err = run_err(
        dir.path(),
        &CollectRequest {
            seed: 1,
            ..request(4, None)
        },
    );
    assert!(err.contains("seed 42, not 1"), "{err}");
    let err = run_err(dir.path(), &request(4, Some(Shard::new(0, 2).unwrap())));
    assert!(err.contains("same shard"), "{err}");
    // N = 0, no pairs, a non-store directory.
    let err = run_err(&dir.path().join("new"), &request(0, None));
    assert!(err.contains("N must be at least 1"), "{err}");
    assert!(!dir.path().join("new").exists());
    let err = run_err(
        &dir.path().join("new"),
        &CollectRequest {
            pairs: vec![],
            ..request(3, None)
        },
    );
    assert!(err.contains("no pairs"), "{err}");
    let junk = tempfile::tempdir().unwrap();
    std::fs::write(junk.path().join("notes.txt"), b"x").unwrap();
    let err = run_err(junk.path(), &request(3, None));
    assert!(err.contains("not empty"), "{err}");
    let err = Store::open(junk.path()).err().unwrap().to_string();
    assert!(err.contains("not a ticket store"), "{err}");
}

#[test]
fn incomplete_pairs_are_refused_by_selection() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(4, None);
    let mut failing = FakeProber::new(fp()).fail_after(10);
    assert!(collect(dir.path(), &mut failing, &req, &mut |_| {}).is_err());
    let s = Store::open(dir.path()).unwrap();
    let err = semi_tickets::select(&s, &["dog", "cat"], &semi_tickets::Rule::authors())
        .unwrap_err()
        .to_string();
    assert!(err.contains("is incomplete"), "{err}");
}

#[test]
fn pairs_file_drives_a_collect() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = parse_pairs("dog,car\n# comment\nhot dog , Car\n").unwrap();
    let req = CollectRequest {
        pairs,
        ..request(2, None)
    };
    run(dir.path(), &req);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.categories(), ["car", "dog", "hot dog"]);
    assert_eq!(s.partners("car"), ["dog", "hot dog"]);
    assert!(dir.path().join("scores/car+hot_20dog/c00000.f32").exists());
}

fn run_err(dir: &Path, req: &CollectRequest) -> String {
    collect(dir, &mut FakeProber::new(fp()), req, &mut |_| {})
        .unwrap_err()
        .to_string()
}

trait FingerprintClone {
    fn fingerprint_clone(&self) -> semi_tickets::ProbeFingerprint;
}

impl FingerprintClone for FakeProber {
    fn fingerprint_clone(&self) -> semi_tickets::ProbeFingerprint {
        semi_tickets::Prober::fingerprint(self)
    }
}

#[test]
fn a_pair_that_cannot_be_probed_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let wordy = "very ".repeat(12) + "long";
    let bad = CollectRequest {
        pairs: vec![semi_tickets::Pair::new(&wordy, "dog").unwrap()],
        ..request(2, None)
    };
    let err = run_err(&store, &bad);
    assert!(err.contains("cannot collect pair"), "{err}");
    assert!(!store.exists(), "nothing may be written for a refused pair");
    // Nor into an existing store: its manifest stays byte-identical and it stays usable.
    run(&store, &request(2, None));
    let before = std::fs::read(store.join("manifest.json")).unwrap();
    run_err(&store, &bad);
    assert_eq!(std::fs::read(store.join("manifest.json")).unwrap(), before);
    assert!(Store::open(&store).unwrap().status().unwrap().is_complete());
}

#[test]
fn an_unfinished_extension_leaves_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let few = CollectRequest {
        pairs: all_pairs(&["dog", "car"]).unwrap(),
        ..request(4, None)
    };
    run(dir.path(), &few);
    let before = std::fs::read(dir.path().join("manifest.json")).unwrap();
    // Adding pairs and images is killed half-way: the store keeps its manifest and still
    // serves its pair, although the files of the extension have grown.
    let full = request(8, None);
    let mut failing = FakeProber::new(fp()).fail_after(20);
    assert!(collect(dir.path(), &mut failing, &full, &mut |_| {}).is_err());
    assert_eq!(
        std::fs::read(dir.path().join("manifest.json")).unwrap(),
        before
    );
    let s = Store::open(dir.path()).unwrap();
    assert!(s.status().unwrap().is_complete());
    assert!(s.has_unfinished_change());
    assert_eq!(s.scores("dog", "car").unwrap().len(), 4 * 16);
    drop(s);
    // Rerunning finishes it, and the result equals one uninterrupted run.
    run(dir.path(), &full);
    let whole = tempfile::tempdir().unwrap();
    run(whole.path(), &full);
    assert_eq!(tree(dir.path()), tree(whole.path()));
}

#[test]
fn a_store_poisoned_by_an_overlong_category_repairs_itself() {
    // What an older semi wrote for a 300-character category: the pair in the manifest, no data.
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &request(2, None));
    let mut m = semi_tickets::Manifest::read(dir.path()).unwrap();
    m.pairs
        .push(semi_tickets::Pair::stored(&"z".repeat(300), "dog").unwrap());
    m.pairs.sort();
    m.categories = semi_tickets::names::categories_of(&m.pairs);
    std::fs::write(dir.path().join("manifest.json"), m.to_bytes()).unwrap();
    // It opens and reports itself incomplete (no "File name too long")...
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.status().unwrap().missing.len(), 1);
    drop(s);
    // ...and the next collect drops the pair that can never be probed.
    let summary = run(dir.path(), &request(2, None));
    assert_eq!(summary.dropped_pairs.len(), 1);
    let s = Store::open(dir.path()).unwrap();
    assert!(s.status().unwrap().is_complete());
    assert_eq!(s.pairs().len(), 6);
}

#[test]
fn damaged_scores_are_refused_on_use_and_scored_again_by_collect() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(4, None);
    run(dir.path(), &req);
    let whole = tree(dir.path());
    let path = dir.path().join("scores/car+dog/c00001.f32");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let s = Store::open(dir.path()).unwrap();
    let err = s.scores("car", "dog").unwrap_err().to_string();
    assert!(
        err.contains("outside [0, 1]") && err.contains("c00001.f32"),
        "{err}"
    );
    drop(s);
    let summary = run(dir.path(), &req);
    assert_eq!(summary.units_computed, 1);
    assert_eq!(tree(dir.path()), whole);
}
