//! Category names and unordered category pairs, and the pairs-file format.
//!
//! A category name is lower-cased, trimmed, and runs of whitespace become one space
//! ("  Traffic   Light " -> "traffic light"), because the probe writes it into the prompt
//! `a {c1} and a {c2}` and the store is keyed by it. Names may not be empty or contain `,`
//! (the list separator) or control characters, and at most [`MAX_CATEGORY_CHARS`] characters
//! long (a category is a short noun phrase; the probe prompt must fit the text encoder).
//!
//! # Pairs file
//!
//! One unordered pair per line, two category names separated by a comma: `dog,car`. Blank lines
//! and lines starting with `#` are ignored; names are normalised as above. A line with the same
//! category twice, or a pair that repeats an earlier line (in either order), is an error naming
//! both lines.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The longest category name accepted from input, in characters.
pub const MAX_CATEGORY_CHARS: usize = 64;

/// Normalise one category name (see the module docs); errors say what is wrong with it.
pub fn normalize_category(name: &str) -> Result<String> {
    let norm = normalize_stored(name)?;
    let chars = norm.chars().count();
    if chars > MAX_CATEGORY_CHARS {
        let head: String = norm.chars().take(24).collect();
        bail!(
            "category name \"{head}...\" has {chars} characters; at most {MAX_CATEGORY_CHARS} are \
             allowed (a category is a short noun phrase such as \"traffic light\")"
        );
    }
    Ok(norm)
}

/// The checks of [`normalize_category`] but the length: how names already in a store are read,
/// so a store written before the limit existed still opens (and can be repaired by collect).
fn normalize_stored(name: &str) -> Result<String> {
    let norm = name
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    if norm.is_empty() {
        bail!("empty category name");
    }
    if let Some(c) = norm.chars().find(|c| *c == ',' || c.is_control()) {
        bail!("category name {name:?} contains {c:?}; names may not contain commas or control characters");
    }
    Ok(norm)
}

/// Normalise a list of category names, refusing duplicates (after normalisation) and lists of
/// fewer than `min` names.
pub fn normalize_categories<S: AsRef<str>>(names: &[S]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let norm = normalize_category(name.as_ref())?;
        if out.contains(&norm) {
            bail!("category {norm:?} is listed twice");
        }
        out.push(norm);
    }
    Ok(out)
}

/// Parse `dog,car,cat` (the CLI's `--categories`) into normalised, distinct names.
pub fn parse_category_list(text: &str) -> Result<Vec<String>> {
    let parts: Vec<&str> = text.split(',').collect();
    normalize_categories(&parts).with_context(|| format!("in category list {text:?}"))
}

/// An unordered pair of distinct categories, stored in canonical order (`a < b` as strings).
/// The probe prompt uses this order: `a {a} and a {b}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair {
    a: String,
    b: String,
}

impl Pair {
    /// The pair {x, y} of two normalised names; errors if they are equal after normalisation.
    pub fn new(x: &str, y: &str) -> Result<Pair> {
        Pair::ordered(normalize_category(x)?, normalize_category(y)?)
    }

    /// A pair read back from a store's manifest: [`Pair::new`] without the length limit.
    pub fn stored(x: &str, y: &str) -> Result<Pair> {
        Pair::ordered(normalize_stored(x)?, normalize_stored(y)?)
    }

    fn ordered(x: String, y: String) -> Result<Pair> {
        if x == y {
            bail!("pair {x:?},{y:?} names the same category twice");
        }
        Ok(if x < y {
            Pair { a: x, b: y }
        } else {
            Pair { a: y, b: x }
        })
    }

    /// The first category in canonical order.
    pub fn a(&self) -> &str {
        &self.a
    }

    /// The second category in canonical order.
    pub fn b(&self) -> &str {
        &self.b
    }

    /// `(a, b)` as borrowed strings, the form the [`crate::Prober`] takes.
    pub fn as_strs(&self) -> (&str, &str) {
        (&self.a, &self.b)
    }

    pub fn contains(&self, category: &str) -> bool {
        self.a == category || self.b == category
    }

    /// The other category of the pair, if `category` is one of them.
    pub fn partner(&self, category: &str) -> Option<&str> {
        if self.a == category {
            Some(&self.b)
        } else if self.b == category {
            Some(&self.a)
        } else {
            None
        }
    }

    /// A file-system-safe directory name of at most [`MAX_DIR_NAME`] bytes, whatever the names'
    /// length: `[a-z0-9]` kept, every other byte as `_xx` (hex), the two names joined by `+`; a
    /// longer result becomes `h-` and 32 hex digits of the pair's SHA-256 (`-` never occurs in
    /// the readable form). Injective, so two pairs never share a directory; the names
    /// themselves are kept in the manifest.
    pub fn dir_name(&self) -> String {
        let readable = self.readable_dir_name();
        if readable.len() <= MAX_DIR_NAME {
            return readable;
        }
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(format!("{}\n{}", self.a, self.b).as_bytes());
        let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("h-{hex}")
    }

    /// The directory name stores used before names were hashed, when it differs from
    /// [`Pair::dir_name`] (a store may hold such a directory).
    pub fn legacy_dir_name(&self) -> Option<String> {
        let readable = self.readable_dir_name();
        (readable.len() > MAX_DIR_NAME).then_some(readable)
    }

    fn readable_dir_name(&self) -> String {
        format!("{}+{}", encode_name(&self.a), encode_name(&self.b))
    }
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.a, self.b)
    }
}

