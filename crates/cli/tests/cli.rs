//! The `semi` binary: bad input ends in one `error:` line and exit code 1; a real run on the tiny
//! fixture model writes a PNG with its parameters and the final latents.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn semi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semi"))
        .args(args)
        .env(
            "HF_HUB_CACHE",
            std::env::temp_dir().join("semi-test-empty-hf-cache"),
        )
        .output()
        .unwrap()
}

/// Asserts exit code 1 and a single stderr line `error: ...` containing every needle.
fn assert_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {stderr}");
    }
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A structurally complete folder with valid configs and tiny (fake) safetensors weights: every
/// check that runs before weights are loaded passes.
fn fake_model(root: &Path) {
    let st = {
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header);
        b.extend_from_slice(&1f32.to_le_bytes());
        b
    };
    write(
        root,
        "model_index.json",
        r#"{"_class_name":"StableDiffusionPipeline","unet":["diffusers","UNet2DConditionModel"],
            "vae":["diffusers","AutoencoderKL"],"text_encoder":["transformers","CLIPTextModel"]}"#,
    );
    write(
        root,
        "unet/config.json",
        r#"{"sample_size": 8, "block_out_channels":[32,64], "cross_attention_dim": 512,
        "down_block_types":["CrossAttnDownBlock2D","DownBlock2D"],
        "up_block_types":["UpBlock2D","CrossAttnUpBlock2D"]}"#,
    );
    write(root, "text_encoder/config.json", "{}");
    write(
        root,
        "vae/config.json",
        r#"{"block_out_channels":[32,64],
        "down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D"],
        "up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D"]}"#,
    );
    write(root, "scheduler/scheduler_config.json", "{}");
    write(root, "tokenizer/tokenizer.json", "{}");
    for w in [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ] {
        std::fs::write(root.join(w), &st).unwrap();
    }
}

#[test]
fn missing_model_folder() {
    let out = semi(&["generate", "--model", "/no/such/model", "--prompt", "a cat"]);
    assert_error(&out, &["model folder /no/such/model does not exist"]);
    let out = semi(&[
        "generate",
        "--model",
        "acme/not-cached",
        "--prompt",
        "a cat",
    ]);
    assert_error(
        &out,
        &[
            "acme/not-cached not found in the Hugging Face cache",
            "download it",
        ],
    );
}

/// A repo id resolves through `$HF_HOME/hub` when `$HF_HUB_CACHE` is unset; `$HF_HUB_CACHE` wins.
#[test]
fn repo_id_resolves_from_the_hf_cache() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--acme--tiny");
    fake_model(&repo.join("snapshots/0123abcd"));
    write(&repo, "refs/main", "0123abcd");
    let run = |hub_cache: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_semi"));
        cmd.args([
            "generate",
            "--model",
            "acme/tiny",
            "--prompt",
            "a cat",
            "--height",
            "30",
        ])
        .env("HF_HOME", home.path())
        .env_remove("HUGGINGFACE_HUB_CACHE");
        match hub_cache {
            Some(p) => cmd.env("HF_HUB_CACHE", p),
            None => cmd.env_remove("HF_HUB_CACHE"),
        };
        cmd.output().unwrap()
    };
    // Resolved: the error is about the size, checked after the folder.
    assert_error(&run(None), &["height 30 must be a positive multiple of 4"]);
    let empty = tempfile::tempdir().unwrap();
    assert_error(
        &run(Some(empty.path())),
        &[
            "acme/tiny not found in the Hugging Face cache at",
            empty.path().to_str().unwrap(),
        ],
    );
}

#[test]
fn incomplete_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    fake_model(dir.path());
    std::fs::remove_file(dir.path().join("unet/config.json")).unwrap();
    std::fs::remove_file(dir.path().join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    write(
        dir.path(),
        "scheduler/scheduler_config.json",
        r#"{"prediction_type": "flow"}"#,
    );
    let out = semi(&[
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "a cat",
    ]);
    assert_error(
        &out,
        &[
            "is incomplete",
            "missing unet/config.json, vae/diffusion_pytorch_model.safetensors",
            "malformed scheduler/scheduler_config.json (unsupported value \"flow\" for field `prediction_type`)",
        ],
    );
}

