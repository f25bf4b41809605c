//! COCO readers and the sample rule on a hand-written COCO-format fixture whose images cover
//! the rule's edge cases (see the comments per image below).

use std::collections::BTreeMap;
use std::path::PathBuf;

use semi_eval::{select_samples, CocoCaptions, CocoInstances, SampleRule};
use semi_layout::{parse_jsonl, to_jsonl, Layout};
use semi_toyworld::rng::mix64;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/coco")
        .join(name)
}

fn load() -> (CocoInstances, CocoCaptions) {
    (
        CocoInstances::from_path(fixture("instances_mini.json")).unwrap(),
        CocoCaptions::from_path(fixture("captions_mini.json")).unwrap(),
    )
}

fn by_id(layouts: &[Layout]) -> BTreeMap<String, Layout> {
    layouts
        .iter()
        .map(|l| (l.id.clone().unwrap(), l.clone()))
        .collect()
}

#[test]
fn readers_keep_what_the_rule_needs() {
    let (inst, caps) = load();
    assert_eq!(
        (
            inst.images.len(),
            inst.annotations.len(),
            inst.categories.len()
        ),
        (14, 20, 9)
    );
    let crowd = inst.annotations.iter().find(|a| a.id == 701).unwrap();
    assert_eq!((crowd.iscrowd, crowd.bbox), (1, [0.0, 200.0, 640.0, 280.0]));
    assert_eq!(inst.category_names()[&88], "teddy bear");
    // Annotations and captions are grouped per image and sorted by id, whatever the file order.
    let anns = inst.annotations_by_image();
    assert_eq!(
        anns[&2].iter().map(|a| a.id).collect::<Vec<_>>(),
        [201, 202]
    );
    let by_image = caps.by_image();
    assert_eq!(
        by_image[&3].iter().map(|c| c.id).collect::<Vec<_>>(),
        [31, 32]
    );
    assert_eq!(caps.annotations.len(), 16);
    let e = format!(
        "{:#}",
        CocoInstances::from_path(fixture("missing.json")).unwrap_err()
    );
    assert!(
        e.starts_with("cannot open") && e.contains("missing.json"),
        "{e}"
    );
    // A captions file is not an instances file.
    let e = format!(
        "{:#}",
        CocoInstances::from_path(fixture("captions_mini.json")).unwrap_err()
    );
    assert!(
        e.contains("not a COCO instances file") && e.contains("missing field"),
        "{e}"
    );
}

#[test]
fn the_rule_on_every_edge_case() {
    let (inst, caps) = load();
    let rule = SampleRule::default();
    let sel = select_samples(&inst, &caps, &rule).unwrap();
    let s = &sel.stats;
    assert_eq!(s.images, 14);
    assert_eq!(
        (
            s.without_boxes,
            s.with_crowd,
            s.with_tiny_box,
            s.other_count,
            s.not_named
        ),
        (1, 1, 1, 1, 2)
    );
    assert_eq!(s.available, BTreeMap::from([(1, 4), (2, 4)]));
    assert_eq!(s.selected, s.available);
    assert_eq!(s.shortfalls(&rule), vec![(1, 3000, 4), (2, 3000, 4)]);
    assert_eq!(
        s.to_string(),
        "14 images: 1 without boxes, 1 with crowd boxes, 1 with tiny boxes, 1 with another object \
         count, 2 without a caption naming every category\n1-object samples: 4 selected of 4 \
         qualifying\n2-object samples: 4 selected of 4 qualifying\n"
    );
    let got = by_id(&sel.layouts);
    let ids: Vec<&str> = got.keys().map(String::as_str).collect();
    // 5: "hot dog" does not name "dog"; 7: crowd; 8: tiny; 9: three boxes; 10: no boxes;
    // 12: "man" does not name "person".
    assert_eq!(ids, ["1", "11", "13", "14", "2", "3", "4", "6"]);

    let objs = |id: &str| -> Vec<(String, String, [f64; 4])> {
        got[id]
            .objects
            .iter()
            .map(|o| (o.phrase.clone(), o.category.clone(), o.bbox.to_array()))
            .collect()
    };
    let o = |p: &str, c: &str, b: [f64; 4]| (p.to_string(), c.to_string(), b);
    // 1: the first caption by id, whitespace collapsed; phrase as written.
    assert_eq!(got["1"].prompt, "A Dog runs on the grass.");
    assert_eq!(
        (got["1"].width, got["1"].height, got["1"].seed),
        (512, 512, None)
    );
    assert_eq!(objs("1"), [o("Dog", "dog", [0.1, 0.1, 0.6, 0.6])]);
    // 2: two boxes of one category make a two-object sample, in annotation-id order.
    assert_eq!(
        objs("2"),
        [
            o("dogs", "dog", [0.0, 0.0, 0.5, 1.0]),
            o("dogs", "dog", [0.5, 0.0, 1.0, 1.0])
        ]
    );
    // 3: the first caption (id 31) does not name the car; the second does.
    assert_eq!(got["3"].prompt, "A dog next to a red car.");
    assert_eq!(objs("3")[1].0, "car");
    assert_eq!(objs("3")[1].2, [0.46875, 0.234192, 0.9375, 0.702576]);
    assert_eq!(objs("4")[0].0, "hot dog");
    assert_eq!(objs("6")[0].0, "Teddy-Bear");
    assert_eq!(objs("11")[0].0, "Traffic lights");
    assert_eq!(
        objs("14").iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
        ["cat", "dining table"]
    );
    // 13: a box overrunning the image is clamped.
    assert_eq!(objs("13")[0].2, [0.9375, 0.833333, 1.0, 1.0]);
    // Every layout is valid and names its categories; JSONL round trip.
    for l in &sel.layouts {
        assert!(l.check().unwrap().is_empty(), "{l:?}");
    }
    let back = parse_jsonl(&to_jsonl(&sel.layouts)).unwrap();
    assert_eq!(
        back.into_iter().map(|e| e.layout).collect::<Vec<_>>(),
        sel.layouts
    );
}

