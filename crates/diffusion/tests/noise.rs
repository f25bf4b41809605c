//! torch.randn parity: committed references from tools/make_text_fixtures.py (torch 2.15 CPU,
//! AVX-512 kernel, which gives the same values as the AVX2 one).
use candle_core::{Device, Tensor};
use semi_diffusion::noise::{randn, TorchGenerator};
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap()
}

/// Max absolute difference and the number of elements that are not bit-identical.
fn compare(ours: &[f32], theirs: &[f32]) -> (f32, usize) {
    assert_eq!(ours.len(), theirs.len());
    let mut max = 0f32;
    let mut differing = 0;
    for (a, b) in ours.iter().zip(theirs) {
        max = max.max((a - b).abs());
        differing += usize::from(a.to_bits() != b.to_bits());
    }
    (max, differing)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn randn_matches_torch_for_every_seed_and_shape() {
    let refs = fixture("randn.safetensors");
    assert_eq!(refs.len(), 32);
    let mut total_differing = 0;
    for (key, expected) in &refs {
        let (seed, shape) = key.strip_prefix("seed").unwrap().split_once('_').unwrap();
        let seed: u64 = seed.parse().unwrap();
        let shape: Vec<usize> = shape.split('x').map(|d| d.parse().unwrap()).collect();
        assert_eq!(expected.dims(), &shape[..], "{key}");
        let ours = randn(seed, &shape, &Device::Cpu).unwrap();
        assert_eq!(ours.dims(), &shape[..]);
        let (max, differing) = compare(&flat(&ours), &flat(expected));
        assert!(max <= 1e-6, "{key}: max abs diff {max}");
        total_differing += differing;
    }
    assert_eq!(total_differing, 0, "values not bit-identical to torch");
}

#[test]
fn consecutive_draws_continue_the_torch_stream() {
    let refs = fixture("randn_stream.safetensors");
    let mut g = TorchGenerator::manual_seed(7);
    for (key, n) in [
        ("draw0_1x4x8x8", 256),
        ("draw1_5", 5),
        ("draw2_3", 3),
        ("draw3_20", 20),
    ] {
        let (max, differing) = compare(&g.randn_vec(n), &flat(&refs[key]));
        assert!(
            max <= 1e-6 && differing == 0,
            "{key}: max {max}, {differing} differ"
        );
    }
}

#[test]
fn reseeding_restarts_the_stream() {
    let mut g = TorchGenerator::manual_seed(3);
    let a = g.randn_vec(5);
    g.set_seed(3);
    assert_eq!(a, g.randn_vec(5));
    assert_ne!(a, g.randn_vec(5));
    assert!(randn(0, &[0], &Device::Cpu).unwrap().dims() == [0]);
}
