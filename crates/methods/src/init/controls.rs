//! SemI's control experiments: SemI's regions, filled otherwise (`MethodOptions::fill`,
//! [`semi_tickets::InitMethod`]). Chosen in place of [`super::semi`]; they need what SemI needs.
//!
//! - colour-matched: fresh Gaussian blocks matched to each ticket set's per-channel mean and
//!   variance. A layout-control gain that survives it is colour statistics, not tickets.
//! - category-swapped: each box filled with the next category's tickets. If tickets are
//!   category-specific, the wrong shape appears in each box.
//! - any-object: each box filled from the union of the layout's categories' tickets: an object,
//!   but no particular one.

use anyhow::Result;

use super::{InitContext, InitStage, InitState};
use crate::Needs;

pub struct Control;

impl InitStage for Control {
    fn needs(&self) -> Needs {
        super::semi::NEEDS
    }

    fn apply(&self, cx: &InitContext, state: &mut InitState) -> Result<()> {
        super::semi::from_store(cx, state, cx.options.fill)
    }
}
