//! Fixture access shared by the parity tests: the tiny random-weight diffusers models and the
//! reference tensors diffusers produced for them (tools/make_fixtures.py).
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::PathBuf;

/// A fixture folder: under `SEMI_TEST_FIXTURES` when set (a test binary carried to another
/// machine, as `tools/device-check.sh` does), else this crate's `tests/fixtures`.
pub fn fixture(model: &str) -> PathBuf {
    match std::env::var_os("SEMI_TEST_FIXTURES") {
        Some(root) => PathBuf::from(root).join(model),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(model),
    }
}

/// The device of the device-parametric tests: `SEMI_TEST_DEVICE` = `cpu` (the default) or
/// `cuda` (a binary built with `--features cuda`).
pub fn device() -> Device {
    match std::env::var("SEMI_TEST_DEVICE").as_deref() {
        Err(_) | Ok("cpu") => Device::Cpu,
        Ok("cuda") => Device::new_cuda(0).expect("SEMI_TEST_DEVICE=cuda: no CUDA device"),
        Ok(other) => panic!("SEMI_TEST_DEVICE={other}: use cpu or cuda"),
    }
}

/// The reference tensors of a fixture model.
pub fn references(model: &str) -> HashMap<String, Tensor> {
    let path = fixture(model).join("reference.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
}

/// `reference.json` of a fixture model.
pub fn reference_info(model: &str) -> serde_json::Value {
    let path = fixture(model).join("reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// f32 weights of one component folder (`unet`, `vae`).
pub fn weights(model: &str, component: &str) -> VarBuilder<'static> {
    weights_on(model, component, DType::F32, &Device::Cpu)
}

/// Weights of one component folder (`unet`, `vae`) in `dtype` on `dev`.
pub fn weights_on(model: &str, component: &str, dtype: DType, dev: &Device) -> VarBuilder<'static> {
    let path = fixture(model)
        .join(component)
        .join("diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture files are not modified while the tests run.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, dev).unwrap() }
}

/// ||a - b|| / ||b|| over all elements (||a - b|| when b is all zeros); shapes must match.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    // On the CPU in f64 whatever the inputs' device (candle's CUDA backend has no f64 sums of
    // every op, and the comparison should not round differently per device).
    let flat = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.flatten_all())
            .unwrap()
    };
    let (a, b) = (flat(a), flat(b));
    let diff = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap();
    let diff = diff.to_scalar::<f64>().unwrap();
    let norm = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

pub fn get<'a>(refs: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    refs.get(key)
        .unwrap_or_else(|| panic!("reference tensor `{key}` missing"))
}

/// The DDIM request of a fixture's `reference.json` (tools/make_fixtures.py).
pub fn ddim_request(reference: &serde_json::Value) -> semi_diffusion::pipeline::GenerateRequest {
    let mut req = semi_diffusion::pipeline::GenerateRequest::new(
        reference["prompt"].as_str().unwrap(),
        reference["height"].as_u64().unwrap() as usize,
        reference["width"].as_u64().unwrap() as usize,
    );
    req.negative_prompt = reference["negative_prompt"].as_str().unwrap().to_string();
    req.seed = reference["seed"].as_u64().unwrap();
    req.steps = reference["steps"].as_u64().unwrap() as usize;
    req.guidance_scale = reference["guidance"].as_f64().unwrap();
    req.eta = reference["eta"].as_f64().unwrap();
    req
}

/// One entry of `runs` in an SDXL fixture's `reference.json` (tools/make_sdxl_fixtures.py) as a
/// request, its scheduler resolved against the model's `scheduler` config.
pub fn sdxl_run_request(
    prompt: &str,
    run: &serde_json::Value,
    scheduler: &semi_diffusion::config::SchedulerConfig,
) -> semi_diffusion::pipeline::GenerateRequest {
    let mut req = semi_diffusion::pipeline::GenerateRequest::new(
        prompt,
        run["height"].as_u64().unwrap() as usize,
        run["width"].as_u64().unwrap() as usize,
    );
    req.negative_prompt = run["negative"].as_str().unwrap().to_string();
    req.steps = run["steps"].as_u64().unwrap() as usize;
    req.guidance_scale = run["guidance"].as_f64().unwrap();
    req.seed = run["seed"].as_u64().unwrap();
    req.scheduler = Some(
        semi_diffusion::schedulers::SchedulerSpec::resolve(
            run["scheduler"].as_str().unwrap(),
            &[],
            scheduler,
        )
        .unwrap(),
    );
    req
}
