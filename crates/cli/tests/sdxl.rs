//! SDXL end to end through the real `semi` binary on the tiny random SDXL fixture: SemI, Swap,
//! Paint and Soft; the sidecar's family; a store of SD 1.x tickets refused by an SDXL model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../diffusion/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn semi(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semi"))
        .args(args)
        .env("SEMI_CACHE", cache)
        .env("HF_HUB_CACHE", cache.join("no-hf-cache"))
        .output()
        .unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const LAYOUT: &str = r#"{"prompt": "a photo of a dog and a car", "width": 128, "height": 128,
 "seed": 3, "objects": [
  {"phrase": "dog", "category": "dog", "bbox": [0.05, 0.1, 0.45, 0.5]},
  {"phrase": "car", "category": "car", "bbox": [0.55, 0.5, 0.95, 0.9]}]}"#;

#[test]
fn sdxl_runs_every_method_and_refuses_sd_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let layout = dir.path().join("layout.json");
    std::fs::write(&layout, LAYOUT).unwrap();
    let layout = layout.display().to_string();
    let sdxl = fixture("tiny-sdxl");
    let p = |f: &str| dir.path().join(f).display().to_string();

    for (init, guidance, name) in [
        ("semi", "none", "semi.png"),
        ("semi+swap", "soft", "semi-swap-soft.png"),
        ("swap", "paint", "swap-paint.png"),
    ] {
        let out = semi(
            &cache,
            &[
                "generate",
                "--model",
                &sdxl,
                "--layout",
                &layout,
                "--init",
                init,
                "--guidance",
                guidance,
                "--n",
                "6",
                "--steps",
                "3",
                "--out",
                &p(name),
            ],
        );
        ok(&out);
        let sidecar: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(p(name).replace(".png", ".json")).unwrap(),
        )
        .unwrap();
        assert_eq!(sidecar["family"], "sdxl", "{init}+{guidance}");
        assert_eq!(sidecar["init"], init);
    }

    // A store of SD 1.x tickets (the tiny SD-1 model at the same size) is refused by name.
    let store = p("sd1-store");
    let out = semi(
        &cache,
        &[
            "tickets",
            "collect",
            "--model",
            &fixture("tiny-sd1"),
            "--categories",
            "dog,car",
            "--n",
            "2",
            "--height",
            "128",
            "--width",
            "128",
            "--store",
            &store,
        ],
    );
    ok(&out);
    let out = semi(
        &cache,
        &[
            "generate",
            "--model",
            &sdxl,
            "--layout",
            &layout,
            "--init",
            "semi",
            "--store",
            &store,
            "--steps",
            "2",
            "--out",
            &p("mixed.png"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds SD 1.x/2.x tickets") && stderr.contains("SDXL model"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!Path::new(&p("mixed.png")).exists());
}
