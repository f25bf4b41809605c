//! Initial latents, one module per stage behind [`InitStage`]; an [`Init`] is a list of stages
//! run in order ([`Init::stages`], the registration):
//!
//! | init | stages |
//! |---|---|
//! | gaussian | [`gaussian`] |
//! | semi | [`semi`] (or [`controls`] when `MethodOptions::fill` names a control) |
//! | swap | [`gaussian`], [`swap`] |
//! | semi+swap | [`semi`], [`swap`] |
//!
//! A new init is one module implementing [`InitStage`] plus its row in [`Init::stages`] and a
//! word in [`Init`].

pub mod controls;
pub mod gaussian;
pub mod semi;
pub mod swap;

use anyhow::Result;
use candle_core::Tensor;
use semi_diffusion::pipeline::StableDiffusion;
use semi_guidance::GuidedObject;
use semi_layout::Layout;
use semi_tickets::{Construction, InitMethod, Store};
use serde_json::{Map, Value};

use crate::method::Init;
use crate::{MethodOptions, Needs};

/// What every stage may read.
pub struct InitContext<'a> {
    pub sd: &'a StableDiffusion,
    pub layout: &'a Layout,
    /// The method's name, for messages.
    pub method: &'a str,
    pub seed: u64,
    pub steps: usize,
    pub store: Option<&'a Store>,
    pub options: &'a MethodOptions,
    /// Initial latents given by the user, in place of the seeded noise.
    pub given: Option<&'a Tensor>,
    /// The latent shape `[1, C, H/f, W/f]` of the layout's size.
    pub shape: &'a [usize],
    /// The objects with their token positions (empty unless some part needs them).
    pub objects: &'a [GuidedObject],
}

/// What the stages build: the latents so far, SemI's construction, and metadata.
#[derive(Default)]
pub struct InitState {
    pub latents: Option<Tensor>,
    pub construction: Option<Construction>,
    pub metadata: Map<String, Value>,
}

/// One step of building the initial latents.
pub trait InitStage: Sync {
    /// What this stage needs (boxes, a store, ...).
    fn needs(&self) -> Needs;
    /// Set or transform `state.latents` (None before the first stage).
    fn apply(&self, cx: &InitContext, state: &mut InitState) -> Result<()>;
}

impl Init {
    /// The stages of this init, in order (the registration: module docs).
    pub fn stages(self, options: &MethodOptions) -> Vec<&'static dyn InitStage> {
        let tickets: &'static dyn InitStage = if options.fill != InitMethod::SemI {
            &controls::Control
        } else {
            &semi::Semi
        };
        match self {
            Init::Gaussian => vec![&gaussian::Gaussian],
            Init::Semi => vec![tickets],
            Init::Swap => vec![&gaussian::Gaussian, &swap::Swap],
            Init::SemiSwap => vec![tickets, &swap::Swap],
        }
    }

    /// What this init needs (its stages' needs; the first reason wins).
    pub fn needs(self) -> Needs {
        self.stages(&MethodOptions::default())
            .iter()
            .fold(Needs::default(), |n, s| n.and(s.needs()))
    }
}
