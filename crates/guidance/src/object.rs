//! What guidance needs to know about one object: where its words sit in the prompt and its box.

use anyhow::{bail, Result};
use semi_layout::BBox;

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
