//! Layout guidance by attention control: Paint-with-words ([`Paint`], eDiffi) and Soft guidance
//! ([`Soft`], Mao & Wang, ICIP 2023), the two attention-editing methods of the paper's Table 1.
//!
//! Both are [`AttentionController`]s for the semi-diffusion UNet. Each takes the layout's objects
//! as [`GuidedObject`]s (the token positions of the object's phrase in the prompt, and its
//! normalised box) and, in the cross-attention layers its [`LayerFilter`] selects, adds to the
//! scaled logits `QK^T / sqrt(d)` of the conditional batch rows
//!
//! `strength(t) * max(row logits) * pattern[query, token]`,
//!
//! leaving unconditional rows, other tokens and queries outside the pattern exactly unchanged:
//!
//! | | strength | pattern | default `w` |
//! |---|---|---|---|
//! | Paint | `w * ln(1 + sigma_t)` | 1 per object inside its box | 2 ([`PAINT_DEFAULT_WEIGHT`]) |
//! | Soft | `w * 4.6 * (N - 1 - i) / N` | box grown by one cell, optional Gaussian; optional forbid outside | 0.5 ([`SOFT_DEFAULT_WEIGHT`]) |
//!
//! Boxes are rasterised at each layer's resolution by the centre rule of [`mod@mask`]. The
//! module docs of [`paint`] and [`soft`] give the exact formulas and where they agree with and
//! differ from the reference implementations. The default weights were measured on the
//! embedded toy model by a sweep (docs/strengths.md, `tools/sweep_strengths.sh`): the smallest
//! weight within 0.005 mean IoU of the best. Real Stable Diffusion may want other values: the
//! `--paint-weight` / `--soft-weight` flags set them per run.
//!
//! Use: build the controller once per image (it caches its patterns per layer size) and pass it
//! as the UNet's controller on every step, with the step index and the conditional-row flags.
//!
//! [`AttentionController`]: semi_diffusion::controller::AttentionController

mod bias;
pub mod filter;
pub mod mask;
pub mod noise_levels;
mod object;
pub mod paint;
pub mod soft;

pub use bias::FORBIDDEN_LOGIT;
pub use filter::LayerFilter;
pub use noise_levels::NoiseLevels;
pub use object::{objects_in_prompt, GuidedObject};
pub use paint::{Paint, PaintConfig, PAINT_DEFAULT_WEIGHT};
pub use soft::{
    soft_schedule, Soft, SoftConfig, SOFT_DEFAULT_BUMP, SOFT_DEFAULT_WEIGHT, SOFT_SCHEDULE_START,
};

/// anyhow errors (with their context chain) as candle errors, for the controller trait.
pub(crate) fn to_candle(e: anyhow::Error) -> candle_core::Error {
    candle_core::Error::msg(format!("{e:#}"))
}
