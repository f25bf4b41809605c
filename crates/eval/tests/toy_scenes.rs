//! End to end on real toy-world scenes: layouts from the scenes' own boxes, "generated" images
//! that are the scenes themselves (a perfect generator), scored with the exact detector. Every
//! object must be found, so this checks the whole chain (plan, shards, merge, detector,
//! metrics, report files) against a known answer.

use semi_eval::{
    generate_shard, merge, run_report, Detector, Generated, MethodDir, Plan, ReportOptions, Shard,
    ToyDetector,
};
use semi_layout::{BBox, Layout, LayoutObject};
use semi_toyworld::{RgbImage, Scene, WorldConfig};

#[test]
fn a_perfect_generator_scores_full_marks() {
    let cfg = WorldConfig::default();
    let scenes: Vec<Scene> = (0..24)
        .map(|i| Scene::generate(5, i, &cfg).unwrap())
        .collect();
    let layouts: Vec<Layout> = scenes
        .iter()
        .map(|s| {
            let objects = s
                .objects
                .iter()
                .map(|o| {
                    let b = o.bbox.map(|v| f64::from(v) / f64::from(cfg.size));
                    LayoutObject::new(
                        o.category.name(),
                        o.category.name(),
                        BBox::new(b[0], b[1], b[2], b[3]).unwrap(),
                    )
                })
                .collect();
            let mut l = Layout::new(s.caption.clone(), cfg.size, cfg.size, objects);
            l.id = Some(format!("scene{}", s.index));
            l
        })
        .collect();
    let plan = Plan::new(layouts, 0).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let scene_of = |id: &str| -> RgbImage {
        let k: usize = id.trim_start_matches("scene").parse().unwrap();
        scenes[k].image.clone()
    };
    for method in ["perfect", "blank"] {
        let dir = MethodDir::new(&out, method).unwrap();
        for i in 0..2 {
            generate_shard(&dir, &plan, Shard::new(i, 2).unwrap(), |it| {
                let image = match method {
                    "perfect" => scene_of(&it.id),
                    _ => RgbImage::filled(cfg.size, cfg.size, semi_toyworld::BACKGROUND),
                };
                Ok(Generated {
                    image,
                    info: serde_json::Value::Null,
                })
            })
            .unwrap();
        }
        merge(&dir, &plan).unwrap();
    }
    let report = tmp.path().join("report");
    let methods = vec!["perfect".to_string(), "blank".to_string()];
    let (results, files) = run_report(
        &out,
        &plan,
        &methods,
        |_| Ok(Box::new(ToyDetector::default()) as Box<dyn Detector>),
        &ReportOptions::default(),
        &report,
    )
    .unwrap();
    let objects: usize = scenes.iter().map(|s| s.objects.len()).sum();
    let perfect = &results[0].summary;
    assert_eq!(
        (perfect.overall.count, perfect.overall.successes),
        (objects, objects)
    );
    // Painted shapes may be a pixel smaller than their nominal box: IoU high, not always 1.
    assert!(perfect.overall.mean_iou().unwrap() > 0.8, "{perfect:?}");
    let blank = &results[1].summary;
    assert_eq!(
        (
            blank.overall.count,
            blank.overall.successes,
            blank.overall.mean_iou()
        ),
        (objects, 0, Some(0.0))
    );
    // Object-count split covers every object once.
    let split: usize = perfect.by_object_count.values().map(|s| s.count).sum();
    assert_eq!(split, objects);
    for f in [
        &files.table,
        &files.summary_csv,
        &files.objects_csv,
        &files.json,
        &files.chart,
    ] {
        assert!(f.is_file(), "{}", f.display());
    }
    for m in &methods {
        let sheet = RgbImage::load_png(&report.join(format!("sheet-{m}.png"))).unwrap();
        assert!(sheet.width() >= 4 * 128);
    }
    let table = std::fs::read_to_string(&files.table).unwrap();
    assert!(
        table.contains("| perfect |") && table.contains("| blank | 0.00 |"),
        "{table}"
    );
    assert!(table.contains("Detector: toy-exact."), "{table}");
}
