//! Folder resolution, completeness checks and fingerprints on synthetic folders.

use candle_core::{DType, Device, Tensor};
use semi_diffusion::loading::{
    check_safetensors, file_sha256, is_repo_id, resolve_in_cache, resolve_model, ModelFiles,
    Variant,
};
use std::path::Path;

const INDEX: &str = r#"{"_class_name":"StableDiffusionPipeline","unet":["diffusers","UNet2DConditionModel"],
  "vae":["diffusers","AutoencoderKL"],"text_encoder":["transformers","CLIPTextModel"],
  "tokenizer":["transformers","CLIPTokenizer"],"scheduler":["diffusers","DDIMScheduler"],
  "safety_checker":[null,null]}"#;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn weights(root: &Path, rel: &str, value: f32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let t = Tensor::new(&[value, 2.0, 3.0], &Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("w".to_string(), t)].into_iter().collect(), p).unwrap();
}

/// A complete (tiny, fake-weight) SD folder.
fn complete(root: &Path) {
    write(root, "model_index.json", INDEX);
    write(
        root,
        "unet/config.json",
        r#"{"sample_size": 8, "cross_attention_dim": 512}"#,
    );
    weights(root, "unet/diffusion_pytorch_model.safetensors", 1.0);
    write(root, "text_encoder/config.json", "{}");
    weights(root, "text_encoder/model.safetensors", 1.0);
    write(
        root,
        "vae/config.json",
        r#"{"block_out_channels":[32,64],
          "down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D"],
          "up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D"]}"#,
    );
    weights(root, "vae/diffusion_pytorch_model.safetensors", 1.0);
    write(root, "scheduler/scheduler_config.json", "{}");
    write(root, "tokenizer/vocab.json", "{}");
    write(root, "tokenizer/merges.txt", "#version: 0.2\n");
}

#[test]
fn complete_folder_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    complete(dir.path());
    let m = ModelFiles::check(dir.path(), Variant::Full).unwrap();
    assert_eq!(m.vae_scale_factor(), 2);
    assert!(m.unet.weights[0].ends_with("unet/diffusion_pytorch_model.safetensors"));
    assert_eq!(m.tokenizer_files.len(), 2);
    let vb =
        semi_diffusion::loading::var_builder(&m.unet.weights, DType::F32, &Device::Cpu).unwrap();
    let w = vb.get(3, "w").unwrap();
    assert_eq!(w.to_vec1::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
}

#[test]
fn fp16_variant_is_chosen_when_asked_or_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    complete(root);
    weights(root, "unet/diffusion_pytorch_model.fp16.safetensors", 5.0);
    let full = ModelFiles::check(root, Variant::Full).unwrap();
    assert!(full.unet.weights[0].ends_with("unet/diffusion_pytorch_model.safetensors"));
    let half = ModelFiles::check(root, Variant::Fp16).unwrap();
    assert!(half.unet.weights[0].ends_with("unet/diffusion_pytorch_model.fp16.safetensors"));
    // text_encoder has no fp16 file: the full one is used.
    assert!(half.text_encoder.weights[0].ends_with("text_encoder/model.safetensors"));
    std::fs::remove_file(root.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let only = ModelFiles::check(root, Variant::Full).unwrap();
    assert!(only.unet.weights[0].ends_with("unet/diffusion_pytorch_model.fp16.safetensors"));
}

#[test]
fn every_problem_is_listed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    complete(root);
    std::fs::remove_file(root.join("unet/config.json")).unwrap();
    std::fs::remove_file(root.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    write(
        root,
        "text_encoder/config.json",
        r#"{"hidden_act": "relu"}"#,
    );
    std::fs::remove_file(root.join("tokenizer/merges.txt")).unwrap();
    write(root, "scheduler/scheduler_config.json", "{not json");
    let err = format!("{:#}", ModelFiles::check(root, Variant::Full).unwrap_err());
    assert!(err.contains("is incomplete"), "{err}");
    for needle in [
        "missing unet/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "tokenizer/vocab.json + tokenizer/merges.txt",
        "malformed text_encoder/config.json (unsupported value \"relu\" for field `hidden_act`)",
        "scheduler/scheduler_config.json (malformed JSON",
    ] {
        assert!(err.contains(needle), "`{needle}` not in: {err}");
    }
}

