//! Soft guidance (Mao & Wang, "Training-free location-aware text-to-image synthesis", ICIP 2023),
//! following the authors' code (`CrossAttention._masked_qkv` / `extra_mask_generation` /
//! `schedule` in `ldm/modules/attention.py` of UT-Mao/Initial-Noise-Construction, the SemI code
//! base that combines it with SemI).
//!
//! For a conditional batch row of a selected layer at denoising step `i` of `N`, with scaled
//! logits `L` (`QK^T / sqrt(d)`, `[heads, queries, keys]`):
//!
//! `L'[h, q, k] = L[h, q, k] + w * s(i) * max(L) * M[q, k]`,
//!
//! - `s(i) = 4.6 * (N - 1 - i) / N` ([`soft_schedule`]): the authors' `linear` schedule, 4.6 at
//!   the (never reached) step -1, `4.6 * 49/50` at the first of 50 steps and exactly 0 at the last.
//! - `max(L)` over all heads, queries and keys of the row (the authors take it over their
//!   conditional batch of one image).
//! - `M[q, k]` = the largest mask value at query cell `q` among the objects whose tokens include
//!   `k`, 0 for other tokens. An object's mask ([`crate::mask::soft_mask`]) is its box's cells
//!   grown by one cell on every side (the authors grow the box by one cell at each layer's
//!   resolution), 1 inside, or, with the Gaussian option, a bump over the grown rectangle.
//! - With `forbid_outside`, the logits of an object's tokens at queries outside every grown box
//!   of the objects using that token are set to [`crate::FORBIDDEN_LOGIT`] (the authors' `neg_out`
//!   adds `w * s * max * -1e10`, i.e. minus infinity). Like theirs, forbidding is active only
//!   while `w * s(i) > 0`, so it stops at the last step.
//!
//! Unconditional rows are untouched; every cross-attention layer is guided by default, as in the
//! authors' code (`struct_attn=True` on every spatial transformer, all heads).
//!
//! Where we differ on purpose: boxes become cells by the centre rule shared with SemI, then grow
//! (theirs: `floor(x0/cell - 1) .. floor(x1/cell + 1)`); a token used by several objects gets
//! the union (max) of their masks (theirs: the later object overwrites); the Gaussian's falloff
//! `l` is a parameter for both axes alike (theirs: sampled on a grid stepped by the aspect ratio,
//! hard mask for rectangles one cell thin).

use crate::bias::{self, Pattern, PatternCache};
use crate::filter::LayerFilter;
use crate::mask::soft_mask;
use crate::object::{unique_tokens, validate, GuidedObject};
use crate::to_candle;
use anyhow::{bail, Result};
use candle_core::Tensor;
use semi_diffusion::controller::{AttentionController, AttentionSite};

/// The schedule's value before the first step (the authors' "from 4.6 to 0").
pub const SOFT_SCHEDULE_START: f64 = 4.6;

/// Default `w` (the authors' `w_dot`), measured on the embedded toy model (docs/strengths.md).
/// Their published code ships with guidance switched off and no value for it. Over 100
/// two-object toy layouts (DDIM 25 steps, guidance 2) mean IoU was 0.23 at 0.1 (the Paint
/// reference's factor, the earlier provisional value), 0.30 at 0.5 and 0.31 at 2; 0.5 is the
/// smallest weight within 0.005 of the best.
pub const SOFT_DEFAULT_WEIGHT: f64 = 0.5;

/// Default Gaussian falloff when the bump is switched on (no published value): edge cells of the
/// grown box get `exp(-1/2) = 0.61`, corners `exp(-1) = 0.37`.
pub const SOFT_DEFAULT_BUMP: f64 = 1.0;

/// `s(i) = 4.6 * (N - 1 - i) / N` for step `i` (0 = first) of `N`; 0 from the last step on.
pub fn soft_schedule(step: usize, total_steps: usize) -> f64 {
    if total_steps == 0 || step + 1 >= total_steps {
        return 0.0;
    }
    SOFT_SCHEDULE_START * (total_steps - 1 - step) as f64 / total_steps as f64
}

