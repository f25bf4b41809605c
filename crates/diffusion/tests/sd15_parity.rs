//! The full-size SD 1.5 UNet (random weights rebuilt from the seed rule of `tools/README.md`)
//! matches diffusers: the CFG-batch output and the probe layer's attention at t = 981, on 32x32
//! latents to keep the test short. The references were made by `tools/make_fixtures.py`.

use candle_core::{DType, Device, Tensor};
use semi_bench::random_weights::{build_seeded, DEFAULT_BASE_SEED};
use semi_diffusion::config::UNetConfig;
use semi_diffusion::controller::AttentionRecorder;
use semi_diffusion::unet::{ForwardOptions, UNet2DConditionModel, UNetOutput};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sd15-random")
        .join(name)
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt() as f32
}

#[test]
fn sd15_size_unet_matches_diffusers() {
    let dev = Device::Cpu;
    let cfg = UNetConfig::from_file(&fixture("unet/config.json")).unwrap();
    let refs = candle_core::safetensors::load(fixture("reference.safetensors"), &dev).unwrap();
    let unet = build_seeded(DEFAULT_BASE_SEED, DType::F32, &dev, |vb| {
        UNet2DConditionModel::new(vb, &cfg)
    })
    .unwrap();

    let sample = &refs["in_sample"];
    let text = &refs["in_text"];
    // The inputs are themselves torch.randn draws: our generator must reproduce them.
    let dims = sample.dims().to_vec();
    assert!(
        rel_l2(
            &semi_diffusion::noise::randn(7, &dims, &dev).unwrap(),
            sample
        ) < 1e-6
    );

    let batch = Tensor::cat(&[sample, sample], 0).unwrap();
    let mut rec =
        AttentionRecorder::for_paths(["down_blocks.2.attentions.1.transformer_blocks.0.attn2"]);
    let out = unet
        .forward_with(
            &batch,
            981.0,
            text,
            ForwardOptions {
                controller: Some(&mut rec),
                conditional_rows: Some(vec![false, true]),
                ..Default::default()
            },
        )
        .unwrap();
    let UNetOutput::Full(out) = out else {
        panic!("no early stop was asked for")
    };
    let err = rel_l2(&out, &refs["out_b2"]);
    assert!(err < 1e-4, "UNet output relative L2 error {err}");

    assert_eq!(rec.records.len(), 1);
    let probs = rec.records[0].2.squeeze(0).unwrap();
    let err = rel_l2(&probs, &refs["probe_probs"]);
    assert!(err < 1e-4, "probe attention relative L2 error {err}");
}
