//! The caption grammar and its parser.
//!
//! Grammar (lowercase, no final period):
//!
//! ```text
//! caption := item | item " and " item | item (", " item)* " and " item
//! item    := "a " singular | count " " plural        count := "two" | "three" | ... | "ten"
//! ```
//!
//! e.g. "a circle", "a circle and a square", "a ring, two crosses and a diamond". Each category
//! appears in at most one item; the generator orders items at random (see `scene`), so the caption
//! carries no information about where objects are.

use crate::category::Category;
use anyhow::{bail, ensure, Context, Result};

const COUNT_WORDS: [&str; 10] = [
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
];

/// Builds the caption for `(category, count)` groups, in the given order.
pub fn make_caption(groups: &[(Category, u32)]) -> Result<String> {
    ensure!(!groups.is_empty(), "a caption needs at least one object");
    let mut items = Vec::with_capacity(groups.len());
    for (i, &(cat, count)) in groups.iter().enumerate() {
        ensure!(
            !groups[..i].iter().any(|&(c, _)| c == cat),
            "category {cat} appears twice in the caption groups"
        );
        items.push(match count {
            0 => bail!("category {cat} has count 0"),
            1 => format!("a {}", cat.name()),
            n if n as usize <= COUNT_WORDS.len() => {
                format!("{} {}", COUNT_WORDS[n as usize - 1], cat.plural())
            }
            n => bail!(
                "count {n} for {cat} exceeds the grammar's maximum {}",
                COUNT_WORDS.len()
            ),
        });
    }
    Ok(match items.len() {
        1 => items.remove(0),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    })
}

/// Parses a caption into `(category, count)` groups in caption order. Case, surrounding
/// whitespace and a final period are ignored; "an", "one" and digits are accepted as counts;
/// a category named twice has its counts added. Anything else outside the grammar is an error.
pub fn parse_caption(caption: &str) -> Result<Vec<(Category, u32)>> {
    let text = caption.trim().to_ascii_lowercase();
    let text = text.strip_suffix('.').unwrap_or(&text).trim_end();
    ensure!(!text.is_empty(), "empty caption");
    let mut groups: Vec<(Category, u32)> = Vec::new();
    for part in text.split(',') {
        for item in part.split(" and ") {
            let (cat, count) =
                parse_item(item).with_context(|| format!("in caption {caption:?}"))?;
            match groups.iter_mut().find(|(c, _)| *c == cat) {
                Some(g) => g.1 += count,
                None => groups.push((cat, count)),
            }
        }
    }
    Ok(groups)
}

fn parse_item(item: &str) -> Result<(Category, u32)> {
    let words: Vec<&str> = item.split_whitespace().collect();
    let [count_word, noun] = words[..] else {
        bail!("expected \"<count> <shape>\", got {:?}", item.trim());
    };
    let count = match count_word {
        "a" | "an" => 1,
        w => match COUNT_WORDS.iter().position(|&c| c == w) {
            Some(i) => i as u32 + 1,
            None => w
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| format!("unknown count word {w:?}"))?,
        },
    };
    let Some((cat, plural)) = Category::from_noun(noun) else {
        bail!("unknown shape {noun:?}");
    };
    ensure!(
        plural == (count > 1),
        "{count_word:?} does not agree with {noun:?}"
    );
    Ok((cat, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Category::*;

    #[test]
    fn builds_the_documented_forms() {
        assert_eq!(make_caption(&[(Circle, 1)]).unwrap(), "a circle");
        assert_eq!(
            make_caption(&[(Circle, 1), (Square, 1)]).unwrap(),
            "a circle and a square"
        );
        assert_eq!(
            make_caption(&[(Circle, 1), (Square, 1), (Ring, 1)]).unwrap(),
            "a circle, a square and a ring"
        );
        assert_eq!(
            make_caption(&[(Cross, 2), (Diamond, 1)]).unwrap(),
            "two crosses and a diamond"
        );
    }

    #[test]
    fn rejects_bad_groups() {
        assert!(make_caption(&[]).is_err());
        assert!(make_caption(&[(Circle, 0)]).is_err());
        assert!(make_caption(&[(Circle, 1), (Circle, 1)]).is_err());
        assert!(make_caption(&[(Circle, 11)]).is_err());
    }

    #[test]
    fn round_trips_every_pair_and_count() {
        for a in Category::ALL {
            for b in Category::ALL {
                for (na, nb) in [(1, 1), (2, 1), (1, 3), (10, 4)] {
                    let groups = if a == b {
                        vec![(a, na)]
                    } else {
                        vec![(a, na), (b, nb)]
                    };
                    let text = make_caption(&groups).unwrap();
                    assert_eq!(parse_caption(&text).unwrap(), groups, "{text}");
                }
            }
        }
    }

    #[test]
    fn parser_is_lenient_about_form_but_not_words() {
        assert_eq!(
            parse_caption("  A Circle and 2 squares. ").unwrap(),
            vec![(Circle, 1), (Square, 2)]
        );
        assert_eq!(
            parse_caption("a ring, a circle and a ring").unwrap(),
            vec![(Ring, 2), (Circle, 1)]
        );
        for bad in [
            "",
            "a blob",
            "circle",
            "two circle",
            "a circles",
            "a big circle",
            "zero circles",
            "a circle and",
            "a circle,, a ring",
        ] {
            assert!(parse_caption(bad).is_err(), "{bad:?} should fail");
        }
    }
}