#[derive(Debug, Clone, PartialEq)]
pub struct SoftConfig {
    /// `w`, finite and >= 0; 0 disables the method.
    pub weight: f64,
    /// `N`, the number of denoising steps of the run (the schedule needs it).
    pub total_steps: usize,
    /// Cells the box grows by on every side (1 in the paper and code).
    pub grow: usize,
    /// `Some(l)`: a Gaussian bump of falloff `l` instead of a flat mask (the authors' `soft` and
    /// `L_soft`). Off by default.
    pub bump: Option<f64>,
    /// Forbid the objects' tokens outside their grown boxes (the authors' `neg_out`). Off by
    /// default.
    pub forbid_outside: bool,
    pub layers: LayerFilter,
}

impl SoftConfig {
    /// The defaults for a run of `total_steps` steps.
    pub fn for_steps(total_steps: usize) -> Self {
        Self {
            weight: SOFT_DEFAULT_WEIGHT,
            total_steps,
            grow: 1,
            bump: None,
            forbid_outside: false,
            layers: LayerFilter::AllCross,
        }
    }
}

impl Default for SoftConfig {
    /// The defaults for DDIM with 50 steps, the paper's sampler.
    fn default() -> Self {
        Self::for_steps(50)
    }
}

/// The Soft attention controller for one prompt and layout.
#[derive(Debug)]
pub struct Soft {
    objects: Vec<GuidedObject>,
    config: SoftConfig,
    patterns: PatternCache,
}

impl Soft {
    pub fn new(objects: Vec<GuidedObject>, config: SoftConfig) -> Result<Self> {
        validate(&objects, "soft")?;
        if !(config.weight.is_finite() && config.weight >= 0.0) {
            bail!(
                "soft: weight must be a finite number >= 0, got {}",
                config.weight
            );
        }
        if config.total_steps == 0 {
            bail!("soft: total_steps must be at least 1");
        }
        if let Some(l) = config.bump {
            if !(l.is_finite() && l > 0.0) {
                bail!("soft: the Gaussian bump's falloff must be a finite number > 0, got {l}");
            }
        }
        Ok(Self {
            objects,
            config,
            patterns: PatternCache::default(),
        })
    }

    pub fn objects(&self) -> &[GuidedObject] {
        &self.objects
    }

    pub fn config(&self) -> &SoftConfig {
        &self.config
    }

    /// `w * s(step)`: what multiplies `max(L) * M` at this step.
    pub fn strength(&self, step: usize) -> f64 {
        self.config.weight * soft_schedule(step, self.config.total_steps)
    }

    /// `M` and the forbidden cells for a layer of `height x width` queries and `keys` tokens,
    /// both `[queries, keys]` in raster order (forbidden: 1, all 0 unless `forbid_outside`).
    pub fn pattern(&self, height: usize, width: usize, keys: usize) -> Result<(Vec<f32>, Vec<u8>)> {
        soft_pattern(&self.objects, &self.config, height, width, keys)
    }
}

fn soft_pattern(
    objects: &[GuidedObject],
    config: &SoftConfig,
    height: usize,
    width: usize,
    keys: usize,
) -> Result<(Vec<f32>, Vec<u8>)> {
    let q = height * width;
    let mut m = vec![0f32; q * keys];
    let mut guided = vec![false; keys];
    for (i, o) in objects.iter().enumerate() {
        let mask = soft_mask(&o.bbox, height, width, config.grow, config.bump)?;
        for k in unique_tokens(o) {
            if k >= keys {
                bail!("soft: object {i} token position {k} is outside the {keys} text tokens");
            }
            guided[k] = true;
            for (qi, &v) in mask.iter().enumerate() {
                let cell = &mut m[qi * keys + k];
                *cell = cell.max(v);
            }
        }
    }
    let mut forbid = vec![0u8; q * keys];
    if config.forbid_outside {
        for qi in 0..q {
            for k in (0..keys).filter(|&k| guided[k]) {
                forbid[qi * keys + k] = (m[qi * keys + k] == 0.0) as u8;
            }
        }
    }
    Ok((m, forbid))
}

impl AttentionController for Soft {
    fn wants(&self, site: &AttentionSite) -> bool {
        self.config.weight != 0.0 && !self.objects.is_empty() && self.config.layers.matches(site)
    }

