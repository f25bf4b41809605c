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

#[test]
fn linear_matches_candle_with_and_without_bias() {
    // One row (single-threaded product) and many rows of a 3-D input (threaded).
    for (dims, out, seed) in [(vec![1, 1, 33], 7, 30), (vec![2, 300, 64], 130, 31)] {
        let x = rand(seed, &dims);
        let w = rand(seed + 1, &[out, dims[2]]);
        let b = rand(seed + 2, &[out]);
        let want = candle_nn::Linear::new(w.clone(), Some(b.clone()))
            .forward(&x)
            .unwrap();
        assert!(max_rel(&linear::linear(&x, &w, Some(&b)).unwrap(), &want) < 1e-5);
        let want = candle_nn::Linear::new(w.clone(), None).forward(&x).unwrap();
        assert!(max_rel(&linear::linear(&x, &w, None).unwrap(), &want) < 1e-5);
    }
    let x = rand(1, &[2, 5]);
    assert!(linear::linear(&x, &rand(2, &[3, 4]), None).is_err());
}

#[test]
fn conv1x1_matches_candle() {
    for (b, ci, co, h, w, seed) in [(1, 3, 5, 4, 7, 40), (2, 96, 130, 33, 35, 41)] {
        let x = rand(seed, &[b, ci, h, w]);
        let weight = rand(seed + 1, &[co, ci, 1, 1]);
        let bias = rand(seed + 2, &[co]);
        let want = candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), Default::default())
            .forward(&x)
            .unwrap();
        let flat = weight.squeeze(3).unwrap().squeeze(2).unwrap();
        let got = linear::conv1x1(&x, &flat, &bias, false).unwrap();
        let fused = linear::conv1x1(&x, &flat, &bias, true).unwrap();
        assert_eq!(max_rel(&fused, &elementwise::silu(&got).unwrap()), 0.0);
        assert!(max_rel(&got, &want) < 1e-5, "b{b} {ci}->{co} {h}x{w}");
    }
}

#[test]
fn conv3x3_epilogue_equals_the_separate_additions_exactly() {
    let (b, ci, co, h, w) = (2, 6, 10, 9, 13);
    let x = rand(50, &[b, ci, h, w]);
    let taps = conv::taps_from_oihw(&rand(51, &[co, ci, 3, 3])).unwrap();
    let bias = rand(52, &[co]);
    let temb = rand(53, &[b, co]);
    let residual = rand(54, &[b, co, h, w]);
    let plain = conv::conv3x3(&x, &taps, Some(&bias)).unwrap();
    let want = plain
        .broadcast_add(&temb.unsqueeze(2).unwrap().unsqueeze(3).unwrap())
        .unwrap()
        .add(&residual)
        .unwrap();
    let epilogue = conv::Epilogue {
        channel_add: Some(&temb),
        residual: Some(&residual),
        silu: false,
    };
    let got = conv::conv3x3_then(&x, &taps, Some(&bias), epilogue).unwrap();
    let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    let silu = conv::Epilogue {
        silu: true,
        ..epilogue
    };
    let got = conv::conv3x3_then(&x, &taps, Some(&bias), silu).unwrap();
    let want = elementwise::silu(&want).unwrap();
    let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    let bad = conv::Epilogue {
        channel_add: Some(&bias),
        ..Default::default()
    };
    assert!(conv::conv3x3_then(&x, &taps, Some(&bias), bad).is_err());
}

#[test]
fn im2col_conv_matches_candle() {
    // YOLOv8's stride-2 downsampler, a 3-channel stem, odd sizes, a 5x5 and a padding-free case.
    for (b, ci, co, h, w, k, stride, pad, seed) in [
        (2, 8, 16, 13, 10, 3, 2, 1, 1),
        (1, 3, 16, 32, 32, 3, 2, 1, 2),
        (3, 4, 5, 9, 11, 5, 1, 2, 3),
        (1, 6, 7, 8, 8, 3, 1, 0, 4),
    ] {
        let x = rand(seed, &[b, ci, h, w]);
        let weight = rand(seed + 10, &[co, ci, k, k]);
        let bias = rand(seed + 20, &[co]);
        let cfg = candle_nn::Conv2dConfig {
            padding: pad,
            stride,
            ..Default::default()
        };
        let want = candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), cfg)
            .forward(&x)
            .unwrap();
        let flat = weight.reshape((co, ci * k * k)).unwrap();
        let got = im2col::conv(&x, &flat, &bias, (k, stride, pad), false).unwrap();
        let err = max_rel(&got, &want);
        assert!(err < 1e-5, "{k}x{k}/{stride} {:?}: {err}", x.dims());
        // SiLU in the output pass: exactly the separate kernel's values.
        let fused = im2col::conv(&x, &flat, &bias, (k, stride, pad), true).unwrap();
        let separate = elementwise::silu(&got).unwrap();
        assert_eq!(max_rel(&fused, &separate), 0.0);
    }
}

#[test]
fn silu_matches_candle() {
    let x = (rand(7, &[3, 5, 1000]) * 30.0).unwrap();
    let err = max_rel(&elementwise::silu(&x).unwrap(), &x.silu().unwrap());
    assert!(err < 1e-6, "{err}");
}
