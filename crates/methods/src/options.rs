//! The methods' settings. Which values a run uses (a flag, the model's `semi.json`, or the
//! paper's defaults) is decided by the run (`semi-run`), not here.

use semi_tickets::swap::SwapOptions;
use semi_tickets::{InitMethod, Rule};

/// Strengths and SemI settings; `Default` = the paper's defaults.
#[derive(Clone, Debug)]
pub struct MethodOptions {
    /// Winning-ticket selection rule (default: the paper's, T_obj 0.5, T_bg 0.1).
    pub rule: Rule,
    /// SemI: standardise each latent channel afterwards (default off, as the paper).
    pub recalibrate: bool,
    /// How SemI's regions are filled: with their tickets (the default), or by one of SemI's
    /// control experiments ([`crate::init::controls`]).
    pub fill: InitMethod,
    /// Paint's `w` (default [`semi_guidance::PAINT_DEFAULT_WEIGHT`]).
    pub paint_weight: f64,
    /// Soft's `w` (default [`semi_guidance::SOFT_DEFAULT_WEIGHT`]).
    pub soft_weight: f64,
    /// Swap's probe and normalisation (default: the ticket probe's layer, mean-normalised).
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
            fill: InitMethod::SemI,
            paint_weight: semi_guidance::PAINT_DEFAULT_WEIGHT,
            soft_weight: semi_guidance::SOFT_DEFAULT_WEIGHT,
            swap: SwapOptions::default(),
        }
    }
}
