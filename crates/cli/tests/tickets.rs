//! The ticket commands through the real `semi` binary on the tiny SD-1 fixture model: collect ->
//! inspect -> init -> generate --init semi, a collect killed with SIGKILL and resumed, shards
//! merged, and bad input (one `error:` line, exit code 1, nothing written).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tiny(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../diffusion/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn command(cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_semi"));
    c.args(args)
        .env("SEMI_CACHE", cache)
        .env("HF_HUB_CACHE", cache.join("no-hf-cache"))
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT");
    c
}

fn semi(cache: &Path, args: &[&str]) -> Output {
    command(cache, args).output().unwrap()
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Exit code 1 and a single stderr line `error: ...` containing every needle.
fn assert_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("warning:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {stderr}");
    }
    assert!(!stderr.contains("panicked"));
}

/// Every file under `dir` (relative path -> bytes).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn collect_args<'a>(model: &'a str, store: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["tickets", "collect", "--model", model, "--store", store];
    v.extend_from_slice(extra);
    v
}

const LAYOUT: &str = r#"{"prompt": "a dog and a car", "width": 32, "height": 32, "seed": 3,
 "objects": [{"phrase": "a dog", "category": "dog", "bbox": [0.0, 0.0, 0.5, 1.0]},
             {"phrase": "a car", "category": "car", "bbox": [0.5, 0.25, 1.0, 0.75]}]}"#;

