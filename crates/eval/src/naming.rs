//! Is a category named in a caption, and by which words? The paper's sample rule ("every box
//! category is mentioned in the caption") made precise:
//!
//! - **Words**: a caption is cut into maximal runs of letters and digits, compared
//!   case-insensitively; so "Teddy-bear" is the two words "teddy bear" and "dog's" contains
//!   "dog", but "hotdog" is one word and does not name "hot dog", "doghouse" does not name "dog".
//! - **Names**: a category is named when its name (or one of its aliases) occurs as consecutive
//!   whole words. Only the last word may be inflected: plural `s` or `es` ("two dogs", "buses",
//!   "traffic lights", "wine glasses") and the irregular plurals "people" (person), "mice"
//!   (mouse), "knives" (knife). No synonyms by default: "man" does not name "person" and "table"
//!   does not name "dining table", exactly as the literal rule says; pass aliases to widen it.
//! - **Longer names win**: a match inside a longer match of another category does not count,
//!   so "a hot dog" names "hot dog" but not "dog", "a teddy bear" names "teddy bear" but not
//!   "bear".
//!
//! Known limit of any literal rule: "an orange cat" names "orange".

use std::collections::BTreeMap;

/// A word of a caption: its lower-cased text and its byte range in the caption.
#[derive(Debug, Clone, PartialEq)]
struct Word {
    text: String,
    start: usize,
    end: usize,
}

fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(Word {
                    text: text[s..i].to_lowercase(),
                    start: s,
                    end: i,
                });
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Irregular plurals of last words of COCO names.
const IRREGULAR: [(&str, &str); 3] = [("person", "people"), ("mouse", "mice"), ("knife", "knives")];

/// One way of naming a category: its words, the last one with its accepted inflections.
#[derive(Debug, Clone)]
struct Form {
    category: usize,
    head: Vec<String>,
    last: Vec<String>,
}

impl Form {
    fn new(category: usize, name: &str) -> Option<Form> {
        let mut ws: Vec<String> = words(name).into_iter().map(|w| w.text).collect();
        let last = ws.pop()?;
        let mut variants = vec![format!("{last}s"), format!("{last}es"), last.clone()];
        variants.extend(
            IRREGULAR
                .iter()
                .filter(|(s, _)| *s == last)
                .map(|(_, p)| p.to_string()),
        );
        Some(Form {
            category,
            head: ws,
            last: variants,
        })
    }

    fn len(&self) -> usize {
        self.head.len() + 1
    }

    fn matches_at(&self, hay: &[Word], i: usize) -> bool {
        let n = self.len();
        i + n <= hay.len()
            && self.head.iter().zip(&hay[i..]).all(|(a, b)| *a == b.text)
            && self.last.contains(&hay[i + n - 1].text)
    }
}

/// Where a caption names a category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub category: String,
    /// The caption's own text for the name, as written ("Hot dogs"): the object's phrase.
    pub text: String,
    /// Byte range of `text` in the caption.
    pub start: usize,
    pub end: usize,
}

/// Finds category names in captions under the rules of the module documentation.
#[derive(Debug, Clone)]
pub struct NameMatcher {
    categories: Vec<String>,
    forms: Vec<Form>,
}

impl NameMatcher {
    /// A matcher for `categories` (e.g. the 80 COCO names); `aliases` maps a category to extra
    /// names that also count as naming it (aliases of unknown categories are ignored).
    pub fn new(categories: &[String], aliases: &BTreeMap<String, Vec<String>>) -> Self {
        let mut forms = Vec::new();
        for (k, c) in categories.iter().enumerate() {
            let extra = aliases.get(c).into_iter().flatten();
            for name in std::iter::once(c).chain(extra) {
                forms.extend(Form::new(k, name));
            }
        }
        NameMatcher {
            categories: categories.to_vec(),
            forms,
        }
    }

