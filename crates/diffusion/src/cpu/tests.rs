//! Each kernel against candle's composed ops on random data, including shapes that exercise
//! partial blocks and tiles.

use super::*;
use crate::nn::attention as reference;
use candle_core::{Device, Module, Tensor};

fn rand(seed: u64, dims: &[usize]) -> Tensor {
    crate::noise::randn(seed, dims, &Device::Cpu).unwrap()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap();
    (diff / scale).unwrap().to_scalar::<f32>().unwrap()
}

fn composed_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Tensor {
    let (q, k, v) = (
        reference::split_heads(q, heads).unwrap(),
        reference::split_heads(k, heads).unwrap(),
        reference::split_heads(v, heads).unwrap(),
    );
    let scale = 1.0 / (q.dim(3).unwrap() as f64).sqrt();
    let p = reference::softmax(&reference::logits(&q, &k, scale, false).unwrap()).unwrap();
    reference::merge_heads(&reference::weighted_values(&p, &v).unwrap()).unwrap()
}

#[test]
fn fused_attention_matches_composed_ops() {
    // Self-attention with a partial query block, and cross-attention with 77 keys.
    for (b, nq, nk, heads, d, seed) in [
        (2, 150, 150, 3, 8, 1),
        (1, 70, 77, 2, 40, 2),
        (1, 64, 5, 1, 16, 3),
    ] {
        let q = (rand(seed, &[b, nq, heads * d]) * 2.0).unwrap();
        let k = rand(seed + 10, &[b, nk, heads * d]);
        let v = rand(seed + 20, &[b, nk, heads * d]);
        let scale = 1.0 / (d as f32).sqrt();
        let got = attention::attend(&q, &k, &v, heads, scale).unwrap();
        let want = composed_attention(&q, &k, &v, heads);
        let err = max_rel(&got, &want);
        assert!(err < 1e-5, "b{b} nq{nq} nk{nk} h{heads} d{d}: {err}");
    }
    let q = rand(1, &[1, 4, 6]);
    assert!(attention::attend(&q, &q, &q, 4, 1.0).is_err());
}

#[test]
fn group_norm_matches_candle_with_and_without_silu() {
    let x = rand(4, &[2, 64, 9, 11]).affine(3.0, 5.0).unwrap();
    let w = rand(5, &[64]);
    let b = rand(6, &[64]);
    let gn = candle_nn::GroupNorm::new(w.clone(), b.clone(), 64, 32, 1e-6).unwrap();
    let want = gn.forward(&x).unwrap();
    let got = group_norm::group_norm(&x, 32, &w, &b, 1e-6, false).unwrap();
    assert!(max_rel(&got, &want) < 1e-5);
    let got = group_norm::group_norm(&x, 32, &w, &b, 1e-6, true).unwrap();
    assert!(max_rel(&got, &want.silu().unwrap()) < 1e-5);
    assert!(group_norm::group_norm(&x, 5, &w, &b, 1e-6, false).is_err());
}

#[test]
fn conv3x3_matches_candle_single_and_tiled() {
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    // 5x7: one tile; 2x20x130 (2640 padded pixels per image): several tiles per image; then a
    // smaller one again, which reuses the (now dirty) padded buffer.
    for (b, ci, co, h, w, seed) in [
        (1, 3, 5, 5, 7, 7),
        (2, 6, 4, 20, 130, 8),
        (1, 2, 3, 4, 3, 9),
    ] {
        let x = rand(seed, &[b, ci, h, w]);
        let weight = rand(seed + 1, &[co, ci, 3, 3]);
        let bias = rand(seed + 2, &[co]);
        let want = candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), cfg)
            .forward(&x)
            .unwrap();
        let taps = conv::taps_from_oihw(&weight).unwrap();
        let got = conv::conv3x3(&x, &taps, Some(&bias)).unwrap();
        assert!(max_rel(&got, &want) < 1e-5, "{:?}", x.dims());
        let back = conv::oihw_from_taps(&taps).unwrap();
        assert_eq!(max_rel(&back, &weight), 0.0);
    }
}

#[test]
fn geglu_matches_chunk_and_gelu_erf() {
    let x = rand(11, &[2, 70, 24]).affine(4.0, 0.0).unwrap();
    let parts = x.chunk(2, 2).unwrap();
    let want = (&parts[0] * parts[1].gelu_erf().unwrap()).unwrap();
    let got = elementwise::geglu(&x).unwrap();
    assert!(max_rel(&got, &want) < 1e-6, "{}", max_rel(&got, &want));
    assert!(elementwise::geglu(&rand(1, &[2, 3])).is_err());
}

#[test]
fn fused_upsample_conv_matches_upsample_then_conv() {
    let x = rand(12, &[2, 3, 4, 5]);
    let weight = rand(13, &[4, 3, 3, 3]);
    let bias = rand(14, &[4]);
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let want = candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), cfg)
        .forward(&x.upsample_nearest2d(8, 10).unwrap())
        .unwrap();
    let taps = conv::taps_from_oihw(&weight).unwrap();
    let got = conv::upsample2x_conv3x3(&x, &taps, Some(&bias)).unwrap();
    assert!(max_rel(&got, &want) < 1e-5);
}
