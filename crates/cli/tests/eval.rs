//! `semi eval` on the embedded toy model: toy layouts, generation of several methods (SemI
//! through a small on-the-fly cache store), merge and report end to end; sharded runs merged
//! equal the unsharded run file for file; resume skips finished images and refuses other
//! settings; bad input ends in one `error:` line and exit code 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A short generation: 4 DDIM steps at guidance 2 (the toy model card's guidance).
const FAST: &[&str] = &["--model", "toy", "--steps", "4", "--guidance", "2"];

fn semi(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semi"))
        .args(args)
        .env("SEMI_CACHE", cache)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit code 1 and a single stderr line `error: ...` containing every needle.
fn assert_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {stderr}");
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    cache: PathBuf,
    layouts: PathBuf,
}

impl Fixture {
    /// `n` two-object toy layouts.
    fn new(n: usize) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let cache = root.join("cache");
        let layouts = root.join("layouts.jsonl");
        ok(semi(
            &cache,
            &[
                "eval",
                "toy-layouts",
                "--n",
                &n.to_string(),
                "--seed",
                "3",
                "--out",
                layouts.to_str().unwrap(),
            ],
        ));
        Fixture {
            _tmp: tmp,
            root,
            cache,
            layouts,
        }
    }

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_str().unwrap().to_string()
    }

    fn run(&self, args: &[&str]) -> Output {
        semi(&self.cache, args)
    }

    fn generate(&self, out: &str, method: &str, extra: &[&str]) -> Output {
        self.generate_with(out, method, FAST, extra)
    }

    fn generate_with(&self, out: &str, method: &str, model: &[&str], extra: &[&str]) -> Output {
        let mut args = vec![
            "eval".to_string(),
            "generate".into(),
            "--layouts".into(),
            self.layouts.to_str().unwrap().into(),
            "--out".into(),
            self.path(out),
            "--method".into(),
            method.into(),
        ];
        args.extend(model.iter().chain(extra).map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)
    }
}

/// Every file under `dir` except shard manifests (they record timings), by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with("_shards") {
                    stack.push(p);
                }
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Sidecars without the generation time, which differs from run to run.
fn without_seconds(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(k, v)| {
            let sidecar = k.ends_with(".json") && !k.starts_with("report/") && !k.contains("/_");
            let v = if sidecar {
                let mut j: serde_json::Value = serde_json::from_slice(v).unwrap();
                j["info"].as_object_mut().unwrap().remove("seconds");
                serde_json::to_vec(&j).unwrap()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[test]
fn run_end_to_end_on_the_toy_model() {
    let f = Fixture::new(3);
    let out = f.path("gen");
    let stdout = ok(f.run(
        &[
            &["eval", "run", "--layouts", f.layouts.to_str().unwrap()][..],
            &[
                "--methods",
                "sd,paint,soft+semi,semi+swap+soft",
                "--out",
                &out,
            ],
            FAST,
            &[
                "--n",
                "10",
                "--t-bg",
                "0.3",
                "--paint-weight",
                "0.5",
                "--soft-weight",
                "0.3",
            ],
        ]
        .concat(),
    ));
    let table = std::fs::read_to_string(Path::new(&out).join("report/table.md")).unwrap();
    for m in ["sd", "paint", "semi+soft", "semi+swap+soft"] {
        assert!(table.contains(&format!("| {m} |")), "{table}");
        let dir = Path::new(&out).join(m);
        assert!(dir.join("_merged.json").is_file());
        for id in ["000000", "000001", "000002"] {
            assert!(dir.join(format!("{id}.png")).is_file(), "{m}/{id}");
        }
        assert!(Path::new(&out)
            .join(format!("report/sheet-{m}.png"))
            .is_file());
    }
    assert!(stdout.contains("| Method | IoU |"), "{stdout}");
    for file in ["summary.csv", "objects.csv", "summary.json", "chart.png"] {
        assert!(
            Path::new(&out).join("report").join(file).is_file(),
            "{file}"
        );
    }
    // 3 layouts x 2 objects per method.
    let csv = std::fs::read_to_string(Path::new(&out).join("report/summary.csv")).unwrap();
    assert!(csv.contains("\nsd,all,6,"), "{csv}");
    // The strengths reach the sidecars (only where the method uses them).
    let side: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&out).join("paint/000000.json")).unwrap())
            .unwrap();
    assert_eq!(side["info"]["settings"]["paint_weight"], 0.5);
    assert_eq!(side["info"]["settings"]["steps"], 4);
    let side: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&out).join("sd/000000.json")).unwrap())
            .unwrap();
    assert!(side["info"]["settings"].get("paint_weight").is_none());
    // A second run generates nothing and prints the same table.
    let again = ok(f.run(
        &[
            &["eval", "run", "--layouts", f.layouts.to_str().unwrap()][..],
            &[
                "--methods",
                "sd,paint,soft+semi,semi+swap+soft",
                "--out",
                &out,
            ],
            FAST,
            &[
                "--n",
                "10",
                "--t-bg",
                "0.3",
                "--paint-weight",
                "0.5",
                "--soft-weight",
                "0.3",
            ],
        ]
        .concat(),
    ));
    assert!(again.contains("0 generated, 3 already there"), "{again}");
    assert_eq!(
        std::fs::read_to_string(Path::new(&out).join("report/table.md")).unwrap(),
        table
    );
}

