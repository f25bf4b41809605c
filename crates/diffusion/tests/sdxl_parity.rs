//! Tiny random-weight SDXL pipelines of two shapes (base 1.0's layout, and SSD-1B's per-layer
//! depths with a resnet-only mid block) against diffusers' `StableDiffusionXLPipeline`
//! (fixtures from tools/make_sdxl_fixtures.py): text embeddings, pooled embeddings, one UNet call
//! with the added conditions, and full runs with the model's own scheduler, DDIM with a negative
//! prompt, DPM-Solver++ without guidance and a non-square size. Bound: 1e-4 relative L2.

use candle_core::{DType, Device, Tensor};
use semi_diffusion::family::Family;
use semi_diffusion::loading::Variant;
use semi_diffusion::pipeline::StableDiffusion;
use semi_diffusion::unet::{AddedCond, ForwardOptions, UNetOutput};
use serde_json::Value;
use std::collections::HashMap;

mod common;

const BOUND: f64 = 1e-4;

struct Fixture {
    sd: StableDiffusion,
    reference: Value,
    tensors: HashMap<String, Tensor>,
}

fn fixture(name: &str) -> Fixture {
    let sd = StableDiffusion::load(
        &common::fixture(name),
        &Device::Cpu,
        DType::F32,
        Variant::Full,
    )
    .unwrap();
    assert_eq!(sd.files.family, Family::Sdxl);
    Fixture {
        sd,
        reference: common::reference_info(name),
        tensors: common::references(name),
    }
}

fn check(name: &str, what: &str, got: &Tensor, want: &Tensor) {
    let e = common::rel_err(got, want);
    eprintln!("{name} {what}: {e:.2e}");
    assert!(e < BOUND, "{name}: {what} differs from diffusers ({e:e})");
}

fn text_and_unet(name: &str) {
    let f = fixture(name);
    let prompt = f.reference["prompt"].as_str().unwrap();
    let negative = f.reference["negative_prompt"].as_str().unwrap();
    let t = &f.tensors;

    // [uncond, cond] without a negative prompt, then with one.
    let plain = f.sd.encode_prompt(prompt, "", true).unwrap();
    let uncond = plain.states.narrow(0, 0, 1).unwrap();
    let cond = plain.states.narrow(0, 1, 1).unwrap();
    let pooled = plain.pooled.as_ref().unwrap();
    check(name, "prompt states", &cond, &t["embeds/prompt"]);
    check(name, "uncond states", &uncond, &t["embeds/uncond"]);
    check(
        name,
        "prompt pooled",
        &pooled.narrow(0, 1, 1).unwrap(),
        &t["pooled/prompt"],
    );
    check(
        name,
        "uncond pooled",
        &pooled.narrow(0, 0, 1).unwrap(),
        &t["pooled/uncond"],
    );
    let zeros = f.reference["force_zeros_for_empty_prompt"]
        .as_bool()
        .unwrap();
    let max = uncond.abs().unwrap().max_all().unwrap();
    assert_eq!(
        max.to_scalar::<f32>().unwrap() == 0.0,
        zeros,
        "{name}: zero unconditional states exactly when force_zeros_for_empty_prompt"
    );
    let with_negative = f.sd.encode_prompt(prompt, negative, true).unwrap();
    check(
        name,
        "negative states",
        &with_negative.states.narrow(0, 0, 1).unwrap(),
        &t["embeds/negative"],
    );
    check(
        name,
        "negative pooled",
        &with_negative.pooled.unwrap().narrow(0, 0, 1).unwrap(),
        &t["pooled/negative"],
    );

    // One batch-2 UNet call with the added conditions of a 64x64 image.
    let added = f.sd.added_conditions(&plain, 64, 64).unwrap().unwrap();
    let want_ids: Vec<f64> = f.reference["unet_time_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(added.time_ids, vec![want_ids.clone(), want_ids]);
    let out =
        f.sd.unet
            .forward_with(
                &t["unet_in_sample"],
                f.reference["unet_timestep"].as_f64().unwrap(),
                &plain.states,
                ForwardOptions {
                    added: Some(&added),
                    ..Default::default()
                },
            )
            .unwrap();
    let UNetOutput::Full(out) = out else {
        panic!("no stop was asked for")
    };
    check(name, "UNet output", &out, &t["unet_out"]);

    // Without the added conditions the UNet says what it needs.
    let err =
        f.sd.unet
            .forward(&t["unet_in_sample"], 999.0, &plain.states)
            .unwrap_err();
    assert!(err.to_string().contains("time ids"), "{err}");
    // The conditions of another width are refused naming add_embedding's input.
    let wrong = AddedCond {
        text_embeds: added.text_embeds.narrow(1, 0, 8).unwrap(),
        time_ids: added.time_ids.clone(),
    };
    let err =
        f.sd.unet
            .forward_with(
                &t["unet_in_sample"],
                999.0,
                &plain.states,
                ForwardOptions {
                    added: Some(&wrong),
                    ..Default::default()
                },
            )
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("projection_class_embeddings_input_dim"),
        "{err}"
    );
}

