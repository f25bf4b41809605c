//! SemI construction and the colour-matched control on a small fake store.

use std::collections::HashMap;

use semi_layout::{BBox, Layout, LayoutObject};
use semi_tickets::construct::channel_stats;
use semi_tickets::store::{image_to_blocks, put_block};
use semi_tickets::{
    all_pairs, collect, construct, select, semi_init, CollectRequest, FakeProber, InitMethod,
    InitOptions, Region, Rule, Store,
};

/// 3 categories, N = 6 images on a 4x4 grid: 192 blocks.
fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let req = CollectRequest {
        pairs: all_pairs(&["dog", "car", "cat"]).unwrap(),
        n_images: 12,
        seed: 3,
        shard: None,
        chunk_images: None,
        wait_for_lock: None,
    };
    let mut p = FakeProber::new(FakeProber::small_fingerprint("fake"));
    collect(dir.path(), &mut p, &req, &mut |_| {}).unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

/// A dog on the left half (8 cells), a small car overlapping it (the car keeps the overlap).
fn layout() -> Layout {
    Layout::new(
        "a dog and a car",
        128,
        128,
        vec![
            LayoutObject::new("a dog", "Dog", BBox::new(0.0, 0.0, 0.5, 1.0).unwrap()),
            LayoutObject::new("a car", "car", BBox::new(0.25, 0.5, 0.75, 1.0).unwrap()),
        ],
    )
}

fn opts(seed: u64, method: InitMethod, recalibrate: bool) -> InitOptions {
    InitOptions {
        seed,
        method,
        recalibrate,
    }
}

fn rule() -> Rule {
    Rule::paper(0.5, 0.45).unwrap()
}

#[test]
fn every_cell_gets_a_ticket_of_its_set() {
    let (_d, s) = store();
    let (sel, c) = semi_init(&s, &layout(), &rule(), &opts(9, InitMethod::SemI, false)).unwrap();
    let f = s.fingerprint();
    assert_eq!(c.shape, [1, 4, 16, 16]);
    let dog = sel.tickets_of("dog").unwrap();
    let car = sel.tickets_of("car").unwrap();
    assert!(!dog.is_empty() && !car.is_empty() && !sel.background.is_empty());
    let mut counts = [0usize; 3];
    let mut rebuilt = vec![0f32; c.latents.len()];
    for (cell, fill) in c.cells.iter().enumerate() {
        let t = fill.ticket.expect("SemI fills every cell with a ticket");
        let set: &[u32] = match fill.region {
            Region::Object(0) => dog,
            Region::Object(1) => car,
            Region::Object(_) => unreachable!(),
            Region::Background => &sel.background,
        };
        assert!(
            set.binary_search(&t).is_ok(),
            "cell {cell}: ticket {t} not in its set"
        );
        counts[match fill.region {
            Region::Object(o) => o,
            Region::Background => 2,
        }] += 1;
        put_block(f, &mut rebuilt, cell, s.block_flat(t as usize).unwrap());
    }
    // Dog: 2 columns x 4 rows minus the car's 2 cells of overlap; car 2x2; rest background.
    assert_eq!(counts, [6, 4, 6]);
    // The latents are exactly the tickets' blocks.
    assert_eq!(rebuilt, c.latents);
    // The car's cells (raster order) are rows 2-3, cols 1-2.
    let car_cells: Vec<usize> = (0..16)
        .filter(|&i| c.cells[i].region == Region::Object(1))
        .collect();
    assert_eq!(car_cells, [9, 10, 13, 14]);
}

