//! Which attention layers a guidance method touches. Only cross-attention is ever touched.

use semi_diffusion::controller::{AttentionKind, AttentionSite};

/// A selection of cross-attention layers. Self-attention layers never match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LayerFilter {
    /// Every cross-attention layer (what both reference implementations do).
    #[default]
    AllCross,
    /// Cross-attention layers whose query map is one of these `(height, width)` sizes, e.g.
    /// `[(16, 16), (32, 32)]` for the middle resolutions of SD at 512 x 512.
    Sizes(Vec<(usize, usize)>),
    /// Cross-attention layers with exactly these diffusers paths.
    Paths(Vec<String>),
}

impl LayerFilter {
    pub fn matches(&self, site: &AttentionSite) -> bool {
        if site.kind != AttentionKind::CrossAttention {
            return false;
        }
        match self {
            LayerFilter::AllCross => true,
            LayerFilter::Sizes(sizes) => sizes.contains(&(site.height, site.width)),
            LayerFilter::Paths(paths) => paths.iter().any(|p| p == site.path),
        }
    }
}
