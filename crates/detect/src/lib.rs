//! Object detectors for evaluating generated images: YOLOv8 detect on candle ([`yolo`]), with
//! ultralytics' preprocessing ([`letterbox`]), head decoding and NMS, behind semi's `Detector`
//! trait ([`YoloDetector`]), held to ultralytics on seeded random weights
//! (`tests/yolo_parity.rs`, fixtures from `tools/make_yolo_fixtures.py`).

pub mod detector;
pub mod letterbox;
pub mod yolo;

pub use detector::YoloDetector;
