//! Contact sheets: a grid of images, upscaled with crisp pixels, optionally with box outlines.

use crate::category::Category;
use crate::image::RgbImage;
use crate::scene::Scene;
use anyhow::{ensure, Result};

/// One outline, in the tile's own pixel coordinates: `[x0, y0, x1, y1]`, exclusive max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outline {
    pub bbox: [u32; 4],
    pub color: [u8; 3],
}

/// One cell of a contact sheet.
#[derive(Debug, Clone)]
pub struct Tile<'a> {
    pub image: &'a RgbImage,
    pub outlines: Vec<Outline>,
}

impl<'a> Tile<'a> {
    /// A tile without outlines.
    pub fn plain(image: &'a RgbImage) -> Self {
        Self {
            image,
            outlines: Vec::new(),
        }
    }

    /// A scene's image with each object's box outlined in `color`.
    pub fn scene(scene: &'a Scene, color: [u8; 3]) -> Self {
        Self {
            image: &scene.image,
            outlines: scene
                .objects
                .iter()
                .map(|o| Outline {
                    bbox: o.bbox,
                    color,
                })
                .collect(),
        }
    }
}

/// Layout of a contact sheet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SheetConfig {
    /// Tiles per row.
    pub columns: u32,
    /// Integer nearest-neighbour upscale factor per tile.
    pub scale: u32,
    /// Pixels between tiles and around the sheet.
    pub padding: u32,
    pub padding_color: [u8; 3],
}

impl Default for SheetConfig {
    fn default() -> Self {
        Self {
            columns: 8,
            scale: 4,
            padding: 4,
            padding_color: [255, 255, 255],
        }
    }
}

/// An outline colour that stands out on the toy world: white is in neither the palette nor the
/// background.
pub const OUTLINE_WHITE: [u8; 3] = [255, 255, 255];

/// A dark outline colour for sheets with white padding.
pub const OUTLINE_BLACK: [u8; 3] = [0, 0, 0];

/// Lays tiles out row by row. Tiles may differ in size: each cell is as large as the largest tile.
/// Outlines are drawn after upscaling, one pixel outside the box (see [`RgbImage::draw_outline`]).
pub fn contact_sheet(tiles: &[Tile<'_>], cfg: &SheetConfig) -> Result<RgbImage> {
    ensure!(!tiles.is_empty(), "contact sheet needs at least one image");
    ensure!(cfg.columns > 0, "contact sheet needs at least one column");
    ensure!(cfg.scale > 0, "contact sheet scale must be positive");
    let cell_w = tiles.iter().map(|t| t.image.width()).max().unwrap_or(0) * cfg.scale;
    let cell_h = tiles.iter().map(|t| t.image.height()).max().unwrap_or(0) * cfg.scale;
    let cols = cfg.columns.min(tiles.len() as u32);
    let rows = (tiles.len() as u32).div_ceil(cols);
    let width = cols * cell_w + (cols + 1) * cfg.padding;
    let height = rows * cell_h + (rows + 1) * cfg.padding;
    ensure!(
        u64::from(width) * u64::from(height) <= 1 << 28,
        "contact sheet of {width}x{height} pixels is too large"
    );
    let mut sheet = RgbImage::filled(width, height, cfg.padding_color);
    for (i, tile) in tiles.iter().enumerate() {
        let mut cell = tile.image.upscale(cfg.scale);
        for o in &tile.outlines {
            let [x0, y0, x1, y1] = o.bbox.map(|v| v * cfg.scale);
            cell.draw_outline([x0, y0, x1, y1], o.color);
        }
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        sheet.blit(
            &cell,
            cfg.padding + c * (cell_w + cfg.padding),
            cfg.padding + r * (cell_h + cfg.padding),
        );
    }
    Ok(sheet)
}

/// One tile per category showing the shape alone at `size` pixels in a `size + 4` image: a legend.
pub fn legend(size: u32) -> Vec<RgbImage> {
    Category::ALL
        .iter()
        .map(|&c| {
            let mut img = RgbImage::filled(size + 4, size + 4, crate::category::BACKGROUND);
            crate::shapes::draw_shape(&mut img, c, [2, 2, size + 2, size + 2]);
            img
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_geometry_and_outlines() {
        let a = RgbImage::filled(2, 2, [10, 10, 10]);
        let b = RgbImage::filled(2, 2, [20, 20, 20]);
        let tiles = [
            Tile::plain(&a),
            Tile {
                image: &b,
                outlines: vec![Outline {
                    bbox: [1, 1, 2, 2],
                    color: [1, 2, 3],
                }],
            },
            Tile::plain(&a),
        ];
        let cfg = SheetConfig {
            columns: 2,
            scale: 3,
            padding: 1,
            padding_color: [0, 0, 0],
        };
        let s = contact_sheet(&tiles, &cfg).unwrap();
        // 2 columns of 6 px + 3 paddings; 2 rows likewise.
        assert_eq!((s.width(), s.height()), (15, 15));
        assert_eq!(s.get(1, 1), [10, 10, 10]);
        assert_eq!(s.get(0, 0), [0, 0, 0]);
        // Tile b starts at x = 8; its box [3, 3, 6, 6) after scaling is outlined at x = 8 + 2.
        assert_eq!(s.get(8, 1), [20, 20, 20]);
        assert_eq!(s.get(10, 3), [1, 2, 3]);
        assert_eq!(s.get(11, 4), [20, 20, 20]);
        // Third tile wraps to the second row.
        assert_eq!(s.get(1, 8), [10, 10, 10]);
        // Empty cell keeps the padding colour.
        assert_eq!(s.get(10, 10), [0, 0, 0]);
    }

    #[test]
    fn rejects_empty_input() {
        assert!(contact_sheet(&[], &SheetConfig::default()).is_err());
        let a = RgbImage::filled(2, 2, [0, 0, 0]);
        let cfg = SheetConfig {
            columns: 0,
            ..Default::default()
        };
        assert!(contact_sheet(&[Tile::plain(&a)], &cfg).is_err());
    }
}
