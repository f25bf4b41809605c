//! `semi bench --only YOLOv8`: the YOLOv8n and YOLOv8m detectors (`semi-detect`) on 640x640
//! images at batch 1 and 8, the work of `semi eval detect` per batch: the letterbox (a copy at
//! 640), the network and ultralytics' validation NMS. Random weights, with the class branch's
//! bias set to ultralytics' prior (`Detect.bias_init`: `log(5 / nc / (640 / stride)^2)`), so
//! that, as with trained weights and ultralytics' own initialisation on the PyTorch side, few
//! boxes pass the 0.001 threshold and the rows time the network, not a flood of random boxes.

use crate::models::{requested, time_row, BenchOptions, BenchRow};
use crate::random_weights::{seeded_tensors, DEFAULT_BASE_SEED};
use anyhow::Result;
use candle_core::DType;
use semi_detect::yolo::{Scale, YoloV8, STRIDES};
use semi_detect::YoloDetector;
use semi_toyworld::RgbImage;

/// The rows' names, as `tools/bench_torch.py` names them.
pub fn row_name(size: &str, batch: usize) -> String {
    format!("YOLOv8{size} detect, 640x640, batch {batch}")
}

/// The YOLOv8 rows that `opts.only` names.
pub fn detect_rows(
    opts: &BenchOptions,
    rows: &mut Vec<BenchRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    for size in ["n", "m"] {
        let wanted: Vec<usize> = [1, 8]
            .into_iter()
            .filter(|&b| requested(opts, &row_name(size, b)))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let scale = Scale::named(size)?;
        let build =
            |vb| YoloV8::new(vb, scale, 80).map_err(|e| candle_core::Error::Msg(format!("{e:#}")));
        let mut weights = seeded_tensors(DEFAULT_BASE_SEED, DType::F32, build)?;
        for (name, t) in weights.iter_mut() {
            if name.ends_with("running_mean") {
                *t = (&*t - 1.0)?;
            }
            for (i, stride) in STRIDES.iter().enumerate() {
                if *name == format!("model.22.cv3.{i}.2.bias") {
                    let prior = (5.0 / 80.0 / (640.0 / *stride as f64).powi(2)).ln();
                    *t = t.ones_like()?.affine(prior, 0.0)?;
                }
            }
        }
        let vb = candle_nn::VarBuilder::from_tensors(
            weights.into_iter().collect(),
            DType::F32,
            &opts.device,
        );
        let detector =
            YoloDetector::with_model(YoloV8::new(vb, scale, 80)?, opts.device.clone(), None)?;
        // A textured picture: any bytes do, the work does not depend on them.
        let bytes = (0..640 * 640 * 3u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let image = RgbImage::from_raw(640, 640, bytes)?;
        for batch in wanted {
            let images: Vec<&RgbImage> = (0..batch).map(|_| &image).collect();
            rows.push(time_row(
                &row_name(size, batch),
                opts.runs,
                &opts.device,
                progress,
                || detector.detect_images(&images),
            )?);
        }
    }
    Ok(())
}
