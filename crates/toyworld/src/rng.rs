//! The toy world's random numbers: SplitMix64 from `semi-jobs` (one implementation for every
//! file format of semi). Its stream is part of the dataset format: scenes are drawn from
//! [`SplitMix64::for_item`].

pub use semi_jobs::rng::{mix64, SplitMix64};
