//! f16 weight storage with f32 compute (`Precision::f16_weights`, issue 6): the UNet, VAE and
//! text encoder stay close to the f32 path and to the diffusers/transformers references, and the
//! weight matrices really are held in f16.

mod common;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use common::{fixture, get, references, rel_err};
use semi_diffusion::config::{TextEncoderConfig, UNetConfig, VaeConfig};
use semi_diffusion::loading::var_builder_with;
use semi_diffusion::precision::Precision;
use semi_diffusion::text_encoder::ClipTextModel;
use semi_diffusion::unet::UNet2DConditionModel;
use semi_diffusion::vae::AutoencoderKL;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// f16 weights round each weight by up to 2^-11 relative; the measured output errors are
/// 7.6e-4..1.2e-3 relative on these fixtures (see docs/performance.md).
const TOL: f64 = 2e-3;

fn vb(path: &Path, precision: Precision) -> VarBuilder<'static> {
    var_builder_with(&[path.to_path_buf()], precision, &Device::Cpu).unwrap()
}

fn component(model: &str, component: &str, file: &str) -> PathBuf {
    fixture(model).join(component).join(file)
}

/// Errors of `f16w` against the f32 output and against the reference; both under [`TOL`].
fn check(what: &str, f16w: &Tensor, f32: &Tensor, reference: &Tensor) {
    assert_eq!(f16w.dtype(), DType::F32, "{what}: computes in f32");
    let vs_f32 = rel_err(f16w, f32);
    let vs_ref = rel_err(f16w, reference);
    eprintln!("{what}: relative error {vs_f32:.2e} vs f32, {vs_ref:.2e} vs reference");
    assert!(vs_f32 < TOL, "{what}: {vs_f32:.2e} vs f32");
    assert!(vs_ref < TOL, "{what}: {vs_ref:.2e} vs reference");
    // Not the f32 result itself: the weights were rounded.
    assert!(
        vs_f32 > 0.0,
        "{what}: identical to f32, weights not rounded?"
    );
}

fn check_unet(model: &str, file: &str) {
    let cfg = UNetConfig::from_file(&fixture(model).join("unet/config.json")).unwrap();
    let full = component(model, "unet", "diffusion_pytorch_model.safetensors");
    let f32 = UNet2DConditionModel::new(vb(&full, Precision::uniform(DType::F32)), &cfg).unwrap();
    let weights = component(model, "unet", file);
    let f16w = UNet2DConditionModel::new(vb(&weights, Precision::f16_weights()), &cfg).unwrap();
    let refs = references(model);
    let sample = get(&refs, "unet_in_sample");
    let cond = get(&refs, "text_embeddings").narrow(0, 1, 1).unwrap();
    for t in [981.0, 1.0] {
        let a = f16w.forward(sample, t, &cond).unwrap();
        let b = f32.forward(sample, t, &cond).unwrap();
        let reference = get(&refs, &format!("unet_out_t{t}_b1"));
        check(&format!("{model} UNet ({file}) t={t}"), &a, &b, reference);
    }
}

#[test]
fn unet_sd1_with_f16_weights_converted_at_load() {
    check_unet("tiny-sd1", "diffusion_pytorch_model.safetensors");
}

#[test]
fn unet_sd1_with_the_fp16_variant() {
    check_unet("tiny-sd1", "diffusion_pytorch_model.fp16.safetensors");
}

/// SD 2.x: linear `proj_in`/`proj_out`.
#[test]
fn unet_sd2_with_f16_weights() {
    check_unet("tiny-sd2", "diffusion_pytorch_model.safetensors");
}

#[test]
fn vae_with_f16_weights() {
    let model = "tiny-sd1";
    let cfg = VaeConfig::from_file(&fixture(model).join("vae/config.json")).unwrap();
    let path = component(model, "vae", "diffusion_pytorch_model.safetensors");
    let f32 = AutoencoderKL::new(vb(&path, Precision::uniform(DType::F32)), &cfg).unwrap();
    let f16w = AutoencoderKL::new(vb(&path, Precision::f16_weights()), &cfg).unwrap();
    let refs = references(model);
    let latents = get(&refs, "vae_in_latents");
    let decoded = f16w.decode(latents).unwrap();
    check(
        "VAE decode",
        &decoded,
        &f32.decode(latents).unwrap(),
        get(&refs, "vae_decoded"),
    );
    let image = get(&refs, "vae_in_image");
    let (mean, _) = f16w.encode(image).unwrap();
    let (mean32, _) = f32.encode(image).unwrap();
    check(
        "VAE encode mean",
        &mean,
        &mean32,
        get(&refs, "vae_enc_mean"),
    );
}

#[test]
fn text_encoder_with_f16_weights() {
    let dir = fixture("text-encoder-quick_gelu");
    let cfg = TextEncoderConfig::from_file(&dir.join("config.json")).unwrap();
    let path = dir.join("model.safetensors");
    let f32 = ClipTextModel::new(vb(&path, Precision::uniform(DType::F32)), &cfg).unwrap();
    let f16w = ClipTextModel::new(vb(&path, Precision::f16_weights()), &cfg).unwrap();
    let refs =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids = refs["input_ids"].to_dtype(DType::U32).unwrap();
    check(
        "text encoder",
        &f16w.forward(&ids).unwrap(),
        &f32.forward(&ids).unwrap(),
        &refs["last_hidden_state"],
    );
}

/// Passes tensors through, adding up the bytes of what the model keeps, by dtype.
#[derive(Clone, Default)]
struct Tally {
    bytes: Arc<Mutex<[usize; 2]>>,
}

struct Tallied<B> {
    inner: B,
    tally: Tally,
}

impl<B: SimpleBackend> SimpleBackend for Tallied<B> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.inner.get(s, name, h, dtype, dev)?;
        let bytes = t.elem_count() * t.dtype().size_in_bytes();
        let mut tally = self.tally.bytes.lock().unwrap();
        tally[usize::from(t.dtype() == DType::F16)] += bytes;
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.inner.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Loads the tiny SD 1 UNet with `precision`; returns [f32 bytes, f16 bytes] of its weights.
fn unet_weight_bytes(precision: Precision, device: &Device) -> [usize; 2] {
    let model = "tiny-sd1";
    let cfg = UNetConfig::from_file(&fixture(model).join("unet/config.json")).unwrap();
    let path = component(model, "unet", "diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture files are not modified while the tests run.
    let files = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.unwrap();
    let tally = Tally::default();
    let backend = Tallied {
        inner: files,
        tally: tally.clone(),
    };
    UNet2DConditionModel::new(precision.var_builder(Box::new(backend), device), &cfg).unwrap();
    let bytes = *tally.bytes.lock().unwrap();
    bytes
}

#[test]
fn weights_are_stored_in_f16() {
    let [f32_only, none] = unet_weight_bytes(Precision::uniform(DType::F32), &Device::Cpu);
    assert_eq!(none, 0);
    let [small, half] = unet_weight_bytes(Precision::f16_weights(), &Device::Cpu);
    let total = small + half;
    eprintln!("UNet weights: f32 {f32_only} bytes, f16 weights {total} bytes ({half} in f16)");
    // Everything but biases and norm scales is halved.
    assert!(small * 50 < f32_only, "f32 part {small} of {f32_only}");
    assert!(
        (total as f64) < 0.52 * f32_only as f64,
        "{total} of {f32_only} bytes"
    );
}