#[test]
fn collect_inspect_init_generate() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let p = |n: &str| t.path().join(n).display().to_string();
    let model = tiny("tiny-sd1");
    let store = p("store");
    let out = ok(semi(
        &cache,
        &collect_args(
            &model,
            &store,
            &["--categories", "Dog,car,cat", "--n", "4", "--chunk", "2"],
        ),
    ));
    assert!(out.contains("3 pairs x 4 images"), "{out}");
    assert!(out.contains("grid 16x16"), "{out}");
    assert!(out.contains("t = 981"), "{out}");
    // Rerun: nothing to do.
    let again = ok(semi(
        &cache,
        &collect_args(&model, &store, &["--categories", "dog,car,cat", "--n", "4"]),
    ));
    assert!(
        again.contains("6 units: 6 already done, 0 computed"),
        "{again}"
    );

    let json = ok(semi(&cache, &["tickets", "inspect", &store, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["complete"], true);
    assert_eq!(v["n_images"], 4);
    assert_eq!(v["pairs"], 3);
    assert_eq!(v["fingerprint"]["grid"], serde_json::json!([16, 16]));
    let cats = v["per_category"].as_array().unwrap();
    assert_eq!(cats.len(), 3);
    for c in cats {
        let h: u64 = c["histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .sum();
        assert_eq!(h, 4 * 256, "one average score per block");
        assert!(c["tickets"].as_u64().unwrap() > 0);
    }
    // Stricter thresholds give fewer tickets.
    let strict = ok(semi(
        &cache,
        &["tickets", "inspect", &store, "--json", "--t-obj", "0.9"],
    ));
    let s: serde_json::Value = serde_json::from_str(&strict).unwrap();
    assert!(s["per_category"][0]["tickets"].as_u64() < cats[0]["tickets"].as_u64());
    let hist = p("hist.png");
    let text = ok(semi(
        &cache,
        &["tickets", "inspect", &store, "--histograms", &hist],
    ));
    assert!(text.contains("tickets per category alone"), "{text}");
    assert!(std::fs::read(&hist).unwrap().starts_with(b"\x89PNG"));

    let layout = p("layout.json");
    std::fs::write(&layout, LAYOUT).unwrap();
    let init = p("init.safetensors");
    let report = ok(semi(
        &cache,
        &[
            "init", "--store", &store, "--layout", &layout, "--out", &init, "--model", &model,
        ],
    ));
    assert!(
        report.contains("dog") && report.contains("background"),
        "{report}"
    );
    let l = semi_diffusion::latents_io::load_latents(Path::new(&init)).unwrap();
    assert_eq!(l.shape, [1, 4, 16, 16]);
    assert_eq!(l.metadata["rule"], "paper (T_obj 0.5, T_bg 0.1)");
    // Same seed, same latents; the control and .npy work too.
    let init2 = p("init2.safetensors");
    ok(semi(
        &cache,
        &[
            "init", "--store", &store, "--layout", &layout, "--out", &init2,
        ],
    ));
    assert_eq!(
        semi_diffusion::latents_io::load_latents(Path::new(&init2))
            .unwrap()
            .data,
        l.data
    );
    let npy = p("control.npy");
    ok(semi(
        &cache,
        &[
            "init",
            "--store",
            &store,
            "--layout",
            &layout,
            "--out",
            &npy,
            "--control",
            "colour-matched",
            "--recalibrate",
            "--rule",
            "paper",
            "--seed",
            "9",
        ],
    ));
    assert_eq!(
        semi_diffusion::latents_io::load_latents(Path::new(&npy))
            .unwrap()
            .shape,
        [1, 4, 16, 16]
    );
    // The category controls (issue 22) on the same layout.
    for control in ["category-swapped", "any-object"] {
        let out = p(&format!("{control}.npy"));
        let text = ok(semi(
            &cache,
            &[
                "init",
                "--store",
                &store,
                "--layout",
                &layout,
                "--out",
                &out,
                "--control",
                control,
                "--rule",
                "paper",
                "--seed",
                "9",
            ],
        ));
        assert!(
            text.contains(&format!("{control} control, seed 9")),
            "{text}"
        );
        assert!(Path::new(&out).is_file());
    }

    // On the fly: the cache store is filled for the layout's pair, then reused.
    let img = p("img.png");
    let gen = ok(semi(
        &cache,
        &[
            "generate", "--model", &model, "--layout", &layout, "--init", "semi", "--n", "3",
            "--steps", "3", "--out", &img,
        ],
    ));
    assert!(
        gen.contains("collecting 1 pairs x 3 images into the cache store"),
        "{gen}"
    );
    assert!(Path::new(&img).exists());
    assert!(t.path().join("img.boxes.png").exists());
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("img.json")).unwrap()).unwrap();
    assert_eq!(sidecar["init"], "semi", "{sidecar}");
    assert_eq!(sidecar["seed"], 3);
    let stores: Vec<_> = std::fs::read_dir(cache.join("stores")).unwrap().collect();
    assert_eq!(stores.len(), 1);
    let gen2 = ok(semi(
        &cache,
        &[
            "generate",
            "--model",
            &model,
            "--layout",
            &layout,
            "--init",
            "semi",
            "--n",
            "3",
            "--steps",
            "3",
            "--out",
            &p("img2.png"),
        ],
    ));
    assert!(gen2.contains("(up to date)"), "{gen2}");
    assert_eq!(
        std::fs::read(&img).unwrap(),
        std::fs::read(t.path().join("img2.png")).unwrap(),
        "same layout, same store, same seed: same image"
    );
    // With a given store, and the Gaussian baseline from the same layout.
    ok(semi(
        &cache,
        &[
            "generate",
            "--model",
            &model,
            "--layout",
            &layout,
            "--init",
            "semi",
            "--store",
            &store,
            "--steps",
            "3",
            "--out",
            &p("img3.png"),
        ],
    ));
    ok(semi(
        &cache,
        &[
            "generate",
            "--model",
            &model,
            "--layout",
            &layout,
            "--steps",
            "3",
            "--out",
            &p("gauss.png"),
        ],
    ));
    assert!(t.path().join("gauss.boxes.png").exists());
    assert_ne!(
        std::fs::read(&img).unwrap(),
        std::fs::read(t.path().join("gauss.png")).unwrap()
    );
}

fn unit_files(store: &Path) -> usize {
    let Ok(pairs) = std::fs::read_dir(store.join("scores")) else {
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
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let model = tiny("tiny-sd1");
    let whole = t.path().join("whole").display().to_string();
    let killed = t.path().join("killed").display().to_string();
    let extra = [
        "--categories",
        "dog,car,cat,bus,sun,tree",
        "--n",
        "12",
        "--chunk",
        "2",
        "--seed",
        "5",
    ];
    ok(semi(&cache, &collect_args(&model, &whole, &extra)));
    let total = unit_files(Path::new(&whole));
    assert_eq!(total, 15 * 6);

    let mut child = command(&cache, &collect_args(&model, &killed, &extra))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let n = unit_files(Path::new(&killed));
        if n >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "collect finished before it was killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no unit written in 60 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // SIGKILL: no cleanup of any kind in the child.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");
    let done = unit_files(Path::new(&killed));
    assert!(done < total, "killed mid-way: {done} of {total} units");

    let resumed = ok(semi(&cache, &collect_args(&model, &killed, &extra)));
    assert!(resumed.contains(&format!("{total} units: ")), "{resumed}");
    assert!(!resumed.contains(": 0 already done"), "{resumed}");
    let (a, b) = (tree(Path::new(&whole)), tree(Path::new(&killed)));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a == b, "resumed store differs from the uninterrupted one");
}

