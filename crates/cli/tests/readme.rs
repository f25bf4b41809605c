//! The README's first command is the contract: run it as written (its `generate` arguments are
//! read from README.md, so the test follows the README), on a fresh cache, and check that the
//! image, the boxes preview and the sidecar appear and that the exact detector finds each of
//! the layout's objects inside its box (IoU > 0.5).

use semi_toyworld::{detect, iou_xyxy, DetectorConfig, RgbImage};
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The arguments after `--` of the first `cargo run ... -- generate` command in README.md.
fn readme_generate_args() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = text
        .find("cargo run --release -p semi-cli -- generate")
        .expect("README has a `cargo run ... -- generate` command");
    let end = start + text[start..].find("```").expect("command block ends");
    let command = text[start..end].replace("\\\n", " ");
    let after = command.split(" -- ").nth(1).expect("arguments after --");
    after.split_whitespace().map(str::to_string).collect()
}

#[test]
fn readme_first_command_puts_the_objects_in_their_boxes() {
    let args = readme_generate_args();
    assert_eq!(args[0], "generate", "{args:?}");
    let out_at = args.iter().position(|a| a == "--out").expect("--out");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("image.png");
    let mut args = args;
    args[out_at + 1] = out.display().to_string();
    let run = Command::new(env!("CARGO_BIN_EXE_semi"))
        .args(&args)
        .current_dir(root())
        .env("SEMI_CACHE", tmp.path().join("cache"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{:?}: {}",
        args,
        String::from_utf8_lossy(&run.stderr)
    );
    for f in ["image.png", "image.boxes.png", "image.json"] {
        assert!(tmp.path().join(f).is_file(), "{f} missing");
    }

    let layout_at = args.iter().position(|a| a == "--layout").expect("--layout");
    let layout: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(&args[layout_at + 1])).unwrap())
            .unwrap();
    let img = RgbImage::load_png(&out).unwrap();
    let (w, h) = (img.width() as f32, img.height() as f32);
    let found = detect(&img, &DetectorConfig::for_image(img.width(), img.height()));
    for o in layout["objects"].as_array().unwrap() {
        let b: Vec<f32> = o["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let target = [b[0] * w, b[1] * h, b[2] * w, b[3] * h];
        let category = o["category"].as_str().unwrap();
        let best = found
            .iter()
            .filter(|d| d.category.name() == category)
            .map(|d| iou_xyxy(d.bbox_xyxy(), target))
            .fold(0.0f32, f32::max);
        assert!(
            best > 0.5,
            "{category}: best IoU {best} with its box {target:?}; detections {found:?}"
        );
    }
}
