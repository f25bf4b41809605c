//! The per-call state that attention layers consult: the controller, what to report in
//! [`AttentionSite`], and where to stop early.

use crate::controller::{AttentionController, AttentionKind, AttentionSite, Place};
use candle_core::Result;

/// What an attention layer knows about itself, fixed at construction (no formatting per call).
#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// Execution-order index among all attention layers of the UNet.
    pub index: usize,
    pub path: String,
    pub place: Place,
    pub kind: AttentionKind,
    pub heads: usize,
}

/// Collects [`LayerInfo`]s while the UNet is built; construction order is execution order.
#[derive(Debug, Default)]
pub struct LayerRegistry {
    pub layers: Vec<LayerInfo>,
}

impl LayerRegistry {
    /// Registers the attention module at `path` (its VarBuilder prefix) and returns its info.
    pub fn register(&mut self, path: String, kind: AttentionKind, heads: usize) -> LayerInfo {
        let place = if path.starts_with("down_blocks") {
            Place::Down
        } else if path.starts_with("mid_block") {
            Place::Mid
        } else {
            Place::Up
        };
        let info = LayerInfo {
            index: self.layers.len(),
            path,
            place,
            kind,
            heads,
        };
        self.layers.push(info.clone());
        info
    }

    /// Resolves `stop_after`: an exact layer path, or a prefix (`down_blocks.2.attentions.1`)
    /// meaning the last attention layer under it in execution order.
    pub fn resolve(&self, path: &str) -> Result<usize> {
        if let Some(l) = self.layers.iter().find(|l| l.path == path) {
            return Ok(l.index);
        }
        let prefix = format!("{}.", path.trim_end_matches('.'));
        if let Some(l) = self
            .layers
            .iter()
            .rev()
            .find(|l| l.path.starts_with(&prefix))
        {
            return Ok(l.index);
        }
        let examples: Vec<&str> = self
            .layers
            .iter()
            .filter(|l| l.kind == AttentionKind::CrossAttention)
            .take(4)
            .map(|l| l.path.as_str())
            .collect();
        candle_core::bail!(
            "unknown attention layer `{path}`: this UNet has {} attention layers, e.g. {}",
            self.layers.len(),
            examples.join(", ")
        )
    }
}

/// Mutable state of one forward call.
pub struct CallState<'a> {
    pub controller: Option<&'a mut dyn AttentionController>,
    pub step: usize,
    pub timestep: f64,
    pub conditional_rows: Vec<bool>,
    /// Index of the layer after which the pass stops.
    pub stop_at: Option<usize>,
}

impl LayerInfo {
    /// The site handed to the controller for this layer at query resolution `height x width`.
    pub fn site<'s>(
        &'s self,
        height: usize,
        width: usize,
        step: usize,
        timestep: f64,
        conditional_rows: &'s [bool],
    ) -> AttentionSite<'s> {
        AttentionSite {
            path: &self.path,
            place: self.place,
            kind: self.kind,
            height,
            width,
            heads: self.heads,
            step,
            timestep,
            conditional_rows,
        }
    }
}