    fn edit_logits(&mut self, site: &AttentionSite, logits: Tensor) -> candle_core::Result<Tensor> {
        let (_, _, q, k) = bias::check_shape(&logits, site, "soft")?;
        let strength = self.strength(site.step);
        let (h, w) = (site.height, site.width);
        let (objects, config) = (&self.objects, &self.config);
        let pattern = self.patterns.get_or_build((h, w, k), || {
            let (add, forbid) = soft_pattern(objects, config, h, w, k).map_err(to_candle)?;
            Pattern::from_host(add, Some(forbid), q, k)
        })?;
        bias::apply(logits, site, strength, pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use semi_layout::BBox;

    #[test]
    fn schedule_falls_linearly_from_4_6_to_zero() {
        assert!((soft_schedule(0, 50) - 4.6 * 49.0 / 50.0).abs() < 1e-12);
        assert!((soft_schedule(24, 50) - 4.6 * 25.0 / 50.0).abs() < 1e-12);
        assert_eq!(soft_schedule(49, 50), 0.0);
        assert_eq!(soft_schedule(60, 50), 0.0);
        assert_eq!(soft_schedule(0, 1), 0.0);
        assert_eq!(soft_schedule(0, 0), 0.0);
        let steps: Vec<f64> = (0..10).map(|i| soft_schedule(i, 10)).collect();
        for pair in steps.windows(2) {
            assert!((pair[0] - pair[1] - 0.46).abs() < 1e-12, "{pair:?}");
        }
    }

    #[test]
    fn pattern_unions_masks_and_forbids_outside() {
        let obj = |tokens: Vec<usize>, b: [f64; 4]| GuidedObject::new(tokens, BBox::from(b));
        let objects = vec![
            obj(vec![1, 2], [0.0, 0.0, 0.25, 0.25]),
            obj(vec![2, 2], [0.75, 0.75, 1.0, 1.0]),
        ];
        let mut cfg = SoftConfig::for_steps(10);
        cfg.forbid_outside = true;
        let soft = Soft::new(objects, cfg).unwrap();
        let (m, f) = soft.pattern(4, 4, 4).unwrap();
        let column =
            |k: usize, v: &dyn Fn(usize) -> f32| (0..16).map(|q| v(q * 4 + k)).collect::<Vec<_>>();
        let mcol = |k| column(k, &|i| m[i]);
        let fcol = |k| column(k, &|i| f[i] as f32);
        // Token 1: cells (0..2, 0..2); token 2: that and (2..4, 2..4); tokens 0 and 3 untouched.
        let top_left: Vec<f32> = (0..16)
            .map(|q| ((q / 4 < 2) && (q % 4 < 2)) as u8 as f32)
            .collect();
        let both: Vec<f32> = (0..16)
            .map(|q| (((q / 4 < 2) && (q % 4 < 2)) || ((q / 4 >= 2) && (q % 4 >= 2))) as u8 as f32)
            .collect();
        assert_eq!(mcol(1), top_left);
        assert_eq!(mcol(2), both);
        assert_eq!(mcol(0), vec![0.0; 16]);
        assert_eq!(
            fcol(1),
            top_left.iter().map(|v| 1.0 - v).collect::<Vec<_>>()
        );
        assert_eq!(fcol(2), both.iter().map(|v| 1.0 - v).collect::<Vec<_>>());
        assert_eq!(fcol(3), vec![0.0; 16]);
        // A token beyond the text is an error.
        let e = soft.pattern(4, 4, 2).unwrap_err().to_string();
        assert_eq!(
            e,
            "soft: object 0 token position 2 is outside the 2 text tokens"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let o = vec![GuidedObject::new(vec![1], BBox::from([0.0, 0.0, 0.5, 0.5]))];
        let c = SoftConfig {
            weight: f64::NAN,
            ..SoftConfig::default()
        };
        assert!(Soft::new(o.clone(), c).is_err());
        let c = SoftConfig::for_steps(0);
        assert!(Soft::new(o.clone(), c)
            .unwrap_err()
            .to_string()
            .contains("total_steps"));
        let c = SoftConfig {
            bump: Some(0.0),
            ..SoftConfig::default()
        };
        assert!(Soft::new(o.clone(), c).is_err());
        let e = Soft::new(
            vec![GuidedObject::new(vec![], BBox::from([0.0, 0.0, 0.5, 0.5]))],
            SoftConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("object 0 has no token positions"), "{e}");
        let e = Soft::new(
            vec![GuidedObject::new(vec![1], BBox::from([0.5, 0.0, 0.5, 0.5]))],
            SoftConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("soft: object 0:"), "{e}");
    }
}