#[test]
fn selection_is_the_first_k_in_hash_order() {
    let (inst, caps) = load();
    let key = |seed: u64, id: i64| mix64(seed ^ mix64(id as u64));
    for seed in [0u64, 1, 2, 99] {
        let rule = SampleRule {
            counts: BTreeMap::from([(1, 2), (2, 3)]),
            seed,
            ..Default::default()
        };
        let sel = select_samples(&inst, &caps, &rule).unwrap();
        assert_eq!(sel.stats.selected, BTreeMap::from([(1, 2), (2, 3)]));
        let mut one: Vec<i64> = vec![1, 4, 6, 13];
        let mut two: Vec<i64> = vec![2, 3, 11, 14];
        one.sort_by_key(|&id| (key(seed, id), id));
        two.sort_by_key(|&id| (key(seed, id), id));
        let mut want: Vec<i64> = one[..2].iter().chain(&two[..3]).copied().collect();
        want.sort_by_key(|&id| (key(seed, id), id));
        let ids: Vec<i64> = sel
            .layouts
            .iter()
            .map(|l| l.id.as_ref().unwrap().parse().unwrap())
            .collect();
        assert_eq!(ids, want, "seed {seed}");
        // Same input and seed, same output.
        assert_eq!(select_samples(&inst, &caps, &rule).unwrap(), sel);
    }
}

#[test]
fn options_change_the_rule() {
    let (inst, caps) = load();
    // No tiny-box limit: image 8 qualifies.
    let rule = SampleRule {
        min_box_fraction: 0.0,
        ..Default::default()
    };
    let sel = select_samples(&inst, &caps, &rule).unwrap();
    assert!(sel.layouts.iter().any(|l| l.id.as_deref() == Some("8")));
    // Aliases: "man" names person (image 12).
    let mut rule = SampleRule::default();
    rule.aliases.insert("person".into(), vec!["man".into()]);
    let sel = select_samples(&inst, &caps, &rule).unwrap();
    let l = sel
        .layouts
        .iter()
        .find(|l| l.id.as_deref() == Some("12"))
        .unwrap();
    assert_eq!(l.objects[0].phrase, "man");
    // Three-object samples on request; other sizes for the layouts.
    let rule = SampleRule {
        counts: BTreeMap::from([(3, 10)]),
        width: 64,
        height: 32,
        ..Default::default()
    };
    let sel = select_samples(&inst, &caps, &rule).unwrap();
    assert_eq!(sel.layouts.len(), 1);
    assert_eq!((sel.layouts[0].width, sel.layouts[0].height), (64, 32));
    assert!(select_samples(
        &inst,
        &caps,
        &SampleRule {
            counts: BTreeMap::from([(0, 1)]),
            ..Default::default()
        }
    )
    .is_err());
}

#[test]
fn captions_of_another_split_are_an_error() {
    let (inst, _) = load();
    let caps = CocoCaptions::from_json(
        r#"{"annotations": [{"image_id": 999, "id": 1, "caption": "a dog"}]}"#,
    )
    .unwrap();
    let e = format!(
        "{:#}",
        select_samples(&inst, &caps, &SampleRule::default()).unwrap_err()
    );
    assert!(e.contains("image 999") && e.contains("same split"), "{e}");
}
