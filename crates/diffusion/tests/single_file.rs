//! Single-file checkpoints (`--model FILE.safetensors`), LoRAs (`--lora`) and bad files.
//!
//! The single files are written here from the tiny fixture folders by the inverse of semi's key
//! map, and each tensor is held to the digest of `tools/to_single_file.py`'s output (which
//! diffusers' `from_single_file(config=folder)` loads back to the folder's weights exactly), so
//! the files are the ones diffusers reads. Then semi from the single file must give the final
//! latents of semi from the folder exactly, and diffusers' within 1e-4.

mod common;

use candle_core::{DType, Device, Tensor};
use semi_diffusion::config::UNetConfig;
use semi_diffusion::family::Family;
use semi_diffusion::loading::{ModelFiles, Variant};
use semi_diffusion::lora::{LoraFile, Loras};
use semi_diffusion::pipeline::StableDiffusion;
use semi_diffusion::single_file::{self, Kind};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The fixture folder `model`'s weights in the original layout, checked against the digest of
/// tools/to_single_file.py's output for the same folder.
fn original_tensors(model: &str, kind: Kind) -> BTreeMap<String, Tensor> {
    let files = ModelFiles::check(&common::fixture(model), Variant::Full).unwrap();
    assert_eq!(
        Kind::of(files.family, &files.text_encoder.config.hidden_act),
        kind
    );
    let out = files.original_tensors().unwrap();
    // Every tensor as the Python converter wrote it: same names, shapes, sums.
    let digest: BTreeMap<String, (Vec<usize>, f64, f64)> = serde_json::from_str(
        &std::fs::read_to_string(common::fixture(&format!("single-file/{model}.json"))).unwrap(),
    )
    .unwrap();
    let ours: std::collections::BTreeSet<&String> = out.keys().collect();
    let theirs: std::collections::BTreeSet<&String> = digest.keys().collect();
    assert_eq!(
        ours, theirs,
        "{model}: tensor names differ from tools/to_single_file.py's"
    );
    for (name, (shape, sum, abs)) in &digest {
        let t = out[name].to_dtype(DType::F64).unwrap();
        assert_eq!(t.dims(), shape.as_slice(), "{model}: {name}");
        let s = t.sum_all().unwrap().to_scalar::<f64>().unwrap();
        let a = t
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let tol = 1e-9 * abs.max(1.0);
        assert!(
            (s - sum).abs() <= tol && (a - abs).abs() <= tol,
            "{model}: {name}: sum {s} vs {sum}, |sum| {a} vs {abs}"
        );
    }
    out
}

fn write_single_file(model: &str, kind: Kind, out: &Path) {
    let tensors: HashMap<String, Tensor> = original_tensors(model, kind).into_iter().collect();
    candle_core::safetensors::save(&tensors, out).unwrap();
}

/// (single-file model, folder model) of a fixture.
fn both(model: &str, kind: Kind, tmp: &Path) -> (StableDiffusion, StableDiffusion) {
    let file = tmp.join(format!("{model}.safetensors"));
    write_single_file(model, kind, &file);
    let found = single_file::recognise(&file).unwrap();
    assert_eq!(found.kind, kind);
    assert!(found.has_vae);
    let files = ModelFiles::single_file(&file, &common::fixture(model), &found, false).unwrap();
    let single = StableDiffusion::from_files(files, &Device::Cpu, DType::F32).unwrap();
    let folder = StableDiffusion::load(
        &common::fixture(model),
        &Device::Cpu,
        DType::F32,
        Variant::Full,
    )
    .unwrap();
    (single, folder)
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v(a) == v(b)
}

fn ddim_matches(model: &str, kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let (single, folder) = both(model, kind, tmp.path());
    let req = common::ddim_request(&common::reference_info(model));
    let a = single.generate(&req, None, &mut |_| Ok(())).unwrap();
    let b = folder.generate(&req, None, &mut |_| Ok(())).unwrap();
    assert!(
        same(&a.latents, &b.latents),
        "{model}: single file != folder"
    );
    let refs = common::references(model);
    let err = common::rel_err(&a.latents, common::get(&refs, "ddim_final_latents"));
    eprintln!("{model}: single file vs diffusers, final latents rel err {err:.2e}");
    assert!(err < 1e-4, "{model}: {err:e}");
}

