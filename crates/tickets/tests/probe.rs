//! The real probe on the tiny random SD-1 model (latent 4x16x16; cross-attention in down blocks
//! 0 and 1 only; the default rule takes the level whose grid is nearest 16x16: down block 0, its
//! second cross-attention, grid 16x16 with one latent pixel per cell).

use std::path::PathBuf;

use candle_core::{DType, Device};
use semi_diffusion::loading::Variant;
use semi_diffusion::pipeline::StableDiffusion;
use semi_diffusion::AttentionKind;
use semi_tickets::probe::{category_spans, first_timestep, plan_layers, LayerChoice};
use semi_tickets::{min_max_normalize, ProbeOptions, Prober, SdProber};

fn tiny() -> StableDiffusion {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../diffusion/tests/fixtures/tiny-sd1");
    StableDiffusion::load(&dir, &Device::Cpu, DType::F32, Variant::Full).unwrap()
}

fn noise(seed: u64) -> candle_core::Tensor {
    semi_diffusion::noise::randn(seed, &[1, 4, 16, 16], &Device::Cpu).unwrap()
}

#[test]
fn plan_timestep_and_fingerprint() {
    let sd = tiny();
    assert_eq!(first_timestep(&sd, 50).unwrap(), 981.0);
    assert_eq!(first_timestep(&sd, 10).unwrap(), 901.0);
    let plan = plan_layers(&sd.unet, (16, 16), &LayerChoice::Default).unwrap();
    assert_eq!(
        plan.layers,
        ["down_blocks.0.attentions.1.transformer_blocks.0.attn2"]
    );
    assert_eq!((plan.factor, plan.grid), (1, [16, 16]));
    // At a 64x64 latent the nearest level with cross-attention is down block 1 (32x32 cells).
    let big = plan_layers(&sd.unet, (64, 64), &LayerChoice::Default).unwrap();
    assert_eq!(
        big.layers,
        ["down_blocks.1.attentions.1.transformer_blocks.0.attn2"]
    );
    assert_eq!((big.factor, big.grid), (2, [32, 32]));
    let all = plan_layers(&sd.unet, (16, 16), &LayerChoice::All).unwrap();
    assert_eq!(
        all.layers,
        [
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2",
            "down_blocks.0.attentions.1.transformer_blocks.0.attn2",
            "up_blocks.2.attentions.0.transformer_blocks.0.attn2",
            "up_blocks.2.attentions.1.transformer_blocks.0.attn2",
            "up_blocks.2.attentions.2.transformer_blocks.0.attn2",
        ]
    );
    assert_eq!(all.stop_after, all.layers[4]);
    let explicit = LayerChoice::parse("down_blocks.1.attentions.1").unwrap();
    let p = plan_layers(&sd.unet, (16, 16), &explicit).unwrap();
    assert_eq!(p.grid, [8, 8]);
    // Mixed resolutions and self-attention are refused.
    let mixed = LayerChoice::parse(
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2,down_blocks.1.attentions.0.transformer_blocks.0.attn2",
    )
    .unwrap();
    assert!(plan_layers(&sd.unet, (16, 16), &mixed).is_err());
    let selfattn =
        LayerChoice::parse("down_blocks.1.attentions.0.transformer_blocks.0.attn1").unwrap();
    assert!(plan_layers(&sd.unet, (16, 16), &selfattn).is_err());

    let prober = SdProber::new(&sd, "m".into(), &ProbeOptions::new(32, 32)).unwrap();
    let f = prober.fingerprint();
    assert_eq!(f.timestep, 981);
    assert_eq!((f.latent, f.grid), ([4, 16, 16], [16, 16]));
    assert_eq!(f.prompt_template, "a {c1} and a {c2}");
    assert!(SdProber::new(&sd, "m".into(), &ProbeOptions::new(30, 32)).is_err());
}

