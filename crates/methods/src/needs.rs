//! What a method needs besides the model and the prompt, each with the reason a user is told.

/// Requirements of one method (or one part of it). Each reason completes "needs a layout (...)"
/// or "needs a ticket store (...)".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Why the layout's boxes are needed; `None`: a plain prompt will do.
    pub boxes: Option<&'static str>,
    /// Why a ticket store is needed.
    pub store: Option<&'static str>,
    /// Why given initial latents cannot be used (the method builds its own).
    pub own_latents: Option<&'static str>,
    /// Whether the objects' token positions in the prompt are used.
    pub tokens: bool,
}

impl Needs {
    /// Both sets of requirements; the first reason wins where both give one.
    pub fn and(self, other: Needs) -> Needs {
        Needs {
            boxes: self.boxes.or(other.boxes),
            store: self.store.or(other.store),
            own_latents: self.own_latents.or(other.own_latents),
            tokens: self.tokens || other.tokens,
        }
    }
}
