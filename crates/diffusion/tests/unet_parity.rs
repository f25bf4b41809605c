//! UNet parity against diffusers on the tiny random-weight fixtures, and the attention-controller
//! hook: recorded probabilities, early stop, no side effects of recording, and steering.

mod common;

use candle_core::{Result, Tensor, D};
use common::{get, reference_info, references, rel_err, weights};
use semi_diffusion::config::UNetConfig;
use semi_diffusion::controller::{AttentionController, AttentionKind, AttentionRecorder};
use semi_diffusion::unet::{ForwardOptions, UNet2DConditionModel, UNetOutput};
use semi_diffusion::AttentionSite;
use std::collections::HashMap;

const TOL: f64 = 1e-4;

fn unet(model: &str) -> UNet2DConditionModel {
    let cfg = UNetConfig::from_file(&common::fixture(model).join("unet/config.json")).unwrap();
    UNet2DConditionModel::new(weights(model, "unet"), &cfg).unwrap()
}

/// The batch-2 inputs of the references: the sample twice, unconditional and conditional text.
fn batch2(refs: &HashMap<String, Tensor>) -> (Tensor, Tensor) {
    let sample = get(refs, "unet_in_sample");
    let sample2 = Tensor::cat(&[sample, sample], 0).unwrap();
    (sample2, get(refs, "text_embeddings").clone())
}

fn full(out: UNetOutput) -> Tensor {
    match out {
        UNetOutput::Full(t) => t,
        UNetOutput::Stopped => panic!("unexpected early stop"),
    }
}

fn check_outputs(model: &str) {
    let refs = references(model);
    let info = reference_info(model);
    let unet = unet(model);
    let sample = get(&refs, "unet_in_sample");
    let emb = get(&refs, "text_embeddings");
    let cond = emb.narrow(0, 1, 1).unwrap();
    let (sample2, emb2) = batch2(&refs);
    let timesteps = info["unet_timesteps"].as_array().unwrap();
    assert!(!timesteps.is_empty());
    for t in timesteps {
        let t = t.as_f64().unwrap();
        let b1 = unet.forward(sample, t, &cond).unwrap();
        let err = rel_err(&b1, get(&refs, &format!("unet_out_t{t}_b1")));
        eprintln!("{model} t={t} b1: relative error {err:.2e}");
        assert!(err < TOL, "{model} t={t} b1: relative error {err:.2e}");
        let b2 = unet.forward(&sample2, t, &emb2).unwrap();
        let err = rel_err(&b2, get(&refs, &format!("unet_out_t{t}_b2")));
        eprintln!("{model} t={t} b2: relative error {err:.2e}");
        assert!(err < TOL, "{model} t={t} b2: relative error {err:.2e}");
    }
}

#[test]
fn sd1_outputs_match_diffusers() {
    check_outputs("tiny-sd1");
}

#[test]
fn sd2_outputs_match_diffusers() {
    check_outputs("tiny-sd2");
}

#[test]
fn pixel_outputs_match_diffusers() {
    check_outputs("tiny-pixel");
}

