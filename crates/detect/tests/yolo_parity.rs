//! YOLOv8n and YOLOv8s against ultralytics on weights rebuilt from the seed rule of
//! `tools/make_yolo_fixtures.py`: the head's decoded output within 1e-4 relative; ultralytics'
//! NMS on made-up predictions (best class and multi-label): the same boxes (count, order,
//! classes, corners within 1e-3 px); LetterBox byte for byte; and PNG to boxes end to end.

use candle_core::{DType, Device, Tensor};
use semi_detect::letterbox::{letterbox, resize_linear};
use semi_detect::yolo::{non_max_suppression, Nms, Scale, YoloV8};
use semi_detect::YoloDetector;
use semi_toyworld::RgbImage;
use std::path::PathBuf;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../eval/tests/fixtures/yolo")
        .join(name)
}

fn fixture(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_path(name), &Device::Cpu).unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let n = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    (d / n).sqrt()
}

/// The seeded network of `size`; `spread` applies the pipeline fixture's class-logit spread.
fn seeded(size: &str, spread: bool) -> YoloV8 {
    let scale = Scale::named(size).unwrap();
    let mut weights = semi_bench::random_weights::seeded_tensors(2000, DType::F32, |vb| {
        YoloV8::new(vb, scale, 80).map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    })
    .unwrap();
    for (name, t) in weights.iter_mut() {
        if name.ends_with("running_mean") {
            *t = (&*t - 1.0).unwrap();
        }
        let class_out = (0..3).any(|i| name.starts_with(&format!("model.22.cv3.{i}.2.")));
        if spread && class_out {
            *t = (&*t * 100.0).unwrap();
            if name.ends_with("bias") {
                *t = (&*t - 16.0).unwrap();
            }
        }
    }
    let vb = candle_nn::VarBuilder::from_tensors(
        weights.into_iter().collect(),
        DType::F32,
        &Device::Cpu,
    );
    YoloV8::new(vb, scale, 80).unwrap()
}

fn check(size: &str) {
    let model = seeded(size, false);
    let image = &fixture("image.safetensors")["image"];
    let want = fixture(&format!("yolov8{size}.safetensors"));
    let raw = model.forward(image).unwrap();
    assert_eq!(raw.dims(), want["raw"].dims());
    let err = rel_err(&raw, &want["raw"]);
    eprintln!("yolov8{size}: raw output rel err {err:.2e}");
    assert!(err < 1e-4, "yolov8{size}: {err:e}");
}

/// Boxes against ultralytics' rows (x0, y0, x1, y1, score, class), in order.
fn same_boxes(what: &str, got: &[semi_detect::yolo::Detection], want: &Tensor) {
    let want: Vec<Vec<f32>> = want.to_vec2().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: boxes after NMS");
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.class, w[5] as usize, "{what}");
        assert_eq!(g.score, w[4], "{what}");
        for (a, b) in [g.x0, g.y0, g.x1, g.y1].iter().zip(&w[..4]) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("{what}: {} boxes, corners within {worst:.1e} px", got.len());
    assert!(worst < 1e-3, "{what}: {worst}");
}

#[test]
fn nms_matches_ultralytics() {
    let f = fixture("nms.safetensors");
    let pred = f["pred"].get(0).unwrap();
    let best = Nms {
        multi_label: false,
        ..Nms::default()
    };
    same_boxes(
        "best class",
        &non_max_suppression(&pred, &best).unwrap(),
        &f["nms"],
    );
    same_boxes(
        "multi-label",
        &non_max_suppression(&pred, &Nms::default()).unwrap(),
        &f["nms_multi"],
    );
}

