//! Soft guidance (Mao & Wang, ICIP 2023): a logit bonus `w * s(t) * max logit` in each object's
//! grown box, on a schedule spanning the run's steps ([`semi_guidance::Soft`]).

use anyhow::Result;
use semi_diffusion::controller::AttentionController;
use semi_guidance::{Soft, SoftConfig};
use serde_json::{Map, Value};

use super::{GuidanceContext, GuidanceMethod, NEEDS};
use crate::Needs;

pub struct SoftMethod;

impl GuidanceMethod for SoftMethod {
    fn needs(&self) -> Needs {
        NEEDS
    }

    fn controller(
        &self,
        cx: GuidanceContext,
        metadata: &mut Map<String, Value>,
    ) -> Result<Box<dyn AttentionController>> {
        let weight = cx.options.soft_weight;
        let config = SoftConfig {
            weight,
            ..SoftConfig::for_steps(cx.steps)
        };
        metadata.insert("soft_weight".into(), weight.into());
        Ok(Box::new(Soft::new(cx.objects, config)?))
    }
}
