//! Hostile and careless input to the `semi` binary (docs/reliability.md lists the classes):
//! each ends in one `error:` line or a bounded warning, and nothing the user had is lost.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn layout_example() -> PathBuf {
    root().join("examples/layouts/circle-and-square.json")
}

/// `semi` with its cache in `cache`.
fn semi_in(cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_semi"));
    c.args(args)
        .env("SEMI_CACHE", cache)
        .env_remove("RUST_BACKTRACE");
    c
}

fn run(cache: &Path, args: &[&str]) -> Output {
    semi_in(cache, args).output().unwrap()
}

/// `semi tickets collect` on the toy model.
fn collect(cache: &Path, store: &Path, categories: &str, n: &str) -> Command {
    let store = store.to_str().unwrap();
    semi_in(
        cache,
        &[
            "tickets",
            "collect",
            "--model",
            "toy",
            "--categories",
            categories,
            "--n",
            n,
            "--store",
            store,
        ],
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit code 1 and a single stderr line `error: ...` containing every needle.
fn assert_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {err}");
    }
}

fn write_layout(dir: &Path, name: &str, json: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, json).unwrap();
    p
}

fn temps_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with(".tmp.") {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn an_overlong_category_is_refused_and_the_cache_store_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "x".repeat(200);
    let bad = write_layout(
        tmp.path(),
        "long.json",
        &format!(
            r#"{{"prompt": "a {long} and a square", "objects": [
                {{"phrase": "{long}", "category": "{long}", "bbox": [0, 0, 0.5, 0.5]}},
                {{"phrase": "square", "category": "square", "bbox": [0.5, 0.5, 1, 1]}}]}}"#
        ),
    );
    let out_png = tmp.path().join("o.png");
    let out = run(
        tmp.path(),
        &[
            "generate",
            "--layout",
            bad.to_str().unwrap(),
            "--init",
            "semi",
            "--out",
            out_png.to_str().unwrap(),
        ],
    );
    assert_error(&out, &["200 characters", "at most 64"]);
    // The next SemI run on the same cache works.
    let out = run(
        tmp.path(),
        &[
            "generate",
            "--layout",
            layout_example().to_str().unwrap(),
            "--init",
            "semi",
            "--steps",
            "2",
            "--out",
            out_png.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn outputs_never_replace_devices_inputs_or_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let layout = t("mine.json");
    std::fs::copy(layout_example(), &layout).unwrap();
    let before = std::fs::read(&layout).unwrap();
    let gen = |extra: &[&str]| {
        let mut args = vec!["generate", "--layout", layout.as_str(), "--steps", "1"];
        args.extend_from_slice(extra);
        run(tmp.path(), &args)
    };
    #[cfg(unix)]
    {
        let link = t("null.png");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        assert_error(&gen(&["--out", &link]), &["not a regular file"]);
        use std::os::unix::fs::FileTypeExt;
        let dev = std::fs::metadata("/dev/null").unwrap().file_type();
        assert!(dev.is_char_device(), "/dev/null was replaced");
    }
    // The sidecar of mine.png would be mine.json, the layout itself.
    assert_error(&gen(&["--out", &t("mine.png")]), &["overwrite --layout"]);
    assert_eq!(std::fs::read(&layout).unwrap(), before);
    // Names that promise another format.
    assert_error(&gen(&["--out", &t("x.jpg")]), &["PNG"]);
    assert_error(
        &gen(&["--out", &t("x.png"), "--save-latents", &t("x.json")]),
        &[".safetensors or .npy"],
    );
    assert_error(
        &gen(&["--out", &t("x.png"), "--save-latents", &t("x.bin")]),
        &[".safetensors or .npy"],
    );
    // A good run writes its four files and no temporary.
    let out = gen(&["--out", &t("x.png"), "--save-latents", &t("x.safetensors")]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in ["x.png", "x.json", "x.boxes.png", "x.safetensors"] {
        assert!(tmp.path().join(f).is_file(), "{f}");
    }
    assert_eq!(temps_under(tmp.path()), Vec::<PathBuf>::new());
}

#[cfg(unix)]
#[test]
fn ctrl_c_leaves_no_temporary_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let child = semi_in(
        tmp.path(),
        &[
            "tickets",
            "collect",
            "--model",
            "toy",
            "--categories",
            "circle,square,ring,cross",
            "--n",
            "100000",
            "--store",
            store.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Let it get going (the store's manifest appears once the collect writes).
    let start = std::time::Instant::now();
    while !store.join("manifest.json").exists() && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) with a pid of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(temps_under(&store), Vec::<PathBuf>::new());
}

#[test]
fn sizes_and_counts_beyond_reason_are_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let huge = write_layout(
        tmp.path(),
        "huge.json",
        r#"{"prompt": "a circle", "width": 100000, "height": 100000,
            "objects": [{"phrase": "circle", "category": "circle", "bbox": [0, 0, 0.5, 0.5]}]}"#,
    );
    let o = tmp.path().join("o.png");
    let o = o.to_str().unwrap();
    let out = run(
        tmp.path(),
        &["generate", "--layout", huge.to_str().unwrap(), "--out", o],
    );
    assert_error(&out, &["too large", "16384"]);
    let out = run(
        tmp.path(),
        &[
            "generate", "--prompt", "a circle", "--height", "8192", "--width", "8192", "--out", o,
        ],
    );
    assert_error(&out, &["needs at least", "available"]);
    let store = tmp.path().join("store");
    let out = collect(tmp.path(), &store, "circle,square", "4000000000")
        .output()
        .unwrap();
    assert_error(&out, &["more than a store may have"]);
    let jsonl = tmp.path().join("l.jsonl");
    let out = run(
        tmp.path(),
        &[
            "eval",
            "toy-layouts",
            "--n",
            "100000000",
            "--out",
            jsonl.to_str().unwrap(),
        ],
    );
    assert_error(&out, &["--n must be between 1 and"]);
}

#[test]
fn non_finite_latents_and_unknown_schedulers_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("o.png");
    let npy = tmp.path().join("nan.npy");
    let values = vec![f32::NAN; 3 * 32 * 32];
    std::fs::write(
        &npy,
        semi_diffusion::latents_io::npy_bytes(&values, &[1, 3, 32, 32]),
    )
    .unwrap();
    let out = run(
        tmp.path(),
        &[
            "generate",
            "--prompt",
            "a circle",
            "--latents",
            npy.to_str().unwrap(),
            "--steps",
            "1",
            "--out",
            o.to_str().unwrap(),
        ],
    );
    assert_error(&out, &["NaN or infinite"]);
    assert!(!o.exists(), "no image for NaN latents");
    // A copy of the toy model whose scheduler is of an unknown class.
    let model = tmp.path().join("model");
    copy_dir(&root().join("models/toy"), &model);
    let cfg = model.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("DDIMScheduler", "FooScheduler");
    std::fs::write(&cfg, text).unwrap();
    let out = run(
        tmp.path(),
        &[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a circle",
            "--out",
            o.to_str().unwrap(),
        ],
    );
    assert_error(&out, &["FooScheduler"]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn messages_stay_short_and_say_what_happened() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("o.png");
    let o = o.to_str().unwrap();
    // 1e308 in a box reads as 1e308, with or without RUST_BACKTRACE.
    let big = write_layout(
        tmp.path(),
        "big.json",
        r#"{"prompt": "a circle", "objects": [
            {"phrase": "circle", "category": "circle", "bbox": [0, 0, 1e308, 0.5]}]}"#,
    );
    let out = semi_in(
        tmp.path(),
        &["generate", "--layout", big.to_str().unwrap(), "--out", o],
    )
    .env("RUST_BACKTRACE", "1")
    .output()
    .unwrap();
    assert_error(&out, &["x1 = 1e308 is outside [0, 1]"]);
    assert!(stderr(&out).len() < 200, "{}", stderr(&out));
    // 200 objects: a handful of warnings and a count, not 200 lines.
    let objects: Vec<String> = (0..200)
        .map(|i| {
            let x = i as f64 / 400.0;
            format!(
                r#"{{"phrase": "ring", "category": "ring", "bbox": [{x}, 0, {}, 0.5]}}"#,
                x + 0.002
            )
        })
        .collect();
    let many = write_layout(
        tmp.path(),
        "many.json",
        &format!(
            r#"{{"prompt": "a circle", "objects": [{}]}}"#,
            objects.join(",")
        ),
    );
    let out = run(
        tmp.path(),
        &[
            "generate",
            "--layout",
            many.to_str().unwrap(),
            "--steps",
            "1",
            "--out",
            o,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("warning"))
        .count();
    assert!(warnings <= 6, "{}", stderr(&out));
    // A prompt longer than the text encoder reads: one warning; guidance of an object named
    // only past the cut is an error that says so.
    let prompt = format!("a circle {}and a square", "and a ring ".repeat(30));
    let long = write_layout(
        tmp.path(),
        "long.json",
        &format!(
            r#"{{"prompt": "{prompt}", "objects": [
                {{"phrase": "circle", "category": "circle", "bbox": [0, 0, 0.5, 0.5]}},
                {{"phrase": "square", "category": "square", "bbox": [0.5, 0.5, 1, 1]}}]}}"#
        ),
    );
    let l = long.to_str().unwrap();
    let out = run(
        tmp.path(),
        &["generate", "--layout", l, "--steps", "1", "--out", o],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let cut: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.contains("reads only the first 77"))
        .map(String::from)
        .collect();
    assert_eq!(cut.len(), 1, "{}", stderr(&out));
    let out = run(
        tmp.path(),
        &[
            "generate",
            "--layout",
            l,
            "--guidance",
            "paint",
            "--steps",
            "1",
            "--out",
            o,
        ],
    );
    assert_error(&out, &["\"square\" lies beyond token 77"]);
}

#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = collect(tmp.path(), &store, "circle,square", "4")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // `semi tickets inspect ... | head -0`: the reader is gone before the first line (a pipe
    // whose read end is closed before the child starts, so every write fails).
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors; both are owned below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    use std::os::fd::FromRawFd;
    // SAFETY: fresh descriptors from pipe2, each owned once.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    let out = semi_in(tmp.path(), &["tickets", "inspect", store.to_str().unwrap()])
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(stderr(&out), "", "a closed pipe is no error to report");
    assert_eq!(out.status.code(), Some(141));
}

#[test]
fn two_runs_share_one_cache_store() {
    let tmp = tempfile::tempdir().unwrap();
    let spawn = |name: &str| {
        let out = tmp.path().join(name);
        semi_in(
            tmp.path(),
            &[
                "generate",
                "--layout",
                layout_example().to_str().unwrap(),
                "--init",
                "semi",
                "--n",
                "200",
                "--steps",
                "1",
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let a = spawn("a.png");
    let b = spawn("b.png");
    for (name, child) in [("a", a), ("b", b)] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
}
