//! Boxes rasterised at an attention layer's resolution.
//!
//! A layer with an `h x w` query map is a grid of `h x w` cells over the image, and a box covers
//! the cells of [`semi_layout::Grid::cells_of`]: per axis the cells whose **centre** lies in the
//! box (low edge inclusive, high edge exclusive), or, where the box covers no centre, the one
//! cell containing its centre. So every box gets at least one cell at every resolution, touching
//! boxes never share a cell, and the rule is the one SemI uses for its ticket grid.

use anyhow::{Context, Result};
use semi_layout::{BBox, CellRect, Grid};

/// The cells a box covers on a `rows x cols` grid (never empty).
pub fn box_cells(bbox: &BBox, rows: usize, cols: usize) -> Result<CellRect> {
    let grid = Grid::new(rows, cols).context("rasterising a box")?;
    Ok(grid.cells_of(bbox))
}

/// `rect` grown by `by` cells on every side, clipped to the `rows x cols` grid.
pub fn grow(rect: &CellRect, by: usize, rows: usize, cols: usize) -> CellRect {
    CellRect {
        rows: rect.rows.start.saturating_sub(by)..(rect.rows.end + by).min(rows),
        cols: rect.cols.start.saturating_sub(by)..(rect.cols.end + by).min(cols),
    }
}

/// 1 on the cells the box covers, 0 elsewhere, in raster order (Paint's region).
pub fn box_mask(bbox: &BBox, rows: usize, cols: usize) -> Result<Vec<f32>> {
    let rect = box_cells(bbox, rows, cols)?;
    Ok(rect_mask(&rect, rows, cols, None))
}

/// Soft's mask M in raster order: the box's cells grown by `grow_by` cells, 1 inside, 0 outside;
/// with `bump = Some(l)`, inside values follow a Gaussian `exp(-l^2/2 * (u^2 + v^2))` where `u`,
/// `v` run linearly from -1 on the first to +1 on the last cell of the grown rectangle along
/// each axis (0 on an axis one cell wide), so the centre gets 1 and the edge cells
/// `exp(-l^2/2)` (the shape of the authors' `soft` option with `L_soft = l`).
pub fn soft_mask(
    bbox: &BBox,
    rows: usize,
    cols: usize,
    grow_by: usize,
    bump: Option<f64>,
) -> Result<Vec<f32>> {
    let rect = grow(&box_cells(bbox, rows, cols)?, grow_by, rows, cols);
    Ok(rect_mask(&rect, rows, cols, bump))
}

/// Position of `i` in `range`, from -1 (first) to +1 (last); 0 when the range has one element.
fn unit_position(i: usize, range: &std::ops::Range<usize>) -> f64 {
    let n = range.len();
    if n <= 1 {
        0.0
    } else {
        2.0 * (i - range.start) as f64 / (n - 1) as f64 - 1.0
    }
}

fn rect_mask(rect: &CellRect, rows: usize, cols: usize, bump: Option<f64>) -> Vec<f32> {
    let mut mask = vec![0f32; rows * cols];
    for r in rect.rows.clone() {
        for c in rect.cols.clone() {
            mask[r * cols + c] = match bump {
                None => 1.0,
                Some(l) => {
                    let (u, v) = (unit_position(c, &rect.cols), unit_position(r, &rect.rows));
                    (-(l * l) / 2.0 * (u * u + v * v)).exp() as f32
                }
            };
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bb(x0: f64, y0: f64, x1: f64, y1: f64) -> BBox {
        BBox::new(x0, y0, x1, y1).unwrap()
    }

    fn picture(mask: &[f32], cols: usize) -> String {
        mask.chunks(cols)
            .map(|row| {
                row.iter()
                    .map(|&v| if v > 0.0 { '#' } else { '.' })
                    .collect()
            })
            .collect::<Vec<String>>()
            .join("\n")
    }

    #[test]
    fn box_mask_uses_cell_centres() {
        // 4 x 4 grid, centres at 0.125, 0.375, 0.625, 0.875: x in [0.3, 0.7) covers columns 1, 2;
        // y in [0.0, 0.4) covers rows 0, 1.
        let m = box_mask(&bb(0.3, 0.0, 0.7, 0.4), 4, 4).unwrap();
        assert_eq!(picture(&m, 4), ".##.\n.##.\n....\n....");
        // The same box at 8 x 8: in cell units x in [2.4, 5.6) covers centres 2.5 .. 5.5
        // (columns 2..6), y in [0, 3.2) covers rows 0..3.
        let m = box_mask(&bb(0.3, 0.0, 0.7, 0.4), 8, 8).unwrap();
        assert_eq!(m.iter().filter(|&&v| v == 1.0).count(), 4 * 3);
        assert_eq!(&m[..8], &[0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(&m[24..32], &[0.0; 8]);
    }

    #[test]
    fn tiny_box_still_gets_one_cell() {
        let m = box_mask(&bb(0.51, 0.51, 0.52, 0.52), 2, 2).unwrap();
        assert_eq!(m, vec![0.0, 0.0, 0.0, 1.0]);
        let m = box_mask(&bb(0.1, 0.1, 0.2, 0.2), 1, 1).unwrap();
        assert_eq!(m, vec![1.0]);
    }

    #[test]
    fn soft_mask_grows_by_one_cell_and_clips() {
        let m = soft_mask(&bb(0.375, 0.375, 0.625, 0.625), 8, 8, 1, None).unwrap();
        assert_eq!(
            picture(&m, 8),
            "........\n........\n..####..\n..####..\n..####..\n..####..\n........\n........"
        );
        // At the image corner the growth is clipped.
        let m = soft_mask(&bb(0.0, 0.0, 0.25, 0.25), 4, 4, 1, None).unwrap();
        assert_eq!(picture(&m, 4), "##..\n##..\n....\n....");
        let m = soft_mask(&bb(0.0, 0.0, 0.25, 0.25), 4, 4, 0, None).unwrap();
        assert_eq!(picture(&m, 4), "#...\n....\n....\n....");
    }

    #[test]
    fn gaussian_bump_peaks_at_the_centre() {
        // Box cell (2, 2) on 5 x 5, grown to rows/cols 1..4: positions -1, 0, 1 on each axis.
        let m = soft_mask(&bb(0.45, 0.45, 0.55, 0.55), 5, 5, 1, Some(2.0)).unwrap();
        let at = |r: usize, c: usize| m[r * 5 + c] as f64;
        assert!((at(2, 2) - 1.0).abs() < 1e-7);
        assert!((at(1, 2) - (-2.0f64).exp()).abs() < 1e-7);
        assert!((at(1, 1) - (-4.0f64).exp()).abs() < 1e-7);
        assert_eq!(at(0, 0), 0.0);
        assert_eq!(at(4, 2), 0.0);
        // A one-cell-wide axis has no falloff along it.
        let m = soft_mask(&bb(0.0, 0.0, 1.0, 1.0), 1, 3, 0, Some(1.0)).unwrap();
        assert!((m[1] - 1.0).abs() < 1e-7 && (m[0] as f64 - (-0.5f64).exp()).abs() < 1e-7);
    }

    #[test]
    fn zero_sized_grid_is_an_error() {
        let e = box_mask(&bb(0.0, 0.0, 1.0, 1.0), 0, 4).unwrap_err();
        assert!(format!("{e:#}").contains("no cells"), "{e:#}");
    }
}
