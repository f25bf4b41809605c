//! Selection on a hand-made store: paper Eq. 2-5, ambiguity removal, the authors' preset.

mod common;

use common::{tiny_fingerprint, TableProber};
use semi_tickets::{all_pairs, collect, select, AuthorsThresholds, CollectRequest, Rule, Store};

/// Three categories, N = 2 images x 2 cells = blocks b0..b3. Hand-computed averages (Eq. 2):
/// car [0.8, 0.35, 0.45, 0.0], cat [0.2, 0.85, 0.4, 0.025], dog [0.4, 0.35, 0.8, 0.2].
fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut p = TableProber::new(tiny_fingerprint(), 5, 2);
    p.set("car", "cat", &[0.9, 0.2, 0.6, 0.0]);
    p.set("cat", "car", &[0.1, 0.8, 0.6, 0.05]);
    p.set("car", "dog", &[0.7, 0.5, 0.3, 0.0]);
    p.set("dog", "car", &[0.2, 0.6, 0.9, 0.1]);
    p.set("cat", "dog", &[0.3, 0.9, 0.2, 0.0]);
    p.set("dog", "cat", &[0.6, 0.1, 0.7, 0.3]);
    let req = CollectRequest {
        pairs: all_pairs(&["car", "cat", "dog"]).unwrap(),
        n_images: 2,
        seed: 5,
        shard: None,
        chunk_images: Some(1),
        wait_for_lock: None,
    };
    collect(dir.path(), &mut p, &req, &mut |_| {}).unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

fn sets(store: &Store, cats: &[&str], rule: Rule) -> (Vec<Vec<u32>>, Vec<u32>) {
    let s = select(store, cats, &rule).unwrap();
    (s.tickets, s.background)
}

#[test]
fn averages_follow_eq2() {
    let (_d, s) = store();
    let (avg, partners) = s.average_scores("car").unwrap();
    assert_eq!(partners, 2);
    for (a, want) in avg.iter().zip([0.8, 0.35, 0.45, 0.0]) {
        assert!((a - want).abs() < 1e-6, "{avg:?}");
    }
    assert_eq!(s.scores("dog", "cat").unwrap(), [0.6, 0.1, 0.7, 0.3]);
}

#[test]
fn paper_one_category_eq4_eq5() {
    let (_d, s) = store();
    let rule = Rule::paper(0.5, 0.1).unwrap();
    assert_eq!(sets(&s, &["car"], rule), (vec![vec![0]], vec![3]));
    assert_eq!(sets(&s, &["DOG "], rule), (vec![vec![2]], vec![]));
}

#[test]
fn paper_two_categories_eq3_with_ambiguity_removal() {
    let (_d, s) = store();
    let sel = select(&s, &["car", "cat", "car"], &Rule::paper(0.5, 0.1).unwrap()).unwrap();
    assert_eq!(sel.categories, ["car", "cat"]);
    // car: S_car,(cat) > 0.5 on b0, b2; cat: S_cat,(car) > 0.5 on b1, b2; b2 is ambiguous.
    assert_eq!(sel.tickets, [vec![0], vec![1]]);
    assert_eq!(sel.background, [3]);
    let r = &sel.report.categories[0];
    assert_eq!((r.qualified, r.ambiguous, r.tickets), (2, 1, 1));
    assert_eq!(sel.report.background.tickets, 1);
    assert_eq!(sel.tickets_of("cat"), Some(&[1u32][..]));
    let text = sel.report.to_string();
    assert!(text.contains("1 ambiguous dropped"), "{text}");
}

#[test]
fn paper_three_categories() {
    let (_d, s) = store();
    let (t, bg) = sets(&s, &["car", "cat", "dog"], Rule::paper(0.5, 0.1).unwrap());
    assert_eq!(t, [vec![0], vec![1], vec![2]]);
    assert!(bg.is_empty()); // b3: dog's average 0.2 is not < 0.1
    let (_, bg) = sets(&s, &["car", "cat", "dog"], Rule::paper(0.5, 0.25).unwrap());
    assert_eq!(bg, [3]);
}

#[test]
fn background_overlapping_an_object_is_ambiguous() {
    let (_d, s) = store();
    // T_bg above T_obj: b1 (average 0.35) qualifies as car (> 0.3) and background (< 0.4).
    let sel = select(&s, &["car"], &Rule::paper(0.3, 0.4).unwrap()).unwrap();
    assert_eq!(sel.tickets, [vec![0, 2]]);
    assert_eq!(sel.background, [3]);
    assert_eq!(sel.report.background.ambiguous, 1);
}

#[test]
fn authors_preset() {
    let (_d, s) = store();
    let a = Rule::authors();
    // 1 object: average > 0.5, background average < 0.3.
    assert_eq!(sets(&s, &["car"], a), (vec![vec![0]], vec![3]));
    // 2 objects: S12 > 0.3 and S21 < 0.3; background both pair scores < 0.1.
    assert_eq!(
        sets(&s, &["car", "cat"], a),
        (vec![vec![0], vec![1]], vec![3])
    );
    // 3 objects: S_ij > 0.3 for both partners (strict: b2's S_car,(dog) = 0.3 fails).
    assert_eq!(
        sets(&s, &["car", "cat", "dog"], a),
        (vec![vec![0], vec![1], vec![2]], vec![])
    );
    // No ambiguity removal: with t_pos_2 = 0.15, b1 and b2 go to both car and cat.
    let low = Rule::Authors(AuthorsThresholds {
        t_pos_2: 0.15,
        ..AuthorsThresholds::default()
    });
    let (t, _) = sets(&s, &["car", "cat", "dog"], low);
    assert_eq!(t[0], [0, 1, 2]);
    assert_eq!(t[1], [1, 2]);
}

#[test]
fn errors() {
    let (_d, s) = store();
    let err = select(&s, &["car", "zebra"], &Rule::authors())
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"zebra\" is not in the store"), "{err}");
    assert!(err.contains("car, cat, dog"), "{err}");
    let err = Rule::paper(0.5, 1.5).unwrap_err().to_string();
    assert!(err.contains("outside [0, 1]"), "{err}");
    let bad = Rule::Paper {
        t_obj: -0.1,
        t_bg: 0.1,
    };
    assert!(select(&s, &["car"], &bad).is_err());
    assert!(select::<&str>(&s, &[], &Rule::authors()).is_err());
}
