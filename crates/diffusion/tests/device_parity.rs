//! The parity checks a GPU repeats, on the device `SEMI_TEST_DEVICE` names (default: the CPU,
//! where CI runs them). `tools/device-check.sh` runs this binary, built with `--features cuda`,
//! on CUDA.
//!
//! - f32 against the committed diffusers/transformers references, at the CPU's bound (1e-4
//!   relative L2): the tiny SD 1.x UNet (both CFG batches, and the recorded probe attention),
//!   the VAE decoder, the CLIP text encoder, a whole DDIM run, the tiny SDXL pipeline's runs
//!   (its own scheduler, DDIM and DPM-Solver++), and the full-size SD 1.5 UNet on seeded random
//!   weights. (SD 2.x and SSD-1B differ from these only in config-driven shapes; their fixtures
//!   stay on the CPU to keep what travels to a GPU machine under its 64 MiB.)
//! - Half precision against f32 on the same device: the UNet, the VAE, the text encoder and a
//!   short DDIM run in f16 (bound 2e-2, as `half_precision.rs`), and in bf16 where the device
//!   has bf16 matrix products (not candle's CPU; bound 8e-2: bf16 keeps 8 bits of mantissa).
//!
//! Each check prints a table row (`| device | check | dtype | error | bound |`), so
//! `--nocapture --test-threads 1` gives the table the device check records.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{device, get, reference_info, references, rel_err, weights_on};
use semi_diffusion::config::{TextEncoderConfig, UNetConfig, VaeConfig};
use semi_diffusion::controller::AttentionRecorder;
use semi_diffusion::loading::Variant;
use semi_diffusion::pipeline::{GenerateRequest, StableDiffusion};
use semi_diffusion::text_encoder::ClipTextModel;
use semi_diffusion::unet::{ForwardOptions, UNet2DConditionModel, UNetOutput};
use semi_diffusion::vae::AutoencoderKL;

/// The CPU's f32 bound against diffusers.
const F32_BOUND: f64 = 1e-4;
const F16_BOUND: f64 = 2e-2;
const BF16_BOUND: f64 = 8e-2;

fn device_name(dev: &Device) -> &'static str {
    if dev.is_cuda() {
        "cuda"
    } else if dev.is_metal() {
        "metal"
    } else {
        "cpu"
    }
}

/// Prints the check's table row, then asserts it.
fn report(check: &str, dtype: DType, err: f64, bound: f64) {
    let dev = device();
    println!(
        "| {} | {check} | {} | {err:.2e} | {bound:.0e} |",
        device_name(&dev),
        format!("{dtype:?}").to_lowercase()
    );
    assert!(
        err < bound,
        "{check} ({dtype:?}): relative error {err:.2e} >= {bound:.0e}"
    );
}

/// The half-precision dtypes the device multiplies in (candle's CPU matmul has no bf16).
fn half_dtypes(dev: &Device) -> Vec<(DType, f64)> {
    if dev.is_cpu() {
        vec![(DType::F16, F16_BOUND)]
    } else {
        vec![(DType::F16, F16_BOUND), (DType::BF16, BF16_BOUND)]
    }
}

fn unet(model: &str, dtype: DType, dev: &Device) -> UNet2DConditionModel {
    let cfg = UNetConfig::from_file(&common::fixture(model).join("unet/config.json")).unwrap();
    UNet2DConditionModel::new(weights_on(model, "unet", dtype, dev), &cfg).unwrap()
}

fn vae(model: &str, dtype: DType, dev: &Device) -> AutoencoderKL {
    let cfg = VaeConfig::from_file(&common::fixture(model).join("vae/config.json")).unwrap();
    AutoencoderKL::new(weights_on(model, "vae", dtype, dev), &cfg).unwrap()
}

fn on(t: &Tensor, dtype: DType, dev: &Device) -> Tensor {
    t.to_device(dev).unwrap().to_dtype(dtype).unwrap()
}

fn full(out: UNetOutput) -> Tensor {
    match out {
        UNetOutput::Full(t) => t,
        UNetOutput::Stopped => panic!("unexpected early stop"),
    }
}

