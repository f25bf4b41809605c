//! Every Table-1 method on the tiny random SD-1 model (32x32 images, latent 4x16x16, probe grid
//! 8x8), with an on-the-fly cache store.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use semi_diffusion::loading::Variant;
use semi_diffusion::pipeline::StableDiffusion;
use semi_layout::{BBox, Layout, LayoutObject};
use semi_methods::{generate, prepare, Guidance, Init, Method, MethodOptions, Sampling};
use semi_tickets::{ProbeOptions, Store};

fn tiny() -> StableDiffusion {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../diffusion/tests/fixtures/tiny-sd1");
    StableDiffusion::load(&dir, &Device::Cpu, DType::F32, Variant::Full).unwrap()
}

/// One cache folder for the whole test binary (SEMI_CACHE is process-wide).
fn cache() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().to_path_buf();
        std::env::set_var("SEMI_CACHE", &p);
        (t, p)
    })
    .1
}

fn layout() -> Layout {
    let mut l = Layout::new(
        "a cat and a dog",
        32,
        32,
        vec![
            LayoutObject::new("cat", "cat", BBox::new(0.0, 0.0, 0.5, 0.5).unwrap()),
            LayoutObject::new("dog", "dog", BBox::new(0.5, 0.25, 1.0, 1.0).unwrap()),
        ],
    );
    l.seed = Some(5);
    l
}

fn store(sd: &StableDiffusion) -> Store {
    cache();
    let mut lines = Vec::new();
    let s = semi_methods::cache_store_with(
        sd,
        "tiny-sd1",
        &ProbeOptions::new(32, 32),
        &["cat".to_string(), "dog".to_string()],
        &[],
        6,
        &mut |_| {},
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(s.n_images(), 6);
    s
}

fn request() -> Sampling {
    let mut r = Sampling::new(5);
    r.steps = 3;
    r
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn sorted(t: &Tensor) -> Vec<f32> {
    let mut v = values(t);
    v.sort_by(f32::total_cmp);
    v
}

#[test]
fn every_table1_method_runs() {
    let sd = tiny();
    let store = store(&sd);
    let l = layout();
    let opts = MethodOptions::default();
    let gaussian = semi_diffusion::noise::randn(5, &[1, 4, 16, 16], &Device::Cpu).unwrap();
    let semi = Method::parse("semi").unwrap();
    let semi_latents = prepare(&sd, &l, 5, 3, &semi, Some(&store), &opts)
        .unwrap()
        .latents;
    for m in Method::table1() {
        let mut steps = 0;
        let g = generate(&sd, &l, &request(), &m, Some(&store), &opts, &mut |_| {
            steps += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(steps, 3, "{m}");
        assert_eq!(g.image.dims(), [1, 3, 32, 32], "{m}");
        assert_eq!(g.prepared_metadata["method"], m.name());
        assert_eq!(g.prepared_metadata["init"], m.init.name());
        assert_eq!(g.prepared_metadata["attention"], m.guidance.name());
        assert_eq!(g.construction.is_some(), m.needs_store(), "{m}");
        assert_eq!(g.prepared_metadata.contains_key("swap"), m.init.uses_swap());
        assert_eq!(
            g.prepared_metadata.contains_key("soft_weight"),
            m.guidance == Guidance::Soft
        );
        // Each init is what it claims: the Gaussian noise, SemI's latents, or a permutation.
        match m.init {
            Init::Gaussian => assert_eq!(values(&g.initial), values(&gaussian)),
            Init::Semi => assert_eq!(values(&g.initial), values(&semi_latents)),
            Init::Swap => {
                assert_ne!(values(&g.initial), values(&gaussian));
                assert_eq!(sorted(&g.initial), sorted(&gaussian));
            }
            Init::SemiSwap => {
                assert_ne!(values(&g.initial), values(&semi_latents));
                assert_eq!(sorted(&g.initial), sorted(&semi_latents));
            }
        }
    }
}

#[test]
fn generate_is_prepare_plus_the_pipeline() {
    let sd = tiny();
    let l = layout();
    let opts = MethodOptions {
        soft_weight: 0.5,
        paint_weight: 0.5,
        ..MethodOptions::default()
    };
    let req = request();
    let run = |m: &str| {
        let m = Method::parse(m).unwrap();
        generate(&sd, &l, &req, &m, None, &opts, &mut |_| Ok(())).unwrap()
    };
    for name in ["swap+soft", "paint", "sd"] {
        let g = run(name);
        let m = Method::parse(name).unwrap();
        let mut p = prepare(&sd, &l, req.seed, req.steps, &m, None, &opts).unwrap();
        let mut r = req.request(&l);
        r.latents = Some(p.latents.clone());
        let out = match p.controller.as_mut() {
            Some(c) => sd.generate(&r, Some(&mut **c), &mut |_| Ok(())),
            None => sd.generate(&r, None, &mut |_| Ok(())),
        }
        .unwrap();
        assert_eq!(values(&g.image), values(&out.image), "{name}");
        assert_eq!(g.prepared_metadata, p.metadata);
    }
    // Guidance changes the image.
    assert_ne!(values(&run("sd").image), values(&run("soft").image));
    assert_ne!(values(&run("sd").image), values(&run("paint").image));
}

#[test]
fn given_latents_replace_the_gaussian_noise() {
    let sd = tiny();
    let l = layout();
    let mut req = request();
    let given = semi_diffusion::noise::randn(77, &[1, 4, 16, 16], &Device::Cpu).unwrap();
    req.latents = Some(given.clone());
    let opts = MethodOptions::default();
    let swap = Method::parse("swap").unwrap();
    let g = generate(&sd, &l, &req, &swap, None, &opts, &mut |_| Ok(())).unwrap();
    assert_eq!(sorted(&g.initial), sorted(&given));
    let semi = Method::parse("semi").unwrap();
    let e = generate(&sd, &l, &req, &semi, None, &opts, &mut |_| Ok(()))
        .err()
        .unwrap();
    assert!(e.to_string().contains("given latents"), "{e}");
}

#[test]
fn bad_combinations_are_clear_errors() {
    let sd = tiny();
    let l = layout();
    let opts = MethodOptions::default();
    let req = request();
    let run = |l: &Layout, req: &Sampling, m: &str| {
        let m = Method::parse(m).unwrap();
        generate(&sd, l, req, &m, None, &opts, &mut |_| Ok(()))
            .err()
            .map(|e| format!("{e:#}"))
    };
    assert!(run(&l, &req, "semi")
        .unwrap()
        .contains("needs a ticket store"));
    let mut plain = l.clone();
    plain.objects.clear();
    assert_eq!(run(&plain, &req, "sd"), None);
    assert!(run(&plain, &req, "paint")
        .unwrap()
        .contains("needs a layout with boxes"));
    let mut missing = l.clone();
    missing.objects[1].phrase = "zebra".into();
    missing.objects[1].category = "zebra".into();
    assert!(run(&missing, &req, "soft").unwrap().contains("zebra"));
    let mut wrong = l.clone();
    wrong.width = 36;
    assert!(run(&wrong, &req, "sd")
        .unwrap()
        .contains("must be a positive multiple"));
}
