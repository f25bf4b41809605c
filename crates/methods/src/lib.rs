//! The layout-control methods of the paper's Table 1 behind one call, so `semi generate`,
//! `semi eval` and `semi serve` make identical images for the same layout, seed and method.
//!
//! A [`Method`] is an [`Init`] (where the initial latents come from: Gaussian noise, SemI,
//! Swap, SemI + Swap) and a [`Guidance`] (none, Paint, Soft); [`Method::parse`] reads names like
//! `semi+swap+soft`, [`Method::table1`] lists the paper's rows, [`Method::needs`] says what a
//! method needs (boxes, a store) with the reason a user is told. One module per method:
//! - [`init`]: the init stages, [`init::gaussian`], [`init::semi`], [`init::controls`],
//!   [`init::swap`] (and why Swap is an init), registered in [`Init::stages`];
//! - [`guidance`]: [`guidance::paint`] and [`guidance::soft`], registered in
//!   [`Guidance::method`].
//!
//! [`prepare`] builds the initial latents and the attention controller; [`generate`] runs them
//! through the pipeline with a [`Sampling`] (seed, steps, guidance scale, eta), the pipeline
//! request built from the layout. [`cache_store`] opens (and fills on the fly) the per-model
//! ticket store SemI draws from; [`check_store_model`] refuses a store made with another model.
//! Which settings a run uses (flags, the model's `semi.json`, the paper's defaults) is the
//! run's business (`semi-run`, docs/design.md 1.7); here they arrive as [`MethodOptions`].
//!
//! Metadata names the guidance `attention` (`none`/`paint`/`soft`): `guidance` is already the
//! classifier-free guidance scale in the image parameters.

pub mod guidance;
pub mod init;
mod method;
mod needs;
mod options;
mod prepare;
mod store;

pub use method::{Guidance, Init, Method};
pub use needs::Needs;
pub use options::MethodOptions;
pub use prepare::{generate, prepare, Generation, Prepared, Sampling};
pub use store::{cache_store, cache_store_with, check_store_model, NoPartner, CACHE_SEED};
