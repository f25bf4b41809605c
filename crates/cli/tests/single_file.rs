//! The files practitioners have, through the real `semi` binary: a single-file checkpoint with
//! `--config`, LoRAs and `--vae`; and bad files, each one `error:` line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../diffusion/tests/fixtures")
        .join(name)
}

fn semi(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semi"))
        .args(args)
        .env("SEMI_CACHE", cache)
        .env("HF_HUB_CACHE", cache.join("no-hf-cache"))
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Exit code 1 and one stderr line `error: ...` holding every needle.
fn one_line_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {err}");
    }
}

/// tiny-sd1 as one original-layout file.
fn single_file(dir: &Path) -> PathBuf {
    let files = semi_diffusion::loading::ModelFiles::check(
        &fixture("tiny-sd1"),
        semi_diffusion::loading::Variant::Full,
    )
    .unwrap();
    let tensors: HashMap<_, _> = files.original_tensors().unwrap().into_iter().collect();
    let path = dir.join("tiny-sd1.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

fn generate(cache: &Path, model: &[&str], out: &Path) -> Output {
    let out_s = out.display().to_string();
    let latents = out.with_extension("safetensors").display().to_string();
    let mut args = vec!["generate"];
    args.extend_from_slice(model);
    args.extend_from_slice(&[
        "--prompt",
        "a photo of a dog",
        "--height",
        "64",
        "--width",
        "64",
        "--steps",
        "3",
        "--seed",
        "5",
        "--out",
        &out_s,
        "--save-latents",
        &latents,
    ]);
    semi(cache, &args)
}

fn latents(png: &Path) -> Vec<u8> {
    std::fs::read(png.with_extension("safetensors")).unwrap()
}

#[test]
fn a_single_file_with_lora_and_vae_runs_as_its_folder_does() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let file = single_file(dir.path());
    let (file_s, config) = (
        file.display().to_string(),
        fixture("tiny-sd1").display().to_string(),
    );
    let lora = format!("{}:0.7", fixture("lora/kohya.safetensors").display());
    let vae = fixture("tiny-sd1/vae").display().to_string();

    let a = dir.path().join("file.png");
    ok(&generate(
        &cache,
        &[
            "--model", &file_s, "--config", &config, "--lora", &lora, "--vae", &vae,
        ],
        &a,
    ));
    let b = dir.path().join("folder.png");
    ok(&generate(
        &cache,
        &["--model", &config, "--lora", &lora],
        &b,
    ));
    assert_eq!(
        latents(&a),
        latents(&b),
        "single file + LoRA != folder + LoRA"
    );
    let c = dir.path().join("plain.png");
    ok(&generate(&cache, &["--model", &config], &c));
    assert_ne!(latents(&a), latents(&c), "the LoRA changed nothing");

    // The sidecar says what the model was made of.
    let side: serde_json::Value =
        serde_json::from_slice(&std::fs::read(semi_diffusion::image::sidecar_path(&a)).unwrap())
            .unwrap();
    let files = &side["model_files"];
    assert_eq!(files["single_file"], file_s.as_str(), "{side}");
    assert_eq!(files["loras"][0]["weight"], 0.7, "{side}");
    assert!(files["vae"].as_str().unwrap().ends_with("vae"), "{side}");

    // Every model-loading command takes the same flags.
    for cmd in [
        &["generate", "--help"][..],
        &["serve", "--help"],
        &["eval", "generate", "--help"],
        &["eval", "run", "--help"],
        &["tickets", "collect", "--help"],
    ] {
        let out = semi(&cache, cmd);
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in ["--config", "--vae", "--lora", "--prediction"] {
            assert!(help.contains(flag), "{cmd:?} lacks {flag}");
        }
    }
}

#[test]
fn bad_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let file = single_file(dir.path());
    let out_png = dir.path().join("x.png");
    let s = |p: &Path| p.display().to_string();

    // The family's standard config (SD 1.5 sizes) does not fit the tiny weights: the first
    // tensor read names itself and both shapes.
    let out = generate(&cache, &["--model", &s(&file)], &out_png);
    one_line_error(
        &out,
        &["has shape", "config gives", "cond_stage_model.transformer."],
    );

    // Truncated.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    one_line_error(
        &generate(&cache, &["--model", &s(&cut)], &out_png),
        &["truncated"],
    );

    // A pickle.
    let ckpt = dir.path().join("model.ckpt");
    std::fs::write(&ckpt, b"\x80\x02}q\x00.").unwrap();
    one_line_error(
        &generate(&cache, &["--model", &s(&ckpt)], &out_png),
        &["pickle", "safetensors"],
    );

    // An SDXL LoRA on an SD 1.x model.
    let z = |d: &[usize]| {
        candle_core::Tensor::zeros(d, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap()
    };
    let sdxl_lora = dir.path().join("sdxl-lora.safetensors");
    let t: HashMap<String, candle_core::Tensor> = [
        (
            "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
            z(&[4, 32]),
        ),
        (
            "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
            z(&[37, 4]),
        ),
        (
            "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
            z(&[4, 32]),
        ),
        (
            "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
            z(&[37, 4]),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    candle_core::safetensors::save(&t, &sdxl_lora).unwrap();
    let config = s(&fixture("tiny-sd1"));
    one_line_error(
        &generate(
            &cache,
            &["--model", &config, "--lora", &s(&sdxl_lora)],
            &out_png,
        ),
        &["for SDXL"],
    );
    // --config without a single file; a LoRA that does not exist; a bad prediction type.
    one_line_error(
        &generate(&cache, &["--model", &config, "--config", &config], &out_png),
        &["--config", "single-file"],
    );
    one_line_error(
        &generate(
            &cache,
            &["--model", &config, "--lora", "nope.safetensors:0.5"],
            &out_png,
        ),
        &["nope.safetensors", "no such file"],
    );
    one_line_error(
        &generate(
            &cache,
            &["--model", &config, "--prediction", "flow"],
            &out_png,
        ),
        &["--prediction", "flow"],
    );
    assert!(!out_png.exists(), "no image from a failed run");
}