    /// Every mention in `caption`, in caption order, without those inside a longer mention of
    /// another category.
    pub fn mentions(&self, caption: &str) -> Vec<Mention> {
        let hay = words(caption);
        // (first word, word count, category)
        let mut found: Vec<(usize, usize, usize)> = Vec::new();
        for i in 0..hay.len() {
            for f in &self.forms {
                if f.matches_at(&hay, i) && !found.contains(&(i, f.len(), f.category)) {
                    found.push((i, f.len(), f.category));
                }
            }
        }
        let inside_longer = |&(i, n, c): &(usize, usize, usize)| {
            found
                .iter()
                .any(|&(j, m, d)| d != c && m > n && j <= i && i + n <= j + m)
        };
        let mut kept: Vec<(usize, usize, usize)> = found
            .iter()
            .copied()
            .filter(|m| !inside_longer(m))
            .collect();
        kept.sort();
        kept.into_iter()
            .map(|(i, n, c)| {
                let (start, end) = (hay[i].start, hay[i + n - 1].end);
                Mention {
                    category: self.categories[c].clone(),
                    text: caption[start..end].to_string(),
                    start,
                    end,
                }
            })
            .collect()
    }

    /// The first mention of `category` in `caption`, if any.
    pub fn find(&self, caption: &str, category: &str) -> Option<Mention> {
        self.mentions(caption)
            .into_iter()
            .find(|m| m.category == category)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coco::COCO_CATEGORIES;

    fn coco() -> NameMatcher {
        let names: Vec<String> = COCO_CATEGORIES.iter().map(|c| c.1.to_string()).collect();
        NameMatcher::new(&names, &BTreeMap::new())
    }

    fn named(caption: &str) -> Vec<(String, String)> {
        coco()
            .mentions(caption)
            .into_iter()
            .map(|m| (m.category, m.text))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn whole_words_plurals_and_case() {
        assert_eq!(named("A Dog sleeps."), pairs(&[("dog", "Dog")]));
        assert_eq!(
            named("two dogs and the buses"),
            pairs(&[("dog", "dogs"), ("bus", "buses")])
        );
        assert_eq!(named("a doghouse and a hotdog"), pairs(&[]));
        assert_eq!(
            named("the dog's bowl"),
            pairs(&[("dog", "dog"), ("bowl", "bowl")])
        );
        assert_eq!(
            named("People with knives"),
            pairs(&[("person", "People"), ("knife", "knives")])
        );
        assert_eq!(named("a man at a table"), pairs(&[]));
    }

    #[test]
    fn multi_word_names_and_shadowing() {
        assert_eq!(
            named("Two traffic lights"),
            pairs(&[("traffic light", "traffic lights")])
        );
        assert_eq!(named("a Hot dogs stand"), pairs(&[("hot dog", "Hot dogs")]));
        assert_eq!(
            named("a teddy-bear"),
            pairs(&[("teddy bear", "teddy-bear")])
        );
        assert_eq!(
            named("a bear hugs a teddy bear"),
            pairs(&[("bear", "bear"), ("teddy bear", "teddy bear")])
        );
        assert_eq!(named("a traffic jam"), pairs(&[]));
        assert_eq!(
            named("wine glasses on a dining table"),
            pairs(&[
                ("wine glass", "wine glasses"),
                ("dining table", "dining table")
            ])
        );
        // Byte ranges point into the caption as written (multi-byte characters before).
        let m = coco().find("Café — a cat", "cat").unwrap();
        assert_eq!(&"Café — a cat"[m.start..m.end], "cat");
    }

    #[test]
    fn aliases_widen_the_rule() {
        let names = vec!["person".to_string(), "dining table".to_string()];
        let mut aliases = BTreeMap::new();
        aliases.insert(
            "person".to_string(),
            vec!["man".to_string(), "woman".to_string()],
        );
        aliases.insert("dining table".to_string(), vec!["table".to_string()]);
        let m = NameMatcher::new(&names, &aliases);
        let found = m.mentions("A woman at a table");
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].category.as_str(), found[0].text.as_str()),
            ("person", "woman")
        );
        assert_eq!(
            (found[1].category.as_str(), found[1].text.as_str()),
            ("dining table", "table")
        );
        // Irregular plurals of aliases are not guessed: "women" is not "woman" + s.
        assert_eq!(m.find("two women", "person"), None);
    }
}
