//! Paint-with-words (eDiffi): a logit bonus `w * ln(1 + sigma_t) * max logit` for each object's
//! tokens inside its box ([`semi_guidance::Paint`]), sigma from the model's noise schedule.

use anyhow::Result;
use semi_diffusion::controller::AttentionController;
use semi_diffusion::schedulers::{alphas_cumprod, betas};
use semi_guidance::{NoiseLevels, Paint, PaintConfig};
use serde_json::{Map, Value};

use super::{GuidanceContext, GuidanceMethod, NEEDS};
use crate::Needs;

pub struct PaintMethod;

impl GuidanceMethod for PaintMethod {
    fn needs(&self) -> Needs {
        NEEDS
    }

    fn controller(
        &self,
        cx: GuidanceContext,
        metadata: &mut Map<String, Value>,
    ) -> Result<Box<dyn AttentionController>> {
        let sigmas =
            NoiseLevels::from_alphas_cumprod(&alphas_cumprod(&betas(&cx.sd.scheduler.config)?))?;
        let weight = cx.options.paint_weight;
        let config = PaintConfig {
            weight,
            ..PaintConfig::default()
        };
        metadata.insert("paint_weight".into(), weight.into());
        Ok(Box::new(Paint::new(cx.objects, sigmas, config)?))
    }
}
