//! AutoencoderKL parity against diffusers on the tiny random-weight fixture VAEs.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{get, references, rel_err, weights};
use semi_diffusion::config::VaeConfig;
use semi_diffusion::vae::AutoencoderKL;
use std::collections::HashMap;

const TOL: f64 = 1e-4;

fn vae(model: &str) -> AutoencoderKL {
    let cfg = VaeConfig::from_file(&common::fixture(model).join("vae/config.json")).unwrap();
    AutoencoderKL::new(weights(model, "vae"), &cfg).unwrap()
}

fn check_decode(model: &str) {
    let refs = references(model);
    let image = vae(model).decode(get(&refs, "vae_in_latents")).unwrap();
    let err = rel_err(&image, get(&refs, "vae_decoded"));
    eprintln!("{model} decode: relative error {err:.2e}");
    assert!(err < TOL, "{model} decode: relative error {err:.2e}");
}

fn check_encode(model: &str) {
    let refs = references(model);
    let (mean, logvar) = vae(model).encode(get(&refs, "vae_in_image")).unwrap();
    let err = rel_err(&mean, get(&refs, "vae_enc_mean"));
    eprintln!("{model} encode mean: relative error {err:.2e}");
    assert!(err < TOL, "{model} encode mean: relative error {err:.2e}");
    let err = rel_err(&logvar, get(&refs, "vae_enc_logvar"));
    eprintln!("{model} encode logvar: relative error {err:.2e}");
    assert!(err < TOL, "{model} encode logvar: relative error {err:.2e}");
}

#[test]
fn sd1_decode_matches_diffusers() {
    check_decode("tiny-sd1");
}

#[test]
fn sd1_encode_matches_diffusers() {
    check_encode("tiny-sd1");
}

#[test]
fn sd2_decode_matches_diffusers() {
    check_decode("tiny-sd2");
}

#[test]
fn sd2_encode_matches_diffusers() {
    check_encode("tiny-sd2");
}

#[test]
fn wrong_latent_channels_is_an_error() {
    let refs = references("tiny-sd1");
    let latents = get(&refs, "vae_in_latents").narrow(1, 0, 3).unwrap();
    let err = vae("tiny-sd1").decode(&latents).unwrap_err();
    assert!(err.to_string().contains("channels"), "{err}");
}

/// Checkpoints saved before diffusers 0.14 name the VAE attention projections
/// `query`/`key`/`value`/`proj_attn`; they must load and give the same image.
#[test]
fn legacy_attention_names_load() {
    let model = "tiny-sd1";
    let path = common::fixture(model).join("vae/diffusion_pytorch_model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let renames = [
        (".to_q.", ".query."),
        (".to_k.", ".key."),
        (".to_v.", ".value."),
        (".to_out.0.", ".proj_attn."),
    ];
    let mut renamed = 0;
    let legacy: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| {
            let mut name = k.clone();
            for (new, old) in renames {
                if name.contains(".attentions.") && name.contains(new) {
                    name = name.replace(new, old);
                    renamed += 1;
                }
            }
            (name, v)
        })
        .collect();
    assert_eq!(
        renamed, 16,
        "encoder and decoder: 4 projections x (weight, bias)"
    );
    let cfg = VaeConfig::from_file(&common::fixture(model).join("vae/config.json")).unwrap();
    let vb = VarBuilder::from_tensors(legacy, DType::F32, &Device::Cpu);
    let refs = references(model);
    let image = AutoencoderKL::new(vb, &cfg)
        .unwrap()
        .decode(get(&refs, "vae_in_latents"))
        .unwrap();
    let err = rel_err(&image, get(&refs, "vae_decoded"));
    assert!(err < TOL, "legacy names: relative error {err:.2e}");
}

/// `mid_block_add_attention: false` builds the mid blocks without attention (and then needs no
/// attention weights).
#[test]
fn mid_block_without_attention() {
    let model = "tiny-sd1";
    let path = common::fixture(model).join("vae/diffusion_pytorch_model.safetensors");
    let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| !k.contains("mid_block.attentions"))
        .collect();
    let mut cfg = VaeConfig::from_file(&common::fixture(model).join("vae/config.json")).unwrap();
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    assert!(
        AutoencoderKL::new(vb, &cfg).is_err(),
        "attention weights are required"
    );
    cfg.mid_block_add_attention = false;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let refs = references(model);
    let image = AutoencoderKL::new(vb, &cfg)
        .unwrap()
        .decode(get(&refs, "vae_in_latents"))
        .unwrap();
    assert_eq!(image.dims(), get(&refs, "vae_decoded").dims());
    // Without the attention the image differs from diffusers' (which has it).
    assert!(rel_err(&image, get(&refs, "vae_decoded")) > 1e-3);
}