#[test]
fn sd1_single_file_gives_the_folders_latents() {
    ddim_matches("tiny-sd1", Kind::Sd1);
}

#[test]
fn sd2_single_file_with_open_clip_gives_the_folders_latents() {
    ddim_matches("tiny-sd2", Kind::Sd2);
}

#[test]
fn sdxl_single_file_gives_the_folders_latents() {
    let model = "tiny-sdxl-ssd";
    let tmp = tempfile::tempdir().unwrap();
    let (single, folder) = both(model, Kind::Sdxl, tmp.path());
    let reference = common::reference_info(model);
    let refs = common::references(model);
    let run = &reference["runs"][0];
    let req = common::sdxl_run_request(
        reference["prompt"].as_str().unwrap(),
        run,
        &folder.files.scheduler,
    );
    let a = single.generate(&req, None, &mut |_| Ok(())).unwrap();
    let b = folder.generate(&req, None, &mut |_| Ok(())).unwrap();
    assert!(
        same(&a.latents, &b.latents),
        "{model}: single file != folder"
    );
    let name = run["name"].as_str().unwrap();
    let err = common::rel_err(&a.latents, &refs[&format!("{name}/final_latents")]);
    eprintln!("{model}: single file vs diffusers ({name}), final latents rel err {err:.2e}");
    assert!(err < 1e-4, "{model}: {err:e}");
}