#[test]
fn sharded_then_merged_equals_unsharded() {
    let f = Fixture::new(5);
    ok(f.generate("one", "paint", &[]));
    ok(f.generate("two", "paint", &["--shard", "1/2"]));
    // Merging an incomplete method names what is missing and the shard to rerun.
    let e = f.run(&[
        "eval",
        "merge",
        "--layouts",
        f.layouts.to_str().unwrap(),
        "--out",
        &f.path("two"),
        "--method",
        "paint",
    ]);
    assert_error(&e, &["3 of 5 images are missing", "rerun shard(s) 0/2"]);
    // Shard 0/2 from the Slurm variables.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_semi"));
    cmd.args(["eval", "generate", "--layouts", f.layouts.to_str().unwrap()])
        .args(["--out", &f.path("two"), "--method", "paint"])
        .args(FAST)
        .env("SEMI_CACHE", &f.cache)
        .env("SLURM_ARRAY_TASK_ID", "0")
        .env("SLURM_ARRAY_TASK_COUNT", "2");
    let stdout = ok(cmd.output().unwrap());
    assert!(stdout.contains("paint shard 0/2: 3 generated"), "{stdout}");
    for out in ["one", "two"] {
        ok(f.run(&[
            "eval",
            "merge",
            "--layouts",
            f.layouts.to_str().unwrap(),
            "--out",
            &f.path(out),
            "--method",
            "paint",
        ]));
        ok(f.run(&[
            "eval",
            "report",
            "--layouts",
            f.layouts.to_str().unwrap(),
            "--out",
            &f.path(out),
            "--methods",
            "paint",
            "--detector",
            "toy",
        ]));
    }
    let one = without_seconds(&files(&f.root.join("one")));
    let two = without_seconds(&files(&f.root.join("two")));
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        two.keys().collect::<Vec<_>>()
    );
    for (k, v) in &one {
        assert!(
            two[k] == *v,
            "{k} differs between sharded and unsharded runs"
        );
    }
    assert!(one.contains_key("report/table.md") && one.contains_key("paint/000004.png"));
}