/// Both CFG batches at every reference timestep, and the recorded attention of the reference
/// layers at t = 981.
fn unet_matches_diffusers(model: &str) {
    let dev = device();
    let refs = references(model);
    let info = reference_info(model);
    let unet = unet(model, DType::F32, &dev);
    let sample = on(get(&refs, "unet_in_sample"), DType::F32, &dev);
    let emb2 = on(get(&refs, "text_embeddings"), DType::F32, &dev);
    let cond = emb2.narrow(0, 1, 1).unwrap();
    let sample2 = Tensor::cat(&[&sample, &sample], 0).unwrap();
    for t in info["unet_timesteps"].as_array().unwrap() {
        let t = t.as_f64().unwrap();
        let b1 = unet.forward(&sample, t, &cond).unwrap();
        let err = rel_err(&b1, get(&refs, &format!("unet_out_t{t}_b1")));
        report(
            &format!("{model} UNet t={t} batch 1"),
            DType::F32,
            err,
            F32_BOUND,
        );
        let b2 = unet.forward(&sample2, t, &emb2).unwrap();
        let err = rel_err(&b2, get(&refs, &format!("unet_out_t{t}_b2")));
        report(
            &format!("{model} UNet t={t} batch 2"),
            DType::F32,
            err,
            F32_BOUND,
        );
    }
    let paths: Vec<String> = info["attn_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let mut recorder = AttentionRecorder::for_paths(paths);
    let out = unet
        .forward_with(
            &sample2,
            981.0,
            &emb2,
            ForwardOptions {
                controller: Some(&mut recorder),
                conditional_rows: Some(vec![false, true]),
                ..Default::default()
            },
        )
        .unwrap();
    let err = rel_err(&full(out), get(&refs, "unet_out_t981_b2"));
    report(
        &format!("{model} UNet recording pass"),
        DType::F32,
        err,
        F32_BOUND,
    );
    let worst = recorder
        .records
        .iter()
        .map(|(path, _, probs)| {
            rel_err(
                &probs.squeeze(0).unwrap(),
                get(&refs, &format!("attn_probs.{path}")),
            )
        })
        .fold(0.0, f64::max);
    report(
        &format!(
            "{model} recorded attention, worst of {} layers",
            recorder.records.len()
        ),
        DType::F32,
        worst,
        F32_BOUND,
    );
}

#[test]
fn tiny_unets_match_diffusers() {
    unet_matches_diffusers("tiny-sd1");
}

#[test]
fn vae_decoder_matches_diffusers() {
    let dev = device();
    let model = "tiny-sd1";
    let refs = references(model);
    let latents = on(get(&refs, "vae_in_latents"), DType::F32, &dev);
    let image = vae(model, DType::F32, &dev).decode(&latents).unwrap();
    let err = rel_err(&image, get(&refs, "vae_decoded"));
    report(&format!("{model} VAE decode"), DType::F32, err, F32_BOUND);
}

fn text_encoder(dir: &str, dtype: DType, dev: &Device) -> ClipTextModel {
    let dir = common::fixture(dir);
    let cfg = TextEncoderConfig::from_file(&dir.join("config.json")).unwrap();
    // SAFETY: the fixture files are not modified while the tests run.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], dtype, dev)
    }
    .unwrap();
    ClipTextModel::new(vb, &cfg).unwrap()
}