fn runs(name: &str) {
    let f = fixture(name);
    let prompt = f.reference["prompt"].as_str().unwrap();
    for run in f.reference["runs"].as_array().unwrap() {
        let run_name = run["name"].as_str().unwrap();
        let req = common::sdxl_run_request(prompt, run, &f.sd.files.scheduler);
        let out = f.sd.generate(&req, None, &mut |_| Ok(())).unwrap();
        let want_t: Vec<f64> = run["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(out.timesteps.len(), want_t.len(), "{name} {run_name}");
        for (a, b) in out.timesteps.iter().zip(&want_t) {
            assert!(
                (a - b).abs() < 1e-3,
                "{name} {run_name}: timesteps {a} vs {b}"
            );
        }
        check(
            name,
            &format!("{run_name} final latents"),
            &out.latents,
            &f.tensors[&format!("{run_name}/final_latents")],
        );
        if let Some(image) = f.tensors.get(&format!("{run_name}/image")) {
            let raw = f.sd.decode_raw(&out.latents).unwrap();
            check(name, &format!("{run_name} decoded image"), &raw, image);
        }
    }
}

#[test]
fn tiny_sdxl_text_and_unet_match_diffusers() {
    text_and_unet("tiny-sdxl");
}

#[test]
fn tiny_sdxl_ssd_text_and_unet_match_diffusers() {
    text_and_unet("tiny-sdxl-ssd");
}

#[test]
fn tiny_sdxl_runs_match_diffusers() {
    runs("tiny-sdxl");
}

#[test]
fn tiny_sdxl_ssd_runs_match_diffusers() {
    runs("tiny-sdxl-ssd");
}

/// In half precision the SDXL VAE (its config says `force_upcast`) is built and decodes in f32,
/// as diffusers' SDXL pipeline upcasts it; the UNet and text encoders stay in f16.
#[test]
fn sdxl_vae_upcasts_in_half_precision() {
    let dir = common::fixture("tiny-sdxl");
    let half = StableDiffusion::load(&dir, &Device::Cpu, DType::F16, Variant::Full).unwrap();
    assert_eq!((half.dtype, half.vae_dtype), (DType::F16, DType::F32));
    let f = fixture("tiny-sdxl");
    let latents = &f.tensors["model_scheduler/final_latents"];
    let image = half
        .decode_raw(&latents.to_dtype(DType::F16).unwrap())
        .unwrap();
    assert_eq!(image.dtype(), DType::F32);
    // Only the latents' rounding to f16 separates it from the f32 decode.
    let e = common::rel_err(&image, &f.tensors["model_scheduler/image"]);
    assert!(e < 1e-2, "f16 latents, f32 decode: {e:e}");
}
