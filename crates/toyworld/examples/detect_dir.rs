//! Runs the exact detector over generated images so that Python tools need not re-implement it:
//! `cargo run --release -p semi-toyworld --example detect_dir -- DIR [--shapes]`
//! (`--shapes`: the latent world, where objects are named by shape, not colour).
//!
//! Reads `DIR/captions.jsonl` (one `{"file": "0000.png", "caption": "a circle"}` per line, files
//! relative to DIR) and prints one JSON line per image to stdout:
//! `{"file", "caption", "match", "detections": [COCO-style detection, ...]}`, where `match` says
//! whether the detected categories and counts equal the caption's. A summary goes to stderr.

use anyhow::{Context, Result};
use semi_toyworld::{caption_matches, detect, parse_caption, DetectorConfig, Palette, RgbImage};
use serde::Deserialize;
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Deserialize)]
struct Entry {
    file: String,
    caption: String,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shapes = args.iter().any(|a| a == "--shapes");
    let dir = PathBuf::from(
        args.iter()
            .find(|a| !a.starts_with("--"))
            .context("usage: detect_dir DIR [--shapes] (with DIR/captions.jsonl)")?,
    );
    let palette = if shapes {
        Palette::Shared
    } else {
        Palette::PerCategory
    };
    let list = dir.join("captions.jsonl");
    let file =
        std::fs::File::open(&list).with_context(|| format!("cannot open {}", list.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut n, mut matched) = (0usize, 0usize);
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", list.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: malformed entry", list.display(), i + 1))?;
        let groups = parse_caption(&entry.caption)?;
        let img = RgbImage::load_png(&dir.join(&entry.file))?;
        let cfg = DetectorConfig {
            palette,
            ..DetectorConfig::for_image(img.width(), img.height())
        };
        let dets = detect(&img, &cfg);
        let ok = caption_matches(&dets, &groups);
        n += 1;
        matched += usize::from(ok);
        let record = serde_json::json!({
            "file": entry.file,
            "caption": entry.caption,
            "match": ok,
            "detections": dets,
        });
        writeln!(out, "{record}")?;
    }
    eprintln!("{matched}/{n} images match their caption");
    Ok(())
}