#[test]
fn multi_token_names_are_summed() {
    let sd = tiny();
    // "dog" and "car" are two tokens each in the tiny vocabulary.
    assert_eq!(sd.tokenizer().encode_plain("dog").unwrap().len(), 2);
    let (ids, dog, car) =
        category_spans(sd.tokenizer(), "a {c1} and a {c2}", "dog", "car").unwrap();
    assert_eq!(dog, [2, 3]);
    assert_eq!(car, [6, 7]);
    assert_eq!(sd.tokenizer().encode_plain("car").unwrap().len(), 2);
    assert_eq!(ids, sd.tokenizer().encode("a dog and a car").unwrap());
    // A name inside the other gets its own tokens: "hot dog" then "dog".
    let (_, a, b) = category_spans(sd.tokenizer(), "a {c1} and a {c2}", "hot dog", "dog").unwrap();
    assert!(
        a.len() >= 3 && b.len() == 2 && b[0] > *a.last().unwrap(),
        "{a:?} {b:?}"
    );

    let mut prober = SdProber::new(&sd, "m".into(), &ProbeOptions::new(32, 32)).unwrap();
    let z = noise(3);
    let raw = prober
        .attention_maps(&z, &["a dog and a car".into()])
        .unwrap();
    assert_eq!((raw[0].len(), raw[0][0].len()), (256, 77));
    for row in &raw[0] {
        let total: f32 = row.iter().sum();
        assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
    }
    let mut want_dog: Vec<f32> = raw[0].iter().map(|r| r[2] + r[3]).collect();
    let mut want_car: Vec<f32> = raw[0].iter().map(|r| r[6] + r[7]).collect();
    min_max_normalize(&mut want_dog).unwrap();
    min_max_normalize(&mut want_car).unwrap();
    let (s_dog, s_car) = prober.probe(&z, ("dog", "car")).unwrap();
    for (a, b) in s_dog
        .iter()
        .zip(&want_dog)
        .chain(s_car.iter().zip(&want_car))
    {
        assert!((a - b).abs() < 1e-6);
    }
    // Summing both tokens differs from either token alone.
    let mut first_only: Vec<f32> = raw[0].iter().map(|r| r[2]).collect();
    min_max_normalize(&mut first_only).unwrap();
    assert!(s_dog
        .iter()
        .zip(&first_only)
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn maps_are_normalised_and_depend_on_noise() {
    let sd = tiny();
    let mut prober = SdProber::new(&sd, "m".into(), &ProbeOptions::new(32, 32)).unwrap();
    let (a, b) = prober.probe(&noise(1), ("cat", "car")).unwrap();
    for m in [&a, &b] {
        assert_eq!(m.len(), 256);
        assert!(m.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(m.contains(&0.0) && m.contains(&1.0));
    }
    assert_ne!(a, b);
    let (a2, _) = prober.probe(&noise(2), ("cat", "car")).unwrap();
    assert_ne!(a, a2);
    let (a3, _) = prober.probe(&noise(1), ("cat", "car")).unwrap();
    assert_eq!(a, a3, "deterministic");
}

#[test]
fn batched_equals_unbatched() {
    let sd = tiny();
    let mut opts = ProbeOptions::new(32, 32);
    opts.pairs_per_pass = 3;
    let mut prober = SdProber::new(&sd, "m".into(), &opts).unwrap();
    assert_eq!(prober.pairs_per_pass(), 3);
    let z = noise(5);
    let pairs = [("car", "cat"), ("car", "dog"), ("cat", "dog")];
    let batched = prober.probe_pairs(&z, &pairs).unwrap();
    for (p, (a, b)) in pairs.iter().zip(&batched) {
        let (a1, b1) = prober.probe(&z, *p).unwrap();
        for (x, y) in a.iter().zip(&a1).chain(b.iter().zip(&b1)) {
            assert!((x - y).abs() < 1e-5, "{p:?}: {x} vs {y}");
        }
    }
}

#[test]
fn the_pass_stops_after_the_probed_layer() {
    let sd = tiny();
    let layers = sd.unet.attention_layers();
    let total = layers.len();
    let index_of = |p: &str| layers.iter().position(|l| l.path == p).unwrap();
    let mut prober = SdProber::new(&sd, "m".into(), &ProbeOptions::new(32, 32)).unwrap();
    prober.probe(&noise(1), ("cat", "car")).unwrap();
    let stop = index_of(&prober.plan().stop_after);
    // Layers 0..=stop reached, nothing after it (attn1 and attn2 of 4 down transformers = 8 of
    // the UNet's attention layers).
    assert_eq!(prober.last_pass_layers_visited(), stop + 1);
    assert!(stop + 1 < total / 2, "{stop} of {total}");
    assert_eq!(layers[stop].kind, AttentionKind::CrossAttention);

    // At 128x128 (latent 64x64) the grid level is down block 1, so `All` ends in up_blocks.1.
    let mut opts = ProbeOptions::new(128, 128);
    opts.layers = LayerChoice::All;
    let mut all = SdProber::new(&sd, "m".into(), &opts).unwrap();
    let big = semi_diffusion::noise::randn(1, &[1, 4, 64, 64], &Device::Cpu).unwrap();
    let (a, _) = all.probe(&big, ("cat", "car")).unwrap();
    let stop = index_of(&all.plan().stop_after);
    assert_eq!(all.last_pass_layers_visited(), stop + 1);
    assert!(stop + 1 < total, "up_blocks.2 is never computed");
    assert!(a.contains(&1.0));
}

#[test]
fn model_fingerprint_is_cached_on_disk() {
    use semi_diffusion::loading::ModelFiles;
    use semi_tickets::cache::model_fingerprint_cached;
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../diffusion/tests/fixtures/tiny-sd1");
    let files = ModelFiles::check(&dir, Variant::Full).unwrap();
    let real = files.fingerprint().unwrap();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("fingerprints.json");
    assert_eq!(
        model_fingerprint_cached(&files, Some(&cache)).unwrap(),
        real
    );
    // A planted digest is returned as long as the files' stamps match: the cache is really read.
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(text.contains(&real));
    std::fs::write(&cache, text.replace(&real, "planted")).unwrap();
    assert_eq!(
        model_fingerprint_cached(&files, Some(&cache)).unwrap(),
        "planted"
    );
    // A changed stamp (here: a recorded size) makes it hash again.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    let mut v2 = v.clone();
    let entry = v2["entries"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .next()
        .unwrap();
    entry[0][0]["len"] = serde_json::json!(1);
    std::fs::write(&cache, serde_json::to_vec(&v2).unwrap()).unwrap();
    assert_eq!(
        model_fingerprint_cached(&files, Some(&cache)).unwrap(),
        real
    );
    // A corrupt cache costs only the hashing.
    std::fs::write(&cache, b"not json").unwrap();
    assert_eq!(
        model_fingerprint_cached(&files, Some(&cache)).unwrap(),
        real
    );
}

/// SDXL's topology (tiny-sdxl: no cross-attention in down block 0, then two levels): at a
/// 128x128 latent (SDXL's 1024x1024) the rule takes down block 2, 32x32 cells of 4x4 latent
/// pixels, and its second transformer's first layer: the authors' path. The probe runs with
/// SDXL's added conditions and records the family in the fingerprint.
#[test]
fn sdxl_plan_and_probe() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../diffusion/tests/fixtures/tiny-sdxl");
    let sd = StableDiffusion::load(&dir, &Device::Cpu, DType::F32, Variant::Full).unwrap();
    let plan = plan_layers(&sd.unet, (128, 128), &LayerChoice::Default).unwrap();
    assert_eq!(
        plan.layers,
        ["down_blocks.2.attentions.1.transformer_blocks.0.attn2"]
    );
    assert_eq!((plan.factor, plan.grid), (4, [32, 32]));
    // SDXL-Turbo's 512x512 (latent 64): the same layer, 16x16 cells.
    let turbo = plan_layers(&sd.unet, (64, 64), &LayerChoice::Default).unwrap();
    assert_eq!(turbo.grid, [16, 16]);
    // Block 2 has two transformers of depth 2: `all` takes every cross-attention layer of that
    // resolution (4 down, 2 mid, 6 up).
    let all = plan_layers(&sd.unet, (64, 64), &LayerChoice::All).unwrap();
    assert_eq!(all.layers.len(), 4 + 2 + 6, "{:?}", all.layers);

    let mut prober = SdProber::new(&sd, "m".into(), &ProbeOptions::new(128, 128)).unwrap();
    let fp = prober.fingerprint();
    assert_eq!(fp.family, "sdxl");
    assert_eq!(fp.grid, [16, 16]);
    let z = semi_diffusion::noise::randn(0, &[1, 4, 64, 64], &Device::Cpu).unwrap();
    let (a, b) = prober.probe(&z, ("dog", "car")).unwrap();
    assert_eq!((a.len(), b.len()), (256, 256));
    for m in [&a, &b] {
        let max = m.iter().cloned().fold(f32::MIN, f32::max);
        let min = m.iter().cloned().fold(f32::MAX, f32::min);
        assert!((max - 1.0).abs() < 1e-6 && min.abs() < 1e-6);
    }
}