#[test]
fn text_encoder_matches_transformers() {
    let dev = device();
    for dir in ["text-encoder-quick_gelu", "text-encoder-gelu"] {
        let refs = candle_core::safetensors::load(
            common::fixture(dir).join("reference.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let ids = on(&refs["input_ids"], DType::U32, &dev);
        let ours = text_encoder(dir, DType::F32, &dev).forward(&ids).unwrap();
        let err = rel_err(&ours, &refs["last_hidden_state"]);
        report(
            &format!("{dir} CLIP text encoder"),
            DType::F32,
            err,
            F32_BOUND,
        );
    }
}

#[test]
fn ddim_pipeline_matches_diffusers() {
    let dev = device();
    let model = "tiny-sd1";
    let dir = common::fixture(model);
    let reference = reference_info(model);
    let tensors = references(model);
    let sd = StableDiffusion::load(&dir, &dev, DType::F32, Variant::Full).unwrap();
    let req = common::ddim_request(&reference);
    let out = sd.generate(&req, None, &mut |_| Ok(())).unwrap();
    let err = rel_err(&out.init_latents, &tensors["ddim_init_latents"]);
    report(
        &format!("{model} DDIM initial latents"),
        DType::F32,
        err,
        1e-6,
    );
    let err = rel_err(&out.latents, &tensors["ddim_final_latents"]);
    report(
        &format!("{model} DDIM final latents"),
        DType::F32,
        err,
        F32_BOUND,
    );
    let raw = sd.decode_raw(&out.latents).unwrap();
    let err = rel_err(&raw, &tensors["ddim_image"]);
    report(
        &format!("{model} DDIM decoded image"),
        DType::F32,
        err,
        F32_BOUND,
    );
}

#[test]
fn sdxl_pipelines_match_diffusers() {
    let dev = device();
    let model = "tiny-sdxl";
    let dir = common::fixture(model);
    let reference = reference_info(model);
    let tensors = references(model);
    let sd = StableDiffusion::load(&dir, &dev, DType::F32, Variant::Full).unwrap();
    let prompt = reference["prompt"].as_str().unwrap();
    for run in reference["runs"].as_array().unwrap() {
        let name = run["name"].as_str().unwrap();
        let req = common::sdxl_run_request(prompt, run, &sd.files.scheduler);
        let out = sd.generate(&req, None, &mut |_| Ok(())).unwrap();
        let err = rel_err(&out.latents, &tensors[&format!("{name}/final_latents")]);
        report(
            &format!("{model} {name} final latents"),
            DType::F32,
            err,
            F32_BOUND,
        );
        if let Some(image) = tensors.get(&format!("{name}/image")) {
            let raw = sd.decode_raw(&out.latents).unwrap();
            let err = rel_err(&raw, image);
            report(
                &format!("{model} {name} decoded image"),
                DType::F32,
                err,
                F32_BOUND,
            );
        }
    }
}

/// The full-size SD 1.5 UNet (seeded random weights, `sd15_parity.rs`): the CFG batch at
/// t = 981 on 32x32 latents and the probe layer's attention, in f32 against diffusers, and in
/// half precision against the same reference. On a GPU only.
#[test]
fn sd15_size_unet_matches_diffusers() {
    use semi_bench::random_weights::{build_seeded, DEFAULT_BASE_SEED};
    let dev = device();
    if dev.is_cpu() {
        // sd15_parity.rs runs the f32 check on the CPU; f16 at this size takes minutes there.
        return;
    }
    let root = common::fixture("sd15-random");
    let cfg = UNetConfig::from_file(&root.join("unet/config.json")).unwrap();
    let refs =
        candle_core::safetensors::load(root.join("reference.safetensors"), &Device::Cpu).unwrap();
    let probe = "down_blocks.2.attentions.1.transformer_blocks.0.attn2";
    for (dtype, bound) in [(DType::F32, F32_BOUND)]
        .into_iter()
        .chain(half_dtypes(&dev))
    {
        let unet = build_seeded(DEFAULT_BASE_SEED, dtype, &dev, |vb| {
            UNet2DConditionModel::new(vb, &cfg)
        })
        .unwrap();
        let sample = on(&refs["in_sample"], dtype, &dev);
        let batch = Tensor::cat(&[&sample, &sample], 0).unwrap();
        let mut rec = AttentionRecorder::for_paths([probe]);
        let out = unet
            .forward_with(
                &batch,
                981.0,
                &on(&refs["in_text"], dtype, &dev),
                ForwardOptions {
                    controller: Some(&mut rec),
                    conditional_rows: Some(vec![false, true]),
                    ..Default::default()
                },
            )
            .unwrap();
        let err = rel_err(&full(out), &refs["out_b2"]);
        report("SD-1.5-size UNet, 32x32, batch 2", dtype, err, bound);
        let err = rel_err(&rec.records[0].2.squeeze(0).unwrap(), &refs["probe_probs"]);
        report("SD-1.5-size UNet probe attention", dtype, err, bound);
    }
}

/// Half precision against f32 on the same device: each model, then a short DDIM run.
#[test]
fn half_precision_stays_close_to_f32() {
    let dev = device();
    let model = "tiny-sd1";
    let refs = references(model);
    let full_unet = unet(model, DType::F32, &dev);
    let full_vae = vae(model, DType::F32, &dev);
    let text_dir = "text-encoder-quick_gelu";
    let full_text = text_encoder(text_dir, DType::F32, &dev);
    let text_refs = candle_core::safetensors::load(
        common::fixture(text_dir).join("reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids = on(&text_refs["input_ids"], DType::U32, &dev);
    let sample = get(&refs, "unet_in_sample");
    let cond = get(&refs, "text_embeddings").narrow(0, 1, 1).unwrap();
    let latents = get(&refs, "vae_in_latents");
    let want_unet = full_unet
        .forward(
            &on(sample, DType::F32, &dev),
            981.0,
            &on(&cond, DType::F32, &dev),
        )
        .unwrap();
    let want_image = full_vae.decode(&on(latents, DType::F32, &dev)).unwrap();
    let want_text = full_text.forward(&ids).unwrap();

    let mut req = GenerateRequest::new("a photo of a cat", 64, 64);
    req.steps = 5;
    req.guidance_scale = 7.5;
    req.seed = 3;
    let generate = |dtype: DType| {
        let sd =
            StableDiffusion::load(&common::fixture(model), &dev, dtype, Variant::Full).unwrap();
        sd.generate(&req, None, &mut |_| Ok(())).unwrap()
    };
    let want_run = generate(DType::F32);

    for (dtype, bound) in half_dtypes(&dev) {
        let got = unet(model, dtype, &dev)
            .forward(&on(sample, dtype, &dev), 981.0, &on(&cond, dtype, &dev))
            .unwrap();
        assert_eq!(got.dtype(), dtype);
        report(
            "tiny-sd1 UNet against f32",
            dtype,
            rel_err(&got, &want_unet),
            bound,
        );
        let got = vae(model, dtype, &dev)
            .decode(&on(latents, dtype, &dev))
            .unwrap();
        report(
            "tiny-sd1 VAE decode against f32",
            dtype,
            rel_err(&got, &want_image),
            bound,
        );
        let got = text_encoder(text_dir, dtype, &dev).forward(&ids).unwrap();
        report(
            "CLIP text encoder against f32",
            dtype,
            rel_err(&got, &want_text),
            bound,
        );
        let run = generate(dtype);
        report(
            "tiny-sd1 5 DDIM steps, final latents against f32",
            dtype,
            rel_err(&run.latents, &want_run.latents),
            bound,
        );
        report(
            "tiny-sd1 5 DDIM steps, image against f32",
            dtype,
            rel_err(&run.image, &want_run.image),
            bound,
        );
    }
}
