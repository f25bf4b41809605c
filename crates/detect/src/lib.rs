//! Object detectors for evaluating generated images: YOLOv8 detect on candle ([`yolo`]), with
//! ultralytics' head decoding and NMS, held to ultralytics on seeded random weights
//! (`tests/yolo_parity.rs`, fixtures from `tools/make_yolo_fixtures.py`).

pub mod yolo;
