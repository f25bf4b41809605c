//! Lottery tickets (the paper's method, docs/design.md section 1): the probe contract ([`Prober`]),
//! the on-disk ticket store ([`store`]), winning-ticket selection ([`select()`], paper Eq. 2-5)
//! and semantic-driven initialisation ([`construct()`], SemI).
//!
//! The flow:
//! 1. [`collect`] a [`Store`] with a [`Prober`] for pairs of categories ([`all_pairs`],
//!    [`read_pairs_file`]), N noise images and a seed; resumable, extendable, shardable
//!    ([`Shard`], [`merge`]).
//! 2. [`Store::open`] (or [`Store::open_for`] to refuse another model's store), then
//!    [`select()`] with a [`Rule`] (`paper` thresholds or the `authors` preset).
//! 3. [`construct()`] (or [`semi_init`] = select + construct) turns a layout into initial latents;
//!    [`save_latents`] writes them as safetensors (`latents`) or `.npy`.
//!
//! [`SdProber`] ([`mod@probe`]) is the real probe on a loaded Stable Diffusion model;
//! [`FakeProber`] stands in for the UNet probe in tests and benchmarks (crate `semi-bench`).

pub mod cache;
pub mod construct;
pub mod fingerprint;
pub mod fsutil;
pub mod latents;
pub mod names;
pub mod probe;
pub mod prober;
pub mod rng;
pub mod select;
pub mod shard;
pub mod store;
pub mod swap;

pub use construct::{
    construct, semi_init, CellFill, Construction, InitMethod, InitOptions, NoTickets, Region,
    SetUse,
};
pub use fingerprint::{hash_files, ProbeFingerprint};
pub use latents::{load_latents, save_latents, Latents};
pub use names::{all_pairs, parse_category_list, parse_pairs, read_pairs_file, Pair};
pub use probe::{LayerChoice, ProbeOptions, SdProber};
pub use prober::{min_max_normalize, FakeProber, Prober};
pub use select::{select, AuthorsThresholds, Rule, Selection, SelectionReport, SetReport};
pub use shard::{Shard, SlurmArray};
pub use store::collect::{collect, CollectRequest, CollectSummary, Progress};
pub use store::merge::{merge, MergeSummary};
pub use store::{Manifest, Store, StoreStatus};
