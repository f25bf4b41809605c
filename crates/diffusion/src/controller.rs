//! The attention-controller hook: how the ticket probe, Paint and Soft see and steer attention.
//!
//! The UNet calls a controller once per attention layer and forward pass, with a description of
//! the layer ([`AttentionSite`]). A controller first says whether it [`wants`] the layer; only then
//! does the layer materialise its logits and probabilities and hand them over, so layers nobody
//! asked for keep the fast path and a UNet without a controller pays nothing.
//!
//! [`wants`]: AttentionController::wants

use candle_core::{Result, Tensor};

/// Where in the UNet an attention layer sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    Down,
    Mid,
    Up,
}

/// Self-attention (`attn1`) or cross-attention to the text (`attn2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttentionKind {
    SelfAttention,
    CrossAttention,
}

/// A description of one attention layer, handed to the controller on every call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSite<'a> {
    /// The diffusers module path, e.g. `down_blocks.2.attentions.1.transformer_blocks.0.attn2`.
    pub path: &'a str,
    pub place: Place,
    pub kind: AttentionKind,
    /// Spatial size of the query feature map (the layer's latent resolution).
    pub height: usize,
    pub width: usize,
    pub heads: usize,
    /// Denoising step index (0 for the first step), as given to the forward pass.
    pub step: usize,
    /// The timestep of this forward pass.
    pub timestep: f64,
    /// One entry per batch row: true where the row belongs to the conditional (text) half of
    /// classifier-free guidance.
    pub conditional_rows: &'a [bool],
}

/// Reads or changes attention in the layers it wants. Tensors are shaped
/// `[batch, heads, queries, keys]` with queries in raster order over `height x width`.
pub trait AttentionController {
    /// Whether this layer's logits and probabilities should be materialised and passed to the
    /// controller. Returning false keeps the layer on its fast path.
    fn wants(&self, site: &AttentionSite) -> bool;

    /// The scaled logits `QK^T / sqrt(d)` before softmax; return them changed or as they are.
    fn edit_logits(&mut self, _site: &AttentionSite, logits: Tensor) -> Result<Tensor> {
        Ok(logits)
    }

    /// The probabilities after softmax; record them, and return them changed or as they are.
    fn edit_probs(&mut self, _site: &AttentionSite, probs: Tensor) -> Result<Tensor> {
        Ok(probs)
    }
}

/// Several controllers applied in order (e.g. a recorder together with Soft guidance).
pub struct Chain<'a>(pub Vec<&'a mut dyn AttentionController>);

impl AttentionController for Chain<'_> {
    fn wants(&self, site: &AttentionSite) -> bool {
        self.0.iter().any(|c| c.wants(site))
    }

    fn edit_logits(&mut self, site: &AttentionSite, mut logits: Tensor) -> Result<Tensor> {
        for c in self.0.iter_mut() {
            if c.wants(site) {
                logits = c.edit_logits(site, logits)?;
            }
        }
        Ok(logits)
    }

    fn edit_probs(&mut self, site: &AttentionSite, mut probs: Tensor) -> Result<Tensor> {
        for c in self.0.iter_mut() {
            if c.wants(site) {
                probs = c.edit_probs(site, probs)?;
            }
        }
        Ok(probs)
    }
}

/// Records head-averaged probabilities of the conditional rows for layers whose path matches.
/// Each record is `[conditional_rows, queries, keys]`.
#[derive(Debug, Default)]
pub struct AttentionRecorder {
    /// Exact layer paths to record; empty means every cross-attention layer.
    pub paths: Vec<String>,
    pub records: Vec<(String, usize, Tensor)>,
}

impl AttentionRecorder {
    pub fn for_paths(paths: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            paths: paths.into_iter().map(Into::into).collect(),
            records: Vec::new(),
        }
    }
}

impl AttentionController for AttentionRecorder {
    fn wants(&self, site: &AttentionSite) -> bool {
        if self.paths.is_empty() {
            site.kind == AttentionKind::CrossAttention
        } else {
            self.paths.iter().any(|p| p == site.path)
        }
    }

    fn edit_probs(&mut self, site: &AttentionSite, probs: Tensor) -> Result<Tensor> {
        let rows: Vec<u32> = site
            .conditional_rows
            .iter()
            .enumerate()
            .filter(|(_, c)| **c)
            .map(|(i, _)| i as u32)
            .collect();
        let idx = Tensor::new(rows.as_slice(), probs.device())?;
        let mean = probs.index_select(&idx, 0)?.mean(1)?;
        self.records.push((site.path.to_string(), site.step, mean));
        Ok(probs)
    }
}
