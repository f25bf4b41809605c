//! Gaussian init: `torch.randn(shape, generator=manual_seed(seed))`, plain Stable Diffusion's
//! noise, or the user's own initial latents when given.

use anyhow::{ensure, Result};
use candle_core::{DType, Device};

use super::{InitContext, InitStage, InitState};
use crate::Needs;

pub struct Gaussian;

impl InitStage for Gaussian {
    fn needs(&self) -> Needs {
        Needs::default()
    }

    fn apply(&self, cx: &InitContext, state: &mut InitState) -> Result<()> {
        let shape = cx.shape;
        let latents = match cx.given {
            Some(n) => {
                ensure!(
                    n.dims() == shape,
                    "initial latents have shape {:?}, but a {}x{} image with this model needs \
                     {shape:?}",
                    n.dims(),
                    cx.layout.width,
                    cx.layout.height
                );
                n.to_device(&Device::Cpu)?.to_dtype(DType::F32)?
            }
            None => semi_diffusion::noise::randn(cx.seed, shape, &Device::Cpu)?,
        };
        state.latents = Some(latents);
        Ok(())
    }
}
