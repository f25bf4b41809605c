//! Sharded generation bookkeeping end to end, with a deterministic fake generator: sharded and
//! merged equals unsharded, resume, failures, mixing plans, evaluation and reports.

use std::cell::Cell;
use std::path::Path;

use anyhow::{bail, Result};
use semi_eval::batch::Outcome;
use semi_eval::{
    evaluate_method, generate_shard, merge, method_sheet, write_report, CategoryMap, CocoResults,
    Generated, MethodDir, MetricConfig, Plan, PlanItem, Shard, ShardStatus, ToyDetector,
};
use semi_layout::{to_jsonl, BBox, Layout, LayoutObject};
use semi_toyworld::{Category, RgbImage, BACKGROUND};

/// Seven 32x32 toy layouts; some with an id, some without, one with its own seed.
fn layouts() -> Vec<Layout> {
    let cats = [Category::Circle, Category::Square, Category::Cross];
    (0..7)
        .map(|i| {
            let c = cats[i % 3];
            let x = 0.0625 * (i as f64);
            let mut objects = vec![LayoutObject::new(
                c.name(),
                c.name(),
                BBox::new(x, 0.125, x + 0.375, 0.5).unwrap(),
            )];
            if i % 2 == 1 {
                objects.push(LayoutObject::new(
                    "ring",
                    "ring",
                    BBox::new(0.5, 0.625, 0.875, 0.9375).unwrap(),
                ));
            }
            let mut l = Layout::new(format!("a {}", c.name()), 32, 32, objects);
            l.id = (i != 3).then(|| format!("s{i}"));
            l.seed = (i == 5).then_some(1234);
            l
        })
        .collect()
}

/// Paints each object's box in its category colour, shifted right by `shift` pixels, plus one
/// seed-dependent background pixel so that images tell seeds apart.
fn paint(item: &PlanItem, shift: u32) -> Result<Generated> {
    let mut img = RgbImage::filled(32, 32, BACKGROUND);
    for o in &item.layout.objects {
        let color = o.category.parse::<Category>()?.color();
        let p = o.bbox.to_pixels(32, 32);
        for y in p.y0 as u32..p.y1 as u32 {
            for x in p.x0 as u32 + shift..(p.x1 as u32 + shift).min(32) {
                img.put(x, y, color);
            }
        }
    }
    img.put((item.seed % 32) as u32, 31, [120, 120, 120]);
    Ok(Generated {
        image: img,
        info: serde_json::json!({"generator": "paint", "shift": shift}),
    })
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn sharded_and_merged_equals_unsharded() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan::new(layouts(), 7).unwrap();
    let one = MethodDir::new(tmp.path().join("one"), "semi+soft").unwrap();
    let m = generate_shard(&one, &plan, Shard::ALL, |it| paint(it, 0)).unwrap();
    assert_eq!(
        (m.status.clone(), m.generated(), m.shard_items),
        (ShardStatus::Complete, 7, 7)
    );
    merge(&one, &plan).unwrap();

    let three = MethodDir::new(tmp.path().join("three"), "semi+soft").unwrap();
    generate_shard(&three, &plan, Shard::parse("1/3").unwrap(), |it| {
        paint(it, 0)
    })
    .unwrap();
    // Incomplete: the error names what is missing and which shards to rerun.
    let e = format!("{:#}", merge(&three, &plan).unwrap_err());
    assert_eq!(
        e,
        "method \"semi+soft\": 5 of 7 images are missing (s0, s2, 000003, s5, s6); rerun shard(s) 0/3, 2/3 (finished images are kept)"
    );
    for i in [2, 0] {
        let m =
            generate_shard(&three, &plan, Shard::new(i, 3).unwrap(), |it| paint(it, 0)).unwrap();
        let idx: Vec<usize> = m.items.iter().map(|x| x.index).collect();
        assert_eq!(idx, (0..7).filter(|k| k % 3 == i).collect::<Vec<_>>());
    }
    let report = merge(&three, &plan).unwrap();
    assert_eq!(report.shards.len(), 3);
    assert!(report.unplanned.is_empty());
    // Same images, sidecars and merged record, byte for byte.
    assert_eq!(files(one.dir()), files(three.dir()));
    assert_eq!(files(one.dir()).len(), 2 * 7 + 1);
    // Seeds come from the plan: the layout's own, else the hash of (base seed, id).
    let side = three.read_sidecar("s5").unwrap().unwrap();
    assert_eq!(side.seed, 1234);
    assert_eq!(
        three.read_sidecar("000003").unwrap().unwrap().seed,
        semi_eval::item_seed(7, "000003")
    );
    assert_eq!(side.info["generator"], "paint");
}