/// The longest pair directory name, in bytes (well under the 255 of common file systems, and
/// under the 143 of encrypted home directories).
pub const MAX_DIR_NAME: usize = 120;

fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() {
            out.push(byte as char);
        } else {
            out.push_str(&format!("_{byte:02x}"));
        }
    }
    out
}

/// Every unordered pair of `categories` (normalised, distinct, at least two), sorted.
pub fn all_pairs<S: AsRef<str>>(categories: &[S]) -> Result<Vec<Pair>> {
    let cats = normalize_categories(categories)?;
    if cats.len() < 2 {
        bail!(
            "need at least two categories to form a contrastive pair (got {}); the probe prompt is \
             `a {{c1}} and a {{c2}}`",
            cats.len()
        );
    }
    let mut pairs = Vec::new();
    for i in 0..cats.len() {
        for j in i + 1..cats.len() {
            pairs.push(Pair::new(&cats[i], &cats[j])?);
        }
    }
    pairs.sort();
    Ok(pairs)
}

/// Parse a pairs file's text (format in the module docs); pairs come back sorted.
pub fn parse_pairs(text: &str) -> Result<Vec<Pair>> {
    let mut seen: HashMap<Pair, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let names: Vec<&str> = line.split(',').collect();
        if names.len() != 2 {
            bail!("line {lineno}: expected two categories separated by one comma (`dog,car`), got {line:?}");
        }
        let pair = Pair::new(names[0], names[1]).with_context(|| format!("line {lineno}"))?;
        if let Some(first) = seen.get(&pair) {
            bail!("line {lineno}: pair {pair} repeats line {first}");
        }
        seen.insert(pair, lineno);
    }
    if seen.is_empty() {
        bail!("no pairs (expected lines like `dog,car`)");
    }
    let mut pairs: Vec<Pair> = seen.into_keys().collect();
    pairs.sort();
    Ok(pairs)
}

/// Read and parse a pairs file; errors name the file.
pub fn read_pairs_file(path: &Path) -> Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read pairs file {}", path.display()))?;
    parse_pairs(&text).with_context(|| format!("in pairs file {}", path.display()))
}

/// The distinct categories of `pairs`, sorted.
pub fn categories_of(pairs: &[Pair]) -> Vec<String> {
    let mut cats: Vec<String> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    cats.sort();
    cats.dedup();
    cats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        assert_eq!(
            normalize_category("  Traffic \t Light ").unwrap(),
            "traffic light"
        );
        assert!(normalize_category("  ").is_err());
        assert!(normalize_category("a,b").is_err());
        let err = parse_category_list("dog, Car,DOG").unwrap_err();
        assert!(
            format!("{err:#}").contains("\"dog\" is listed twice"),
            "{err:#}"
        );
    }

    #[test]
    fn pairs_are_canonical_and_unordered() {
        let p = Pair::new("dog", "Car").unwrap();
        assert_eq!(p.as_strs(), ("car", "dog"));
        assert_eq!(p, Pair::new("car", "dog").unwrap());
        assert_eq!(p.partner("dog"), Some("car"));
        assert_eq!(p.partner("cat"), None);
        assert!(Pair::new("dog", " DOG").is_err());
        assert_eq!(
            Pair::new("hot dog", "a_b").unwrap().dir_name(),
            "a_5fb+hot_20dog"
        );
    }

    #[test]
    fn long_names_are_refused_and_directory_names_are_bounded() {
        let long = "x".repeat(MAX_CATEGORY_CHARS + 1);
        let err = normalize_category(&long).unwrap_err().to_string();
        assert!(err.contains("at most 64"), "{err}");
        assert!(err.len() < 200, "{err}");
        // A store written before the limit still reads, and its directory name stays short.
        let stored = Pair::stored(&"y".repeat(300), "dog").unwrap();
        let name = stored.dir_name();
        assert!(name.starts_with("h-") && name.len() == 34, "{name}");
        assert_ne!(
            name,
            Pair::stored(&"y".repeat(301), "dog").unwrap().dir_name()
        );
        assert!(stored.legacy_dir_name().unwrap().len() > MAX_DIR_NAME);
        let at_limit = Pair::new(&"é".repeat(MAX_CATEGORY_CHARS), "dog").unwrap();
        assert!(at_limit.dir_name().len() <= MAX_DIR_NAME);
        assert_eq!(Pair::new("car", "dog").unwrap().legacy_dir_name(), None);
    }

    #[test]
    fn all_pairs_of_three() {
        let pairs = all_pairs(&["dog", "car", "cat"]).unwrap();
        let s: Vec<String> = pairs.iter().map(|p| p.to_string()).collect();
        assert_eq!(s, ["car,cat", "car,dog", "cat,dog"]);
        assert!(all_pairs(&["dog"]).is_err());
        assert_eq!(categories_of(&pairs), ["car", "cat", "dog"]);
    }

    #[test]
    fn pairs_file() {
        let pairs = parse_pairs("# coco\ndog,car\n\n Cat , dog \n").unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].to_string(), "car,dog");
        let err = parse_pairs("dog,car\ncar,dog\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2: pair car,dog repeats line 1");
        assert!(parse_pairs("dog,car,cat\n").is_err());
        assert!(parse_pairs("dog,dog\n").is_err());
        assert!(parse_pairs("# nothing\n").is_err());
    }
}
