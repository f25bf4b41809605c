//! File helpers of the store: the crash-safe writes come from `semi-jobs` (one implementation
//! for every long job), plus the store's f32 encoding.

pub use semi_jobs::fsutil::{
    create_dir_durable, ensure_free, remove_stale_temps, sync_dir, write_atomic, DirLock,
    TEMP_PREFIX,
};

/// Bytes of a little-endian f32 slice.
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}
