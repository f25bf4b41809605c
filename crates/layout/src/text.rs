//! Word-level text matching: is a category named in a prompt, and which category does a phrase
//! name. Deliberately simple and predictable (no stemming beyond a plural `s`/`es`).

/// Lower-cased words: maximal runs of alphanumeric characters.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `name` (one or more words) occurs in `text` as consecutive whole words,
/// case-insensitively; the last word may carry a plural `s` or `es` ("dog" matches "two dogs",
/// "bus" matches "buses", "hot dog" matches "Hot dogs"). Never true for a name without words.
pub fn names(text: &str, name: &str) -> bool {
    find(&words(text), &words(name)).is_some()
}

/// Position of the first occurrence of `needle` in `hay` under the rule of [`names`].
fn find(hay: &[String], needle: &[String]) -> Option<usize> {
    let n = needle.len();
    if n == 0 || hay.len() < n {
        return None;
    }
    (0..=hay.len() - n).find(|&i| {
        let last_ok = |h: &str, w: &str| {
            h == w
                || h.strip_prefix(w)
                    .is_some_and(|rest| rest == "s" || rest == "es")
        };
        hay[i..i + n - 1] == needle[..n - 1] && last_ok(&hay[i + n - 1], &needle[n - 1])
    })
}

/// The category a phrase names, for imports that give only a phrase.
///
/// With a vocabulary (for example the 80 COCO category names): the longest vocabulary entry
/// (in words) that the phrase names under the rule of [`names`], ties going to the entry named
/// earliest in the phrase. Without a vocabulary, or when no entry is named: the phrase's last
/// word, lower-cased ("a brown dog" -> "dog"), which is right for the short noun phrases of
/// GLIGEN-style files and wrong for "traffic light" or "a cat on a mat": pass a vocabulary for
/// those. `None` when the phrase has no words.
pub fn derive_category(phrase: &str, vocabulary: &[String]) -> Option<String> {
    let hay = words(phrase);
    let mut best: Option<(usize, usize, &String)> = None; // (word count, position, entry)
    for entry in vocabulary {
        let needle = words(entry);
        if let Some(pos) = find(&hay, &needle) {
            let better = match best {
                None => true,
                Some((len, at, _)) => needle.len() > len || (needle.len() == len && pos < at),
            };
            if better {
                best = Some((needle.len(), pos, entry));
            }
        }
    }
    match best {
        Some((_, _, entry)) => Some(entry.trim().to_lowercase()),
        None => hay.last().cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_and_plurals() {
        assert!(names("A photo of a Dog.", "dog"));
        assert!(names("two dogs on a sofa", "dog"));
        assert!(names("two buses", "bus"));
        assert!(names("Hot dogs with mustard", "hot dog"));
        assert!(!names("a hotdog", "hot dog"));
        assert!(!names("a doghouse", "dog"));
        assert!(!names("an apple", "app"));
        assert!(!names("a dog", "the dog"));
        assert!(!names("a dog", "  "));
        assert!(names("a teddy-bear", "teddy bear"));
    }

    #[test]
    fn derive_with_and_without_vocabulary() {
        let vocab: Vec<String> = ["dog", "hot dog", "traffic light", "car", "light"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(derive_category("a brown dog", &[]).as_deref(), Some("dog"));
        assert_eq!(
            derive_category("a red traffic light", &vocab).as_deref(),
            Some("traffic light")
        );
        assert_eq!(
            derive_category("two hot dogs", &vocab).as_deref(),
            Some("hot dog")
        );
        assert_eq!(
            derive_category("a dog next to a car", &vocab).as_deref(),
            Some("dog")
        );
        assert_eq!(
            derive_category("a cat on a mat", &vocab).as_deref(),
            Some("mat")
        );
        assert_eq!(derive_category(" ... ", &vocab), None);
    }
}
