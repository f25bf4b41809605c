//! What guidance needs to know about one object: where its words sit in the prompt and its box.

use anyhow::{bail, Result};
use semi_layout::{BBox, Layout};

/// One object of a layout as the attention controllers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuidedObject {
    /// Positions of the object's phrase in the encoded prompt (key columns of cross-attention,
    /// counting the start token as 0), e.g. from the tokenizer's `token_positions`. Repeated
    /// positions count once.
    pub tokens: Vec<usize>,
    /// The object's box, normalised xyxy (x right, y down).
    pub bbox: BBox,
}

impl GuidedObject {
    pub fn new(tokens: Vec<usize>, bbox: BBox) -> Self {
        Self { tokens, bbox }
    }
}

/// The guided objects of a layout, in layout order. `locate(text)` gives the positions of
/// `text`'s tokens in the encoded prompt, e.g.
/// `|text| tokenizer.token_positions(&prompt_ids, text)`, so this crate never tokenizes. An
/// object's phrase is looked up first, then its category (COCO-style prompts name the category
/// but not always the phrase); an object found by neither is an error that names it.
pub fn objects_in_prompt(
    layout: &Layout,
    mut locate: impl FnMut(&str) -> Option<Vec<usize>>,
) -> Result<Vec<GuidedObject>> {
    layout
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let tokens = locate(&o.phrase)
                .filter(|t| !t.is_empty())
                .or_else(|| locate(&o.category).filter(|t| !t.is_empty()));
            match tokens {
                Some(tokens) => Ok(GuidedObject::new(tokens, o.bbox)),
                None => bail!(
                    "objects[{i}]: neither its phrase {:?} nor its category {:?} occurs in the \
                     prompt {:?}, so attention guidance cannot steer it",
                    o.phrase,
                    o.category,
                    layout.prompt
                ),
            }
        })
        .collect()
}

/// Every object needs at least one token and a valid box; `what` names the method in errors.
pub(crate) fn validate(objects: &[GuidedObject], what: &str) -> Result<()> {
    for (i, o) in objects.iter().enumerate() {
        if o.tokens.is_empty() {
            bail!("{what}: object {i} has no token positions (its phrase was not found in the prompt?)");
        }
        let b = o.bbox;
        if let Err(e) = BBox::new(b.x0, b.y0, b.x1, b.y1) {
            bail!("{what}: object {i}: {e}");
        }
    }
    Ok(())
}

/// The object's token positions, sorted, each once.
pub(crate) fn unique_tokens(o: &GuidedObject) -> Vec<usize> {
    let mut t = o.tokens.clone();
    t.sort_unstable();
    t.dedup();
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use semi_layout::LayoutObject;

    /// Word positions (start token = 0) standing in for a tokenizer.
    fn locate(prompt: &str, text: &str) -> Option<Vec<usize>> {
        let words: Vec<&str> = prompt.split(' ').collect();
        let needle: Vec<&str> = text.split(' ').collect();
        let start = words
            .windows(needle.len())
            .position(|w| w == needle.as_slice())?;
        Some((start + 1..start + 1 + needle.len()).collect())
    }

    #[test]
    fn objects_are_found_by_phrase_then_category() {
        let b = BBox::new(0.1, 0.1, 0.5, 0.5).unwrap();
        let prompt = "a brown dog and a car";
        let mut layout = Layout::new(
            prompt,
            512,
            512,
            vec![
                LayoutObject::new("a brown dog", "dog", b),
                LayoutObject::new("a red car", "car", b),
            ],
        );
        let objects = objects_in_prompt(&layout, |t| locate(prompt, t)).unwrap();
        assert_eq!(objects[0].tokens, vec![1, 2, 3]);
        assert_eq!(objects[1].tokens, vec![6]);
        assert_eq!(objects[1].bbox, b);
        layout.objects[1].category = "bus".into();
        let e = objects_in_prompt(&layout, |t| locate(prompt, t)).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "objects[1]: neither its phrase \"a red car\" nor its category \"bus\""
            ),
            "{e}"
        );
    }
}
