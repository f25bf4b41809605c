//! Typed mirrors of the diffusers/transformers `config.json` files of a Stable Diffusion folder.
//!
//! Every field that diffusers writes for SD 1.x/2.x and SDXL models is known here. A field that changes the
//! computation in a way we do not implement must keep its neutral value, otherwise loading fails
//! with an error that names the file and the field: a model must never run silently wrong. Unknown
//! fields are errors too; keys starting with `_` (`_class_name`, `_diffusers_version`, ...) are
//! metadata and ignored.
//!
//! One file per component, each config declared once through [`config!`]: every field with its
//! type, default and doc in one line, from which the struct, its `Default` and the list of known
//! keys (`FIELDS`, what makes an unknown key an error) are generated. Adding a diffusers field is
//! one line in the component's table (and, if we do not implement it, a check in its
//! `validate`).

mod model_index;
mod scheduler;
mod text_encoder;
mod unet;
mod vae;

pub use model_index::ModelIndex;
pub use scheduler::SchedulerConfig;
pub use text_encoder::TextEncoderConfig;
pub use unet::{BlockSpec, Depths, MidKind, UNetConfig};
pub use vae::VaeConfig;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// A config struct declared once: `config! { /// doc\n pub struct Name { field: Type = default, ... } }`
/// gives the struct (missing keys take the default), `Default`, and `Name::FIELDS`, the keys
/// the config accepts.
macro_rules! config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $name {
            /// Every key of this config, in declaration order.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}
pub(crate) use config;

/// A value that diffusers accepts either once for all blocks or as one entry per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for block `i` of `n` blocks; errors if a list has the wrong length.
    pub fn resolve(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => bail!(
                "`{field}` has {} entries but the model has {n} blocks",
                v.len()
            ),
        }
    }
}

/// Reads a JSON object, checks its keys against `known`, and deserialises it.
pub(crate) fn read_checked<T: DeserializeOwned>(
    path: &Path,
    known: &[&str],
    tolerated: &[&str],
) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_checked(&text, &path.display().to_string(), known, tolerated)
}

/// Parses config text (named `what` in errors), rejecting unknown keys and dropping `tolerated` ones.
pub(crate) fn parse_checked<T: DeserializeOwned>(
    text: &str,
    what: &str,
    known: &[&str],
    tolerated: &[&str],
) -> Result<T> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("{what}: malformed JSON"))?;
    let Value::Object(map) = value else {
        bail!("{what}: expected a JSON object")
    };
    let mut kept = Map::new();
    for (k, v) in map {
        if k.starts_with('_') || tolerated.contains(&k.as_str()) {
            continue;
        }
        if !known.contains(&k.as_str()) {
            bail!("{what}: unsupported field `{k}`");
        }
        kept.insert(k, v);
    }
    serde_json::from_value(Value::Object(kept)).with_context(|| format!("{what}: invalid value"))
}

/// [`read_checked`], then `validate` with the path as the name in errors.
pub(crate) fn read_validated<T: DeserializeOwned>(
    path: &Path,
    known: &[&str],
    tolerated: &[&str],
    validate: fn(&T, &str) -> Result<()>,
) -> Result<T> {
    let cfg = read_checked(path, known, tolerated)?;
    validate(&cfg, &path.display().to_string())?;
    Ok(cfg)
}

/// [`parse_checked`], then `validate`.
pub(crate) fn parse_validated<T: DeserializeOwned>(
    text: &str,
    what: &str,
    known: &[&str],
    tolerated: &[&str],
    validate: fn(&T, &str) -> Result<()>,
) -> Result<T> {
    let cfg = parse_checked(text, what, known, tolerated)?;
    validate(&cfg, what)?;
    Ok(cfg)
}

/// Fails naming the field when `ok` is false (a feature we do not implement is switched on).
pub(crate) fn require(
    ok: bool,
    what: &str,
    field: &str,
    value: impl std::fmt::Debug,
) -> Result<()> {
    if !ok {
        bail!("{what}: unsupported value {value:?} for field `{field}`");
    }
    Ok(())
}
