//! What semi's crates share at the bottom of the dependency graph: crash-safe writes
//! ([`fsutil`]), a deterministic split of work across Slurm array tasks ([`shard`]), the one PNG
//! encoder ([`mod@self::png`]) and the one SplitMix64 generator of the file formats ([`rng`]).

pub mod errors;
pub mod fsutil;
pub mod png;
pub mod rng;
pub mod shard;

pub use self::png::{encode_png_rgb8, write_png_rgb8};
pub use errors::one_line;
pub use fsutil::{
    check_target, create_dir_durable, ensure_free, free_bytes, human_bytes, remove_stale_temps,
    remove_temps_on_interrupt, same_file_name, sync_dir, write_atomic, write_atomic_file,
    write_atomic_files, write_atomic_with, DirLock,
};
pub use rng::SplitMix64;
pub use shard::{Shard, SlurmArray};