#[test]
fn bad_config_field() {
    let dir = tempfile::tempdir().unwrap();
    fake_model(dir.path());
    write(dir.path(), "unet/config.json", r#"{"frobnicate": 1}"#);
    let out = semi(&[
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "a cat",
    ]);
    assert_error(
        &out,
        &["malformed unet/config.json (unsupported field `frobnicate`)"],
    );
}

#[test]
fn empty_prompt() {
    let out = semi(&["generate", "--model", "/no/such/model", "--prompt", "  "]);
    assert_error(&out, &["the prompt is empty"]);
}

#[test]
fn bad_sizes_and_latents_are_caught_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    fake_model(dir.path());
    let model = dir.path().to_str().unwrap();
    // unet downsampling 2 x vae scale 2: sizes must be multiples of 4.
    let out = semi(&[
        "generate", "--model", model, "--prompt", "a cat", "--height", "30",
    ]);
    assert_error(&out, &["height 30 must be a positive multiple of 4"]);
    let out = semi(&[
        "generate", "--model", model, "--prompt", "a cat", "--steps", "0",
    ]);
    assert_error(&out, &["steps must be at least 1"]);

    let lat = dir.path().join("lat.npy");
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 4, 4), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    npy.extend(std::iter::repeat_n(0u8, 64 * 4));
    std::fs::write(&lat, npy).unwrap();
    // Default size: sample_size 8 x vae scale 2 = 16 pixels -> latents [1, 4, 8, 8].
    let out = semi(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "a cat",
        "--latents",
        lat.to_str().unwrap(),
    ]);
    assert_error(&out, &["has shape [1, 4, 4, 4]", "needs [1, 4, 8, 8]"]);
    let out = semi(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "a cat",
        "--latents",
        "/no/lat.safetensors",
    ]);
    assert_error(&out, &["cannot read latents from /no/lat.safetensors"]);
    let out = semi(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "a cat",
        "--out",
        "/no/such/dir/x.png",
    ]);
    assert_error(
        &out,
        &["--out /no/such/dir/x.png: folder /no/such/dir does not exist"],
    );
}

#[test]
fn unavailable_device_and_bad_flags() {
    if !cfg!(feature = "cuda") {
        let out = semi(&[
            "generate", "--model", "x", "--prompt", "a cat", "--device", "cuda",
        ]);
        assert_error(&out, &["built without CUDA support"]);
    }
    let out = semi(&[
        "generate", "--model", "x", "--prompt", "a", "--steps", "many",
    ]);
    assert_error(&out, &["invalid value 'many'"]);
    let out = semi(&["frobnicate"]);
    assert_error(&out, &["frobnicate"]);
}

fn tiny_sd1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../diffusion/tests/fixtures/tiny-sd1")
}