#[test]
fn a_standalone_vae_file_replaces_the_vae() {
    // The VAE alone, in the original names without a prefix (as vae-ft-mse-*.safetensors).
    let tmp = tempfile::tempdir().unwrap();
    let all = original_tensors("tiny-sd1", Kind::Sd1);
    let vae: HashMap<String, Tensor> = all
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(single_file::VAE_PREFIX)
                .map(|k| (k.to_string(), v))
        })
        .collect();
    let path = tmp.path().join("vae.safetensors");
    candle_core::safetensors::save(&vae, &path).unwrap();
    let dir = common::fixture("tiny-sd1");
    let mut files = ModelFiles::check(&dir, Variant::Full).unwrap();
    let plain = files.fingerprint().unwrap();
    files.replace_vae(&path).unwrap();
    assert_ne!(
        files.fingerprint().unwrap(),
        plain,
        "--vae is in the fingerprint"
    );
    let sd = StableDiffusion::from_files(files, &Device::Cpu, DType::F32).unwrap();
    let refs = common::references("tiny-sd1");
    let raw = sd
        .decode_raw(common::get(&refs, "ddim_final_latents"))
        .unwrap();
    let err = common::rel_err(&raw, common::get(&refs, "ddim_image"));
    assert!(err < 1e-4, "decoded through the replaced VAE: {err:e}");
    // A diffusers VAE folder works too; a file of something else is refused.
    let mut files = ModelFiles::check(&dir, Variant::Full).unwrap();
    files.replace_vae(&dir.join("vae")).unwrap();
    let lora = common::fixture("lora/kohya.safetensors");
    let err = files.replace_vae(&lora).unwrap_err().to_string();
    assert!(err.contains("no VAE weights"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// LoRA

fn lora_run(loras: Vec<LoraFile>) -> Tensor {
    let dir = common::fixture("tiny-sd1");
    let mut files = ModelFiles::check(&dir, Variant::Full).unwrap();
    files.loras = loras;
    let sd = StableDiffusion::from_files(files, &Device::Cpu, DType::F32).unwrap();
    let req = common::ddim_request(&common::reference_info("tiny-sd1"));
    sd.generate(&req, None, &mut |_| Ok(())).unwrap().latents
}

#[test]
fn kohya_and_peft_loras_match_diffusers_fuse_lora() {
    let refs =
        candle_core::safetensors::load(common::fixture("lora/reference.safetensors"), &Device::Cpu)
            .unwrap();
    let base = common::references("tiny-sd1");
    for fmt in ["kohya", "peft"] {
        let path = common::fixture(&format!("lora/{fmt}.safetensors"));
        let got = lora_run(vec![LoraFile {
            path: path.clone(),
            weight: 0.7,
        }]);
        let want = &refs[&format!("{fmt}/final_latents")];
        let err = common::rel_err(&got, want);
        let moved = common::rel_err(want, common::get(&base, "ddim_final_latents"));
        eprintln!("{fmt} LoRA at 0.7: rel err vs diffusers {err:.2e} (the LoRA moves the latents by {moved:.2e})");
        assert!(moved > 1e-3, "the LoRA must change the result");
        assert!(err < 1e-4, "{fmt}: {err:e}");
        // Weight 0 gives the base model exactly.
        let zero = lora_run(vec![LoraFile { path, weight: 0.0 }]);
        assert!(same(&zero, &lora_run(Vec::new())), "{fmt} at weight 0");
    }
}

#[test]
fn lora_weights_and_files_change_the_fingerprint() {
    let dir = common::fixture("tiny-sd1");
    let mut files = ModelFiles::check(&dir, Variant::Full).unwrap();
    let plain = files.fingerprint().unwrap();
    let kohya = common::fixture("lora/kohya.safetensors");
    let mut prints = vec![plain];
    for (path, weight) in [(&kohya, 0.7), (&kohya, 0.5)] {
        files.loras = vec![LoraFile {
            path: path.clone(),
            weight,
        }];
        prints.push(files.fingerprint().unwrap());
    }
    prints.sort();
    prints.dedup();
    assert_eq!(prints.len(), 3, "each LoRA and weight is its own model");
}

fn write(path: &Path, tensors: &[(&str, Tensor)]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

#[test]
fn loras_of_another_family_or_shape_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let z = |d: &[usize]| Tensor::zeros(d, DType::F32, &Device::Cpu).unwrap();
    // An SDXL LoRA (two text encoders) on an SD model.
    let sdxl = tmp.path().join("sdxl.safetensors");
    write(
        &sdxl,
        &[
            (
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                z(&[4, 32]),
            ),
            (
                "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
                z(&[32, 4]),
            ),
            (
                "lora_unet_input_blocks_4_1_proj_in.lora_down.weight",
                z(&[4, 640]),
            ),
            (
                "lora_unet_input_blocks_4_1_proj_in.lora_up.weight",
                z(&[640, 4]),
            ),
        ],
    );
    let f = LoraFile {
        path: sdxl.clone(),
        weight: 1.0,
    };
    let err = format!(
        "{:#}",
        Loras::open(std::slice::from_ref(&f), Family::Sd)
            .err()
            .unwrap()
    );
    assert!(
        err.contains("for SDXL") && err.contains("SD 1.x/2.x"),
        "{err}"
    );
    // An SD LoRA whose update has another width than the model's layer.
    let wide = tmp.path().join("wide.safetensors");
    write(
        &wide,
        &[
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight",
                z(&[4, 768]),
            ),
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight",
                z(&[32, 4]),
            ),
        ],
    );
    let dir = common::fixture("tiny-sd1");
    let mut files = ModelFiles::check(&dir, Variant::Full).unwrap();
    files.loras = vec![LoraFile {
        path: wide,
        weight: 1.0,
    }];
    let err = format!(
        "{:#}",
        StableDiffusion::from_files(files.clone(), &Device::Cpu, DType::F32)
            .err()
            .unwrap()
    );
    assert!(
        err.contains("attn2.to_k.weight") && err.contains("768"),
        "{err}"
    );
    // An update for a layer the model does not have.
    let stray = tmp.path().join("stray.safetensors");
    write(
        &stray,
        &[
            (
                "lora_unet_down_blocks_9_proj_in.lora_down.weight",
                z(&[4, 8]),
            ),
            ("lora_unet_down_blocks_9_proj_in.lora_up.weight", z(&[8, 4])),
        ],
    );
    files.loras = vec![LoraFile {
        path: stray,
        weight: 1.0,
    }];
    let err = format!(
        "{:#}",
        StableDiffusion::from_files(files, &Device::Cpu, DType::F32)
            .err()
            .unwrap()
    );
    assert!(err.contains("match no weight"), "{err}");
    // `FILE:WEIGHT` parsing.
    assert_eq!(LoraFile::parse("a.safetensors:0.5").unwrap().weight, 0.5);
    assert_eq!(LoraFile::parse("a.safetensors").unwrap().weight, 1.0);
    assert_eq!(
        LoraFile::parse("c:/x/a.safetensors").unwrap().path,
        Path::new("c:/x/a.safetensors")
    );
}

