//! The edit both methods make: `logits += strength * max(row logits) * pattern` on conditional
//! rows, and optionally forbidden cells set to [`FORBIDDEN_LOGIT`].

use candle_core::{DType, Device, Result, Tensor};
use semi_diffusion::controller::AttentionSite;
use std::collections::HashMap;

/// The logit given to an object's token outside its region when Soft forbids it: far below any
/// real logit, so its probability is exactly 0 after softmax in f32, yet finite in f16, so a
/// row whose every key were forbidden would still softmax to numbers, not NaN.
pub const FORBIDDEN_LOGIT: f64 = -1e4;

/// A method's per-layer-size pattern over `[queries, keys]`.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    /// `[q, k]` f32: the multiple of `strength * max` added at each query and key.
    pub add: Tensor,
    /// `[q, k]` u8: 1 where the logit is forbidden; `None` when nothing is.
    pub forbid: Option<Tensor>,
}

impl Pattern {
    pub fn from_host(add: Vec<f32>, forbid: Option<Vec<u8>>, q: usize, k: usize) -> Result<Self> {
        let add = Tensor::from_vec(add, (q, k), &Device::Cpu)?;
        let forbid = match forbid {
            Some(f) if f.iter().any(|&v| v != 0) => {
                Some(Tensor::from_vec(f, (q, k), &Device::Cpu)?)
            }
            _ => None,
        };
        Ok(Self { add, forbid })
    }
}

/// Patterns per `(height, width, keys)`, built once per run and layer size.
#[derive(Debug, Default)]
pub(crate) struct PatternCache(HashMap<(usize, usize, usize), Pattern>);

impl PatternCache {
    pub fn get_or_build(
        &mut self,
        key: (usize, usize, usize),
        build: impl FnOnce() -> Result<Pattern>,
    ) -> Result<&Pattern> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.0.entry(key) {
            e.insert(build()?);
        }
        Ok(&self.0[&key])
    }
}

/// Checks the logits' shape against the site and returns `(batch, heads, queries, keys)`.
pub(crate) fn check_shape(
    logits: &Tensor,
    site: &AttentionSite,
    what: &str,
) -> Result<(usize, usize, usize, usize)> {
    let (b, h, q, k) = logits.dims4()?;
    if q != site.height * site.width {
        candle_core::bail!(
            "{what}: {} has {q} queries, expected {}x{}",
            site.path,
            site.height,
            site.width
        );
    }
    if b != site.conditional_rows.len() {
        candle_core::bail!(
            "{what}: {} has {b} batch rows but {} conditional-row flags",
            site.path,
            site.conditional_rows.len()
        );
    }
    Ok((b, h, q, k))
}

/// Per batch row, the maximum logit over all heads, queries and keys (the reference
/// implementations' `max(QK^T)` for a batch of one image).
pub(crate) fn row_maxima(logits: &Tensor) -> Result<Vec<f32>> {
    logits
        .flatten_from(1)?
        .max(1)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()
}

/// `logits + strength * max_b * pattern.add` on conditional rows `b`, then the forbidden cells
/// of conditional rows set to [`FORBIDDEN_LOGIT`]. `strength == 0` returns the logits untouched.
/// As in both reference implementations the row maximum is used as it is, sign included: were
/// it negative, the edit would lower the object's logits.
pub(crate) fn apply(
    logits: Tensor,
    site: &AttentionSite,
    strength: f64,
    pattern: &Pattern,
) -> Result<Tensor> {
    if strength == 0.0 || !site.conditional_rows.iter().any(|&c| c) {
        return Ok(logits);
    }
    let (b, h, q, k) = logits.dims4()?;
    let device = logits.device().clone();
    let maxima = row_maxima(&logits)?;
    let coef: Vec<f32> = maxima
        .iter()
        .zip(site.conditional_rows)
        .map(|(&m, &c)| if c { (strength * m as f64) as f32 } else { 0.0 })
        .collect();
    let coef = Tensor::from_vec(coef, (b, 1, 1, 1), &device)?;
    let add = pattern.add.to_device(&device)?.reshape((1, 1, q, k))?;
    let bias = add.broadcast_mul(&coef)?.to_dtype(logits.dtype())?;
    let mut out = logits.broadcast_add(&bias)?;
    if let Some(forbid) = &pattern.forbid {
        let rows: Vec<u8> = site.conditional_rows.iter().map(|&c| c as u8).collect();
        let rows = Tensor::from_vec(rows, (b, 1, 1, 1), &device)?;
        let mask = forbid
            .to_device(&device)?
            .reshape((1, 1, q, k))?
            .broadcast_mul(&rows)?
            .broadcast_as((b, h, q, k))?;
        let floor = Tensor::new(FORBIDDEN_LOGIT, &device)?
            .to_dtype(out.dtype())?
            .broadcast_as((b, h, q, k))?;
        out = mask.where_cond(&floor, &out)?;
    }
    Ok(out)
}
