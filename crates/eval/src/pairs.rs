//! The category pairs a ticket collection needs for a set of layouts (the paper collects "all
//! possible pairs of categories (~700) in the dataset"), as a `semi tickets` pairs file.
//!
//! - Every unordered pair of distinct categories that occur together in one layout.
//! - A category that occurs with no other one (only in one-object samples, or only with itself:
//!   "two dogs") still needs a pair, because its tickets are its scores averaged over the
//!   partners in the store (docs/design.md 1.3). It is paired with the **hub**: the category in the
//!   most pairs above (ties: the alphabetically first), or, when no category occurs with
//!   another, the alphabetically first category (itself paired with the next one). A lone
//!   category in a set of one gets no pair (and is listed as uncovered).
//!
//! Names are normalised as the tickets crate does (trimmed, whitespace runs collapsed,
//! lower-case); a name with a comma is an error (the file's separator).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use semi_layout::Layout;

fn normalise(name: &str) -> Result<String> {
    let n = name
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    if n.is_empty() || n.contains(',') {
        bail!("category {name:?} cannot go into a pairs file (empty or contains a comma)");
    }
    Ok(n)
}

/// The pairs of a set of layouts (module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategoryPairs {
    /// Sorted `(a, b)` with `a < b`.
    pub pairs: Vec<(String, String)>,
    /// Categories paired with the hub because they never occur with another category.
    pub paired_with_hub: Vec<String>,
    pub hub: Option<String>,
    /// Categories left without a pair (only when there is a single category).
    pub uncovered: Vec<String>,
}

/// Collect the pairs (module docs).
pub fn category_pairs(layouts: &[Layout]) -> Result<CategoryPairs> {
    let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
    let mut all: BTreeSet<String> = BTreeSet::new();
    for l in layouts {
        let cats: BTreeSet<String> = l
            .objects
            .iter()
            .map(|o| normalise(&o.category))
            .collect::<Result<_>>()?;
        for a in &cats {
            for b in
                cats.range::<String, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
            {
                pairs.insert((a.clone(), b.clone()));
            }
        }
        all.extend(cats);
    }
    let mut degree: BTreeMap<&str, usize> = BTreeMap::new();
    for (a, b) in &pairs {
        *degree.entry(a).or_default() += 1;
        *degree.entry(b).or_default() += 1;
    }
    let lonely: Vec<String> = all
        .iter()
        .filter(|c| !degree.contains_key(c.as_str()))
        .cloned()
        .collect();
    let hub: Option<String> = degree
        .iter()
        .max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0)))
        .map(|(c, _)| c.to_string())
        .or_else(|| {
            (all.len() > 1)
                .then(|| all.iter().next().cloned())
                .flatten()
        });
    let mut out = CategoryPairs {
        hub: hub.clone(),
        ..Default::default()
    };
    for c in lonely {
        let partner = match &hub {
            Some(h) if *h != c => Some(h.clone()),
            _ => all.iter().find(|o| **o != c).cloned(),
        };
        match partner {
            Some(p) => {
                let pair = if c < p {
                    (c.clone(), p)
                } else {
                    (p, c.clone())
                };
                pairs.insert(pair);
                out.paired_with_hub.push(c);
            }
            None => out.uncovered.push(c),
        }
    }
    out.pairs = pairs.into_iter().collect();
    Ok(out)
}

impl CategoryPairs {
    /// The pairs file text (`a,b` per line), with a `#` header saying how it was made.
    pub fn to_pairs_file(&self) -> String {
        let mut s = format!(
            "# {} category pairs of the evaluation layouts (semi eval)\n",
            self.pairs.len()
        );
        if !self.paired_with_hub.is_empty() {
            s.push_str(&format!(
                "# paired with {:?} because they never occur with another category: {}\n",
                self.hub.as_deref().unwrap_or(""),
                self.paired_with_hub.join(", ")
            ));
        }
        for (a, b) in &self.pairs {
            s.push_str(&format!("{a},{b}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use semi_layout::{BBox, LayoutObject};

    fn layout(cats: &[&str]) -> Layout {
        let b = BBox::new(0.0, 0.0, 0.5, 0.5).unwrap();
        Layout::new(
            "p",
            64,
            64,
            cats.iter().map(|c| LayoutObject::new(*c, *c, b)).collect(),
        )
    }

    #[test]
    fn pairs_hub_and_lonely_categories() {
        let ls = [
            layout(&["dog", "Car"]),
            layout(&["car", "dog"]),
            layout(&["car", "traffic  light"]),
            layout(&["cat"]),
            layout(&["bear", "bear"]),
        ];
        let p = category_pairs(&ls).unwrap();
        let pairs: Vec<(&str, &str)> = p
            .pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("bear", "car"),
                ("car", "cat"),
                ("car", "dog"),
                ("car", "traffic light")
            ]
        );
        assert_eq!(p.hub.as_deref(), Some("car"));
        assert_eq!(p.paired_with_hub, ["bear", "cat"]);
        let text = p.to_pairs_file();
        assert!(text.starts_with("# 4 category pairs"), "{text}");
        assert!(text.ends_with("car,dog\ncar,traffic light\n"), "{text}");
        // Only one-object layouts: the first other category is the partner.
        let p = category_pairs(&[layout(&["dog"]), layout(&["cat"]), layout(&["ant"])]).unwrap();
        let pairs: Vec<(&str, &str)> = p
            .pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(pairs, [("ant", "cat"), ("ant", "dog")]);
        assert_eq!(p.hub.as_deref(), Some("ant"));
        let p = category_pairs(&[layout(&["dog"])]).unwrap();
        assert!(p.pairs.is_empty());
        assert_eq!(p.uncovered, ["dog"]);
        assert!(category_pairs(&[layout(&["a,b"])]).is_err());
    }
}
