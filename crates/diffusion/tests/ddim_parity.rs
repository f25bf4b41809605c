//! DDIM against diffusers' DDIMScheduler (fixtures from tools/make_scheduler_fixtures.py).

use candle_core::{Device, Tensor};
use semi_diffusion::config::SchedulerConfig;
use semi_diffusion::schedulers::{DdimScheduler, Scheduler};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixtures() -> (Value, HashMap<String, Tensor>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ddim");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ddim.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("ddim.safetensors"), &Device::Cpu).unwrap();
    (meta, tensors)
}

fn config(meta: &Value, name: &str) -> SchedulerConfig {
    SchedulerConfig::parse(&meta["configs"][name].to_string()).unwrap()
}

/// max |a - b| / max |b| over all elements.
fn rel_linf(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    diff / scale.max(f32::MIN_POSITIVE)
}

/// Bit-exact for most schedules; a few f32 ulps apart after the zero-SNR rescale, whose square
/// roots torch's CPU kernels do not round correctly.
#[test]
fn alphas_cumprod_match_torch() {
    let (meta, tensors) = fixtures();
    for name in meta["configs"].as_object().unwrap().keys() {
        let s = DdimScheduler::new(&config(&meta, name), 0.0).unwrap();
        let want = tensors[&format!("{name}/alphas_cumprod")]
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(s.alphas_cumprod().len(), want.len(), "{name}");
        for (i, (a, b)) in s.alphas_cumprod().iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1e-30),
                "{name}: alphas_cumprod[{i}] = {a}, diffusers {b}"
            );
        }
    }
}

#[test]
fn timesteps_match_diffusers() {
    let (meta, _) = fixtures();
    let mut checked = 0;
    for (name, by_n) in meta["timesteps"].as_object().unwrap() {
        let mut s = DdimScheduler::new(&config(&meta, name), 0.0).unwrap();
        for (n, want) in by_n.as_object().unwrap() {
            s.set_timesteps(n.parse().unwrap()).unwrap();
            let want: Vec<i64> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(s.int_timesteps(), want.as_slice(), "{name} with {n} steps");
            let as_f64: Vec<f64> = want.iter().map(|&t| t as f64).collect();
            assert_eq!(s.timesteps(), as_f64.as_slice());
            checked += 1;
        }
    }
    assert!(
        checked >= 30,
        "only {checked} timestep lists in the fixture"
    );
}

#[test]
fn steps_match_diffusers() {
    let (meta, tensors) = fixtures();
    let model_output = &tensors["model_output"];
    let sample = &tensors["sample"];
    let noise = &tensors["variance_noise"];
    let cases = meta["steps"].as_array().unwrap();
    assert!(cases.len() >= 50);
    let mut worst = 0f32;
    for case in cases {
        let name = case["config"].as_str().unwrap();
        let eta = case["eta"].as_f64().unwrap();
        let key = case["key"].as_str().unwrap();
        let mut s = DdimScheduler::new(&config(&meta, name), eta).unwrap();
        s.set_timesteps(case["n"].as_u64().unwrap() as usize)
            .unwrap();
        let t = case["t"].as_i64().unwrap() as f64;
        let out = s
            .step(model_output, t, sample, (eta > 0.0).then_some(noise))
            .unwrap();
        for (got, which) in [
            (&out.prev_sample, "prev_sample"),
            (&out.pred_original_sample, "pred_original_sample"),
        ] {
            let err = rel_linf(got, &tensors[&format!("{key}/{which}")]);
            assert!(err < 1e-5, "{key}/{which}: relative error {err}");
            worst = worst.max(err);
        }
    }
    eprintln!("worst relative error over {} cases: {worst:e}", cases.len());
}