/// ultralytics' LetterBox and cv2's 8-bit INTER_LINEAR, byte for byte.
#[test]
fn letterbox_matches_ultralytics() {
    let f = fixture("letterbox.safetensors");
    let bytes = |t: &Tensor| -> Vec<u8> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let mut checked = 0;
    for (name, want) in &f {
        let Some(rest) = name.strip_prefix("resize_") else {
            continue;
        };
        let (src, dst) = rest.split_once("_to_").unwrap();
        let dims = |s: &str| -> (usize, usize) {
            let (h, w) = s.split_once('x').unwrap();
            (h.parse().unwrap(), w.parse().unwrap())
        };
        let ((h, w), (nh, nw)) = (dims(src), dims(dst));
        let got = resize_linear(&bytes(&f[&format!("src_{src}")]), w, h, nw, nh);
        assert!(got == bytes(want), "{name}: not cv2's bytes");
        checked += 1;
    }
    for stem in ["scene", "tall"] {
        let img = RgbImage::load_png(&fixture_path(&format!("{stem}.png"))).unwrap();
        for size in [160, 64] {
            let (got, _) = letterbox(
                img.as_raw(),
                img.width() as usize,
                img.height() as usize,
                size,
            );
            let want = bytes(&f[&format!("{stem}_{size}")]);
            assert!(got == want, "{stem} at {size}: not ultralytics' bytes");
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}

/// PNG to boxes in image pixels, as ultralytics does it, on the seeded YOLOv8n with its class
/// logits spread (see the fixture script), conf 0.25, multi-label, at 160: the network's input
/// from the PNGs gives ultralytics' output within 1e-4, and NMS and the mapping back give
/// ultralytics' boxes from that output (the spread amplifies float noise too much to compare
/// boxes after two networks).
#[test]
fn pipeline_matches_ultralytics() {
    let f = fixture("pipeline.safetensors");
    let mut detector = YoloDetector::with_model(seeded("n", true), Device::Cpu, None).unwrap();
    detector.size = 160;
    detector.nms.conf = 0.25;
    let stems = ["scene", "tall"];
    let images: Vec<RgbImage> = stems
        .iter()
        .map(|s| RgbImage::load_png(&fixture_path(&format!("{s}.png"))).unwrap())
        .collect();
    let refs: Vec<&RgbImage> = images.iter().collect();
    // Both images in one batch, as `semi eval detect` runs them.
    let (x, places) = detector.prepare(&refs).unwrap();
    let out = detector.model().forward(&x).unwrap();
    let want_raw = Tensor::cat(
        &stems
            .iter()
            .map(|s| f[&format!("{s}_raw")].clone())
            .collect::<Vec<_>>(),
        0,
    )
    .unwrap();
    let err = rel_err(&out, &want_raw);
    eprintln!("pipeline: raw output rel err {err:.2e}");
    assert!(err < 1e-4, "{err:e}");
    let found = detector.finish(&want_raw, &places).unwrap();
    for (stem, dets) in stems.iter().zip(&found) {
        let want: Vec<Vec<f32>> = f[*stem].to_vec2().unwrap();
        assert_eq!(dets.len(), want.len(), "{stem}: boxes");
        let mut worst = 0f64;
        for (d, w) in dets.iter().zip(&want) {
            assert_eq!(d.category, detector.names()[w[5] as usize], "{stem}");
            assert_eq!(d.score, f64::from(w[4]), "{stem}");
            for (a, b) in d.bbox.iter().zip(&w[..4]) {
                worst = worst.max((a - f64::from(*b)).abs());
            }
        }
        eprintln!(
            "pipeline {stem}: {} boxes, corners within {worst:.1e} px",
            dets.len()
        );
        assert!(worst < 1e-3, "{stem}: {worst}");
    }
}

#[test]
fn yolov8n_matches_ultralytics() {
    check("n");
}

#[test]
fn yolov8s_matches_ultralytics() {
    check("s");
}

/// A real ultralytics checkpoint through `tools/convert_yolo.py`: `SEMI_YOLO_FILE` (the
/// safetensors) and `SEMI_YOLO_RAW` (ultralytics' `raw` output on the fixture image).
#[test]
#[ignore = "needs SEMI_YOLO_FILE and SEMI_YOLO_RAW (tools/convert_yolo.py output)"]
fn converted_checkpoint_matches_ultralytics() {
    let file = PathBuf::from(std::env::var("SEMI_YOLO_FILE").unwrap());
    let want =
        candle_core::safetensors::load(std::env::var("SEMI_YOLO_RAW").unwrap(), &Device::Cpu)
            .unwrap();
    let model = YoloV8::from_file(&file, &Device::Cpu).unwrap();
    let raw = model
        .forward(&fixture("image.safetensors")["image"])
        .unwrap();
    let err = rel_err(&raw, &want["raw"]);
    eprintln!("{}: raw output rel err {err:.2e}", file.display());
    assert!(err < 1e-4, "{err:e}");
}
