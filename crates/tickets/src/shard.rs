//! Splitting a collection across machines: shard `i/n` does every n-th work unit (in the store's
//! deterministic unit order, see [`crate::store::Manifest::units`]), so the split depends only on
//! the request, never on timing. The type is shared with batch evaluation (`semi-jobs`).

pub use semi_jobs::shard::{Shard, SlurmArray};