#[test]
fn resume_skips_finished_images_and_refuses_other_settings() {
    let f = Fixture::new(3);
    ok(f.generate("g", "sd", &[]));
    let png = f.root.join("g/sd/000001.png");
    let before = std::fs::metadata(&png).unwrap().modified().unwrap();
    std::fs::remove_file(f.root.join("g/sd/000002.png")).unwrap();
    let stdout = ok(f.generate("g", "sd", &[]));
    assert!(stdout.contains("1 generated"), "{stdout}");
    assert!(stdout.contains("2 already there"), "{stdout}");
    assert_eq!(std::fs::metadata(&png).unwrap().modified().unwrap(), before);
    assert!(f.root.join("g/sd/000002.png").is_file());
    // Other settings into the same folder: refused, nothing touched.
    let e = f.generate_with(
        "g",
        "sd",
        &["--model", "toy", "--steps", "5"],
        &["--guidance", "2"],
    );
    assert_error(&e, &["000000.json", "other settings", "steps 4 vs 5"]);
    assert_eq!(std::fs::metadata(&png).unwrap().modified().unwrap(), before);
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let f = Fixture::new(2);
    let text = std::fs::read_to_string(&f.layouts).unwrap();
    let truncated = f.root.join("truncated.jsonl");
    std::fs::write(&truncated, &text[..text.len() - 20]).unwrap();
    let g = |layouts: &str, method: &str, extra: &[&str]| {
        f.run(
            &[
                &["eval", "generate", "--layouts", layouts, "--out"][..],
                &[&f.path("g")[..], "--method", method],
                FAST,
                extra,
            ]
            .concat(),
        )
    };
    assert_error(&g(truncated.to_str().unwrap(), "sd", &[]), &["line 2"]);
    let layouts = f.layouts.to_str().unwrap();
    assert_error(&g(layouts, "sd", &["--shard", "3/2"]), &["shard", "3/2"]);
    assert_error(&g(layouts, "sdxl", &[]), &["sdxl"]);
    assert_error(
        &g(layouts, "sd", &["--paint-weight", "-1"]),
        &["--paint-weight"],
    );
    // A results file naming an image the layouts do not have.
    ok(g(layouts, "sd", &[]));
    ok(f.run(&[
        "eval",
        "merge",
        "--layouts",
        layouts,
        "--out",
        &f.path("g"),
        "--method",
        "sd",
    ]));
    let results = f.root.join("results");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(
        results.join("sd.json"),
        r#"[{"image_id": 0, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.9},
            {"image_id": 77, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.9}]"#,
    )
    .unwrap();
    let e = f.run(&[
        "eval",
        "report",
        "--layouts",
        layouts,
        "--out",
        &f.path("g"),
        "--methods",
        "sd",
        "--detector",
        "coco-results",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert_error(&e, &["sd.json", "image_id 77"]);
    // A YOLOv8 detector on the generated images: one table row.
    let weights = yolo_weights(&f.root);
    let table = ok(f.run(&[
        "eval",
        "report",
        "--layouts",
        layouts,
        "--out",
        &f.path("g"),
        "--methods",
        "sd",
        "--detector",
        &format!("yolov8:{}", weights.display()),
        "--imgsz",
        "64",
        "--min-score",
        "0.5",
    ]));
    assert!(table.contains("| sd |"), "{table}");
    let e = f.run(&[
        "eval",
        "report",
        "--layouts",
        layouts,
        "--out",
        &f.path("g"),
        "--methods",
        "sd",
        "--detector",
        "yolov8:missing.safetensors",
    ]);
    assert_error(&e, &["no weights file missing.safetensors"]);
    // Reporting a method that was never merged.
    let e = f.run(&[
        "eval",
        "report",
        "--layouts",
        layouts,
        "--out",
        &f.path("g"),
        "--methods",
        "sd,paint",
    ]);
    assert_error(&e, &["paint", "merge"]);
}

#[test]
fn coco_metrics_prints_pycocotools_figures() {
    let dir = tempfile::tempdir().unwrap();
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../eval/tests/fixtures/cocoeval");
    let p = |n: &str| f.join(n).display().to_string();
    let (gt, results) = (p("main.gt.json"), p("main.results.json"));
    let out = ok(semi(
        dir.path(),
        &[
            "eval",
            "coco-metrics",
            "--gt",
            &gt,
            "--results",
            &results,
            "--json",
        ],
    ));
    let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("main.stats.json")).unwrap()).unwrap();
    for (k, w) in want.as_object().unwrap() {
        let g = got[k].as_f64().unwrap();
        assert!((g - w.as_f64().unwrap()).abs() <= 1e-6, "{k}: {g} vs {w}");
    }
    let text = ok(semi(
        dir.path(),
        &["eval", "coco-metrics", "--gt", &gt, "--results", &results],
    ));
    assert!(
        text.contains(
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.224"
        ),
        "{text}"
    );
    // Results for other images, and annotations that are not COCO's.
    let other = p("sparse.gt.json");
    assert_error(
        &semi(
            dir.path(),
            &[
                "eval",
                "coco-metrics",
                "--gt",
                &other,
                "--results",
                &results,
            ],
        ),
        &["image ids the annotations do not have"],
    );
    assert_error(
        &semi(
            dir.path(),
            &[
                "eval",
                "coco-metrics",
                "--gt",
                &results,
                "--results",
                &results,
            ],
        ),
        &["not a COCO instances file"],
    );
}