#[test]
fn pickle_weights_are_refused_and_truncated_safetensors_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    complete(root);
    std::fs::remove_file(root.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    write(root, "unet/diffusion_pytorch_model.bin", "pickle");
    let te = root.join("text_encoder/model.safetensors");
    let bytes = std::fs::read(&te).unwrap();
    std::fs::write(&te, &bytes[..bytes.len() - 4]).unwrap();
    let err = format!("{:#}", ModelFiles::check(root, Variant::Full).unwrap_err());
    assert!(
        err.contains("unet/diffusion_pytorch_model.bin (only safetensors weights are supported"),
        "{err}"
    );
    assert!(
        err.contains("text_encoder/model.safetensors (truncated"),
        "{err}"
    );
    std::fs::write(&te, &bytes[..5]).unwrap();
    assert!(check_safetensors(&te).is_err());
    std::fs::write(&te, [0xff; 16]).unwrap();
    assert!(check_safetensors(&te).is_err());
}

#[test]
fn pixel_space_models_need_no_vae() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    complete(root);
    write(
        root,
        "model_index.json",
        &INDEX.replace(r#""vae":["diffusers","AutoencoderKL"],"#, ""),
    );
    std::fs::remove_dir_all(root.join("vae")).unwrap();
    let m = ModelFiles::check(root, Variant::Full).unwrap();
    assert!(m.vae.is_none());
    assert_eq!(m.vae_scale_factor(), 1);
}

#[test]
fn hf_cache_resolution() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--acme--tiny-sd");
    let err = resolve_in_cache(cache.path(), "acme/tiny-sd")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("acme/tiny-sd not found in the Hugging Face cache"),
        "{err}"
    );
    assert!(err.contains("download it with"), "{err}");
    std::fs::create_dir_all(repo.join("snapshots/aaa")).unwrap();
    // No refs/main: the only snapshot.
    assert_eq!(
        resolve_in_cache(cache.path(), "acme/tiny-sd").unwrap(),
        repo.join("snapshots/aaa")
    );
    std::fs::create_dir_all(repo.join("snapshots/bbb")).unwrap();
    write(&repo, "refs/main", "bbb\n");
    assert_eq!(
        resolve_in_cache(cache.path(), "acme/tiny-sd").unwrap(),
        repo.join("snapshots/bbb")
    );
    // refs/main naming a missing snapshot: the newest one.
    write(&repo, "refs/main", "ccc");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::create_dir_all(repo.join("snapshots/ddd")).unwrap();
    assert_eq!(
        resolve_in_cache(cache.path(), "acme/tiny-sd").unwrap(),
        repo.join("snapshots/ddd")
    );
}

