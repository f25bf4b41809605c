//! CLIPTextModel parity with transformers 5.24 on tiny random models
//! (tools/make_text_fixtures.py): relative L2 error < 1e-4 in f32.
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use semi_diffusion::config::TextEncoderConfig;
use semi_diffusion::text_encoder::ClipTextModel;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(dir: &str) -> (ClipTextModel, TextEncoderConfig) {
    let dir = fixture(dir);
    let cfg = TextEncoderConfig::from_file(&dir.join("config.json")).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    (ClipTextModel::new(vb, &cfg).unwrap(), cfg)
}

fn relative_l2(ours: &Tensor, theirs: &Tensor) -> f64 {
    let diff = (ours - theirs).unwrap().sqr().unwrap().sum_all().unwrap();
    let norm = theirs.sqr().unwrap().sum_all().unwrap();
    (diff.to_scalar::<f32>().unwrap() as f64 / norm.to_scalar::<f32>().unwrap() as f64).sqrt()
}

fn check(dir: &str, prefixed: bool) {
    let keys = candle_core::safetensors::load(fixture(dir).join("model.safetensors"), &Device::Cpu)
        .unwrap();
    assert_eq!(
        keys.contains_key("text_model.embeddings.token_embedding.weight"),
        prefixed
    );
    let (model, cfg) = load(dir);
    let refs =
        candle_core::safetensors::load(fixture(dir).join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let ids = refs["input_ids"].to_dtype(DType::U32).unwrap();
    let expected = &refs["last_hidden_state"];
    let ours = model.forward(&ids).unwrap();
    assert_eq!(ours.dims(), &[2, 77, cfg.hidden_size]);
    let err = relative_l2(&ours, expected);
    eprintln!("{dir}: relative L2 error {err:.2e}");
    assert!(err < 1e-4, "{dir}: relative L2 error {err}");
    // A shorter sequence is the prefix of the full one (causal attention).
    let short = model.forward(&ids.narrow(1, 0, 12).unwrap()).unwrap();
    let err = relative_l2(&short, &expected.narrow(1, 0, 12).unwrap());
    assert!(err < 1e-4, "{dir} prefix: relative L2 error {err}");
}

#[test]
fn quick_gelu_with_text_model_prefix_matches_transformers() {
    check("text-encoder-quick_gelu", true);
}

#[test]
fn gelu_without_prefix_matches_transformers() {
    check("text-encoder-gelu", false);
}

#[test]
fn bad_input_is_an_error() {
    let (model, _) = load("text-encoder-gelu");
    let too_long = Tensor::zeros((1, 78), DType::U32, &Device::Cpu).unwrap();
    let err = model.forward(&too_long).err().unwrap();
    assert!(err.to_string().contains("sequence length 78"), "{err}");
    // Fewer layers in the config than in the file (SD 2.x uses 23 of 24) is fine; more is not.
    let dir = fixture("text-encoder-gelu");
    let mut cfg = TextEncoderConfig::from_file(&dir.join("config.json")).unwrap();
    cfg.num_hidden_layers = 3;
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    assert!(ClipTextModel::new(vb.clone(), &cfg).is_err());
    // num_hidden_layers is honoured: one layer gives another output.
    cfg.num_hidden_layers = 1;
    let one = ClipTextModel::new(vb, &cfg).unwrap();
    let refs =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let ids = refs["input_ids"].to_dtype(DType::U32).unwrap();
    let err = relative_l2(&one.forward(&ids).unwrap(), &refs["last_hidden_state"]);
    assert!(err > 0.05, "one layer should differ from two: {err}");
}
