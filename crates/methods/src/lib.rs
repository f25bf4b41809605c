//! The layout-control methods of the paper's Table 1 behind one call, so `semi generate`,
//! `semi eval` and `semi serve` make identical images for the same layout, seed and method.
//!
//! A [`Method`] is an [`Init`] (where the initial latents come from: Gaussian noise, SemI,
//! Swap, SemI + Swap) and a [`Guidance`] (none, Paint, Soft); [`Method::parse`] reads names like
//! `semi+swap+soft`, [`Method::table1`] lists the paper's rows. [`prepare`] builds the initial
//! latents and the attention controller; [`generate`] runs them through the pipeline.
//! [`cache_store`] opens (and fills on the fly) the per-model ticket store SemI draws from.
//!
//! How each part is made:
//! - Gaussian: `torch.randn(shape, generator=manual_seed(seed))` (the pipeline's own noise).
//! - SemI: [`semi_tickets::semi_init`] with the options' rule, seeded with `seed`.
//! - Swap: the Gaussian noise through [`semi_tickets::swap::swap_noise`], probed with the
//!   layout's prompt at the first of `steps` timesteps.
//! - SemI + Swap: Swap applied to the SemI latents. The paper (section 4.3) combines the two
//!   because Swap "manipulate[s] initial noise inside only a single noise image but suffers from
//!   the limited number of winning tickets": SemI supplies a latent made of winning tickets and
//!   Swap then rearranges its blocks, so the tickets SemI placed can still move to where the
//!   model attends most to each object. As Swap only permutes blocks, SemI's per-channel
//!   statistics (and recalibration) are kept.
//! - Paint / Soft: [`semi_guidance::Paint`] / [`semi_guidance::Soft`] on every cross-attention
//!   layer, with the objects' token positions from [`semi_guidance::objects_in_prompt`] (phrase,
//!   else category, in the layout's prompt). Swap uses the same token positions.
//!
//! Details settled while building (relative to the agreed sketch):
//! - `generate`'s `on_step` gets `&StepEvent` (the pipeline's per-step event).
//! - `generate` checks that the request's prompt and size are the layout's; `req.latents`, when
//!   set, replaces the seeded Gaussian noise (Gaussian and Swap; an error for SemI).
//! - A layout with no objects (a plain prompt) is accepted by `sd` only.
//! - Metadata names the guidance `attention` (`none`/`paint`/`soft`): `guidance` is already the
//!   classifier-free guidance scale in the image parameters.
//! - [`cache_store_with`] is [`cache_store`] with a callback for its one status line (the CLI
//!   prints it on stdout; `cache_store` writes it to stderr). [`check_store_model`] refuses a
//!   given store made with another model.

mod method;
mod prepare;
mod store;

pub use method::{Guidance, Init, Method};
pub use prepare::{generate, prepare, Generation, MethodOptions, Prepared};
pub use store::{cache_store, cache_store_with, check_store_model, CACHE_SEED};
