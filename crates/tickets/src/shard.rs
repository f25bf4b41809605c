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

    /// The shard from `--shard` if given, else from a Slurm job array if `SLURM_ARRAY_TASK_ID`
    /// and `SLURM_ARRAY_TASK_COUNT` are set, else none (do everything). The index is
    /// `(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP` (min 0 and step 1
    /// when unset), so `--array=1-4` or `--array=0-12:4` work as well as `--array=0-3`.
    pub fn from_arg_or_env(arg: Option<&str>) -> Result<Option<Shard>> {
        let var = |name: &str| std::env::var(name).ok();
        Self::from_arg_or_slurm(
            arg,
            &SlurmArray {
                task_id: var("SLURM_ARRAY_TASK_ID"),
                task_count: var("SLURM_ARRAY_TASK_COUNT"),
                task_min: var("SLURM_ARRAY_TASK_MIN"),
                task_step: var("SLURM_ARRAY_TASK_STEP"),
            },
        )
    }

    /// [`Shard::from_arg_or_env`] with the variables passed in (testable).
    pub fn from_arg_or_slurm(arg: Option<&str>, slurm: &SlurmArray) -> Result<Option<Shard>> {
        if let Some(arg) = arg {
            return Shard::parse(arg).map(Some);
        }
        let (Some(id), Some(count)) = (&slurm.task_id, &slurm.task_count) else {
            return Ok(None);
        };
        let num = |name: &str, v: &str| -> Result<usize> {
            v.trim()
                .parse()
                .with_context(|| format!("{name}={v:?} is not a non-negative integer"))
        };
        let id = num("SLURM_ARRAY_TASK_ID", id)?;
        let count = num("SLURM_ARRAY_TASK_COUNT", count)?;
        let min = match &slurm.task_min {
            Some(v) => num("SLURM_ARRAY_TASK_MIN", v)?,
            None => 0,
        };
        let step = match &slurm.task_step {
            Some(v) => num("SLURM_ARRAY_TASK_STEP", v)?.max(1),
            None => 1,
        };
        if id < min || (id - min) % step != 0 {
            bail!(
                "SLURM_ARRAY_TASK_ID={id} does not fit an array starting at {min} with step {step}"
            );
        }
        Shard::new((id - min) / step, count)
            .context("from the SLURM_ARRAY_TASK_* variables")
            .map(Some)
    }

    /// Whether unit number `unit` belongs to this shard.
    pub fn owns(&self, unit: usize) -> bool {
        unit % self.count == self.index
    }
}

/// The Slurm job-array variables [`Shard::from_arg_or_env`] reads (as strings, unset = `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmArray {
    pub task_id: Option<String>,
    pub task_count: Option<String>,
    pub task_min: Option<String>,
    pub task_step: Option<String>,
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
        let slurm = |id: &str, count: &str, min: Option<&str>, step: Option<&str>| SlurmArray {
            task_id: Some(id.into()),
            task_count: Some(count.into()),
            task_min: min.map(Into::into),
            task_step: step.map(Into::into),
        };
        let get = |arg, s: &SlurmArray| Shard::from_arg_or_slurm(arg, s);
        assert_eq!(
            get(None, &slurm("2", "3", None, None)).unwrap(),
            Some(Shard { index: 2, count: 3 })
        );
        assert_eq!(
            get(Some("0/2"), &slurm("2", "3", None, None)).unwrap(),
            Some(Shard { index: 0, count: 2 })
        );
        // --array=1-4 and --array=0-12:4
        assert_eq!(
            get(None, &slurm("4", "4", Some("1"), Some("1"))).unwrap(),
            Some(Shard { index: 3, count: 4 })
        );
        assert_eq!(
            get(None, &slurm("8", "4", Some("0"), Some("4"))).unwrap(),
            Some(Shard { index: 2, count: 4 })
        );
        assert!(get(None, &slurm("5", "3", None, None)).is_err());
        assert!(get(None, &slurm("x", "3", None, None)).is_err());
        let only_id = SlurmArray {
            task_id: Some("2".into()),
            ..SlurmArray::default()
        };
        assert_eq!(get(None, &only_id).unwrap(), None);
        assert!(Shard::new(1, 2).unwrap().owns(3));
    }
}
