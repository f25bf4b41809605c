//! Swap (Mao et al., "Guided image synthesis via initial image editing in diffusion model", ACM
//! MM 2023): the blocks of the latents so far (the Gaussian noise, or SemI's latents) rearranged
//! so that the blocks the model attends most to for each object, probed with the layout's prompt
//! at the first of the run's timesteps, move into that object's box
//! ([`semi_tickets::swap::swap_noise`]).
//!
//! Swap is an init, not a guidance: it acts once, on the initial latents, before the first
//! denoising step, and never touches attention during denoising. So it is a stage after the
//! noise source: `swap` = Gaussian then Swap, `semi+swap` = SemI then Swap. The paper combines
//! SemI with Swap because Swap "manipulate[s] initial noise inside only a single noise image
//! but suffers from the limited number of winning tickets": SemI supplies latents made of
//! winning tickets and Swap still moves them to where the model attends most to each object. As
//! Swap only permutes blocks, SemI's per-channel statistics (and recalibration) are kept.

use anyhow::{Context, Result};
use semi_tickets::swap::swap_noise;

use super::{InitContext, InitStage, InitState};
use crate::Needs;

pub struct Swap;

impl InitStage for Swap {
    fn needs(&self) -> Needs {
        Needs {
            boxes: Some("Swap moves noise blocks into the objects' boxes"),
            tokens: true,
            ..Needs::default()
        }
    }

    fn apply(&self, cx: &InitContext, state: &mut InitState) -> Result<()> {
        let latents = state
            .latents
            .take()
            .context("swap rearranges latents, but no stage made any")?;
        let tokens: Vec<Vec<usize>> = cx.objects.iter().map(|o| o.tokens.clone()).collect();
        let (swapped, report) = swap_noise(
            cx.sd,
            &latents,
            cx.layout,
            &tokens,
            cx.steps,
            &cx.options.swap,
        )?;
        state.metadata.insert("swap".into(), report.to_json());
        state.latents = Some(swapped);
        Ok(())
    }
}