/// Records the reference layers through an `AttentionRecorder` on the batch-2 call at the probe
/// timestep (row 1 conditional), compares them with diffusers' head-averaged probabilities, and
/// checks that recording leaves the output unchanged.
fn check_recorded_probs(model: &str) {
    let refs = references(model);
    let info = reference_info(model);
    let unet = unet(model);
    let paths: Vec<String> = info["attn_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(!paths.is_empty());
    let (sample2, emb2) = batch2(&refs);
    let mut recorder = AttentionRecorder::for_paths(paths.clone());
    let out = unet
        .forward_with(
            &sample2,
            981.0,
            &emb2,
            ForwardOptions {
                controller: Some(&mut recorder),
                conditional_rows: Some(vec![false, true]),
                step: 3,
                ..Default::default()
            },
        )
        .unwrap();
    let recorded = full(out);
    let plain = unet.forward(&sample2, 981.0, &emb2).unwrap();
    let err = rel_err(&recorded, &plain);
    // The recorded layers take the materialising route, the others the fused CPU kernel: the two
    // round differently (each is checked against diffusers at TOL below).
    assert!(
        err < 1e-5,
        "{model}: recording changed the output ({err:.2e})"
    );
    let err = rel_err(&recorded, get(&refs, "unet_out_t981_b2"));
    assert!(
        err < TOL,
        "{model}: recorded pass differs from diffusers ({err:.2e})"
    );

    assert_eq!(recorder.records.len(), paths.len(), "one record per layer");
    for (path, step, probs) in &recorder.records {
        assert_eq!(*step, 3);
        let expected = get(&refs, &format!("attn_probs.{path}"));
        assert_eq!(probs.dim(0).unwrap(), 1, "only the conditional row");
        let err = rel_err(&probs.squeeze(0).unwrap(), expected);
        eprintln!("{model} {path}: relative error {err:.2e}");
        assert!(err < TOL, "{model} {path}: relative error {err:.2e}");
    }
}

#[test]
fn sd1_recorded_attention_matches_diffusers() {
    check_recorded_probs("tiny-sd1");
}

#[test]
fn sd2_recorded_attention_matches_diffusers() {
    check_recorded_probs("tiny-sd2");
}

#[test]
fn pixel_recorded_attention_matches_diffusers() {
    check_recorded_probs("tiny-pixel");
}

#[test]
fn attention_paths_follow_execution_order() {
    let unet = unet("tiny-sd1");
    let paths = unet.attention_layer_paths();
    // 2 + 2 down transformers, 1 mid, 3 + 3 up; each with attn1 and attn2.
    assert_eq!(paths.len(), 22);
    assert_eq!(
        paths[0],
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    );
    assert_eq!(
        paths[1],
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    );
    assert_eq!(
        paths[8],
        "mid_block.attentions.0.transformer_blocks.0.attn1"
    );
    assert_eq!(
        paths[21],
        "up_blocks.2.attentions.2.transformer_blocks.0.attn2"
    );
    let layers = unet.attention_layers();
    assert!(layers.iter().enumerate().all(|(i, l)| l.index == i));
    assert_eq!(layers[1].kind, AttentionKind::CrossAttention);
    assert_eq!(layers[2].kind, AttentionKind::SelfAttention);
    // SD 2 style: two transformer layers per block.
    let paths = self::unet("tiny-sd2").attention_layer_paths();
    assert!(paths.contains(&"mid_block.attentions.0.transformer_blocks.1.attn2".to_string()));
}

#[test]
fn stop_after_stops_at_the_probe_layer() {
    let model = "tiny-sd1";
    let refs = references(model);
    let unet = unet(model);
    let probe = "down_blocks.1.attentions.1.transformer_blocks.0.attn2";
    let sample = get(&refs, "unet_in_sample");
    let cond = get(&refs, "text_embeddings").narrow(0, 1, 1).unwrap();
    // A block prefix means the last attention layer under it.
    assert_eq!(
        unet.resolve_attention_path("down_blocks.1.attentions.1")
            .unwrap(),
        probe
    );
    let mut recorder = AttentionRecorder::for_paths([probe]);
    let out = unet
        .forward_with(
            sample,
            981.0,
            &cond,
            ForwardOptions {
                controller: Some(&mut recorder),
                stop_after: Some("down_blocks.1.attentions.1"),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(out, UNetOutput::Stopped));
    assert_eq!(recorder.records.len(), 1);
    let (path, _, probs) = &recorder.records[0];
    assert_eq!(path, probe);
    // The batch-1 call on the conditional row sees the same probabilities as diffusers' batch 2.
    let err = rel_err(
        &probs.squeeze(0).unwrap(),
        get(&refs, &format!("attn_probs.{probe}")),
    );
    assert!(err < TOL, "probe probabilities: relative error {err:.2e}");

    // A recorder that wants every cross-attention layer sees nothing after the stop.
    let mut all = AttentionRecorder::default();
    let out = unet
        .forward_with(
            sample,
            981.0,
            &cond,
            ForwardOptions {
                controller: Some(&mut all),
                stop_after: Some(probe),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(out, UNetOutput::Stopped));
    let seen: Vec<&str> = all.records.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen.last(), Some(&probe));

    // Without a controller the pass stops too.
    let out = unet
        .forward_with(
            sample,
            981.0,
            &cond,
            ForwardOptions {
                stop_after: Some("mid_block"),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(out, UNetOutput::Stopped));
}

#[test]
fn unknown_stop_after_is_an_error_listing_paths() {
    let refs = references("tiny-sd1");
    let unet = unet("tiny-sd1");
    let cond = get(&refs, "text_embeddings").narrow(0, 1, 1).unwrap();
    let res = unet.forward_with(
        get(&refs, "unet_in_sample"),
        981.0,
        &cond,
        ForwardOptions {
            stop_after: Some("down_blocks.7.attentions.0"),
            ..Default::default()
        },
    );
    let msg = match res {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an unknown path must be an error"),
    };
    assert!(msg.contains("down_blocks.7.attentions.0"), "{msg}");
    assert!(
        msg.contains("down_blocks.0.attentions.0.transformer_blocks.0.attn2"),
        "{msg}"
    );
}

#[test]
fn bad_inputs_are_errors() {
    let refs = references("tiny-sd1");
    let unet = unet("tiny-sd1");
    let sample = get(&refs, "unet_in_sample");
    let emb = get(&refs, "text_embeddings");
    // Batch of the text does not match the sample.
    assert!(unet.forward(sample, 981.0, emb).is_err());
    let cond = emb.narrow(0, 1, 1).unwrap();
    // Wrong channel count.
    assert!(unet
        .forward(&sample.narrow(1, 0, 3).unwrap(), 981.0, &cond)
        .is_err());
    // conditional_rows of the wrong length.
    let res = unet.forward_with(
        sample,
        981.0,
        &cond,
        ForwardOptions {
            conditional_rows: Some(vec![true, false]),
            ..Default::default()
        },
    );
    assert!(res.is_err());
}

/// Adds a large value to one key column of every cross-attention layer's logits.
struct Steer {
    key: usize,
    seen: usize,
    probs_mass: Vec<f32>,
}

impl AttentionController for Steer {
    fn wants(&self, site: &AttentionSite) -> bool {
        site.kind == AttentionKind::CrossAttention
    }

    fn edit_logits(&mut self, _site: &AttentionSite, logits: Tensor) -> Result<Tensor> {
        let keys = logits.dim(D::Minus1)?;
        let mut bump = vec![0f32; keys];
        bump[self.key] = 30.0;
        let bump = Tensor::new(bump.as_slice(), logits.device())?.to_dtype(logits.dtype())?;
        self.seen += 1;
        logits.broadcast_add(&bump)
    }

    fn edit_probs(&mut self, _site: &AttentionSite, probs: Tensor) -> Result<Tensor> {
        let col = probs.narrow(D::Minus1, self.key, 1)?;
        self.probs_mass.push(col.mean_all()?.to_scalar::<f32>()?);
        Ok(probs)
    }
}

#[test]
fn edit_logits_steers_the_output() {
    let refs = references("tiny-sd1");
    let unet = unet("tiny-sd1");
    let sample = get(&refs, "unet_in_sample");
    let cond = get(&refs, "text_embeddings").narrow(0, 1, 1).unwrap();
    let plain = unet.forward(sample, 981.0, &cond).unwrap();
    let mut steer = Steer {
        key: 5,
        seen: 0,
        probs_mass: Vec::new(),
    };
    let steered = full(
        unet.forward_with(
            sample,
            981.0,
            &cond,
            ForwardOptions {
                controller: Some(&mut steer),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    assert_eq!(steer.seen, 11, "every cross-attention layer was edited");
    assert!(
        steer.probs_mass.iter().all(|&m| m > 0.99),
        "the bumped key takes the attention: {:?}",
        steer.probs_mass
    );
    let change = rel_err(&steered, &plain);
    assert!(
        change > 1e-2,
        "steering changed the output by only {change:.2e}"
    );
}

#[test]
fn odd_latent_sizes_follow_the_skip_sizes() {
    let refs = references("tiny-sd1");
    let unet = unet("tiny-sd1");
    let sample = get(&refs, "unet_in_sample")
        .narrow(2, 0, 15)
        .unwrap()
        .narrow(3, 0, 13)
        .unwrap()
        .contiguous()
        .unwrap();
    let cond = get(&refs, "text_embeddings").narrow(0, 1, 1).unwrap();
    let out = unet.forward(&sample, 500.0, &cond).unwrap();
    assert_eq!(out.dims(), &[1, 4, 15, 13]);
}