/// Runs the reference request of the tiny SD 1.x fixture and checks the saved latents against
/// diffusers' final latents; then feeds them back through `--latents`.
#[test]
fn end_to_end_on_tiny_sd1() {
    let model = tiny_sd1();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("out.png");
    let lat = dir.path().join("final.safetensors");
    let out = semi(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a photo of a dog and a car",
        "--seed",
        "42",
        "--steps",
        "4",
        "--guidance",
        "7.5",
        "--height",
        "64",
        "--width",
        "64",
        "--out",
        png.to_str().unwrap(),
        "--save-latents",
        lat.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let img = semi_diffusion::image::load_png(&png).unwrap();
    assert_eq!((img.width, img.height), (64, 64));
    let params = img.params().unwrap().unwrap();
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out.json")).unwrap())
            .unwrap();
    assert_eq!(sidecar["seed"], 42);
    assert_eq!(
        (params.seed, params.steps, params.prompt.as_str()),
        (42, 4, "a photo of a dog and a car")
    );

    let dev = candle_core::Device::Cpu;
    let got = candle_core::safetensors::load(&lat, &dev)
        .unwrap()
        .remove("latents")
        .unwrap();
    let reference =
        candle_core::safetensors::load(model.join("reference.safetensors"), &dev).unwrap();
    let want = &reference["ddim_final_latents"];
    let rel = |a: &candle_core::Tensor, b: &candle_core::Tensor| {
        let n = (a - b)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let d = b
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        (n / d).sqrt()
    };
    assert!(
        rel(&got, want) < 1e-4,
        "final latents differ: {}",
        rel(&got, want)
    );

    // The reference's initial noise given explicitly (as .npy) under another seed: same result.
    let init = dir.path().join("init.npy");
    let t = reference["ddim_init_latents"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 32, 32), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    for v in t {
        npy.extend(v.to_le_bytes());
    }
    std::fs::write(&init, npy).unwrap();
    let lat2 = dir.path().join("final2.npy");
    let out = semi(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a photo of a dog and a car",
        "--seed",
        "3",
        "--steps",
        "4",
        "--height",
        "64",
        "--width",
        "64",
        "--latents",
        init.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--save-latents",
        lat2.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&lat2).unwrap();
    let data: Vec<f32> = bytes[128..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let got2 = candle_core::Tensor::from_vec(data, (1, 4, 32, 32), &dev).unwrap();
    assert!(rel(&got2, want) < 1e-4);
}

/// The sidecar of a run as JSON.
fn sidecar(png: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(png.with_extension("json")).unwrap()).unwrap()
}

/// A layout without `width`/`height` gets the model's native size, on the embedded toy model
/// (32x32) and on an SD model (the tiny SD 1.x fixture: sample_size x VAE factor), and the
/// sidecar says so.
#[test]
fn a_layout_without_a_size_runs_at_the_models_native_size() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout.json");
    std::fs::write(
        &layout,
        r#"{"prompt": "a circle and a square", "seed": 3,
            "objects": [{"phrase": "circle", "category": "circle", "bbox": [0.05, 0.1, 0.45, 0.5]},
                        {"phrase": "square", "category": "square", "bbox": [0.55, 0.5, 0.95, 0.9]}]}"#,
    )
    .unwrap();
    let tiny = tiny_sd1();
    for (model, native) in [("toy", 32), (tiny.to_str().unwrap(), 0)] {
        let png = dir.path().join("out.png");
        let out = semi(&[
            "generate",
            "--model",
            model,
            "--layout",
            layout.to_str().unwrap(),
            "--init",
            "swap",
            "--steps",
            "2",
            "--out",
            png.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = sidecar(&png);
        assert_eq!(s["size"]["source"], "model", "{s}");
        let img = semi_diffusion::image::load_png(&png).unwrap();
        assert_eq!(
            (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap()),
            (img.width as u64, img.height as u64)
        );
        if native > 0 {
            assert_eq!((img.width, img.height), (native, native));
        }
        assert!(dir.path().join("out.boxes.png").is_file());
    }
}

/// Each setting resolves flag -> the model's `semi.json` -> the paper's default, and the sidecar
/// records value and source; a bad `semi.json` is a one-line error naming the file and field.
#[test]
fn settings_come_from_flags_then_the_models_file_then_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("out.png");
    let run = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model,
            "--prompt",
            "a circle",
            "--steps",
            "2",
            "--out",
            png.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        semi(&args)
    };
    let out = run("toy", &["--t-bg", "0.4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = sidecar(&png)["settings"].clone();
    assert_eq!(
        (s["t_bg"]["value"].as_f64(), s["t_bg"]["source"].as_str()),
        (Some(0.4), Some("flag"))
    );
    assert_eq!(
        (s["t_obj"]["value"].as_f64(), s["t_obj"]["source"].as_str()),
        (Some(0.7), Some("model"))
    );
    assert_eq!(s["guidance_scale"]["source"], "model");
    assert_eq!(s["num_inference_steps"]["source"], "flag");
    assert_eq!(sidecar(&png)["guidance"], 2.0);

    // A model folder without semi.json gets the paper's defaults.
    let out = run(tiny_sd1().to_str().unwrap(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = sidecar(&png)["settings"].clone();
    assert_eq!(
        (s["t_obj"]["value"].as_f64(), s["t_obj"]["source"].as_str()),
        (Some(0.5), Some("default"))
    );
    assert_eq!(sidecar(&png)["guidance"], 7.5);

    // A copy of the toy model with a misspelt key.
    let copy = dir.path().join("toy-copy");
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/toy"),
        &copy,
    );
    std::fs::write(copy.join("semi.json"), r#"{"t_ob": 0.7}"#).unwrap();
    assert_error(&run(copy.to_str().unwrap(), &[]), &["semi.json", "t_ob"]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// `--scheduler` picks the sampler by alias, class name or `model`, options override its config,
/// the sidecar records both, and bad choices are one-line errors before any weights are read.
#[test]
fn the_scheduler_is_chosen_recorded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("out.png");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            "toy",
            "--prompt",
            "a circle",
            "--steps",
            "3",
            "--out",
            png.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        semi(&args)
    };
    for (flags, class, option) in [
        (
            &["--scheduler", "euler-a"][..],
            "EulerAncestralDiscreteScheduler",
            None,
        ),
        (
            &["--scheduler", "dpm++2m-karras"][..],
            "DPMSolverMultistepScheduler",
            Some("use_karras_sigmas"),
        ),
        (
            &[
                "--scheduler",
                "UniPCMultistepScheduler",
                "--scheduler-option",
                "solver_order=3",
            ][..],
            "UniPCMultistepScheduler",
            Some("solver_order"),
        ),
        (&["--scheduler", "model"][..], "DDIMScheduler", None),
        (&[][..], "DDIMScheduler", None),
    ] {
        let out = run(flags);
        assert!(
            out.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = sidecar(&png);
        assert_eq!(s["scheduler"]["class"], class, "{flags:?}: {s}");
        if let Some(key) = option {
            assert!(!s["scheduler"]["options"][key].is_null(), "{flags:?}: {s}");
        }
        let source = if flags.is_empty() { "default" } else { "flag" };
        assert_eq!(s["settings"]["scheduler"]["source"], source);
    }
    assert_error(
        &run(&["--scheduler", "lms"]),
        &["unknown scheduler \"lms\"", "euler-a"],
    );
    assert_error(
        &run(&[
            "--scheduler",
            "euler",
            "--scheduler-option",
            "use_karas_sigmas=true",
        ]),
        &["use_karas_sigmas"],
    );
    assert_error(
        &run(&["--scheduler", "euler", "--eta", "0.5"]),
        &["eta", "DDIMScheduler only"],
    );
    assert_error(
        &run(&[
            "--scheduler",
            "dpm++2m",
            "--scheduler-option",
            "algorithm_type=sde-dpmsolver++",
        ]),
        &["algorithm_type"],
    );
}

/// A store scored at DDIM's first step (981 on the toy model) refuses a run whose scheduler
/// starts elsewhere (DPM-Solver's leading grid: 951), and says so. Euler on the toy model's
/// leading spacing starts at 981 with the same unit input, so it may use the store.
#[test]
fn a_store_of_another_schedule_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = semi(&[
        "tickets",
        "collect",
        "--model",
        "toy",
        "--store",
        store.to_str().unwrap(),
        "--categories",
        "circle,square",
        "--n",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layout = dir.path().join("layout.json");
    std::fs::write(
        &layout,
        r#"{"prompt": "a circle and a square", "width": 32, "height": 32,
            "objects": [{"phrase": "circle", "category": "circle", "bbox": [0.05, 0.1, 0.45, 0.5]},
                        {"phrase": "square", "category": "square", "bbox": [0.55, 0.5, 0.95, 0.9]}]}"#,
    )
    .unwrap();
    let png = dir.path().join("out.png");
    let run = |scheduler: &str| {
        semi(&[
            "generate",
            "--model",
            "toy",
            "--layout",
            layout.to_str().unwrap(),
            "--init",
            "semi",
            "--store",
            store.to_str().unwrap(),
            "--steps",
            "2",
            "--scheduler",
            scheduler,
            "--out",
            png.to_str().unwrap(),
        ])
    };
    assert_error(
        &run("dpm++2m"),
        &[
            "probed at timestep 981",
            "DPMSolverMultistepScheduler",
            "951",
        ],
    );
    for ok in ["ddim", "euler"] {
        let out = run(ok);
        assert!(
            out.status.success(),
            "{ok}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
