//! Every scheduler against diffusers (fixtures from tools/make_sampler_fixtures.py): the step
//! trajectories on recorded model outputs, then full tiny-pipeline runs.

use candle_core::{DType, Device, Tensor};
use semi_diffusion::config::SchedulerConfig;
use semi_diffusion::loading::Variant;
use semi_diffusion::pipeline::{GenerateRequest, StableDiffusion};
use semi_diffusion::schedulers::SchedulerSpec;
use serde_json::Value;
use std::collections::HashMap;

mod common;

fn load(json: &str, tensors: &str) -> (Value, HashMap<String, Tensor>) {
    let dir = common::fixture("");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(json)).unwrap()).unwrap();
    let t = candle_core::safetensors::load(dir.join(tensors), &Device::Cpu).unwrap();
    (meta, t)
}

/// max |a - b| / max |b|.
fn rel_linf(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    diff / b
        .iter()
        .map(|y| y.abs())
        .fold(0f32, f32::max)
        .max(f32::MIN_POSITIVE)
}

/// `--scheduler-option` strings of a fixture's overrides.
fn options(overrides: &Value) -> Vec<String> {
    overrides
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// Each case: same timesteps and `init_noise_sigma`, then every step's scaled input and
/// `prev_sample` on diffusers' recorded model outputs (and step noise). Measured worst: see the
/// printed table; the bound is 1e-5 relative per step.
#[test]
fn step_trajectories_match_diffusers() {
    let (meta, t) = load("schedulers/steps.json", "schedulers/steps.safetensors");
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let model = SchedulerConfig::parse(&case["config"].to_string()).unwrap();
        let spec = SchedulerSpec::resolve(
            case["class_name"].as_str().unwrap(),
            &options(&case["overrides"]),
            &model,
        )
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let mut s = spec.build(case["eta"].as_f64().unwrap()).unwrap();
        let n = case["steps"].as_u64().unwrap() as usize;
        s.set_timesteps(n).unwrap();
        let want_t: Vec<f64> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(s.timesteps().len(), want_t.len(), "{name}: timesteps");
        for (a, b) in s.timesteps().iter().zip(&want_t) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{name}: timesteps {:?} vs {want_t:?}",
                s.timesteps()
            );
        }
        let sigma = case["init_noise_sigma"].as_f64().unwrap();
        assert!(
            (s.init_noise_sigma() - sigma).abs() <= 1e-6 * sigma,
            "{name}: init_noise_sigma {} vs {sigma}",
            s.init_noise_sigma()
        );
        let mut sample = t[&format!("{name}/init")].clone();
        let mut worst = 0f32;
        for (i, &ts) in s.timesteps().to_vec().iter().enumerate() {
            let model_in = s.scale_model_input(&sample, ts).unwrap();
            let e_in = rel_linf(&model_in, &t[&format!("{name}/{i}/model_in")]);
            assert!(e_in < 1e-5, "{name} step {i}: model input {e_in:.2e}");
            let noise = t.get(&format!("{name}/{i}/noise"));
            let out = s
                .step(&t[&format!("{name}/{i}/model_output")], ts, &sample, noise)
                .unwrap();
            let want = &t[&format!("{name}/{i}/prev_sample")];
            let e = rel_linf(&out.prev_sample, want);
            worst = worst.max(e);
            assert!(e < 1e-5, "{name} step {i} (t {ts}): prev_sample {e:.2e}");
            sample = out.prev_sample;
        }
        eprintln!("{name}: {n} steps, worst step error {worst:.2e}");
    }
}

/// Full runs of the tiny SD 1.x (epsilon) and SD 2.x (v-prediction) models with each scheduler,
/// as diffusers' pipeline with `Class.from_config(pipe.scheduler.config)`: final latents within
/// 1e-4 relative (L2).
#[test]
fn pipeline_runs_match_diffusers() {
    let (meta, t) = load(
        "pipeline/schedulers-runs.json",
        "pipeline/schedulers-runs.safetensors",
    );
    let mut models: HashMap<String, StableDiffusion> = HashMap::new();
    for run in meta["runs"].as_array().unwrap() {
        let name = run["name"].as_str().unwrap();
        let model = run["model"].as_str().unwrap();
        let sd = models.entry(model.to_string()).or_insert_with(|| {
            StableDiffusion::load(
                &common::fixture(model),
                &Device::Cpu,
                DType::F32,
                Variant::Full,
            )
            .unwrap()
        });
        let mut req = GenerateRequest::new(
            run["prompt"].as_str().unwrap(),
            run["height"].as_u64().unwrap() as usize,
            run["width"].as_u64().unwrap() as usize,
        );
        req.negative_prompt = run["negative_prompt"].as_str().unwrap().to_string();
        req.seed = run["seed"].as_u64().unwrap();
        req.steps = run["steps"].as_u64().unwrap() as usize;
        req.guidance_scale = run["guidance"].as_f64().unwrap();
        req.scheduler = Some(
            SchedulerSpec::resolve(
                run["class_name"].as_str().unwrap(),
                &options(&run["overrides"]),
                &sd.files.scheduler,
            )
            .unwrap(),
        );
        let out = sd.generate(&req, None, &mut |_| Ok(())).unwrap();
        let want_t: Vec<f64> = run["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(out.timesteps, want_t, "{name}: timesteps");
        let want = &t[&format!("{name}/final_latents")];
        let e = common::rel_err(&out.latents, want);
        eprintln!("{name}: final latents {e:.2e}");
        assert!(e < 1e-4, "{name}: final latents {e:.2e}");
    }
}
