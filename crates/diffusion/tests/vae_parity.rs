//! AutoencoderKL parity against diffusers on the tiny random-weight fixture VAEs.

mod common;

use common::{get, references, rel_err, weights};
use semi_diffusion::config::VaeConfig;
use semi_diffusion::vae::AutoencoderKL;

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