// ---------------------------------------------------------------------------------------------
// Bad files

#[test]
fn bad_single_files_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("sd1.safetensors");
    write_single_file("tiny-sd1", Kind::Sd1, &file);
    let bytes = std::fs::read(&file).unwrap();

    // Truncated.
    let cut = tmp.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", single_file::recognise(&cut).unwrap_err());
    assert!(err.contains("truncated"), "{err}");

    // A header that lies about its offsets: the first tensor is said to be one byte longer.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let first = header
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "__metadata__")
        .unwrap()
        .clone();
    let end = header[&first]["data_offsets"][1].as_u64().unwrap();
    header[&first]["data_offsets"][1] = (end + 1).into();
    let text = serde_json::to_vec(&header).unwrap();
    let mut lying = (text.len() as u64).to_le_bytes().to_vec();
    lying.extend_from_slice(&text);
    lying.extend_from_slice(&bytes[8 + n..]);
    let lies = tmp.path().join("lies.safetensors");
    std::fs::write(&lies, &lying).unwrap();
    let err = format!("{:#}", single_file::recognise(&lies).unwrap_err());
    assert!(err.contains("lies") && err.contains(&first), "{err}");

    // A tensor whose shape does not match the config: SD 1.x weights with tiny-sd2's configs.
    let found = single_file::recognise(&file).unwrap();
    let files =
        ModelFiles::single_file(&file, &common::fixture("tiny-sd2"), &found, false).unwrap();
    let err = format!(
        "{:#}",
        StableDiffusion::from_files(files, &Device::Cpu, DType::F32)
            .err()
            .unwrap()
    );
    assert!(
        err.contains("has shape") && err.contains("stored as `cond_stage_model.transformer."),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // Not a checkpoint at all (a LoRA), and another family's config folder.
    let err = format!(
        "{:#}",
        single_file::recognise(&common::fixture("lora/kohya.safetensors")).unwrap_err()
    );
    assert!(
        err.contains("not a Stable Diffusion") && err.contains("missing a UNet"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        ModelFiles::single_file(&file, &common::fixture("tiny-sdxl"), &found, false).unwrap_err()
    );
    assert!(
        err.contains("SD 1.x checkpoint") && err.contains("for SDXL"),
        "{err}"
    );
}

#[test]
fn a_pickle_is_refused_and_never_run() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("pwned");
    // pickle protocol 2: os.system("touch <marker>") on load.
    let cmd = format!("touch {}", marker.display());
    let mut p = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
    p.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    p.extend_from_slice(cmd.as_bytes());
    p.extend_from_slice(b"q\x01\x85q\x02Rq\x03.");
    for name in ["model.ckpt", "disguised.safetensors"] {
        let path = tmp.path().join(name);
        std::fs::write(&path, &p).unwrap();
        let err = format!("{:#}", single_file::recognise(&path).unwrap_err());
        assert!(
            err.contains("pickle") && err.contains("safetensors"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        let lora = [LoraFile { path, weight: 1.0 }];
        let err = format!(
            "{:#}",
            semi_diffusion::lora::check_files(&lora).unwrap_err()
        );
        assert!(err.contains("pickle"), "{err}");
    }
    assert!(!marker.exists(), "the pickle ran");
}

#[test]
fn the_unet_map_serves_sgm_named_loras() {
    // kohya's SDXL LoRAs name UNet modules by their original paths.
    let cfg = UNetConfig::parse(semi_bench::models::SDXL_UNET).unwrap();
    let o = single_file::unet(
        "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q.weight",
        &cfg,
    )
    .unwrap();
    assert_eq!(
        o.name,
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight"
    );
}
