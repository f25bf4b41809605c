//! The on-the-fly ticket store of a model (moved here from the CLI so eval and serve share it).

use anyhow::Result;
use semi_diffusion::pipeline::StableDiffusion;
use semi_tickets::{ProbeOptions, Progress, Store};

/// Seed of on-the-fly cache stores (noise image k = randn(manual_seed(k))); fixed so every
/// request for a model shares one store.
pub const CACHE_SEED: u64 = 0;

/// Refuse a store whose scores came from another model (`model` names it in the message).
pub fn check_store_model(_store: &Store, _model_fingerprint: &str, _model: &str) -> Result<()> {
    todo!()
}

/// Open `$SEMI_CACHE/stores/<probe fingerprint digest>` for `sd`, collecting the missing pairs
/// of `categories` (and each category against each of `partners`) with `n` images first.
pub fn cache_store(
    _sd: &StableDiffusion,
    _model_fingerprint: &str,
    _probe: &ProbeOptions,
    _categories: &[String],
    _partners: &[String],
    _n: usize,
    _progress: &mut dyn FnMut(&Progress),
) -> Result<Store> {
    todo!()
}
