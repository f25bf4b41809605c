//! The ticket grid and the rounding rule that turns a box into grid cells (see the crate docs).

use crate::bbox::BBox;
use crate::error::LayoutError;

/// A `rows` x `cols` grid laid over the image; cell (r, c) covers
/// `[c/cols, (c+1)/cols) x [r/rows, (r+1)/rows)` in normalised coordinates.
/// Cells are numbered in raster order: `index = row * cols + col`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grid {
    rows: usize,
    cols: usize,
}

/// One grid cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    pub row: usize,
    pub col: usize,
}

/// A rectangle of cells, `rows.start..rows.end` x `cols.start..cols.end` (exclusive ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellRect {
    pub rows: std::ops::Range<usize>,
    pub cols: std::ops::Range<usize>,
}

impl CellRect {
    pub fn len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, cell: Cell) -> bool {
        self.rows.contains(&cell.row) && self.cols.contains(&cell.col)
    }

    /// The cells in raster order.
    pub fn cells(&self) -> impl Iterator<Item = Cell> + '_ {
        self.rows
            .clone()
            .flat_map(move |row| self.cols.clone().map(move |col| Cell { row, col }))
    }
}

/// A box in grid units (cell widths/heights from the top-left corner), unrounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridBox {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

/// Values this close to a half-integer are taken to be exactly on it, so that boxes written as
/// decimals (0.1 * 10 = 1.0000000000000002) or converted from pixels land where they look.
const SNAP: f64 = 1e-9;

fn snap_half(v: f64) -> f64 {
    let h = (v * 2.0).round() / 2.0;
    if (v - h).abs() < SNAP {
        h
    } else {
        v
    }
}

/// The cells along one axis of `n` cells for the span `[lo, hi)` in cell units: those whose
/// centre `i + 0.5` lies in `[lo, hi)`; if none, the one cell containing the span's midpoint
/// (a midpoint on a cell edge goes to the cell after it; the last edge to the last cell).
fn axis_cells(lo: f64, hi: f64, n: usize) -> std::ops::Range<usize> {
    let (lo, hi) = (snap_half(lo), snap_half(hi));
    let first = (lo - 0.5).ceil().clamp(0.0, n as f64) as usize;
    let end = (hi - 0.5).ceil().clamp(0.0, n as f64) as usize;
    if first < end {
        return first..end;
    }
    let mid = snap_half((lo + hi) / 2.0);
    let i = (mid.floor().max(0.0) as usize).min(n - 1);
    i..i + 1
}

impl Grid {
    /// The grid of SD 1.x at 512x512 and of the authors' probe layer: 16 x 16.
    pub const SD_512: Grid = Grid { rows: 16, cols: 16 };

    pub fn new(rows: usize, cols: usize) -> Result<Self, LayoutError> {
        if rows == 0 || cols == 0 {
            return Err(LayoutError::Grid(format!(
                "{rows}x{cols} has no cells; rows and cols must be at least 1"
            )));
        }
        Ok(Grid { rows, cols })
    }

    /// The grid whose cells are `cell` x `cell` latent pixels, for a latent of
    /// `latent_height` x `latent_width` (SD at 512: 64 x 64 latent, cells of 4 -> 16 x 16).
    pub fn from_latent(
        latent_height: usize,
        latent_width: usize,
        cell: usize,
    ) -> Result<Self, LayoutError> {
        if cell == 0 || !latent_height.is_multiple_of(cell) || !latent_width.is_multiple_of(cell) {
            return Err(LayoutError::Grid(format!(
                "a {latent_height}x{latent_width} latent cannot be cut into {cell}x{cell} cells \
                 (both sides must be positive multiples of the cell size)"
            )));
        }
        Grid::new(latent_height / cell, latent_width / cell)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Always false: a grid has at least one cell.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Raster index of a cell (panics on a cell outside the grid, a programming error).
    pub fn index(&self, cell: Cell) -> usize {
        assert!(
            cell.row < self.rows && cell.col < self.cols,
            "{cell:?} outside {self:?}"
        );
        cell.row * self.cols + cell.col
    }

    /// The cell with raster index `index`.
    pub fn cell(&self, index: usize) -> Cell {
        assert!(index < self.len(), "cell {index} outside {self:?}");
        Cell {
            row: index / self.cols,
            col: index % self.cols,
        }
    }

    /// All cells in raster order.
    pub fn cells(&self) -> impl Iterator<Item = Cell> + '_ {
        (0..self.len()).map(|i| self.cell(i))
    }

