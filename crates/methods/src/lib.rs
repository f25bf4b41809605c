//! The layout-control methods of the paper's Table 1 behind one call, so `semi generate`,
//! `semi eval` and `semi serve` make identical images for the same layout, seed and method.
//!
//! A [`Method`] is an [`Init`] (where the initial latents come from: Gaussian noise, SemI,
//! Swap, SemI + Swap) and a [`Guidance`] (none, Paint, Soft). [`prepare`] builds the initial
//! latents and the attention controller; [`generate`] runs them through the pipeline.
//! [`cache_store`] opens (and fills on the fly) the per-model ticket store SemI draws from.

mod method;
mod prepare;
mod store;

pub use method::{Guidance, Init, Method};
pub use prepare::{generate, prepare, Generation, MethodOptions, Prepared};
pub use store::{cache_store, cache_store_with, check_store_model, CACHE_SEED};