#[test]
fn resume_skips_finished_images_and_failures_keep_them() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan::new(layouts(), 0).unwrap();
    let dir = MethodDir::new(tmp.path(), "sd").unwrap();
    let calls = Cell::new(0);
    // The generator fails on the fourth item.
    let e = generate_shard(&dir, &plan, Shard::ALL, |it| {
        calls.set(calls.get() + 1);
        if it.index == 3 {
            bail!("out of memory");
        }
        paint(it, 0)
    })
    .unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "method sd, item \"000003\": out of memory"
    );
    let text = std::fs::read_to_string(dir.manifest_path(Shard::ALL)).unwrap();
    let manifest: semi_eval::ShardManifest = serde_json::from_str(&text).unwrap();
    assert_eq!(
        manifest.status,
        ShardStatus::Failed {
            error: "method sd, item \"000003\": out of memory".into()
        }
    );
    assert_eq!(manifest.items.len(), 3);
    // The run again: three existing, four generated.
    calls.set(0);
    let m = generate_shard(&dir, &plan, Shard::ALL, |it| {
        calls.set(calls.get() + 1);
        paint(it, 0)
    })
    .unwrap();
    assert_eq!(calls.get(), 4);
    let outcomes: Vec<Outcome> = m.items.iter().map(|i| i.outcome).collect();
    assert_eq!(
        &outcomes[..4],
        [
            Outcome::Existing,
            Outcome::Existing,
            Outcome::Existing,
            Outcome::Generated
        ]
    );
    // A lost PNG (sidecar left) is made again.
    std::fs::remove_file(dir.image_path("s0")).unwrap();
    calls.set(0);
    generate_shard(&dir, &plan, Shard::parse("0/2").unwrap(), |it| {
        calls.set(calls.get() + 1);
        paint(it, 0)
    })
    .unwrap();
    assert_eq!(calls.get(), 1);
    // So are an empty PNG and a cut one (a full disk, a copy that stopped).
    std::fs::write(dir.image_path("s0"), b"").unwrap();
    let png = std::fs::read(dir.image_path("s2")).unwrap();
    std::fs::write(dir.image_path("s2"), &png[..png.len() / 2]).unwrap();
    calls.set(0);
    generate_shard(&dir, &plan, Shard::ALL, |it| {
        calls.set(calls.get() + 1);
        paint(it, 0)
    })
    .unwrap();
    assert_eq!(calls.get(), 2);
    merge(&dir, &plan).unwrap();
    // No temporary files are left behind.
    assert!(files(dir.dir()).iter().all(|(n, _)| !n.starts_with(".tmp")));
}

#[test]
fn outputs_of_another_plan_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan::new(layouts(), 0).unwrap();
    let dir = MethodDir::new(tmp.path(), "sd").unwrap();
    generate_shard(&dir, &plan, Shard::ALL, |it| paint(it, 0)).unwrap();
    // Another base seed: every seed differs, so the first item is refused.
    let other = Plan::new(layouts(), 1).unwrap();
    let e = format!(
        "{:#}",
        generate_shard(&dir, &other, Shard::ALL, |it| paint(it, 0)).unwrap_err()
    );
    assert!(
        e.contains("s0.json was made with seed") && e.contains("use another --out"),
        "{e}"
    );
    // A merge with a plan the manifests were not made from.
    let mut changed = layouts();
    changed[6].prompt = "a different prompt".into();
    let changed = Plan::new(changed, 0).unwrap();
    let e = format!("{:#}", merge(&dir, &changed).unwrap_err());
    assert!(
        e.contains("made from another layouts file or base seed"),
        "{e}"
    );
    // The generator must return the layout's size.
    let small = MethodDir::new(tmp.path(), "small").unwrap();
    let e = format!(
        "{:#}",
        generate_shard(&small, &plan, Shard::ALL, |_| Ok(Generated {
            image: RgbImage::filled(16, 16, BACKGROUND),
            info: serde_json::Value::Null,
        }))
        .unwrap_err()
    );
    assert!(
        e.ends_with("the generator returned a 16x16 image for a 32x32 layout"),
        "{e}"
    );
    // Nothing generated yet.
    let e = format!(
        "{:#}",
        merge(&MethodDir::new(tmp.path(), "none").unwrap(), &plan).unwrap_err()
    );
    assert!(e.contains("no shard manifests"), "{e}");
    assert!(MethodDir::new(tmp.path(), "../up").is_err());
    assert!(MethodDir::new(tmp.path(), "_x").is_err());
}

#[test]
fn truncated_layouts_file_names_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("layouts.jsonl");
    let text = to_jsonl(&layouts());
    let cut = &text[..text.len() - 20];
    std::fs::write(&path, cut).unwrap();
    let e = format!("{:#}", Plan::from_path(&path, 0).unwrap_err());
    assert_eq!(
        e,
        format!(
            "{}: line 7: truncated (the file ends in the middle of a layout)",
            path.display()
        )
    );
    std::fs::write(&path, &text).unwrap();
    assert_eq!(
        Plan::from_path(&path, 0).unwrap(),
        Plan::new(layouts(), 0).unwrap()
    );
}

