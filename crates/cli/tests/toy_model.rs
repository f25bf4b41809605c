//! The embedded toy model is real: `semi generate` with no `--model` loads it, and a short
//! generation of "a circle" gives what the exact detector calls one circle for most seeds.
//! This checks the trained weights (and the runtime on them), not just that something runs.

use semi_toyworld::{caption_matches, detect, parse_caption, DetectorConfig, RgbImage};
use std::process::Command;

#[test]
fn embedded_toy_model_draws_one_circle() {
    let tmp = tempfile::tempdir().unwrap();
    let want = parse_caption("a circle").unwrap();
    let seeds = 0..8u64;
    let mut matched = Vec::new();
    for seed in seeds.clone() {
        let out = tmp.path().join(format!("circle-{seed}.png"));
        let status = Command::new(env!("CARGO_BIN_EXE_semi"))
            .args([
                "generate",
                "--prompt",
                "a circle",
                "--steps",
                "10",
                "--guidance",
                "2",
            ])
            .args(["--seed", &seed.to_string(), "--out"])
            .arg(&out)
            .env("SEMI_CACHE", tmp.path().join("cache"))
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let img = RgbImage::load_png(&out).unwrap();
        let dets = detect(&img, &DetectorConfig::for_image(img.width(), img.height()));
        if caption_matches(&dets, &want) {
            matched.push(seed);
        }
    }
    eprintln!("seeds giving one circle: {matched:?}");
    // A model that ignores its prompt, or a runtime that mangles it, fails this by a wide margin.
    assert!(
        matched.len() >= 6,
        "only seeds {matched:?} of {seeds:?} gave exactly one circle"
    );
}
