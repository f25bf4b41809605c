//! The UNet and VAE run on the published `fp16` weight variants (half-precision activations,
//! norms and softmax upcast internally) and stay close to diffusers' f32 references.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{get, references, rel_err};
use semi_diffusion::config::{UNetConfig, VaeConfig};
use semi_diffusion::unet::UNet2DConditionModel;
use semi_diffusion::vae::AutoencoderKL;

/// f16 keeps about 3 decimal digits; measured errors are ~3e-3.
const TOL: f64 = 1e-2;
const MODEL: &str = "tiny-sd1";

fn fp16_weights(component: &str) -> VarBuilder<'static> {
    let path = common::fixture(MODEL)
        .join(component)
        .join("diffusion_pytorch_model.fp16.safetensors");
    // SAFETY: the fixture files are not modified while the tests run.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F16, &Device::Cpu).unwrap() }
}

fn half(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F16).unwrap()
}

#[test]
fn unet_runs_in_f16() {
    let cfg = UNetConfig::from_file(&common::fixture(MODEL).join("unet/config.json")).unwrap();
    let unet = UNet2DConditionModel::new(fp16_weights("unet"), &cfg).unwrap();
    let refs = references(MODEL);
    let cond = half(&get(&refs, "text_embeddings").narrow(0, 1, 1).unwrap());
    let out = unet
        .forward(&half(get(&refs, "unet_in_sample")), 981.0, &cond)
        .unwrap();
    assert_eq!(out.dtype(), DType::F16);
    let err = rel_err(&out, get(&refs, "unet_out_t981_b1"));
    assert!(err < TOL, "f16 UNet: relative error {err:.2e}");
}

#[test]
fn vae_runs_in_f16() {
    let cfg = VaeConfig::from_file(&common::fixture(MODEL).join("vae/config.json")).unwrap();
    let vae = AutoencoderKL::new(fp16_weights("vae"), &cfg).unwrap();
    let refs = references(MODEL);
    let image = vae.decode(&half(get(&refs, "vae_in_latents"))).unwrap();
    let err = rel_err(&image, get(&refs, "vae_decoded"));
    assert!(err < TOL, "f16 decode: relative error {err:.2e}");
    let (mean, logvar) = vae.encode(&half(get(&refs, "vae_in_image"))).unwrap();
    let err = rel_err(&mean, get(&refs, "vae_enc_mean"));
    assert!(err < TOL, "f16 encode mean: relative error {err:.2e}");
    let err = rel_err(&logvar, get(&refs, "vae_enc_logvar"));
    assert!(err < TOL, "f16 encode logvar: relative error {err:.2e}");
}

/// The whole pipeline (text encoder, DDIM loop with guidance, VAE) in half precision against
/// the f32 run of the same request: what a GPU run in f16 does, checked on the CPU (bf16 cannot
/// be: candle's CPU matmul has no bf16).
#[test]
fn a_short_ddim_run_in_half_precision_stays_close_to_f32() {
    use semi_diffusion::loading::Variant;
    use semi_diffusion::pipeline::{GenerateRequest, StableDiffusion};
    let dir = common::fixture(MODEL);
    let mut req = GenerateRequest::new("a photo of a cat", 64, 64);
    req.steps = 5;
    req.guidance_scale = 7.5;
    req.seed = 3;
    let run = |dtype: DType| {
        let sd = StableDiffusion::load(&dir, &Device::Cpu, dtype, Variant::Full).unwrap();
        sd.generate(&req, None, &mut |_| Ok(())).unwrap()
    };
    let full = run(DType::F32);
    // Measured: final latents 9.5e-3, image 6.6e-3.
    let half = run(DType::F16);
    let tol = 2e-2;
    let e_latents = rel_err(&half.latents, &full.latents);
    let e_image = rel_err(&half.image, &full.image);
    eprintln!("f16: final latents {e_latents:.2e}, image {e_image:.2e}");
    assert!(e_latents < tol, "f16: final latents {e_latents:.2e}");
    assert!(e_image < tol, "f16: image {e_image:.2e}");
}
