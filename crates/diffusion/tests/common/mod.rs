//! Fixture access shared by the parity tests: the tiny random-weight diffusers models and the
//! reference tensors diffusers produced for them (tools/make_fixtures.py).
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixture(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model)
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
    let path = fixture(model)
        .join(component)
        .join("diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture files are not modified while the tests run.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu).unwrap() }
}

/// ||a - b|| / ||b|| over all elements (||a - b|| when b is all zeros); shapes must match.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
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