#[test]
fn evaluate_report_and_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = Plan::new(layouts(), 0).unwrap();
    let exact = MethodDir::new(tmp.path(), "exact").unwrap();
    let shifted = MethodDir::new(tmp.path(), "shifted").unwrap();
    generate_shard(&exact, &plan, Shard::ALL, |it| paint(it, 0)).unwrap();
    generate_shard(&shifted, &plan, Shard::ALL, |it| paint(it, 4)).unwrap();
    // Evaluation needs the merge.
    let cfg = MetricConfig::default();
    assert!(evaluate_method(&exact, &plan, &ToyDetector::default(), &cfg).is_err());
    merge(&exact, &plan).unwrap();
    merge(&shifted, &plan).unwrap();

    let (a, dets) = evaluate_method(&exact, &plan, &ToyDetector::default(), &cfg).unwrap();
    assert_eq!(a.detector, "toy-exact");
    // 7 first objects + 3 rings, all found exactly.
    assert_eq!(
        (a.summary.overall.count, a.summary.overall.successes),
        (10, 10)
    );
    assert_eq!(a.summary.overall.mean_iou(), Some(1.0));
    assert_eq!(a.summary.by_object_count[&1].count, 4);
    assert_eq!(a.summary.by_object_count[&2].count, 6);
    // Boxes 12x12 px at 32x32 = 14% of the image = 36864 px at 512: medium.
    assert_eq!(a.summary.medium.count, 10);

    let (b, _) = evaluate_method(&shifted, &plan, &ToyDetector::default(), &cfg).unwrap();
    // Shifted by 4 of 12 px (clipped at the right edge for some): IoU well below 1.
    let first = &b.objects[0];
    assert_eq!(
        (first.id.as_str(), first.category.as_str()),
        ("s0", "circle")
    );
    assert!((first.iou - 8.0 / 16.0).abs() < 1e-6, "{first:?}");
    assert!(!first.success);

    // The same measurement through a COCO results file with the plan's image ids.
    let ids = plan.image_ids();
    let cats = CategoryMap(
        Category::ALL
            .iter()
            .map(|c| (c.id() as i64, c.name().to_string()))
            .collect(),
    );
    let mut entries = Vec::new();
    for (id, ds) in &dets {
        for d in ds {
            let cat = d.category.parse::<Category>().unwrap().id();
            let [x0, y0, x1, y1] = d.bbox;
            entries.push(serde_json::json!({"image_id": ids[id], "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": 0.9}));
        }
    }
    let results =
        CocoResults::from_json(&serde_json::to_string(&entries).unwrap(), &ids, &cats, 0.5)
            .unwrap();
    let (c, _) = evaluate_method(&exact, &plan, &results, &cfg).unwrap();
    assert_eq!(c.summary, a.summary);
    // Above every score: nothing detected.
    let none = CocoResults::from_json(&serde_json::to_string(&entries).unwrap(), &ids, &cats, 0.95)
        .unwrap();
    let (d, _) = evaluate_method(&exact, &plan, &none, &cfg).unwrap();
    assert_eq!(d.summary.overall.successes, 0);

    let out = tmp.path().join("report");
    let f = write_report(&out, &[a.clone(), b.clone()]).unwrap();
    let table = std::fs::read_to_string(&f.table).unwrap();
    assert!(
        table.starts_with("| Method | IoU | IoU_s | IoU_m | IoU_l | R_suc % |"),
        "{table}"
    );
    assert!(
        table.contains("| exact | 1.00 | - | 1.00 | - | 100.00 | - | 100.00 | - |"),
        "{table}"
    );
    let csv = std::fs::read_to_string(&f.summary_csv).unwrap();
    assert!(csv.contains("exact,all,10,10,1.000000,1.000000\n"), "{csv}");
    assert!(csv.contains("exact,small,0,0,,\n"), "{csv}");
    assert!(csv.contains("shifted,objects=2,6,"), "{csv}");
    let objects = std::fs::read_to_string(&f.objects_csv).unwrap();
    assert_eq!(objects.lines().count(), 1 + 20);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f.json).unwrap()).unwrap();
    assert_eq!(json["methods"][1]["method"], "shifted");
    assert_eq!(
        json["methods"][0]["summary"]["overall"]["success_rate"],
        1.0
    );
    let chart = RgbImage::load_png(&f.chart).unwrap();
    assert!(chart.width() > 300 && chart.height() > 500);

    let sheet = method_sheet(&exact, &plan, 5, Some(&dets), 4).unwrap();
    // 4 columns of 32 px upscaled x4 with 4 px padding, and a title bar.
    assert_eq!(sheet.width(), 4 * 128 + 5 * 4);
    sheet.save_png(&tmp.path().join("sheet.png"), &[]).unwrap();
}
