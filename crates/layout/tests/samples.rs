//! The sample files under `samples/` load, and map to the grid the way the crate docs say.

use std::path::PathBuf;

use semi_layout::{import, read_layouts, Grid, ImportOptions, Layout, LayoutFormat};

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

#[test]
fn dog_and_car_on_the_sd_grid() {
    let layout = Layout::from_path(sample("dog_and_car.json")).unwrap();
    assert!(layout.check().unwrap().is_empty());
    assert_eq!(layout.seed, Some(42));
    let map = layout.region_map(Grid::SD_512);
    // The dog's box is the smaller one, so it keeps the four overlapping cells of column 6.
    let want = [
        "................",
        "................",
        "................",
        "................",
        "......111111111.",
        "......111111111.",
        "......111111111.",
        "......111111111.",
        ".00000011111111.",
        ".00000011111111.",
        ".00000011111111.",
        ".00000011111111.",
        ".000000.........",
        ".000000.........",
        ".000000.........",
        "................",
    ]
    .join("\n");
    assert_eq!(map.to_string(), want);
    assert_eq!(map.object_cells(0).len(), 42);
    assert_eq!(map.object_cells(1).len(), 4 * 9 + 4 * 8);
    assert_eq!(map.background_cells().len(), 256 - 42 - 68);
    assert!(map.warnings().is_empty());
}

#[test]
fn batch_sample_reads_with_ids_and_lines() {
    let batch = read_layouts(sample("batch.jsonl")).unwrap();
    let ids: Vec<_> = batch
        .iter()
        .map(|e| (e.line, e.layout.id.clone().unwrap()))
        .collect();
    assert_eq!(ids, vec![(1, "cat-left".to_string()), (2, "2".to_string())]);
    assert_eq!(batch[1].layout.categories(), vec!["bird", "boat"]);
}

#[test]
fn gligen_sample_imports_with_and_without_vocabulary() {
    let text = std::fs::read_to_string(sample("gligen.json")).unwrap();
    assert_eq!(LayoutFormat::detect(&text).unwrap(), LayoutFormat::Gligen);
    let plain = import(&text, &ImportOptions::default()).unwrap();
    assert_eq!(plain.categories(), vec!["bear", "cup"]);
    let coco = ImportOptions {
        vocabulary: vec!["teddy bear".into(), "cup".into(), "bear".into()],
        ..Default::default()
    };
    let named = import(&text, &coco).unwrap();
    assert_eq!(named.categories(), vec!["teddy bear", "cup"]);
    assert!(named.warnings().is_empty());
    // Exported to our format, it reads back as the same layout.
    assert_eq!(Layout::from_json(&named.to_json_pretty()).unwrap(), named);
}