/// A YOLOv8n weights file of seeded random weights (COCO's 80 classes, no names).
fn yolo_weights(dir: &Path) -> PathBuf {
    use semi_detect::yolo::{Scale, YoloV8};
    let scale = Scale::named("n").unwrap();
    let weights = semi_bench::random_weights::seeded_tensors(2000, candle_core::DType::F32, |vb| {
        YoloV8::new(vb, scale, 80).map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    })
    .unwrap();
    let path = dir.join("yolov8n.safetensors");
    candle_core::safetensors::save(&weights.into_iter().collect(), &path).unwrap();
    path
}

#[test]
fn detect_writes_coco_results() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let weights = yolo_weights(root);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../eval/tests/fixtures/yolo");
    let images = root.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::copy(fixtures.join("scene.png"), images.join("139.png")).unwrap();
    std::fs::copy(fixtures.join("tall.png"), images.join("000000000285.png")).unwrap();
    let spec = format!("yolov8:{}", weights.display());
    let out = root.join("results.json");
    let args = |images: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["eval", "detect", "--detector", &spec, "--images"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(images.display().to_string());
        a.extend([
            "--out".into(),
            out.display().to_string(),
            "--imgsz".into(),
            "160".into(),
        ]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| semi(root, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = ok(run(args(&images, &["--detect-batch", "2"])));
    assert!(
        stdout.contains("yolov8n:yolov8n.safetensors: 600 detections in 2 images"),
        "{stdout}"
    );
    let results: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    // The library's detector on the same images, with the same settings, gives the same boxes.
    let mut yolo = semi_detect::YoloDetector::open(&weights, &candle_core::Device::Cpu).unwrap();
    yolo.size = 160;
    let imgs: Vec<semi_toyworld::RgbImage> = ["scene.png", "tall.png"]
        .iter()
        .map(|n| semi_toyworld::RgbImage::load_png(&fixtures.join(n)).unwrap())
        .collect();
    let found = yolo
        .detect_images(&imgs.iter().collect::<Vec<_>>())
        .unwrap();
    assert_eq!(results.len(), found[0].len() + found[1].len());
    let first = &results[0];
    assert_eq!(first["image_id"], 285, "files are taken in name order");
    let d = &found[1][0];
    let id = semi_eval::COCO_CATEGORIES
        .iter()
        .find(|c| c.1 == d.category)
        .unwrap()
        .0;
    assert_eq!(first["category_id"], id);
    let b: Vec<f64> = serde_json::from_value(first["bbox"].clone()).unwrap();
    assert!((b[0] - d.bbox[0]).abs() <= 5e-4 && (b[2] - (d.bbox[2] - d.bbox[0])).abs() <= 1e-3);
    assert!((first["score"].as_f64().unwrap() - d.score).abs() <= 5e-6);
    // Image ids from a COCO file instead of the names.
    let coco = root.join("images.json");
    std::fs::write(
        &coco,
        r#"{"images": [{"id": 7, "file_name": "139.png", "width": 200, "height": 150},
            {"id": 8, "file_name": "000000000285.png", "width": 90, "height": 128}]}"#,
    )
    .unwrap();
    ok(run(args(&images, &["--coco", coco.to_str().unwrap()])));
    let results: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(results[0]["image_id"], 8);
    // Bad input: a name that is no id, a COCO file of other images, weights of another
    // architecture, a folder without images.
    std::fs::copy(fixtures.join("scene.png"), images.join("scene.png")).unwrap();
    assert_error(
        &run(args(&images, &[])),
        &["scene.png", "not an image id", "--coco"],
    );
    assert_error(
        &run(args(&images, &["--coco", coco.to_str().unwrap()])),
        &["no image named \"scene\""],
    );
    std::fs::remove_file(images.join("scene.png")).unwrap();
    let other = fixtures.join("image.safetensors");
    let mut a = args(&images, &[]);
    a[3] = format!("yolov8:{}", other.display());
    assert_error(&run(a), &["image.safetensors", "not a YOLOv8 detect"]);
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_error(&run(args(&empty, &[])), &["no PNG images"]);
}