#[test]
fn shards_merge_to_the_single_run() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let model = tiny("tiny-sd1");
    let p = |n: &str| t.path().join(n).display().to_string();
    let extra = ["--categories", "dog,car,cat", "--n", "4", "--chunk", "2"];
    ok(semi(&cache, &collect_args(&model, &p("single"), &extra)));
    for i in 0..2 {
        let shard = format!("{i}/2");
        let dir = p(&format!("s{i}"));
        let mut args = collect_args(&model, &dir, &extra);
        args.extend(["--shard", shard.as_str()]);
        assert!(ok(semi(&cache, &args)).contains(&format!("shard {i}/2")));
    }
    // A shard can be inspected (no selection: it holds only some chunks of each pair).
    let shown = ok(semi(&cache, &["tickets", "inspect", &p("s0"), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (v["shard"].as_str(), v["complete"].as_bool()),
        (Some("0/2"), Some(true))
    );
    assert!(v["per_category"].as_array().unwrap().is_empty());
    // A missing shard is refused and nothing is written.
    let out = semi(&cache, &["tickets", "merge", "--out", &p("bad"), &p("s0")]);
    assert_error(&out, &["shard"]);
    assert!(!Path::new(&p("bad")).join("manifest.json").exists());
    let m = ok(semi(
        &cache,
        &[
            "tickets",
            "merge",
            "--out",
            &p("merged"),
            &p("s1"),
            &p("s0"),
        ],
    ));
    assert!(m.contains("merged 2 shards"), "{m}");
    assert!(tree(Path::new(&p("merged"))) == tree(Path::new(&p("single"))));
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let model = tiny("tiny-sd1");
    let p = |n: &str| t.path().join(n).display().to_string();
    let store = p("store");
    ok(semi(
        &cache,
        &collect_args(&model, &store, &["--categories", "dog,car", "--n", "2"]),
    ));
    let before = tree(Path::new(&store));
    let layout = p("layout.json");
    std::fs::write(&layout, LAYOUT).unwrap();
    let out_file = p("out.safetensors");

    // N = 0: refused before anything exists.
    let out = semi(
        &cache,
        &collect_args(&model, &p("new"), &["--categories", "dog,car", "--n", "0"]),
    );
    assert_error(&out, &["--n must be at least 1"]);
    assert!(!Path::new(&p("new")).exists());
    let out = semi(
        &cache,
        &collect_args(&model, &p("new"), &["--categories", "dog", "--n", "2"]),
    );
    assert_error(&out, &["at least two categories"]);
    assert!(!Path::new(&p("new")).exists());

    // Malformed layout JSON.
    let broken = p("broken.json");
    std::fs::write(&broken, r#"{"prompt": "a dog", "width": 32,"#).unwrap();
    let out = semi(
        &cache,
        &[
            "init", "--store", &store, "--layout", &broken, "--out", &out_file,
        ],
    );
    assert_error(&out, &["broken.json"]);
    let badbox = p("badbox.json");
    std::fs::write(
        &badbox,
        LAYOUT.replace("[0.0, 0.0, 0.5, 1.0]", "[0.6, 0.0, 0.5, 1.0]"),
    )
    .unwrap();
    let out = semi(
        &cache,
        &[
            "init", "--store", &store, "--layout", &badbox, "--out", &out_file,
        ],
    );
    assert_error(&out, &["objects[0].bbox"]);

    // A category the store lacks.
    let bus = p("bus.json");
    std::fs::write(&bus, LAYOUT.replace("\"car\"", "\"bus\"")).unwrap();
    let out = semi(
        &cache,
        &[
            "init", "--store", &store, "--layout", &bus, "--out", &out_file,
        ],
    );
    assert_error(&out, &["bus"]);
    let out = semi(
        &cache,
        &[
            "generate",
            "--model",
            &model,
            "--layout",
            &bus,
            "--init",
            "semi",
            "--store",
            &store,
            "--steps",
            "2",
            "--out",
            &p("bus.png"),
        ],
    );
    assert_error(&out, &["bus"]);
    assert!(!Path::new(&p("bus.png")).exists());

    // A store from another model.
    let other = tiny("tiny-sd2");
    let out = semi(
        &cache,
        &[
            "init", "--store", &store, "--layout", &layout, "--out", &out_file, "--model", &other,
        ],
    );
    assert_error(&out, &["another model"]);
    let out = semi(
        &cache,
        &[
            "generate",
            "--model",
            &other,
            "--layout",
            &layout,
            "--init",
            "semi",
            "--store",
            &store,
            "--steps",
            "2",
            "--out",
            &p("other.png"),
        ],
    );
    assert_error(&out, &["another model"]);
    assert!(!Path::new(&p("other.png")).exists());
    let out = semi(
        &cache,
        &collect_args(&other, &store, &["--categories", "dog,car", "--n", "2"]),
    );
    assert_error(&out, &["different models or probe settings", "model:"]);

    // Thresholds outside [0, 1].
    let out = semi(
        &cache,
        &[
            "init", "--store", &store, "--layout", &layout, "--out", &out_file, "--t-obj", "1.5",
        ],
    );
    assert_error(&out, &["outside [0, 1]"]);
    let out = semi(&cache, &["tickets", "inspect", &store, "--t-bg", "-0.1"]);
    assert_error(&out, &["outside [0, 1]"]);

    // One-category layout on the fly without partners.
    let one = p("one.json");
    std::fs::write(
        &one,
        r#"{"prompt": "a dog", "width": 32, "height": 32,
            "objects": [{"phrase": "a dog", "category": "dog", "bbox": [0.2, 0.2, 0.8, 0.8]}]}"#,
    )
    .unwrap();
    let out = semi(
        &cache,
        &[
            "generate",
            "--model",
            &model,
            "--layout",
            &one,
            "--init",
            "semi",
            "--steps",
            "2",
            "--out",
            &p("one-dog.png"),
        ],
    );
    assert_error(&out, &["--partners"]);
    assert!(!Path::new(&p("one-dog.png")).exists());

    assert!(!Path::new(&out_file).exists(), "no latents were written");
    assert!(tree(Path::new(&store)) == before, "the store is untouched");
}

/// Several noise images per probe pass (`--batch`), with or without several prompts per pass,
/// give a store byte-identical to one image and one prompt per pass, on the tiny SD 1.x model
/// and the embedded toy model.
#[test]
fn batched_probing_writes_the_same_store() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    for (model, cats, height) in [
        (tiny("tiny-sd1"), "dog,car,cat", "32"),
        ("toy".to_string(), "circle,square,triangle", "32"),
    ] {
        let mut trees = Vec::new();
        for (i, extra) in [
            &["--batch", "1"][..],
            &["--batch", "3"][..],
            &["--batch", "4", "--pairs-per-pass", "2"][..],
        ]
        .iter()
        .enumerate()
        {
            let store = t.path().join(format!("store-{i}")).display().to_string();
            let mut args = collect_args(
                &model,
                &store,
                &[
                    "--categories",
                    cats,
                    "--n",
                    "5",
                    "--chunk",
                    "4",
                    "--height",
                    height,
                    "--width",
                    height,
                ],
            );
            args.extend_from_slice(extra);
            ok(semi(&cache, &args));
            trees.push(tree(Path::new(&store)));
            std::fs::remove_dir_all(&store).unwrap();
        }
        assert!(trees[0].len() > 3, "{model}: {:?}", trees[0].keys());
        for (i, other) in trees.iter().enumerate().skip(1) {
            assert_eq!(
                trees[0].keys().collect::<Vec<_>>(),
                other.keys().collect::<Vec<_>>(),
                "{model}: files of run {i}"
            );
            for (k, v) in &trees[0] {
                assert!(
                    v == &other[k],
                    "{model}: {k} differs with batching (run {i})"
                );
            }
        }
    }
}
