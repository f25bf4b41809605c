//! The construction's random numbers: SplitMix64 from `semi-jobs` (one implementation for every
//! file format of semi), self-contained so a seed gives the same latents on every platform and
//! every version of every dependency.

pub use semi_jobs::rng::SplitMix64;
