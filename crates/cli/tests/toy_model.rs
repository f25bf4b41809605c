//! The embedded toy model is real: `semi generate` with no `--model` loads it, and a short
//! generation of "a circle" gives what the exact detector calls one circle for most seeds.
//! This checks the trained weights (and the runtime on them), not just that something runs.
//! The same for `models/toy-count`, the checkpoint fine-tuned to count: two-object captions
//! with the ancestral sampler it was measured with (models/toy-count/README.md). And for the
//! built-in latent model (`--model toy-latent`), whose 64x64 images come through its VAE and
//! whose objects are found by shape, since colour says nothing about the category there.

use semi_toyworld::{
    caption_matches, detect, parse_caption, DetectorConfig, RgbImage, WorldConfig,
};
use std::process::Command;

/// Generates `caption` once per seed with `semi generate ARGS` and returns the seeds whose
/// image the exact detector finds to match the caption.
fn matching_seeds(caption: &str, seeds: std::ops::Range<u64>, args: &[&str]) -> Vec<u64> {
    matching_seeds_in(caption, seeds, args, None)
}

/// [`matching_seeds`] with the detector of `world` (None: the first world's, sized to the image).
fn matching_seeds_in(
    caption: &str,
    seeds: std::ops::Range<u64>,
    args: &[&str],
    world: Option<&WorldConfig>,
) -> Vec<u64> {
    let tmp = tempfile::tempdir().unwrap();
    let want = parse_caption(caption).unwrap();
    let mut matched = Vec::new();
    for seed in seeds {
        let out = tmp.path().join(format!("{seed}.png"));
        let status = Command::new(env!("CARGO_BIN_EXE_semi"))
            .args(["generate", "--prompt", caption])
            .args(args)
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
        let config = match world {
            Some(w) => DetectorConfig::for_world(w),
            None => DetectorConfig::for_image(img.width(), img.height()),
        };
        let dets = detect(&img, &config);
        if caption_matches(&dets, &want) {
            matched.push(seed);
        }
    }
    eprintln!("{caption}: seeds matching {matched:?}");
    matched
}

#[test]
fn embedded_toy_model_draws_one_circle() {
    let matched = matching_seeds("a circle", 0..8, &["--steps", "10", "--guidance", "2"]);
    // A model that ignores its prompt, or a runtime that mangles it, fails this by a wide margin.
    assert!(
        matched.len() >= 6,
        "only seeds {matched:?} of 0..8 gave exactly one circle"
    );
}

#[test]
fn counting_toy_model_draws_two_objects_once_each() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/toy-count");
    let args = [
        "--model",
        model,
        "--steps",
        "50",
        "--eta",
        "1",
        "--guidance",
        "2",
    ];
    let mut matched = 0;
    let captions = [
        "a circle and a square",
        "a ring and a cross",
        "a triangle and a diamond",
        "a square and a ring",
    ];
    for caption in captions {
        matched += matching_seeds(caption, 0..4, &args).len();
    }
    // Measured 96-97% on two-object captions (models/toy-count/README.md); a model or runtime
    // that loses the prompt matches almost none.
    assert!(
        matched >= 12,
        "only {matched} of 16 images matched their caption"
    );
}

#[test]
fn latent_toy_model_draws_the_requested_shapes() {
    let world = WorldConfig::latent();
    let args = ["--model", "toy-latent"];
    let mut matched = 0;
    for shape in ["circle", "square", "triangle", "ring", "diamond", "cross"] {
        let caption = format!("a {shape}");
        matched += matching_seeds_in(&caption, 0..3, &args, Some(&world)).len();
    }
    // With the model's own settings (models/toy-latent/semi.json). The shipped model is
    // undertrained: 78-87% of one-object captions come out exact with DDIM
    // (models/toy-latent/README.md), 15 of these 18 images. A model or runtime that loses the
    // prompt draws the asked shape alone about one time in six, and a VAE path that garbles the
    // shapes matches none.
    eprintln!("{matched} of 18 images matched their caption");
    assert!(
        matched >= 12,
        "only {matched} of 18 images matched their caption"
    );
}
