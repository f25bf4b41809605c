//! Which object owns which grid cell once overlaps are resolved (see the crate docs).

use crate::bbox::BBox;
use crate::error::LayoutWarning;
use crate::grid::{Cell, CellRect, Grid};

/// The assignment of grid cells to objects: per cell its owner (or background), per object its
/// cells in raster order. Built by [`RegionMap::new`] or [`crate::Layout::region_map`].
#[derive(Debug, Clone, PartialEq)]
pub struct RegionMap {
    grid: Grid,
    /// Per cell (raster order), the owning object.
    owners: Vec<Option<usize>>,
    /// Per object, its cells in raster order after overlap resolution.
    cells: Vec<Vec<Cell>>,
    /// Per object, the cells its box claims before overlap resolution.
    claims: Vec<CellRect>,
}

impl std::fmt::Display for RegionMap {
    /// The picture of [`RegionMap::to_ascii`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_ascii())
    }
}

impl RegionMap {
    /// Map `boxes` (object i = `boxes[i]`) onto `grid`: each box claims its cells by the rounding
    /// rule of [`Grid::cells_of`]; a cell claimed by several boxes goes to the one with the
    /// smallest area, ties to the earliest object. Boxes are assumed valid (finite).
    pub fn new(grid: Grid, boxes: &[BBox]) -> Self {
        let claims: Vec<CellRect> = boxes.iter().map(|b| grid.cells_of(b)).collect();
        // Smallest first; a stable sort keeps object order among equal areas.
        let mut order: Vec<usize> = (0..boxes.len()).collect();
        order.sort_by(|&a, &b| boxes[a].area().total_cmp(&boxes[b].area()));
        let mut owners = vec![None; grid.len()];
        for &object in &order {
            for cell in claims[object].cells() {
                let owner = &mut owners[grid.index(cell)];
                if owner.is_none() {
                    *owner = Some(object);
                }
            }
        }
        let mut cells = vec![Vec::new(); boxes.len()];
        for (index, owner) in owners.iter().enumerate() {
            if let Some(object) = owner {
                cells[*object].push(grid.cell(index));
            }
        }
        RegionMap {
            grid,
            owners,
            cells,
            claims,
        }
    }

    pub fn grid(&self) -> Grid {
        self.grid
    }

    pub fn num_objects(&self) -> usize {
        self.cells.len()
    }

    /// Per cell in raster order, the owning object or `None` for background.
    pub fn owners(&self) -> &[Option<usize>] {
        &self.owners
    }

    /// The object owning `cell`, `None` for background.
    pub fn owner(&self, cell: Cell) -> Option<usize> {
        self.owners[self.grid.index(cell)]
    }

    /// The cells object `object` owns, in raster order (may be empty, see [`RegionMap::unplaced`]).
    pub fn object_cells(&self, object: usize) -> &[Cell] {
        &self.cells[object]
    }

    /// The cells object `object`'s box claims before overlap resolution (its box mask).
    pub fn claimed_cells(&self, object: usize) -> &CellRect {
        &self.claims[object]
    }

