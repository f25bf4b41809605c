//! What semi's long jobs (ticket collection, batch evaluation) share: crash-safe writes
//! ([`fsutil`]) and a deterministic split of work across Slurm array tasks ([`shard`]).

pub mod fsutil;
pub mod shard;

pub use fsutil::{
    create_dir_durable, remove_stale_temps, sync_dir, write_atomic, write_atomic_with, DirLock,
};
pub use shard::{Shard, SlurmArray};
