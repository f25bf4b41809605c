//! One run in one place: everything between a command's arguments and the files it writes.
//!
//! - [`model`]: `--model` resolved (a diffusers folder, a repo id in the local Hugging Face
//!   cache, or `toy`, the [`embedded`] model), checked and read without weights
//!   ([`ModelRef`]), then loaded with its fingerprint ([`Model`]); [`model::device`].
//! - [`settings`]: each setting from an explicit flag, else the model's `semi.json`, else the
//!   paper's defaults, with its source (docs/design.md 1.7).
//! - [`run`]: a [`Request`] resolved into a [`Run`] before any weights are read (the layout
//!   sized, the sampling built from it), then generated through `semi_methods`.
//! - [`store`]: the run's ticket store, given or the model's cache store filled on the fly.
//! - [`outputs`]: the image, sidecar, boxes preview and latents, written atomically.
//!
//! `semi generate`, `semi init`, `semi eval generate` and `semi serve`'s worker call it; the
//! commands only parse arguments and print.

pub mod embedded;
pub mod model;
pub mod outputs;
pub mod run;
pub mod settings;
pub mod store;

pub use model::{Model, ModelRef, ModelSpec};
pub use outputs::Outputs;
pub use run::{read_layout, Request, Run};
pub use settings::{Choices, Settings, Source};
pub use store::StoreSpec;
