//! `semi_eval::CocoEval` against pycocotools' COCOeval on made-up ground truth and results
//! (tools/make_cocoeval_fixtures.py: crowd boxes, images without ground truth, duplicates, ties
//! in score, every area bucket, more than 100 detections on an image, a gt id of 0): every one
//! of the twelve `stats` within 1e-6.

use semi_eval::cocoeval::STAT_NAMES;
use semi_eval::CocoEval;
use std::path::PathBuf;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cocoeval")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn stats_match_pycocotools() {
    let mut worst = 0.0f64;
    for case in ["main", "other-seed", "sparse"] {
        let eval = CocoEval::from_json(
            &fixture(&format!("{case}.gt.json")),
            &fixture(&format!("{case}.results.json")),
        )
        .unwrap();
        let got = eval.stats();
        let want: serde_json::Value =
            serde_json::from_str(&fixture(&format!("{case}.stats.json"))).unwrap();
        for (name, v) in STAT_NAMES.iter().zip(got.values) {
            let w = want[*name].as_f64().unwrap();
            eprintln!("{case} {name}: {v:.9} pycocotools {w:.9}");
            worst = worst.max((v - w).abs());
            assert!(
                (v - w).abs() <= 1e-6,
                "{case} {name}: {v} vs pycocotools {w}"
            );
        }
    }
    eprintln!("largest difference from pycocotools over 36 figures: {worst:e}");
}

#[test]
fn foreign_results_and_non_coco_files_are_refused() {
    let gt = fixture("sparse.gt.json");
    let err = CocoEval::from_json(
        &gt,
        r#"[{"image_id": 99, "category_id": 1, "bbox": [0,0,1,1], "score": 0.5}]"#,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("image_id 99"), "{err}");
    let err = CocoEval::from_json(r#"{"images": []}"#, "[]")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("not a COCO instances file"),
        "{err}"
    );
    let err = CocoEval::from_json(&gt, r#"{"a": 1}"#).err().unwrap();
    assert!(err.to_string().contains("not a COCO results file"), "{err}");
}

#[test]
fn layouts_as_ground_truth_give_ap_1_for_their_own_boxes() {
    let layout: semi_layout::Layout = serde_json::from_str(
        r#"{"id": "17", "prompt": "a dog and a kite", "width": 512, "height": 512, "objects": [
            {"phrase": "dog", "category": "dog", "bbox": [0.1, 0.2, 0.5, 0.6]},
            {"phrase": "kite", "category": "kite", "bbox": [0.6, 0.1, 0.9, 0.3]}]}"#,
    )
    .unwrap();
    let plan = semi_eval::Plan::new(vec![layout], 0).unwrap();
    let gt = plan.coco_ground_truth_json();
    let doc: serde_json::Value = serde_json::from_str(&gt).unwrap();
    let anns = doc["annotations"].as_array().unwrap();
    assert_eq!(anns[0]["category_id"], 18, "COCO's id of dog");
    assert_eq!(anns[0]["image_id"], 17);
    // A perfect detector: the boxes themselves.
    let results: Vec<serde_json::Value> = anns
        .iter()
        .map(|a| {
            serde_json::json!({"image_id": a["image_id"], "category_id": a["category_id"],
                "bbox": a["bbox"], "score": 0.9})
        })
        .collect();
    let stats = CocoEval::from_json(&gt, &serde_json::to_string(&results).unwrap())
        .unwrap()
        .stats();
    // pycocotools divides by tp + fp + eps, so a perfect AP is 1 - 1e-16.
    assert!((stats.values[0] - 1.0).abs() < 1e-12, "{:?}", stats.values);
}
