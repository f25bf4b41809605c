//! Writes a contact sheet of generated scenes (with their boxes outlined) and a shape legend, for
//! eyeballing the world: `cargo run -p semi-toyworld --example contact_sheet -- OUT_DIR [SEED] [N]`.

use anyhow::{Context, Result};
use semi_toyworld::{contact_sheet, legend, Scene, SheetConfig, Tile, WorldConfig};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(
        args.first()
            .context("usage: contact_sheet OUT_DIR [SEED] [N]")?,
    );
    let seed: u64 = args.get(1).map_or(Ok(0), |s| s.parse()).context("SEED")?;
    let n: u64 = args.get(2).map_or(Ok(32), |s| s.parse()).context("N")?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let cfg = WorldConfig::default();
    let scenes = (0..n)
        .map(|i| Scene::generate(seed, i, &cfg))
        .collect::<Result<Vec<_>>>()?;
    let sheet_cfg = SheetConfig::default();
    let plain: Vec<Tile> = scenes.iter().map(|s| Tile::plain(&s.image)).collect();
    let boxed: Vec<Tile> = scenes
        .iter()
        .map(|s| Tile::scene(s, [255, 255, 255]))
        .collect();
    contact_sheet(&plain, &sheet_cfg)?.save_png(&out.join("scenes.png"), &[])?;
    contact_sheet(&boxed, &sheet_cfg)?.save_png(&out.join("scenes_boxes.png"), &[])?;
    let shapes = legend(8);
    let tiles: Vec<Tile> = shapes.iter().map(Tile::plain).collect();
    let legend_cfg = SheetConfig {
        columns: 6,
        scale: 8,
        ..sheet_cfg
    };
    contact_sheet(&tiles, &legend_cfg)?.save_png(&out.join("legend_8px.png"), &[])?;
    for (i, s) in scenes.iter().enumerate() {
        println!("{i:3} {}", s.caption);
    }
    Ok(())
}