#[test]
fn model_specs() {
    assert!(is_repo_id("runwayml/stable-diffusion-v1-5"));
    assert!(is_repo_id("stabilityai/stable-diffusion-2-1-base"));
    assert!(!is_repo_id("/abs/path"));
    assert!(!is_repo_id("a/b/c"));
    assert!(!is_repo_id("./x"));
    assert!(!is_repo_id("noslash"));
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        resolve_model(dir.path().to_str().unwrap()).unwrap(),
        dir.path()
    );
    let missing = dir.path().join("nope");
    let err = resolve_model(missing.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    write(dir.path(), "f.ckpt", "x");
    let err = resolve_model(dir.path().join("f.ckpt").to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a file"), "{err}");
}

#[test]
fn fingerprint_tracks_content_not_location() {
    let a = tempfile::tempdir().unwrap();
    complete(a.path());
    let fa = ModelFiles::check(a.path(), Variant::Full)
        .unwrap()
        .fingerprint()
        .unwrap();
    assert_eq!(fa.len(), 64);

    // The same files arranged like the HF cache: weights are symlinks to sha256-named blobs.
    let cache = tempfile::tempdir().unwrap();
    let snap = cache.path().join("snapshots/abc");
    complete(&snap);
    let blobs = cache.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let w = snap.join("unet/diffusion_pytorch_model.safetensors");
    let digest = file_sha256(&w).unwrap();
    std::fs::rename(&w, blobs.join(&digest)).unwrap();
    std::os::unix::fs::symlink(blobs.join(&digest), &w).unwrap();
    assert_eq!(file_sha256(&w).unwrap(), digest);
    let fb = ModelFiles::check(&snap, Variant::Full)
        .unwrap()
        .fingerprint()
        .unwrap();
    assert_eq!(fa, fb);

    // Changing a weight or a config changes it; the VAE does not take part.
    weights(a.path(), "vae/diffusion_pytorch_model.safetensors", 7.0);
    assert_eq!(
        ModelFiles::check(a.path(), Variant::Full)
            .unwrap()
            .fingerprint()
            .unwrap(),
        fa
    );
    weights(a.path(), "text_encoder/model.safetensors", 7.0);
    let fc = ModelFiles::check(a.path(), Variant::Full)
        .unwrap()
        .fingerprint()
        .unwrap();
    assert_ne!(fc, fa);
    write(
        a.path(),
        "unet/config.json",
        r#"{"sample_size": 16, "cross_attention_dim": 512}"#,
    );
    assert_ne!(
        ModelFiles::check(a.path(), Variant::Full)
            .unwrap()
            .fingerprint()
            .unwrap(),
        fc
    );
}

#[test]
fn integer_tensors_and_tensors_without_a_place_are_refused_by_name() {
    use semi_diffusion::loading::checked_var_builder;
    use semi_diffusion::precision::Precision;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    let f = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap();
    let i = Tensor::new(&[1i64, 2, 3], &Device::Cpu).unwrap();
    let tensors = [
        ("w".to_string(), f.clone()),
        ("counts".to_string(), i.clone()),
        ("stray.weight".to_string(), f),
        ("text_model.embeddings.position_ids".to_string(), i),
    ];
    candle_core::safetensors::save(&tensors.into_iter().collect(), &p).unwrap();
    let (vb, used) = checked_var_builder(
        std::slice::from_ref(&p),
        Precision::uniform(DType::F32),
        &Device::Cpu,
    )
    .unwrap();
    vb.get(3, "w").unwrap();
    let err = vb.get(3, "counts").unwrap_err().to_string();
    assert!(err.contains("tensor counts is I64"), "{err}");
    // `stray.weight` was never asked for; `counts` was (and refused); position_ids is a buffer.
    let err = used.check_all_used().unwrap_err().to_string();
    assert!(
        err.contains("1 tensor(s) this model has no place for: stray.weight"),
        "{err}"
    );
}

/// An SDXL folder is checked for its second text encoder and tokenizer in the same single error,
/// and an XL pipeline class we do not run is named.
#[test]
fn sdxl_folders_are_checked_whole() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for entry in [
        "model_index.json",
        "unet",
        "vae",
        "scheduler",
        "text_encoder",
        "tokenizer",
    ] {
        copy(&fixture.join(entry), &root.join(entry));
    }
    let files = ModelFiles::check(&fixture, Variant::Full).unwrap();
    assert_eq!(files.family, semi_diffusion::family::Family::Sdxl);
    assert!(files.text_2.is_some());
    let err = ModelFiles::check(root, Variant::Full)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("text_encoder_2/config.json") && err.contains("tokenizer_2/vocab.json"),
        "{err}"
    );
    assert!(!err.contains("cross_attention_dim"), "{err}");

    let index = std::fs::read_to_string(fixture.join("model_index.json")).unwrap();
    write(
        root,
        "model_index.json",
        &index.replace(
            "StableDiffusionXLPipeline",
            "StableDiffusionXLImg2ImgPipeline",
        ),
    );
    let err = ModelFiles::check(root, Variant::Full)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("StableDiffusionXLImg2ImgPipeline is not supported"),
        "{err}"
    );
}

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}
