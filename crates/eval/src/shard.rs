//! Splitting a batch across machines: shard `i/n` does every n-th item, so any shard count covers
//! every item exactly once. The type is shared with ticket collection (`semi-jobs`).

pub use semi_jobs::shard::{Shard, SlurmArray};
