//! Initial latents on disk: the one implementation lives in [`semi_diffusion::latents_io`]
//! (safetensors key `latents` with `semi` metadata, or `.npy`); re-exported here for the
//! construction API.

pub use semi_diffusion::latents_io::{
    load_latents, npy_bytes, safetensors_bytes, save_latents, Latents,
};
