//! YOLOv8 behind semi's [`Detector`] trait: images letterboxed as ultralytics does
//! ([`crate::letterbox`]), run in batches, NMS with ultralytics' validation settings, and boxes
//! mapped back to the image.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use semi_eval::{CategoryMap, DetectRequest, Detection, Detector, COCO_CATEGORIES};
use semi_toyworld::RgbImage;

use crate::letterbox::{letterbox, Placement};
use crate::yolo::{non_max_suppression, Nms, YoloV8};

/// ultralytics' default image size.
pub const IMAGE_SIZE: usize = 640;

/// A YOLOv8 detect model with its class names and settings.
pub struct YoloDetector {
    model: YoloV8,
    device: Device,
    names: Vec<String>,
    label: String,
    /// The square side images are letterboxed to (a multiple of 32).
    pub size: usize,
    pub nms: Nms,
    /// Images per forward pass.
    pub batch: usize,
}

impl YoloDetector {
    /// Load a weights file (`tools/convert_yolo.py`'s safetensors). Class names come from the
    /// file's metadata; a file without them must have COCO's 80 classes.
    pub fn open(path: &Path, device: &Device) -> Result<YoloDetector> {
        let names = class_names(path)?;
        let model = YoloV8::from_file(path, device)?;
        let mut d = YoloDetector::with_model(model, device.clone(), names)
            .with_context(|| format!("{}", path.display()))?;
        d.label = format!(
            "{}:{}",
            d.label,
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        Ok(d)
    }

    /// A detector around a network already built, with ultralytics' validation settings. No
    /// names: the network must have COCO's 80 classes.
    pub fn with_model(
        model: YoloV8,
        device: Device,
        names: Option<Vec<String>>,
    ) -> Result<YoloDetector> {
        let names = match names {
            Some(n) if n.len() == model.num_classes => n,
            Some(n) => bail!(
                "{} class names for a head of {} classes",
                n.len(),
                model.num_classes
            ),
            None if model.num_classes == COCO_CATEGORIES.len() => {
                COCO_CATEGORIES.iter().map(|c| c.1.to_string()).collect()
            }
            None => bail!(
                "{} classes and no class names in the file's metadata (convert it with \
                 tools/convert_yolo.py)",
                model.num_classes
            ),
        };
        let label = format!("yolov8{}", model.scale.name().unwrap_or(""));
        Ok(YoloDetector {
            model,
            device,
            names,
            label,
            size: IMAGE_SIZE,
            nms: Nms::default(),
            batch: 8,
        })
    }

    /// The model's class names, in class order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Category ids for COCO results files, as ultralytics writes them: COCO's 1-90 ids when the
    /// classes are COCO's 80, else 1..=classes in class order.
    pub fn category_map(&self) -> CategoryMap {
        let coco = self.names.len() == COCO_CATEGORIES.len()
            && self
                .names
                .iter()
                .zip(COCO_CATEGORIES)
                .all(|(n, c)| n == c.1);
        if coco {
            return CategoryMap::coco();
        }
        CategoryMap(
            self.names
                .iter()
                .enumerate()
                .map(|(i, n)| (i as i64 + 1, n.clone()))
                .collect(),
        )
    }

    /// Detect in images already in memory, `self.batch` at a time; boxes in each image's pixels.
    pub fn detect_images(&self, images: &[&RgbImage]) -> Result<Vec<Vec<Detection>>> {
        let mut all = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch.max(1)) {
            let (x, places) = self.prepare(chunk)?;
            all.extend(self.finish(&self.model.forward(&x)?, &places)?);
        }
        Ok(all)
    }

    /// The network's input for `images` [B, 3, size, size] (letterboxed, RGB / 255) and where
    /// each image sits in its square.
    pub fn prepare(&self, images: &[&RgbImage]) -> Result<(Tensor, Vec<Placement>)> {
        let s = self.size;
        let mut pixels = Vec::with_capacity(images.len() * s * s * 3);
        let mut places = Vec::with_capacity(images.len());
        for img in images {
            let (w, h) = (img.width() as usize, img.height() as usize);
            let (square, place) = letterbox(img.as_raw(), w, h, s);
            pixels.extend_from_slice(&square);
            places.push(place);
        }
        let x = Tensor::from_vec(pixels, (images.len(), s, s, 3), &Device::Cpu)?
            .to_device(&self.device)?
            .permute((0, 3, 1, 2))?
            .to_dtype(DType::F32)?;
        Ok(((x / 255.0)?, places))
    }

    /// The network's output [B, 4 + classes, anchors] to each image's detections: NMS, then
    /// boxes mapped back to the image and named.
    pub fn finish(&self, out: &Tensor, places: &[Placement]) -> Result<Vec<Vec<Detection>>> {
        places
            .iter()
            .enumerate()
            .map(|(i, place)| {
                let dets = non_max_suppression(&out.get(i)?, &self.nms)?;
                Ok(dets
                    .into_iter()
                    .map(|d| Detection {
                        category: self.names[d.class].clone(),
                        bbox: place.to_original([d.x0, d.y0, d.x1, d.y1]).map(f64::from),
                        score: f64::from(d.score),
                    })
                    .collect())
            })
            .collect()
    }

    /// The network.
    pub fn model(&self) -> &YoloV8 {
        &self.model
    }
}

impl Detector for YoloDetector {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn detect(&self, request: &DetectRequest<'_>) -> Result<Vec<Detection>> {
        Ok(self
            .detect_all(std::slice::from_ref(request))?
            .pop()
            .unwrap_or_default())
    }

    fn detect_all(&self, requests: &[DetectRequest<'_>]) -> Result<Vec<Vec<Detection>>> {
        let mut all = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(self.batch.max(1)) {
            let images = chunk
                .iter()
                .map(|r| RgbImage::load_png(r.image_path))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&RgbImage> = images.iter().collect();
            all.extend(self.detect_images(&refs)?);
        }
        Ok(all)
    }
}

/// The `names` of a weights file's safetensors metadata (`{"0": "person", ...}`), if any.
fn class_names(path: &Path) -> Result<Option<Vec<String>>> {
    use std::io::Read;
    let fail = |why: &str| anyhow::anyhow!("{}: not a safetensors file ({why})", path.display());
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| fail("too short"))?;
    let len = u64::from_le_bytes(len);
    let size = f.metadata()?.len();
    if len > 100 << 20 || len + 8 > size {
        return Err(fail("its header is longer than the file"));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|_| fail("truncated"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| fail("its header is not JSON"))?;
    let Some(names) = header
        .get("__metadata__")
        .and_then(|m| m.get("names"))
        .and_then(|n| n.as_str())
    else {
        return Ok(None);
    };
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(names)
        .with_context(|| {
            format!(
                "{}: metadata `names` is not {{index: name}}",
                path.display()
            )
        })?;
    let mut by_index: Vec<(usize, String)> = map
        .into_iter()
        .map(|(k, v)| {
            k.parse::<usize>()
                .map(|i| (i, v))
                .with_context(|| format!("{}: class index {k:?} in `names`", path.display()))
        })
        .collect::<Result<_>>()?;
    by_index.sort();
    if by_index.iter().enumerate().any(|(i, (k, _))| i != *k) {
        bail!(
            "{}: metadata `names` does not number classes 0..n",
            path.display()
        );
    }
    Ok(Some(by_index.into_iter().map(|(_, v)| v).collect()))
}
