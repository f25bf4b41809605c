//! The toy world: small synthetic scenes of coloured shapes with captions and boxes, generated
//! deterministically from a seed, plus an exact detector for them.
//!
//! It exists so the whole system can be trained, run and measured without downloading anything:
//! a small text-to-image model is trained on these scenes, and the exact detector scores what it
//! generates (does the image hold the captioned objects? are they inside the requested boxes?).
//!
//! - [`Category`]: six shapes, each in one saturated colour, on a mid-grey background; or, in the
//!   latent world ([`WorldConfig::latent`], [`Palette::Shared`]), any shape in any of the six
//!   colours, so that only the shape tells the category.
//! - [`Scene::generate`]: scene `index` of run `seed`, deterministic (own SplitMix64 stream).
//! - [`detect`]: palette classification, 8-connected components, COCO-style boxes; in the latent
//!   world each component's category comes from its shape (template matching).
//! - [`make_caption`] / [`parse_caption`]: the fixed caption grammar, both ways.
//! - [`write_dataset`]: safetensors + JSONL export for the training script.
//! - [`contact_sheet`], [`RgbImage::save_png`]: pictures for eyeballing.

pub mod caption;
pub mod category;
pub mod dataset;
pub mod detect;
pub mod image;
pub mod palette;
pub mod rng;
pub mod scene;
pub mod shapes;
pub mod sheet;

pub use caption::{make_caption, parse_caption};
pub use category::{Category, BACKGROUND};
pub use dataset::{captions_path, write_dataset, DatasetSummary, DATASET_FORMAT};
pub use detect::{best_iou, caption_matches, detect, iou_xyxy, Detection, DetectorConfig};
pub use image::RgbImage;
pub use palette::{Palette, SHARED_COLORS};
pub use scene::{ObjectRecord, Scene, SceneObject, SceneRecord, WorldConfig};
pub use sheet::{contact_sheet, legend, Outline, SheetConfig, Tile};
