//! SemI's control experiment: each cell filled with fresh Gaussian blocks matched to its ticket
//! set's per-channel mean and variance, not with the tickets themselves. A layout-control gain
//! that survives it is colour statistics, not tickets. Chosen by `MethodOptions::colour_control`
//! in place of [`super::semi`]; it needs what SemI needs.

use anyhow::Result;
use semi_tickets::InitMethod;

use super::{InitContext, InitStage, InitState};
use crate::Needs;

pub struct ColourControl;

impl InitStage for ColourControl {
    fn needs(&self) -> Needs {
        super::semi::NEEDS
    }

    fn apply(&self, cx: &InitContext, state: &mut InitState) -> Result<()> {
        super::semi::from_store(cx, state, InitMethod::ColourMatchedControl)
    }
}
