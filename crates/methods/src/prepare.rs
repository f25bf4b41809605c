//! Initial latents and controller for one layout and method ([`prepare`]), and the whole run
//! ([`generate`]).

use anyhow::Result;
use candle_core::Tensor;
use semi_diffusion::controller::AttentionController;
use semi_diffusion::pipeline::{GenerateRequest, StableDiffusion, StepEvent};
use semi_layout::Layout;
use semi_tickets::swap::SwapOptions;
use semi_tickets::{Construction, Rule, Store};

use crate::method::Method;

/// Strengths and SemI settings; `Default` = the documented defaults.
#[derive(Clone, Debug)]
pub struct MethodOptions {
    /// Winning-ticket selection rule (default: the paper's, T_obj 0.5, T_bg 0.1).
    pub rule: Rule,
    /// SemI: standardise each latent channel afterwards (default off, as the paper).
    pub recalibrate: bool,
    /// Paint's `w` (default [`semi_guidance::PAINT_DEFAULT_WEIGHT`]).
    pub paint_weight: f64,
    /// Soft's `w` (default [`semi_guidance::SOFT_DEFAULT_WEIGHT`]).
    pub soft_weight: f64,
    pub swap: SwapOptions,
}

impl Default for MethodOptions {
    fn default() -> Self {
        MethodOptions {
            rule: Rule::Paper {
                t_obj: 0.5,
                t_bg: 0.1,
            },
            recalibrate: false,
            paint_weight: semi_guidance::PAINT_DEFAULT_WEIGHT,
            soft_weight: semi_guidance::SOFT_DEFAULT_WEIGHT,
            swap: SwapOptions::default(),
        }
    }
}

/// Everything that goes into the denoising loop for one layout.
pub struct Prepared {
    /// Initial latents `[1, C, H/f, W/f]` f32 on the CPU (unit variance, before
    /// `init_noise_sigma`).
    pub latents: Tensor,
    /// The attention controller for Paint/Soft (None for Guidance::None).
    pub controller: Option<Box<dyn AttentionController>>,
    /// SemI: which grid cells got which category's tickets (for previews); None otherwise.
    pub construction: Option<Construction>,
    /// Key/values for the PNG metadata and sidecar.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Build the initial latents and the controller for `layout` with `method`.
pub fn prepare(
    _sd: &StableDiffusion,
    _layout: &Layout,
    _seed: u64,
    _steps: usize,
    _method: &Method,
    _store: Option<&Store>,
    _options: &MethodOptions,
) -> Result<Prepared> {
    todo!()
}

/// The result of [`generate`].
pub struct Generation {
    /// `[1, 3, H, W]` in [0, 1].
    pub image: Tensor,
    /// The final latents.
    pub latents: Tensor,
    /// The initial latents as prepared (before `init_noise_sigma`).
    pub initial: Tensor,
    pub prepared_metadata: serde_json::Map<String, serde_json::Value>,
    pub construction: Option<Construction>,
}

/// [`prepare`] + `sd.generate` with the request's steps, guidance scale and eta; `on_step`
/// after every step.
pub fn generate(
    _sd: &StableDiffusion,
    _layout: &Layout,
    _req: &GenerateRequest,
    _method: &Method,
    _store: Option<&Store>,
    _options: &MethodOptions,
    _on_step: &mut dyn FnMut(&StepEvent) -> Result<()>,
) -> Result<Generation> {
    todo!()
}
