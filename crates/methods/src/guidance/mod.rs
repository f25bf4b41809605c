//! Attention guidance during denoising, one module per method behind [`GuidanceMethod`]:
//! [`paint`] (eDiffi's paint-with-words) and [`soft`] (Mao & Wang, ICIP 2023). Both act on every
//! cross-attention layer through an [`AttentionController`], with the objects' token positions
//! from [`semi_guidance::objects_in_prompt`] (phrase, else category, in the layout's prompt).
//!
//! A new guidance is one module implementing [`GuidanceMethod`], a word in [`Guidance`] and its
//! row in [`Guidance::method`] (the registration).

pub mod paint;
pub mod soft;

use anyhow::Result;
use semi_diffusion::controller::AttentionController;
use semi_diffusion::pipeline::StableDiffusion;
use semi_guidance::GuidedObject;
use serde_json::{Map, Value};

use crate::method::Guidance;
use crate::{MethodOptions, Needs};

/// What a guidance method may read.
pub struct GuidanceContext<'a> {
    pub sd: &'a StableDiffusion,
    pub steps: usize,
    pub options: &'a MethodOptions,
    pub objects: Vec<GuidedObject>,
}

/// One attention-guidance method.
pub trait GuidanceMethod: Sync {
    fn needs(&self) -> Needs;
    /// The controller for one run; its settings go into `metadata`.
    fn controller(
        &self,
        cx: GuidanceContext,
        metadata: &mut Map<String, Value>,
    ) -> Result<Box<dyn AttentionController>>;
}

/// What Paint and Soft need.
const NEEDS: Needs = Needs {
    boxes: Some("the boxes say where each object's words attend"),
    store: None,
    own_latents: None,
    tokens: true,
};

impl Guidance {
    /// The method behind this word (None for `none`): the registration.
    pub fn method(self) -> Option<&'static dyn GuidanceMethod> {
        match self {
            Guidance::None => None,
            Guidance::Paint => Some(&paint::PaintMethod),
            Guidance::Soft => Some(&soft::SoftMethod),
        }
    }

    /// What this guidance needs.
    pub fn needs(self) -> Needs {
        self.method().map_or(Needs::default(), |m| m.needs())
    }
}
