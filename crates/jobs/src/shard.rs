//! Splitting a batch across machines: shard `i/n` does every n-th item (item `u` belongs to
//! shard `u % n`), so the split depends only on the batch, never on timing, and any shard count
//! covers every item exactly once.
//! Ticket collection (work units) and batch evaluation (layouts) both use it, so `--shard` means
//! the same everywhere. Half-set Slurm variables are an error, not a silent "no shard".

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One of `count` shards, `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Default for Shard {
    /// The whole batch: shard 0 of 1.
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// The whole batch (shard 0/1).
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 {
            bail!("shard count must be at least 1");
        }
        if index >= count {
            bail!(
                "shard index {index} is out of range for {count} shards (indices run 0..{})",
                count - 1
            );
        }
        Ok(Shard { index, count })
    }

    /// Parse `i/n` (`0/4` .. `3/4`); spaces around the numbers are allowed.
    pub fn parse(text: &str) -> Result<Shard> {
        let (i, n) = text
            .split_once('/')
            .with_context(|| format!("shard {text:?} should look like i/n, e.g. 0/4"))?;
        let index = i
            .trim()
            .parse()
            .with_context(|| format!("shard {text:?}: index {i:?} is not a whole number"))?;
        let count = n
            .trim()
            .parse()
            .with_context(|| format!("shard {text:?}: count {n:?} is not a whole number"))?;
        Shard::new(index, count).with_context(|| format!("shard {text:?}"))
    }

    /// The shard from `--shard` if given, else from the Slurm array variables, else `None`
    /// (do everything). See [`Shard::from_arg_or_slurm`].
    pub fn from_arg_or_env(arg: Option<&str>) -> Result<Option<Shard>> {
        Self::from_arg_or_slurm(arg, &SlurmArray::from_env())
    }

    /// [`Shard::from_arg_or_env`] with the variables passed in (testable). An explicit `arg`
    /// wins. Otherwise the shard is `((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) /
    /// SLURM_ARRAY_TASK_STEP) / SLURM_ARRAY_TASK_COUNT` (MIN 0 and STEP 1 when unset), so
    /// `--array=1-8` and `--array=0-28:4` work like `--array=0-7`. Only one of ID and COUNT set
    /// is an error: a half-configured environment must not silently process everything.
    pub fn from_arg_or_slurm(arg: Option<&str>, slurm: &SlurmArray) -> Result<Option<Shard>> {
        if let Some(arg) = arg {
            return Shard::parse(arg).map(Some);
        }
        let (id, count) = match (&slurm.task_id, &slurm.task_count) {
            (None, None) => return Ok(None),
            (Some(_), None) => bail!(
                "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; pass --shard i/n"
            ),
            (None, Some(_)) => bail!(
                "SLURM_ARRAY_TASK_COUNT is set but SLURM_ARRAY_TASK_ID is not; pass --shard i/n"
            ),
            (Some(id), Some(count)) => (id, count),
        };
        let number = |name: &str, v: &str| -> Result<usize> {
            v.trim()
                .parse()
                .with_context(|| format!("{name}={v:?} is not a whole number"))
        };
        let id = number("SLURM_ARRAY_TASK_ID", id)?;
        let count = number("SLURM_ARRAY_TASK_COUNT", count)?;
        let min = match &slurm.task_min {
            Some(m) => number("SLURM_ARRAY_TASK_MIN", m)?,
            None => 0,
        };
        let step = match &slurm.task_step {
            Some(s) => number("SLURM_ARRAY_TASK_STEP", s)?.max(1),
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

    /// Whether item number `item` belongs to this shard.
    pub fn owns(&self, item: usize) -> bool {
        item % self.count == self.index
    }

    /// A file-name friendly form: `shard-0003-of-0008`.
    pub fn file_stem(&self) -> String {
        format!("shard-{:04}-of-{:04}", self.index, self.count)
    }
}

/// The Slurm job-array variables [`Shard::from_arg_or_env`] reads (unset = `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmArray {
    pub task_id: Option<String>,
    pub task_count: Option<String>,
    pub task_min: Option<String>,
    pub task_step: Option<String>,
}

impl SlurmArray {
    /// `SLURM_ARRAY_TASK_ID`, `_COUNT`, `_MIN`, `_STEP` from the environment.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok();
        SlurmArray {
            task_id: var("SLURM_ARRAY_TASK_ID"),
            task_count: var("SLURM_ARRAY_TASK_COUNT"),
            task_min: var("SLURM_ARRAY_TASK_MIN"),
            task_step: var("SLURM_ARRAY_TASK_STEP"),
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Shard::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Shard::parse(text).unwrap_err())
    }

    #[test]
    fn parses_good_specs() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        assert_eq!(Shard::parse(" 0 / 1 ").unwrap(), Shard::ALL);
        assert_eq!("3/8".parse::<Shard>().unwrap().to_string(), "3/8");
        assert_eq!(
            Shard::parse("3/8").unwrap().file_stem(),
            "shard-0003-of-0008"
        );
    }

    #[test]
    fn refuses_bad_specs_clearly() {
        let e = err("3/2");
        assert!(
            e.contains("shard index 3 is out of range for 2 shards"),
            "{e}"
        );
        let e = err("2/2");
        assert!(e.contains("indices run 0..1"), "{e}");
        assert!(err("0/0").contains("shard count must be at least 1"));
        assert!(err("x").contains("should look like i/n"));
        assert!(err("a/2").contains("index \"a\" is not a whole number"));
        assert!(err("1/").contains("count \"\" is not a whole number"));
        assert!(err("-1/2").contains("is not a whole number"));
        assert!(err("1/2/3").contains("count \"2/3\""));
    }

    #[test]
    fn slurm_variables() {
        let v =
            |id: Option<&str>, n: Option<&str>, min: Option<&str>, step: Option<&str>| SlurmArray {
                task_id: id.map(Into::into),
                task_count: n.map(Into::into),
                task_min: min.map(Into::into),
                task_step: step.map(Into::into),
            };
        let f = |arg, s: SlurmArray| Shard::from_arg_or_slurm(arg, &s);
        assert_eq!(f(None, v(None, None, None, None)).unwrap(), None);
        assert_eq!(
            f(None, v(Some("2"), Some("3"), None, None)).unwrap(),
            Some(Shard { index: 2, count: 3 })
        );
        // --array=1-3: ids 1..3, min 1.
        assert_eq!(
            f(None, v(Some("3"), Some("3"), Some("1"), None)).unwrap(),
            Some(Shard { index: 2, count: 3 })
        );
        // --array=0-12:4: ids 0, 4, 8, 12.
        assert_eq!(
            f(None, v(Some("8"), Some("4"), Some("0"), Some("4"))).unwrap(),
            Some(Shard { index: 2, count: 4 })
        );
        assert!(f(None, v(Some("6"), Some("4"), Some("0"), Some("4"))).is_err());
        // The argument wins over the environment.
        assert_eq!(
            f(Some("0/2"), v(Some("2"), Some("3"), None, None)).unwrap(),
            Some(Shard { index: 0, count: 2 })
        );
        let e = format!(
            "{:#}",
            f(None, v(Some("5"), Some("3"), None, None)).unwrap_err()
        );
        assert!(
            e.contains("shard index 5 is out of range for 3 shards"),
            "{e}"
        );
        assert!(f(None, v(Some("2"), None, None, None)).is_err());
        assert!(f(None, v(None, Some("2"), None, None)).is_err());
        assert!(f(None, v(Some("x"), Some("2"), None, None)).is_err());
        assert!(f(None, v(Some("0"), Some("2"), Some("1"), None)).is_err());
        assert!(f(None, v(Some("0"), Some("0"), None, None)).is_err());
    }

    #[test]
    fn shards_partition_the_items() {
        for n in 1..6 {
            let shards: Vec<Shard> = (0..n).map(|i| Shard::new(i, n).unwrap()).collect();
            for item in 0..50 {
                assert_eq!(shards.iter().filter(|s| s.owns(item)).count(), 1);
            }
        }
    }
}
