//! Paint and Soft on the tiny random SD-1 UNet (semi-diffusion's fixture): a recording wrapper
//! sees every layer's logits before and after the controller, and the tests check that the edit
//! is exactly `strength * max(row) * pattern` on the objects' token columns inside their regions
//! in conditional rows, and nothing anywhere else. Regions are recomputed here independently
//! from the documented rule (cell centres inside the box; Soft: grown by one cell).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use semi_diffusion::config::UNetConfig;
use semi_diffusion::controller::{AttentionController, AttentionKind, AttentionSite};
use semi_diffusion::unet::{ForwardOptions, UNet2DConditionModel, UNetOutput};
use semi_guidance::{
    soft_schedule, GuidedObject, LayerFilter, NoiseLevels, Paint, PaintConfig, Soft, SoftConfig,
    FORBIDDEN_LOGIT,
};
use semi_layout::BBox;
use std::cell::RefCell;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../diffusion/tests/fixtures/tiny-sd1")
}

fn unet() -> UNet2DConditionModel {
    let dir = fixture();
    let cfg = UNetConfig::from_file(&dir.join("unet/config.json")).unwrap();
    let weights = dir.join("unet/diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture files are not modified while the tests run.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu) }
        .unwrap();
    UNet2DConditionModel::new(vb, &cfg).unwrap()
}

/// A batch of two (unconditional, conditional) latents and text embeddings `[2, 77, 32]`.
fn inputs() -> (Tensor, Tensor) {
    let refs =
        candle_core::safetensors::load(fixture().join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let sample = &refs["unet_in_sample"];
    let sample = Tensor::cat(&[sample, sample], 0).unwrap();
    (sample, refs["text_embeddings"].clone())
}

const ROWS: [bool; 2] = [false, true];

fn objects() -> Vec<GuidedObject> {
    vec![
        GuidedObject::new(vec![2, 3], BBox::new(0.1, 0.2, 0.45, 0.7).unwrap()),
        GuidedObject::new(vec![5], BBox::new(0.5, 0.55, 0.95, 0.9).unwrap()),
    ]
}

struct Record {
    path: String,
    height: usize,
    width: usize,
    before: Tensor,
    after: Tensor,
}

/// Passes everything to `inner` and keeps each edited layer's logits before and after, and the
/// kind of every layer offered with whether it was wanted.
struct Recording<C> {
    inner: C,
    records: Vec<Record>,
    offered: RefCell<Vec<(AttentionKind, bool)>>,
}

impl<C: AttentionController> Recording<C> {
    fn new(inner: C) -> Self {
        Self {
            inner,
            records: Vec::new(),
            offered: RefCell::new(Vec::new()),
        }
    }
}

impl<C: AttentionController> AttentionController for Recording<C> {
    fn wants(&self, site: &AttentionSite) -> bool {
        let wanted = self.inner.wants(site);
        self.offered.borrow_mut().push((site.kind, wanted));
        wanted
    }

    fn edit_logits(&mut self, site: &AttentionSite, logits: Tensor) -> candle_core::Result<Tensor> {
        let after = self.inner.edit_logits(site, logits.clone())?;
        self.records.push(Record {
            path: site.path.to_string(),
            height: site.height,
            width: site.width,
            before: logits,
            after: after.clone(),
        });
        Ok(after)
    }
}

fn run(
    unet: &UNet2DConditionModel,
    controller: Option<&mut dyn AttentionController>,
    step: usize,
    timestep: f64,
) -> candle_core::Result<Tensor> {
    let (sample, emb) = inputs();
    let opts = ForwardOptions {
        controller,
        step,
        conditional_rows: Some(ROWS.to_vec()),
        stop_after: None,
        added: None,
    };
    match unet.forward_with(&sample, timestep, &emb, opts)? {
        UNetOutput::Full(t) => Ok(t),
        UNetOutput::Stopped => panic!("unexpected early stop"),
    }
}

/// Cells (row, col) of an `h x w` grid whose centre lies in `[x0, x1) x [y0, y1)`, grown by `grow`.
fn region(b: &BBox, h: usize, w: usize, grow: usize) -> Vec<bool> {
    let inside = |i: usize, n: usize, lo: f64, hi: f64| {
        let c = (i as f64 + 0.5) / n as f64;
        lo <= c && c < hi
    };
    let rows: Vec<usize> = (0..h).filter(|&r| inside(r, h, b.y0, b.y1)).collect();
    let cols: Vec<usize> = (0..w).filter(|&c| inside(c, w, b.x0, b.x1)).collect();
    assert!(
        !rows.is_empty() && !cols.is_empty(),
        "test boxes must cover a centre"
    );
    let (r0, r1) = (
        rows[0].saturating_sub(grow),
        (rows[rows.len() - 1] + grow).min(h - 1),
    );
    let (c0, c1) = (
        cols[0].saturating_sub(grow),
        (cols[cols.len() - 1] + grow).min(w - 1),
    );
    (0..h * w)
        .map(|q| (r0..=r1).contains(&(q / w)) && (c0..=c1).contains(&(q % w)))
        .collect()
}

fn host(t: &Tensor) -> (Vec<usize>, Vec<f32>) {
    let dims = t.dims().to_vec();
    (dims, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
}

/// Checks one record: `after - before == strength * max(before[row]) * pattern(q, k)` on
/// conditional rows (tolerance of f32 rounding), `after == before` bit for bit where the pattern
/// is 0 or the row is unconditional; `forbidden(q, k)` cells must hold exactly FORBIDDEN_LOGIT.
/// Returns how many logits changed.
fn check(
    r: &Record,
    strength: f64,
    pattern: &dyn Fn(usize, usize) -> f64,
    forbidden: &dyn Fn(usize, usize) -> bool,
) -> usize {
    let (dims, before) = host(&r.before);
    let (_, after) = host(&r.after);
    let (b, heads, q, k) = (dims[0], dims[1], dims[2], dims[3]);
    assert_eq!(q, r.height * r.width, "{}", r.path);
    let per_row = heads * q * k;
    let mut changed = 0;
    for row in 0..b {
        let slice = &before[row * per_row..(row + 1) * per_row];
        let max = slice.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        for h in 0..heads {
            for qi in 0..q {
                for ki in 0..k {
                    let i = ((row * heads + h) * q + qi) * k + ki;
                    let (x, y) = (before[i] as f64, after[i] as f64);
                    if ROWS[row] && forbidden(qi, ki) {
                        assert_eq!(y, FORBIDDEN_LOGIT, "{} row {row} q {qi} k {ki}", r.path);
                        changed += 1;
                        continue;
                    }
                    let p = if ROWS[row] { pattern(qi, ki) } else { 0.0 };
                    if p == 0.0 {
                        assert_eq!(
                            after[i].to_bits(),
                            before[i].to_bits(),
                            "{} row {row} head {h} q {qi} k {ki} changed",
                            r.path
                        );
                    } else {
                        let want = strength * max * p;
                        let tol = 1e-5 * (1.0 + x.abs() + want.abs());
                        assert!(
                            (y - x - want).abs() <= tol,
                            "{} row {row} q {qi} k {ki}: added {} want {want}",
                            r.path,
                            y - x
                        );
                        changed += (y != x) as usize;
                    }
                }
            }
        }
    }
    changed
}

/// Per layer size, the test's own `pattern(q, k)` for `objects` (Paint: sum of box indicators).
fn paint_pattern(objects: &[GuidedObject], h: usize, w: usize) -> impl Fn(usize, usize) -> f64 {
    let regions: Vec<(Vec<usize>, Vec<bool>)> = objects
        .iter()
        .map(|o| (o.tokens.clone(), region(&o.bbox, h, w, 0)))
        .collect();
    move |q, k| {
        regions
            .iter()
            .filter(|(t, m)| t.contains(&k) && m[q])
            .count() as f64
    }
}

#[test]
fn paint_edits_only_object_tokens_inside_regions_in_conditional_rows() {
    let unet = unet();
    let sigma = |t: f64| t / 100.0;
    let config = PaintConfig {
        weight: 0.5,
        layers: LayerFilter::AllCross,
    };
    let paint = Paint::new(objects(), NoiseLevels::from_fn(sigma), config).unwrap();
    let strength = paint.strength(500.0);
    assert!((strength - 0.5 * 6f64.ln()).abs() < 1e-12);
    let mut rec = Recording::new(paint);
    let guided = run(&unet, Some(&mut rec), 3, 500.0).unwrap();

    // Every cross-attention layer and no self-attention layer was edited.
    let offered = rec.offered.borrow().clone();
    assert!(offered
        .iter()
        .all(|&(kind, wanted)| wanted == (kind == AttentionKind::CrossAttention)));
    let cross = offered
        .iter()
        .filter(|(k, _)| *k == AttentionKind::CrossAttention)
        .count();
    assert_eq!(rec.records.len(), cross);
    assert!(cross >= 5, "{cross} cross-attention layers");

    let mut sizes = std::collections::BTreeSet::new();
    for r in &rec.records {
        sizes.insert((r.height, r.width));
        let pattern = paint_pattern(&objects(), r.height, r.width);
        let changed = check(r, strength, &pattern, &|_, _| false);
        assert!(changed > 0, "{} unchanged", r.path);
    }
    assert_eq!(
        sizes.into_iter().collect::<Vec<_>>(),
        vec![(8, 8), (16, 16), (32, 32)]
    );

    // The guided UNet output differs in the conditional row only.
    let plain = run(&unet, None, 3, 500.0).unwrap();
    let diff = |row: usize| {
        let a = guided.get(row).unwrap();
        let b = plain.get(row).unwrap();
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    // The recorded path and the fused fast path round differently (~1e-6), nothing more.
    assert!(diff(0) < 1e-4, "unconditional row changed: {}", diff(0));
    assert!(diff(1) > 1e-3, "conditional row unchanged: {}", diff(1));
}

#[test]
fn paint_strength_follows_sigma_of_the_timestep() {
    let table = [0.8f32, 0.5, 0.2];
    let paint = Paint::new(
        objects(),
        NoiseLevels::from_alphas_cumprod(&table).unwrap(),
        PaintConfig::default(),
    )
    .unwrap();
    // sigma(1) = sqrt(0.5 / 0.5) = 1, sigma(2) = sqrt(0.8 / 0.2) = 2.
    let w = semi_guidance::PAINT_DEFAULT_WEIGHT;
    assert!((paint.strength(1.0) - w * 2f64.ln()).abs() < 1e-9);
    assert!((paint.strength(2.0) - w * 3f64.ln()).abs() < 1e-6);
}

#[test]
fn zero_weight_changes_nothing() {
    let unet = unet();
    let plain = run(&unet, None, 0, 981.0).unwrap();
    let config = PaintConfig {
        weight: 0.0,
        ..PaintConfig::default()
    };
    let mut paint = Paint::new(objects(), NoiseLevels::from_fn(|_| 10.0), config).unwrap();
    let out = run(&unet, Some(&mut paint), 0, 981.0).unwrap();
    assert_eq!(host(&out).1, host(&plain).1);
    let mut soft_cfg = SoftConfig::for_steps(10);
    soft_cfg.weight = 0.0;
    soft_cfg.forbid_outside = true;
    let mut soft = Soft::new(objects(), soft_cfg).unwrap();
    let out = run(&unet, Some(&mut soft), 0, 981.0).unwrap();
    assert_eq!(host(&out).1, host(&plain).1);

    // Called directly, a zero-weight controller returns the logits as they are.
    let logits = Tensor::randn(0f32, 1.0, (2, 2, 64, 77), &Device::Cpu).unwrap();
    let site = AttentionSite {
        path: "down_blocks.0.attentions.0.transformer_blocks.0.attn2",
        place: semi_diffusion::controller::Place::Down,
        kind: AttentionKind::CrossAttention,
        height: 8,
        width: 8,
        heads: 2,
        step: 0,
        timestep: 981.0,
        conditional_rows: &ROWS,
    };
    let same = paint.edit_logits(&site, logits.clone()).unwrap();
    assert_eq!(host(&same).1, host(&logits).1);
    let same = soft.edit_logits(&site, logits.clone()).unwrap();
    assert_eq!(host(&same).1, host(&logits).1);
}

fn soft_pattern(objects: &[GuidedObject], h: usize, w: usize) -> Vec<(Vec<usize>, Vec<bool>)> {
    objects
        .iter()
        .map(|o| (o.tokens.clone(), region(&o.bbox, h, w, 1)))
        .collect()
}

#[test]
fn soft_edits_only_object_tokens_inside_grown_regions_in_conditional_rows() {
    let unet = unet();
    let mut config = SoftConfig::for_steps(10);
    config.weight = 0.5;
    let soft = Soft::new(objects(), config).unwrap();
    let step = 3;
    let strength = soft.strength(step);
    assert!((strength - 0.5 * 4.6 * 6.0 / 10.0).abs() < 1e-12);
    assert_eq!(strength, 0.5 * soft_schedule(step, 10));
    let mut rec = Recording::new(soft);
    let guided = run(&unet, Some(&mut rec), step, 700.0).unwrap();
    assert!(!rec.records.is_empty());
    for r in &rec.records {
        let regions = soft_pattern(&objects(), r.height, r.width);
        let pattern =
            |q: usize, k: usize| regions.iter().any(|(t, m)| t.contains(&k) && m[q]) as u8 as f64;
        assert!(
            check(r, strength, &pattern, &|_, _| false) > 0,
            "{}",
            r.path
        );
    }
    let plain = run(&unet, None, step, 700.0).unwrap();
    let d = (guided - plain).unwrap().abs().unwrap().max_all().unwrap();
    assert!(d.to_scalar::<f32>().unwrap() > 1e-3);

    // The last step has s = 0: nothing changes.
    let mut config = SoftConfig::for_steps(10);
    config.weight = 0.5;
    let mut rec = Recording::new(Soft::new(objects(), config).unwrap());
    run(&unet, Some(&mut rec), 9, 1.0).unwrap();
    for r in &rec.records {
        assert_eq!(host(&r.after).1, host(&r.before).1, "{}", r.path);
    }
}

#[test]
fn soft_forbids_object_tokens_outside_their_grown_boxes() {
    let unet = unet();
    let mut config = SoftConfig::for_steps(50);
    config.weight = 0.2;
    config.forbid_outside = true;
    let soft = Soft::new(objects(), config.clone()).unwrap();
    let strength = soft.strength(0);
    let mut rec = Recording::new(soft);
    run(&unet, Some(&mut rec), 0, 981.0).unwrap();
    let tokens: Vec<usize> = objects().iter().flat_map(|o| o.tokens.clone()).collect();
    for r in &rec.records {
        let regions = soft_pattern(&objects(), r.height, r.width);
        let inside =
            |q: usize, k: usize| regions.iter().any(|(t, m)| t.contains(&k) && m[q]) as u8 as f64;
        let forbidden = |q: usize, k: usize| tokens.contains(&k) && inside(q, k) == 0.0;
        check(r, strength, &inside, &forbidden);
    }
    // Forbidden tokens get no attention outside their boxes after softmax.
    let r = rec.records.last().unwrap();
    let probs = candle_nn::ops::softmax_last_dim(&r.after).unwrap();
    let (dims, p) = host(&probs);
    let (heads, q, k) = (dims[1], dims[2], dims[3]);
    let regions = soft_pattern(&objects(), r.height, r.width);
    for h in 0..heads {
        for qi in 0..q {
            let i = ((heads + h) * q + qi) * k + 5; // conditional row, token 5 (object 1)
            if !regions[1].1[qi] {
                assert_eq!(p[i], 0.0);
            }
        }
    }

    // The Gaussian bump: inside the grown box the added amount follows the mask values, all > 0.
    config.bump = Some(1.0);
    config.forbid_outside = false;
    let soft = Soft::new(objects(), config).unwrap();
    let (m, _) = soft.pattern(16, 16, 77).unwrap();
    let mut rec = Recording::new(soft);
    run(&unet, Some(&mut rec), 0, 981.0).unwrap();
    let r = rec.records.iter().find(|r| r.height == 16).unwrap();
    let regions = soft_pattern(&objects(), 16, 16);
    for (qi, &inside) in regions[1].1.iter().enumerate() {
        assert_eq!(m[qi * 77 + 5] > 0.0, inside, "q {qi}");
    }
    check(r, strength, &|q, k| m[q * 77 + k] as f64, &|_, _| false);
}

#[test]
fn layer_filter_limits_the_edit_to_chosen_layers() {
    let unet = unet();
    let config = PaintConfig {
        weight: 0.3,
        layers: LayerFilter::Sizes(vec![(16, 16)]),
    };
    let paint = Paint::new(objects(), NoiseLevels::from_fn(|_| 2.0), config).unwrap();
    let mut rec = Recording::new(paint);
    run(&unet, Some(&mut rec), 0, 981.0).unwrap();
    assert!(!rec.records.is_empty());
    assert!(rec.records.iter().all(|r| (r.height, r.width) == (16, 16)));
    let path = rec.records[0].path.clone();
    let config = PaintConfig {
        weight: 0.3,
        layers: LayerFilter::Paths(vec![path.clone()]),
    };
    let paint = Paint::new(objects(), NoiseLevels::from_fn(|_| 2.0), config).unwrap();
    let mut rec = Recording::new(paint);
    run(&unet, Some(&mut rec), 0, 981.0).unwrap();
    assert_eq!(
        rec.records
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>(),
        vec![path]
    );
}

#[test]
fn token_positions_beyond_the_text_are_a_clear_error() {
    let unet = unet();
    let objects = vec![GuidedObject::new(
        vec![80],
        BBox::new(0.0, 0.0, 0.5, 0.5).unwrap(),
    )];
    let mut paint = Paint::new(
        objects.clone(),
        NoiseLevels::from_fn(|_| 1.0),
        PaintConfig::default(),
    )
    .unwrap();
    let e = run(&unet, Some(&mut paint), 0, 981.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("paint: object 0 token position 80 is outside the 77 text tokens"),
        "{e}"
    );
    let mut soft = Soft::new(objects, SoftConfig::default()).unwrap();
    let e = run(&unet, Some(&mut soft), 0, 981.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("soft: object 0 token position 80"), "{e}");
}

#[test]
fn half_precision_logits_are_edited_in_their_dtype() {
    let logits = Tensor::randn(0f32, 1.0, (2, 2, 16, 8), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    let site = AttentionSite {
        path: "mid_block.attentions.0.transformer_blocks.0.attn2",
        place: semi_diffusion::controller::Place::Mid,
        kind: AttentionKind::CrossAttention,
        height: 4,
        width: 4,
        heads: 2,
        step: 0,
        timestep: 500.0,
        conditional_rows: &ROWS,
    };
    let objects = vec![GuidedObject::new(
        vec![1],
        BBox::new(0.0, 0.0, 0.25, 0.25).unwrap(),
    )];
    let mut config = SoftConfig::for_steps(10);
    config.forbid_outside = true;
    let mut soft = Soft::new(objects, config).unwrap();
    let out = soft.edit_logits(&site, logits.clone()).unwrap();
    assert_eq!(out.dtype(), DType::F16);
    let out = out.to_dtype(DType::F32).unwrap();
    let before = logits.to_dtype(DType::F32).unwrap();
    let at = |t: &Tensor, b: usize, q: usize, k: usize| {
        t.get(b)
            .unwrap()
            .get(0)
            .unwrap()
            .get(q)
            .unwrap()
            .get(k)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    // Grown box: cells (0..2, 0..2) of 4 x 4, i.e. queries 0, 1, 4, 5; query 10 is outside.
    assert_eq!(at(&out, 1, 10, 1) as f64, FORBIDDEN_LOGIT);
    assert!(at(&out, 1, 5, 1) > at(&before, 1, 5, 1));
    assert_eq!(at(&out, 0, 10, 1), at(&before, 0, 10, 1));
    assert_eq!(at(&out, 1, 10, 2), at(&before, 1, 10, 2));
}