    /// The cells no object owns, in raster order.
    pub fn background_cells(&self) -> Vec<Cell> {
        self.owners
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_none())
            .map(|(i, _)| self.grid.cell(i))
            .collect()
    }

    /// Objects left without any cell because smaller (or equal, earlier) boxes took all the cells
    /// they claimed. They will get no tickets; callers should tell the user.
    pub fn unplaced(&self) -> Vec<usize> {
        (0..self.cells.len())
            .filter(|&i| self.cells[i].is_empty())
            .collect()
    }

    /// A [`LayoutWarning::NoCells`] for each object in [`RegionMap::unplaced`].
    pub fn warnings(&self) -> Vec<LayoutWarning> {
        self.unplaced()
            .into_iter()
            .map(|object| LayoutWarning::NoCells {
                object,
                rows: self.grid.rows(),
                cols: self.grid.cols(),
            })
            .collect()
    }

    /// One line per grid row, one character per cell: `.` for background, objects as `0-9`,
    /// then `a-z`, then `A-Z`, and `*` beyond 62 objects. For tests, logs and quick looks.
    pub fn to_ascii(&self) -> String {
        const SYMBOLS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut out = String::with_capacity(self.grid.len() + self.grid.rows());
        for (i, owner) in self.owners.iter().enumerate() {
            if i > 0 && i % self.grid.cols() == 0 {
                out.push('\n');
            }
            out.push(match owner {
                None => '.',
                Some(o) => SYMBOLS.get(*o).map_or('*', |&b| b as char),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bb(x0: f64, y0: f64, x1: f64, y1: f64) -> BBox {
        BBox::new(x0, y0, x1, y1).unwrap()
    }

    fn grid8() -> Grid {
        Grid::new(8, 8).unwrap()
    }

    fn picture(rows: &[&str]) -> String {
        rows.join("\n")
    }

    #[test]
    fn single_box_and_background() {
        let m = RegionMap::new(grid8(), &[bb(0.25, 0.5, 0.75, 1.0)]);
        assert_eq!(
            m.to_ascii(),
            picture(&[
                "........", "........", "........", "........", //
                "..0000..", "..0000..", "..0000..", "..0000..",
            ])
        );
        assert_eq!(m.object_cells(0).len(), 16);
        assert_eq!(m.object_cells(0)[0], Cell { row: 4, col: 2 });
        assert_eq!(m.object_cells(0)[4], Cell { row: 5, col: 2 });
        assert_eq!(m.background_cells().len(), 48);
        assert_eq!(m.background_cells()[0], Cell { row: 0, col: 0 });
        assert_eq!(m.owner(Cell { row: 7, col: 5 }), Some(0));
        assert_eq!(m.owner(Cell { row: 7, col: 6 }), None);
        assert!(m.unplaced().is_empty());
        assert!(m.warnings().is_empty());
    }

    #[test]
    fn smaller_box_keeps_the_intersection() {
        // Object 0 is big, object 1 small and overlapping it: 1 wins the overlap, whatever the order.
        let big = bb(0.0, 0.0, 0.75, 0.75);
        let small = bb(0.5, 0.5, 1.0, 1.0);
        let want = picture(&[
            "000000..", "000000..", "000000..", "000000..", //
            "00001111", "00001111", "....1111", "....1111",
        ]);
        let m = RegionMap::new(grid8(), &[big, small]);
        assert_eq!(m.to_ascii(), want);
        let m = RegionMap::new(grid8(), &[small, big]);
        assert_eq!(
            m.to_ascii(),
            want.replace('0', "x").replace('1', "0").replace('x', "1")
        );
        assert_eq!(m.claimed_cells(1).len(), 36);
        assert_eq!(m.object_cells(1).len(), 32);
    }

    #[test]
    fn equal_areas_go_to_the_earlier_object() {
        let a = bb(0.0, 0.0, 0.5, 0.5);
        let b = bb(0.25, 0.25, 0.75, 0.75);
        let m = RegionMap::new(Grid::new(4, 4).unwrap(), &[a, b]);
        assert_eq!(m.to_ascii(), picture(&["00..", "001.", ".11.", "...."]));
        let m = RegionMap::new(Grid::new(4, 4).unwrap(), &[b, a]);
        assert_eq!(m.to_ascii(), picture(&["11..", "100.", ".00.", "...."]));
    }

    #[test]
    fn three_boxes_nested_and_crossing() {
        // 0: everything; 1: left half; 2: a bar across the middle, smaller than both.
        let boxes = [
            bb(0.0, 0.0, 1.0, 1.0),
            bb(0.0, 0.0, 0.5, 1.0),
            bb(0.25, 0.375, 1.0, 0.625),
        ];
        let m = RegionMap::new(grid8(), &boxes);
        assert_eq!(
            m.to_ascii(),
            picture(&[
                "11110000", "11110000", "11110000", "11222222", //
                "11222222", "11110000", "11110000", "11110000",
            ])
        );
        assert!(m.background_cells().is_empty());
        assert_eq!(m.object_cells(2).len(), 12);
        assert_eq!(m.object_cells(1).len(), 28);
        assert_eq!(m.object_cells(0).len(), 24);
        // Every cell has exactly one owner and the per-object lists partition the owned cells.
        let total: usize = (0..3).map(|i| m.object_cells(i).len()).sum();
        assert_eq!(total + m.background_cells().len(), 64);
    }

    #[test]
    fn tiny_box_inside_a_big_one_still_gets_its_cell() {
        let boxes = [bb(0.0, 0.0, 1.0, 1.0), bb(0.51, 0.51, 0.52, 0.52)];
        let m = RegionMap::new(Grid::new(4, 4).unwrap(), &boxes);
        assert_eq!(m.to_ascii(), picture(&["0000", "0000", "0010", "0000"]));
        assert_eq!(m.object_cells(1), &[Cell { row: 2, col: 2 }]);
    }

    #[test]
    fn fully_hidden_object_is_reported() {
        // Two identical boxes: the earlier takes every cell, the later is unplaced.
        let b = bb(0.0, 0.0, 0.5, 0.5);
        let m = RegionMap::new(Grid::new(4, 4).unwrap(), &[b, b, bb(0.5, 0.5, 1.0, 1.0)]);
        assert_eq!(m.unplaced(), vec![1]);
        assert!(m.object_cells(1).is_empty());
        assert_eq!(m.claimed_cells(1).len(), 4);
        assert_eq!(
            m.warnings().iter().map(|w| w.to_string()).collect::<Vec<_>>(),
            vec!["objects[1].bbox: gets no cell of the 4x4 grid (smaller boxes cover every cell it would take); enlarge or move it"]
        );
    }

    #[test]
    fn touching_boxes_split_cleanly() {
        let m = RegionMap::new(
            Grid::new(2, 4).unwrap(),
            &[bb(0.0, 0.0, 0.5, 1.0), bb(0.5, 0.0, 1.0, 1.0)],
        );
        assert_eq!(m.to_ascii(), picture(&["0011", "0011"]));
    }
}
