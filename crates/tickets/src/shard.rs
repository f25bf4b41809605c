//! Splitting a collection across machines: shard `i/n` does every n-th work unit.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One of `count` shards (`index` in `0..count`). Work unit `u` (in the store's deterministic
/// unit order, see [`crate::store::Manifest::units`]) belongs to shard `u % count`, so the split
/// depends only on the request, never on timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 {
            bail!("shard count must be at least 1");
        }
        if index >= count {
            bail!("shard index {index} is out of range for {count} shards (0..{count})");
        }
        Ok(Shard { index, count })
    }

    /// Parse `i/n` (`0/2`, `1/2`).
    pub fn parse(text: &str) -> Result<Shard> {
        let (i, n) = text
            .split_once('/')
            .with_context(|| format!("shard {text:?} should look like i/n, e.g. 0/4"))?;
        let index = i
            .trim()
            .parse()
            .with_context(|| format!("shard {text:?}: bad index {i:?}"))?;
        let count = n
            .trim()
            .parse()
            .with_context(|| format!("shard {text:?}: bad count {n:?}"))?;
        Shard::new(index, count)
    }

    /// The shard from `--shard` if given, else from `SLURM_ARRAY_TASK_ID` /
    /// `SLURM_ARRAY_TASK_COUNT` if both are set, else none (do everything).
    pub fn from_arg_or_env(arg: Option<&str>) -> Result<Option<Shard>> {
        Self::from_arg_or_vars(
            arg,
            std::env::var("SLURM_ARRAY_TASK_ID").ok().as_deref(),
            std::env::var("SLURM_ARRAY_TASK_COUNT").ok().as_deref(),
        )
    }

    /// [`Shard::from_arg_or_env`] with the variables passed in (testable).
    pub fn from_arg_or_vars(
        arg: Option<&str>,
        task_id: Option<&str>,
        task_count: Option<&str>,
    ) -> Result<Option<Shard>> {
        if let Some(arg) = arg {
            return Shard::parse(arg).map(Some);
        }
        match (task_id, task_count) {
            (Some(i), Some(n)) => Shard::parse(&format!("{i}/{n}"))
                .context("from SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT")
                .map(Some),
            _ => Ok(None),
        }
    }

    /// Whether unit number `unit` belongs to this shard.
    pub fn owns(&self, unit: usize) -> bool {
        unit % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_env() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        assert!(Shard::parse("4/4").is_err());
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("x").is_err());
        assert_eq!(
            Shard::from_arg_or_vars(None, Some("2"), Some("3")).unwrap(),
            Some(Shard { index: 2, count: 3 })
        );
        assert_eq!(
            Shard::from_arg_or_vars(Some("0/2"), Some("2"), Some("3")).unwrap(),
            Some(Shard { index: 0, count: 2 })
        );
        assert_eq!(
            Shard::from_arg_or_vars(None, Some("2"), None).unwrap(),
            None
        );
        assert!(Shard::from_arg_or_vars(None, Some("5"), Some("3")).is_err());
        assert!(Shard::new(1, 2).unwrap().owns(3));
    }
}
