//! Layouts for semi: where each object of a prompt should appear, and which ticket-grid cells
//! that gives each object. Pure data: no model, no tensors.
//!
//! # The file format
//!
//! One layout is a JSON object (docs/design.md section 3):
//!
//! ```json
//! {"prompt": "a dog and a car on a street", "negative_prompt": "blurry",
//!  "width": 512, "height": 512, "seed": 7,
//!  "objects": [{"phrase": "a brown dog", "category": "dog", "bbox": [0.1, 0.4, 0.45, 0.9]}]}
//! ```
//!
//! `bbox` is `[x0, y0, x1, y1]`, normalised to [0, 1], x right and y down, `x0 < x1`,
//! `y0 < y1`. `negative_prompt`, `seed` and `id` are optional; unknown fields are errors.
//! `category` is required: it is the ticket-store key, so it must be stated, not guessed.
//! A batch is JSONL, one layout per line, each with an optional `id` (text or integer).
//! Validation ([`Layout::validate`]) refuses an empty prompt, a zero width or height, an empty
//! `objects` list, an empty phrase or category, and boxes that are not finite, leave [0, 1] or
//! have `x0 >= x1` / `y0 >= y1`; each error names its field (`objects[2].bbox[0]`) and, in JSONL,
//! its line. A category the prompt does not name is only a warning ([`Layout::warnings`]):
//! whole words, case-insensitive, plural `s`/`es` allowed on the last word.
//!
//! Other formats ([`mod@import`]): GLIGEN-style `phrases` + normalised `boxes`, and pixel xywh
//! (COCO `bbox`, InstanceDiffusion `annos`). A category missing from the source is derived from
//! the phrase by [`derive_category`]: the longest name of a given vocabulary (e.g. the COCO
//! names) that the phrase contains, otherwise the phrase's last word ("a brown dog" -> "dog").
//!
//! # From boxes to grid cells
//!
//! The ticket grid ([`Grid`]) has `rows x cols` cells (16 x 16 for SD 1.x at 512 x 512: a 64 x 64
//! latent cut into 4 x 4 blocks). Cell (r, c) covers `[c/cols, (c+1)/cols) x [r/rows,
//! (r+1)/rows)`.
//!
//! **Rounding** ([`Grid::cells_of`]), per axis independently:
//! 1. a box takes the cells whose **centre** lies in the box, the box's low edge inclusive and
//!    its high edge exclusive, so two boxes that touch never both take a cell and a box whose
//!    edges lie on cell edges takes exactly the cells inside it;
//! 2. on an axis where the box covers no cell centre (a box thinner than a cell there), it
//!    takes the one cell containing its centre on that axis; a centre exactly on a cell edge
//!    goes to the cell after it (right / below), the image's far edge to the last cell.
//!
//! So every box gets at least one cell, a tiny box gets the cell it sits in, and a thin bar keeps
//! its length. Coordinates within 1e-9 cell of a half-integer count as exactly on it, so
//! decimal or pixel-derived boxes round the way they look.
//!
//! **Overlap** ([`RegionMap::new`]): a cell taken by several boxes goes to the box with the
//! **smallest area** (ties: the earlier object in the layout), so a small object inside a large
//! one keeps its cells, and the large one keeps the rest. This works cell by cell, so it holds
//! for any number of boxes. A box can lose all its cells (e.g. a duplicate of an earlier box);
//! [`RegionMap::unplaced`] lists such objects so callers can tell the user. Cells no box takes
//! are background. Every cell has at most one owner, and each object's cells are listed in
//! raster order (row by row), the order in which SemI fills them with tickets.

mod bbox;
mod error;
mod grid;
pub mod import;
mod jsonl;
mod layout;
mod region;
pub mod text;

pub use bbox::{BBox, PixelBox};
pub use error::{short_number, summarize_warnings, LayoutError, LayoutWarning, Problem};
pub use grid::{Cell, CellRect, Grid, GridBox};
pub use import::{import, GligenLayout, ImportOptions, LayoutFormat, XywhLayout, XywhObject};
pub use jsonl::{parse_jsonl, read_jsonl, read_layouts, to_jsonl, BatchEntry};
pub use layout::{Layout, LayoutObject, SizeFrom};
pub use region::RegionMap;
pub use text::derive_category;
