//! `semi generate` with every kind of method flag on the embedded toy model (fast: 5 steps at
//! 32x32): Swap and Soft run and record themselves in the sidecar, same flags give the same
//! image, and impossible combinations end in one clear `error:` line with nothing written.

use std::path::Path;
use std::process::{Command, Output};

const LAYOUT: &str = r#"{"prompt": "a circle and a square", "width": 32, "height": 32, "seed": 3,
  "objects": [{"phrase": "circle", "category": "circle", "bbox": [0.05, 0.05, 0.5, 0.5]},
              {"phrase": "square", "category": "square", "bbox": [0.5, 0.5, 0.95, 0.95]}]}"#;

fn semi(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semi"))
        .args(args)
        .env("SEMI_CACHE", cache)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn assert_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    // Layout warnings (a category not named in the prompt) may come first.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("warning: "))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {stderr}");
    }
}

fn sidecar(png: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(png.with_extension("json")).unwrap()).unwrap()
}

#[test]
fn swap_and_soft_on_the_toy_model() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let layout = t.path().join("layout.json");
    std::fs::write(&layout, LAYOUT).unwrap();
    let layout = layout.to_str().unwrap();
    let png = |name: &str| t.path().join(name);
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--layout",
            layout,
            "--steps",
            "5",
            "--guidance-scale",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(semi(&cache, &args))
    };

    let stdout = run(&png("swap.png"), &["--init", "swap"]);
    assert!(stdout.contains("swap: "), "{stdout}");
    let s = sidecar(&png("swap.png"));
    assert_eq!(s["method"], "swap");
    assert_eq!(s["init"], "swap");
    assert_eq!(s["attention"], "none");
    assert_eq!(s["guidance"], 2.0, "the CFG scale keeps its key");
    let source: Vec<u64> = s["swap"]["source"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut sorted = source.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..source.len() as u64).collect::<Vec<_>>());
    assert!(s["swap"]["moved"].as_u64().unwrap() > 0);

    run(
        &png("soft.png"),
        &["--guidance", "soft", "--soft-weight", "0.3"],
    );
    let s = sidecar(&png("soft.png"));
    assert_eq!(s["method"], "soft");
    assert_eq!(s["soft_weight"], 0.3);

    // The plain run differs from both; the same flags give the same bytes.
    run(&png("sd.png"), &[]);
    assert_eq!(sidecar(&png("sd.png"))["method"], "sd");
    let bytes = |n: &str| std::fs::read(png(n)).unwrap();
    assert_ne!(bytes("sd.png"), bytes("swap.png"));
    assert_ne!(bytes("sd.png"), bytes("soft.png"));
    run(
        &png("soft2.png"),
        &["--guidance", "soft", "--soft-weight", "0.3"],
    );
    assert_eq!(bytes("soft.png"), bytes("soft2.png"));

    // Swap + Paint together.
    run(&png("sp.png"), &["--init", "swap", "--guidance", "paint"]);
    let s = sidecar(&png("sp.png"));
    assert_eq!(s["method"], "swap+paint");
    assert_eq!(s["paint_weight"], semi_guidance::PAINT_DEFAULT_WEIGHT);
}

#[test]
fn bad_method_flags_are_one_line_errors() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let layout = t.path().join("layout.json");
    std::fs::write(&layout, LAYOUT).unwrap();
    let layout = layout.to_str().unwrap();
    let out = t.path().join("x.png");
    let out = out.to_str().unwrap();
    let prompt = ["generate", "--prompt", "a circle", "--out", out];
    let with = |extra: &[&str]| {
        let mut a = prompt.to_vec();
        a.extend_from_slice(extra);
        semi(&cache, &a)
    };
    assert_error(&with(&["--init", "semi"]), &["--init semi needs --layout"]);
    assert_error(&with(&["--init", "swap"]), &["--init swap needs --layout"]);
    assert_error(
        &with(&["--init", "semi+swap"]),
        &["--init semi+swap needs --layout"],
    );
    assert_error(
        &with(&["--guidance", "paint"]),
        &["--guidance paint needs --layout"],
    );
    assert_error(
        &with(&["--guidance", "soft"]),
        &["--guidance soft needs --layout"],
    );
    assert_error(&with(&["--guidance", "strong"]), &["unknown guidance"]);
    assert_error(&with(&["--init", "paint"]), &["not an init"]);
    assert_error(&with(&["--guidance", "2", "--cfg", "3"]), &["--cfg"]);
    let lay = ["generate", "--layout", layout, "--out", out];
    let with = |extra: &[&str]| {
        let mut a = lay.to_vec();
        a.extend_from_slice(extra);
        semi(&cache, &a)
    };
    assert_error(
        &with(&["--guidance", "soft", "--soft-weight", "-1"]),
        &["--soft-weight must be a finite number >= 0"],
    );
    assert_error(
        &with(&["--guidance", "paint", "--paint-weight", "nan"]),
        &["--paint-weight"],
    );
    assert_error(
        &with(&["--init", "semi+swap", "--latents", "x.npy"]),
        &["--latents", "choose one"],
    );
    // A box whose words are not in the prompt cannot be guided.
    let bad = t.path().join("bad.json");
    std::fs::write(
        &bad,
        LAYOUT.replace(
            "\"phrase\": \"square\", \"category\": \"square\"",
            "\"phrase\": \"ring\", \"category\": \"ring\"",
        ),
    )
    .unwrap();
    let out2 = semi(
        &cache,
        &[
            "generate",
            "--layout",
            bad.to_str().unwrap(),
            "--guidance",
            "soft",
            "--steps",
            "2",
            "--out",
            out,
        ],
    );
    assert_error(&out2, &["ring", "occurs in the prompt", "cannot steer"]);
    assert!(!Path::new(out).exists(), "nothing was written");
}