    /// The box in grid units.
    pub fn to_grid_units(&self, b: &BBox) -> GridBox {
        let (c, r) = (self.cols as f64, self.rows as f64);
        GridBox {
            x0: b.x0 * c,
            y0: b.y0 * r,
            x1: b.x1 * c,
            y1: b.y1 * r,
        }
    }

    /// The cells a box claims, before overlap resolution: per axis, the cells whose centre lies
    /// in the box (low edge inclusive, high edge exclusive), or the single cell containing the
    /// box's centre on an axis where it covers no centre. Never empty.
    pub fn cells_of(&self, b: &BBox) -> CellRect {
        let g = self.to_grid_units(b);
        CellRect {
            rows: axis_cells(g.y0, g.y1, self.rows),
            cols: axis_cells(g.x0, g.x1, self.cols),
        }
    }

    /// The area of the image a cell covers, normalised.
    pub fn cell_bbox(&self, cell: Cell) -> BBox {
        let (c, r) = (self.cols as f64, self.rows as f64);
        BBox {
            x0: cell.col as f64 / c,
            y0: cell.row as f64 / r,
            x1: (cell.col + 1) as f64 / c,
            y1: (cell.row + 1) as f64 / r,
        }
    }

    /// Per cell in raster order, whether the box claims it (a box mask at grid resolution, for
    /// attention guidance at any layer resolution).
    pub fn mask(&self, b: &BBox) -> Vec<bool> {
        let rect = self.cells_of(b);
        self.cells().map(|c| rect.contains(c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bb(x0: f64, y0: f64, x1: f64, y1: f64) -> BBox {
        BBox::new(x0, y0, x1, y1).unwrap()
    }

    #[test]
    fn construction_and_indexing() {
        assert_eq!(Grid::from_latent(64, 64, 4).unwrap(), Grid::SD_512);
        let g = Grid::from_latent(96, 64, 4).unwrap();
        assert_eq!((g.rows(), g.cols(), g.len()), (24, 16, 384));
        assert_eq!(g.index(Cell { row: 2, col: 3 }), 35);
        assert_eq!(g.cell(35), Cell { row: 2, col: 3 });
        let e = Grid::from_latent(64, 62, 4).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid grid: a 64x62 latent cannot be cut into 4x4 cells (both sides must be positive multiples of the cell size)"
        );
        assert!(Grid::from_latent(64, 64, 0).is_err());
        assert_eq!(
            Grid::new(0, 4).unwrap_err().to_string(),
            "invalid grid: 0x4 has no cells; rows and cols must be at least 1"
        );
        assert_eq!(
            g.cell_bbox(Cell { row: 0, col: 15 }),
            bb(15.0 / 16.0, 0.0, 1.0, 1.0 / 24.0)
        );
    }

    #[test]
    fn box_covering_everything_gets_every_cell() {
        let g = Grid::SD_512;
        let r = g.cells_of(&bb(0.0, 0.0, 1.0, 1.0));
        assert_eq!((r.rows.clone(), r.cols.clone()), (0..16, 0..16));
        assert_eq!(r.len(), 256);
    }

    #[test]
    fn box_on_cell_boundaries_gets_exactly_those_cells() {
        // 4 x 4 grid, box over cells 1..3 on both axes, edges exactly on cell edges.
        let g = Grid::new(4, 4).unwrap();
        let r = g.cells_of(&bb(0.25, 0.25, 0.75, 0.75));
        assert_eq!((r.rows, r.cols), (1..3, 1..3));
        // Decimal edges that are not exact in binary still land on the edge: 0.3 * 10 = 3.0000000000000004.
        let g = Grid::new(10, 10).unwrap();
        let r = g.cells_of(&bb(0.1, 0.3, 0.7, 0.9));
        assert_eq!((r.rows, r.cols), (3..9, 1..7));
        // An edge meant to be on a centre but off by rounding: 10.5 / 19 * 19 = 10.500000000000002.
        let g = Grid::new(1, 19).unwrap();
        let x0 = std::hint::black_box(10.5 / 19.0);
        assert!(x0 * 19.0 > 10.5);
        assert_eq!(g.cells_of(&bb(x0, 0.0, 1.0, 1.0)).cols, 10..19);
    }

    #[test]
    fn centre_rule_with_inclusive_low_and_exclusive_high_edge() {
        let g = Grid::new(4, 4).unwrap(); // centres at 0.125, 0.375, 0.625, 0.875
                                          // Low edge exactly on a centre: that cell is in; high edge exactly on a centre: out.
        let r = g.cells_of(&bb(0.125, 0.0, 0.625, 1.0));
        assert_eq!(r.cols, 0..2);
        // Half a cell either side of the edges rounds to the nearest edge.
        let r = g.cells_of(&bb(0.2, 0.0, 0.8, 1.0));
        assert_eq!(r.cols, 1..3);
        let r = g.cells_of(&bb(0.1, 0.0, 0.9, 1.0));
        assert_eq!(r.cols, 0..4);
    }

    #[test]
    fn tiny_box_gets_the_cell_containing_its_centre() {
        let g = Grid::SD_512;
        // Inside cell (5, 10) without covering its centre (10.5/16, 5.5/16).
        let r = g.cells_of(&bb(10.6 / 16.0, 5.6 / 16.0, 10.9 / 16.0, 5.9 / 16.0));
        assert_eq!(
            r.cells().collect::<Vec<_>>(),
            vec![Cell { row: 5, col: 10 }]
        );
        // Straddling a cell edge: the midpoint is on the edge and goes to the cell after it.
        let r = g.cells_of(&bb(7.9 / 16.0, 0.0, 8.1 / 16.0, 0.001));
        assert_eq!(r.cells().collect::<Vec<_>>(), vec![Cell { row: 0, col: 8 }]);
        // In the bottom-right corner.
        let r = g.cells_of(&bb(0.999, 0.999, 1.0, 1.0));
        assert_eq!(
            r.cells().collect::<Vec<_>>(),
            vec![Cell { row: 15, col: 15 }]
        );
    }

    #[test]
    fn thin_box_keeps_its_extent_along_the_long_axis() {
        let g = Grid::new(4, 4).unwrap();
        // Covers column centres 1 and 2 but no row centre: one row, two columns.
        let r = g.cells_of(&bb(0.3, 0.26, 0.7, 0.3));
        assert_eq!((r.rows, r.cols), (1..2, 1..3));
    }

    #[test]
    fn touching_boxes_do_not_share_cells() {
        let g = Grid::new(4, 4).unwrap();
        let left = g.cells_of(&bb(0.0, 0.0, 0.5, 1.0));
        let right = g.cells_of(&bb(0.5, 0.0, 1.0, 1.0));
        assert_eq!((left.cols, right.cols), (0..2, 2..4));
        // Also when the shared edge is a cell centre.
        let left = g.cells_of(&bb(0.0, 0.0, 0.375, 1.0));
        let right = g.cells_of(&bb(0.375, 0.0, 1.0, 1.0));
        assert_eq!((left.cols, right.cols), (0..1, 1..4));
    }

    #[test]
    fn masks_and_units() {
        let g = Grid::new(2, 3).unwrap();
        let m = g.mask(&bb(0.0, 0.5, 0.6, 1.0));
        assert_eq!(m, vec![false, false, false, true, true, false]);
        let u = g.to_grid_units(&bb(0.0, 0.5, 0.6, 1.0));
        assert_eq!((u.x0, u.y0, u.y1), (0.0, 1.0, 2.0));
        assert!((u.x1 - 1.8).abs() < 1e-12);
    }
}