#[test]
fn tickets_are_distinct_while_they_last_then_reused_evenly() {
    let (_d, s) = store();
    let sel = select(&s, &["dog", "car"], &rule()).unwrap();
    // Keep only 3 dog tickets: the 8-cell dog region (no car here) must cycle.
    let mut small = sel.clone();
    small.tickets[0].truncate(3);
    let only_dog = Layout::new(
        "a dog",
        128,
        128,
        vec![LayoutObject::new(
            "a dog",
            "dog",
            BBox::new(0.0, 0.0, 0.5, 1.0).unwrap(),
        )],
    );
    let c = construct(&s, &only_dog, &small, &opts(1, InitMethod::SemI, false)).unwrap();
    let drawn: Vec<u32> = c
        .cells
        .iter()
        .filter(|f| f.region == Region::Object(0))
        .map(|f| f.ticket.unwrap())
        .collect();
    assert_eq!(drawn.len(), 8);
    for w in [&drawn[0..3], &drawn[3..6]] {
        let mut w = w.to_vec();
        w.sort();
        assert_eq!(w, small.tickets[0]);
    }
    assert_ne!(drawn[6], drawn[7]);
    let mut per: HashMap<u32, usize> = HashMap::new();
    for t in &drawn {
        *per.entry(*t).or_default() += 1;
    }
    assert!(per.values().all(|&n| n == 2 || n == 3));
    let dog_use = &c.uses[0];
    assert_eq!(
        (dog_use.cells, dog_use.available, dog_use.reused),
        (8, 3, 5)
    );
    // With enough tickets, all distinct.
    let c = construct(&s, &only_dog, &sel, &opts(1, InitMethod::SemI, false)).unwrap();
    assert!(sel.tickets[0].len() >= 8);
    let mut t: Vec<u32> = c
        .cells
        .iter()
        .filter(|f| f.region == Region::Object(0))
        .map(|f| f.ticket.unwrap())
        .collect();
    let n = t.len();
    t.sort();
    t.dedup();
    assert_eq!(t.len(), n);
}

#[test]
fn same_seed_same_latents() {
    let (_d, s) = store();
    let l = layout();
    let a = semi_init(&s, &l, &rule(), &opts(5, InitMethod::SemI, false))
        .unwrap()
        .1;
    let b = semi_init(&s, &l, &rule(), &opts(5, InitMethod::SemI, false))
        .unwrap()
        .1;
    let c = semi_init(&s, &l, &rule(), &opts(6, InitMethod::SemI, false))
        .unwrap()
        .1;
    assert_eq!(a, b);
    assert_ne!(a.latents, c.latents);
}

#[test]
fn recalibration_standardises_channels() {
    let (_d, s) = store();
    let c = semi_init(&s, &layout(), &rule(), &opts(5, InitMethod::SemI, true))
        .unwrap()
        .1;
    for plane in c.latents.chunks(256) {
        let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / 256.0;
        let var = plane
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / 256.0;
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
            "{mean} {var}"
        );
    }
}

/// The category-swapped control gives each box the other category's tickets, the any-object
/// control the union of both; the background and SemI's own stream are untouched.
#[test]
fn category_controls_fill_boxes_from_the_other_and_the_union() {
    let (_d, s) = store();
    let l = layout();
    let (sel, semi) = semi_init(&s, &l, &rule(), &opts(4, InitMethod::SemI, false)).unwrap();
    let (dog, car) = (
        sel.tickets_of("dog").unwrap(),
        sel.tickets_of("car").unwrap(),
    );
    let (_, swapped) = semi_init(
        &s,
        &l,
        &rule(),
        &opts(4, InitMethod::CategorySwappedControl, false),
    )
    .unwrap();
    let (_, any) = semi_init(
        &s,
        &l,
        &rule(),
        &opts(4, InitMethod::AnyObjectControl, false),
    )
    .unwrap();
    let (mut saw_dog, mut saw_car) = (false, false);
    for ((a, b), c) in semi.cells.iter().zip(&swapped.cells).zip(&any.cells) {
        assert_eq!((a.region, b.region), (c.region, c.region));
        let (t_swapped, t_any) = (b.ticket.unwrap(), c.ticket.unwrap());
        match a.region {
            Region::Object(0) => assert!(car.contains(&t_swapped), "dog's box gets car tickets"),
            Region::Object(_) => assert!(dog.contains(&t_swapped), "car's box gets dog tickets"),
            Region::Background => {
                assert!(sel.background.contains(&t_swapped) && sel.background.contains(&t_any))
            }
        }
        if let Region::Object(_) = a.region {
            assert!(dog.contains(&t_any) || car.contains(&t_any));
            saw_dog |= dog.contains(&t_any) && !car.contains(&t_any);
            saw_car |= car.contains(&t_any) && !dog.contains(&t_any);
        }
    }
    assert!(saw_dog && saw_car, "the union draws from both categories");
    assert_eq!(
        InitMethod::CategorySwappedControl.name(),
        "category-swapped"
    );
    // One category: nothing to swap with.
    let mut one = l.clone();
    one.objects.truncate(1);
    let err = semi_init(
        &s,
        &one,
        &rule(),
        &opts(4, InitMethod::CategorySwappedControl, false),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at least two categories"), "{err}");
}

#[test]
fn colour_matched_control_uses_the_sets_statistics() {
    let (_d, s) = store();
    let l = layout();
    let (sel, c) = semi_init(
        &s,
        &l,
        &rule(),
        &opts(11, InitMethod::ColourMatchedControl, false),
    )
    .unwrap();
    assert!(c.cells.iter().all(|f| f.ticket.is_none()));
    let f = s.fingerprint();
    // The Gaussian base is torch.randn(seed) in block layout.
    let z = image_to_blocks(
        f,
        &semi_diffusion::noise::TorchGenerator::manual_seed(11).randn_vec(1024),
    );
    let got = image_to_blocks(f, &c.latents);
    for (cell, fill) in c.cells.iter().enumerate() {
        let set: &[u32] = match fill.region {
            Region::Object(0) => sel.tickets_of("dog").unwrap(),
            Region::Object(_) => sel.tickets_of("car").unwrap(),
            Region::Background => &sel.background,
        };
        let (mean, std) = channel_stats(&s, set).unwrap();
        for i in 0..64 {
            let ch = i / 16;
            let want = (mean[ch] + std[ch] * z[cell * 64 + i] as f64) as f32;
            assert_eq!(got[cell * 64 + i], want);
        }
    }
    // Stats of a set are those of its blocks.
    let (mean, _) = channel_stats(&s, &[0]).unwrap();
    let b = s.block(0, 0).unwrap();
    assert!((mean[1] - b[16..32].iter().map(|&v| v as f64).sum::<f64>() / 16.0).abs() < 1e-9);
}

#[test]
fn empty_sets_and_mismatches_are_clear_errors() {
    let (_d, s) = store();
    let l = layout();
    let err = semi_init(
        &s,
        &l,
        &Rule::paper(1.0, 0.3).unwrap(),
        &opts(1, InitMethod::SemI, false),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no winning tickets for \"dog\""), "{err}");
    assert!(
        err.contains("lower --t-obj (now 1)") && err.contains("raise N, now 12"),
        "{err}"
    );
    let err = semi_init(
        &s,
        &l,
        &Rule::paper(0.5, 0.0).unwrap(),
        &opts(1, InitMethod::SemI, false),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no background tickets") && err.contains("raise --t-bg"),
        "{err}"
    );
    // A layout covering every cell needs no background tickets.
    let full = Layout::new(
        "a dog",
        128,
        128,
        vec![LayoutObject::new(
            "a dog",
            "dog",
            BBox::new(0.0, 0.0, 1.0, 1.0).unwrap(),
        )],
    );
    semi_init(
        &s,
        &full,
        &Rule::paper(0.5, 0.0).unwrap(),
        &opts(1, InitMethod::SemI, false),
    )
    .unwrap();
    let mut big = l.clone();
    big.width = 512;
    let err = semi_init(&s, &big, &rule(), &opts(1, InitMethod::SemI, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("512x128") && err.contains("128x128"), "{err}");
    let sel = select(&s, &["dog"], &rule()).unwrap();
    let err = construct(&s, &l, &sel, &opts(1, InitMethod::SemI, false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"car\", which the selection does not cover"),
        "{err}"
    );
    let mut zebra = l.clone();
    zebra.objects[1].category = "zebra".into();
    let err = semi_init(&s, &zebra, &rule(), &opts(1, InitMethod::SemI, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"zebra\" is not in the store"), "{err}");
}
