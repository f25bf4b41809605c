//! Semantic-driven initialisation (SemI, docs/design.md 1.4): initial latents assembled from winning
//! tickets, and the colour-matched control (docs/design.md 1.4).
//!
//! Boxes map to grid cells and overlaps resolve as [`semi_layout::RegionMap`] documents (smaller
//! box keeps the intersection). Each category gets one draw sequence covering all its objects'
//! cells (objects in layout order, each object's cells in raster order): the concatenation of
//! fresh random permutations of the category's tickets, so tickets are distinct while they last
//! and reused evenly after. Background cells (raster order) draw from the background tickets the
//! same way. Random numbers: [`SplitMix64`] seeded with the seed, drawn for the categories in
//! order of first appearance in the layout, then for the background.
//!
//! [`InitMethod::ColourMatchedControl`] keeps the regions but fills each cell with Gaussian
//! noise (`torch.randn((1,C,h,w), manual_seed(seed))`) shifted and scaled per channel to the mean
//! and variance of the whole ticket set of the cell's category (or of the background set). If
//! SemI beats this control, the tickets carry more than a colour bias.
//!
//! Two more controls ask whether tickets are specific to their category (issue 22):
//! [`InitMethod::CategorySwappedControl`] fills each object's cells with the tickets of the next
//! category of the layout (cyclically, in order of first appearance: with two categories, each
//! box gets the other's), so category-specific tickets put the wrong shape in each box;
//! [`InitMethod::AnyObjectControl`] fills every object's cells from one draw sequence over the
//! union of the layout's categories' tickets. The background is SemI's in both.
//!
//! Optional recalibration standardises each channel of the finished latent to zero mean and unit
//! variance (population statistics over the whole latent).

use std::fmt;

use anyhow::{bail, Result};
use semi_layout::{Layout, RegionMap};

use crate::names::normalize_category;
use crate::rng::SplitMix64;
use crate::select::{select, Rule, Selection};
use crate::store::{put_block, Store};

/// How cells are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitMethod {
    /// Winning tickets (the paper).
    #[default]
    SemI,
    /// Gaussian blocks matched to the ticket sets' per-channel mean and variance (module docs).
    ColourMatchedControl,
    /// Each object's cells from the next category's tickets (module docs).
    CategorySwappedControl,
    /// Every object's cells from the union of the layout's categories' tickets (module docs).
    AnyObjectControl,
}

impl InitMethod {
    /// The controls, by the names of `--control`.
    pub const CONTROLS: [InitMethod; 3] = [
        InitMethod::ColourMatchedControl,
        InitMethod::CategorySwappedControl,
        InitMethod::AnyObjectControl,
    ];

    /// `semi`, `colour-matched`, `category-swapped` or `any-object`.
    pub fn name(self) -> &'static str {
        match self {
            InitMethod::SemI => "semi",
            InitMethod::ColourMatchedControl => "colour-matched",
            InitMethod::CategorySwappedControl => "category-swapped",
            InitMethod::AnyObjectControl => "any-object",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitOptions {
    pub seed: u64,
    pub method: InitMethod,
    /// Standardise each channel of the result to zero mean, unit variance.
    pub recalibrate: bool,
}

/// Who owns a grid cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// Layout object index.
    Object(usize),
    Background,
}

/// What went into one grid cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellFill {
    pub region: Region,
    /// The ticket (flat block index in the store) for SemI; `None` for the control.
    pub ticket: Option<u32>,
}

/// Per ticket set used: how many cells it filled and whether tickets had to be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetUse {
    /// Category name or `background`.
    pub name: String,
    pub cells: usize,
    pub available: usize,
    /// Cells that got a ticket already used in this latent (`cells - available` when positive).
    pub reused: usize,
}

/// Initial latents and how they were made.
#[derive(Debug, Clone, PartialEq)]
pub struct Construction {
    /// `[1, C, h, w]` row-major.
    pub latents: Vec<f32>,
    pub shape: [usize; 4],
    /// Per grid cell (raster order).
    pub cells: Vec<CellFill>,
    pub uses: Vec<SetUse>,
    /// Objects that got no cell (hidden by smaller boxes), as messages.
    pub warnings: Vec<String>,
}

impl fmt::Display for Construction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for u in &self.uses {
            write!(
                f,
                "  {:<20} {:>4} cells from {:>7} tickets",
                u.name, u.cells, u.available
            )?;
            if u.reused > 0 {
                write!(f, " ({} reused)", u.reused)?;
            }
            writeln!(f)?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}

/// Select tickets for the layout's categories with `rule`, then [`construct`].
pub fn semi_init(
    store: &Store,
    layout: &Layout,
    rule: &Rule,
    options: &InitOptions,
) -> Result<(Selection, Construction)> {
    let selection = select(store, &layout.categories(), rule)?;
    let construction = construct(store, layout, &selection, options)?;
    Ok((selection, construction))
}

/// A region of the layout has cells but its ticket set is empty. The message gives the CLI's
/// remedy; other front ends (the server's page) word their own from the fields.
#[derive(Debug, Clone, PartialEq)]
pub struct NoTickets {
    /// The category without winning tickets; `None`: the background.
    pub category: Option<String>,
    pub qualified: usize,
    pub ambiguous: usize,
    pub n_blocks: usize,
    /// The selection rule, as displayed.
    pub rule: String,
    /// Which CLI threshold to move ([`Rule::advice`]).
    pub advice: String,
    /// N, the store's noise images.
    pub n_images: usize,
}

impl NoTickets {
    /// "no winning tickets for \"dog\"" or "no background tickets".
    pub fn what(&self) -> String {
        match &self.category {
            Some(c) => format!("no winning tickets for {c:?}"),
            None => "no background tickets".to_string(),
        }
    }
}

impl fmt::Display for NoTickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dropped = if self.ambiguous > 0 {
            format!(", {} more dropped as ambiguous", self.ambiguous)
        } else {
            String::new()
        };
        write!(
            f,
            "{} ({} of {} blocks qualify under {}{dropped}); {}, or collect more noise images \
             (raise N, now {})",
            self.what(),
            self.qualified,
            self.n_blocks,
            self.rule,
            self.advice,
            self.n_images
        )
    }
}

impl std::error::Error for NoTickets {}

/// Build initial latents for `layout` from `selection` (made from `store`; see module docs).
/// Errors: a layout size other than the store's, a layout category missing from the selection,
/// or an empty ticket set for a region that has cells (naming the category and what to change).
pub fn construct(
    store: &Store,
    layout: &Layout,
    selection: &Selection,
    options: &InitOptions,
) -> Result<Construction> {
    let f = store.fingerprint();
    if layout.width != f.width || layout.height != f.height {
        bail!(
            "the layout is {}x{} but the store {} was collected at {}x{}; use a store made at the \
             layout's size",
            layout.width,
            layout.height,
            store.dir().display(),
            f.width,
            f.height
        );
    }
    let grid = f.grid();
    let map: RegionMap = layout.region_map(grid);
    // Each object's set index in the selection.
    let mut object_set = Vec::with_capacity(layout.objects.len());
    for (i, o) in layout.objects.iter().enumerate() {
        let c = normalize_category(&o.category)?;
        let Some(s) = selection.categories.iter().position(|x| *x == c) else {
            bail!(
                "objects[{i}] has category {c:?}, which the selection does not cover (it has {})",
                selection.categories.join(", ")
            );
        };
        object_set.push(s);
    }
    let n_sets = selection.categories.len();
    let n_cats = n_sets;
    // The layout's sets in order of first appearance, for the two category controls.
    let mut distinct: Vec<usize> = Vec::new();
    for &s in &object_set {
        if !distinct.contains(&s) {
            distinct.push(s);
        }
    }
    if options.method == InitMethod::CategorySwappedControl && distinct.len() < 2 {
        bail!("the category-swapped control needs a layout of at least two categories");
    }
    // The union of the layout's sets: set n_sets + 1, used by the any-object control only.
    let mut union: Vec<u32> = Vec::new();
    if options.method == InitMethod::AnyObjectControl {
        for &s in &distinct {
            union.extend(&selection.tickets[s]);
        }
        union.sort_unstable();
        union.dedup();
    }
    let fill_set = |s: usize| match options.method {
        InitMethod::CategorySwappedControl => {
            let k = distinct.iter().position(|&d| d == s).expect("a layout set");
            distinct[(k + 1) % distinct.len()]
        }
        InitMethod::AnyObjectControl => n_sets + 1,
        _ => s,
    };
    // Cells per set, in fill order; set n_sets = background, n_sets + 1 = the union.
    let mut set_cells: Vec<Vec<usize>> = vec![Vec::new(); n_sets + 2];
    for (object, &s) in object_set.iter().enumerate() {
        set_cells[fill_set(s)].extend(map.object_cells(object).iter().map(|&c| grid.index(c)));
    }
    set_cells[n_sets].extend(map.background_cells().iter().map(|&c| grid.index(c)));
    let sets: Vec<&[u32]> = selection
        .tickets
        .iter()
        .map(|t| t.as_slice())
        .chain([selection.background.as_slice(), union.as_slice()])
        .collect();
    let names: Vec<String> = selection
        .categories
        .iter()
        .cloned()
        .chain(["background".to_string(), "any object".to_string()])
        .collect();
    for s in 0..=n_sets {
        if !set_cells[s].is_empty() && sets[s].is_empty() {
            let report = if s < n_sets {
                &selection.report.categories[s]
            } else {
                &selection.report.background
            };
            return Err(NoTickets {
                category: (s < n_sets).then(|| names[s].clone()),
                qualified: report.qualified,
                ambiguous: report.ambiguous,
                n_blocks: selection.report.n_blocks,
                rule: selection.report.rule.to_string(),
                advice: selection.report.rule.advice(n_cats, s == n_sets),
                n_images: store.n_images(),
            }
            .into());
        }
    }

    if !set_cells[n_sets + 1].is_empty() && union.is_empty() {
        bail!(
            "no winning tickets for any of {} (the any-object control draws from their union)",
            distinct
                .iter()
                .map(|&d| format!("{:?}", names[d]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let [c, h, w] = f.latent;
    let mut latents = vec![0f32; c * h * w];
    let mut cells = vec![
        CellFill {
            region: Region::Background,
            ticket: None,
        };
        grid.len()
    ];
    for (i, owner) in map.owners().iter().enumerate() {
        if let Some(o) = owner {
            cells[i].region = Region::Object(*o);
        }
    }
    let mut uses = Vec::new();
    let mut rng = SplitMix64::new(options.seed);
    let gaussian = match options.method {
        InitMethod::ColourMatchedControl => Some(
            semi_diffusion::noise::TorchGenerator::manual_seed(options.seed).randn_vec(c * h * w),
        ),
        _ => None,
    };
    let (bh, bw) = f.block_hw();
    // The union comes after the background, so SemI's random stream is what it always was.
    for s in 0..sets.len() {
        let targets = &set_cells[s];
        if targets.is_empty() {
            continue;
        }
        uses.push(SetUse {
            name: names[s].clone(),
            cells: targets.len(),
            available: sets[s].len(),
            reused: targets.len().saturating_sub(sets[s].len()),
        });
        match &gaussian {
            None => {
                let drawn = rng.cycle_sample(sets[s], targets.len());
                for (&cell, &ticket) in targets.iter().zip(&drawn) {
                    put_block(f, &mut latents, cell, store.block_flat(ticket as usize)?);
                    cells[cell].ticket = Some(ticket);
                }
            }
            Some(z) => {
                let (mean, std) = channel_stats(store, sets[s])?;
                let cols = grid.cols();
                for &cell in targets {
                    let (r, col) = (cell / cols, cell % cols);
                    for ch in 0..c {
                        for y in r * bh..(r + 1) * bh {
                            for x in col * bw..(col + 1) * bw {
                                let i = (ch * h + y) * w + x;
                                latents[i] = (mean[ch] + std[ch] * z[i] as f64) as f32;
                            }
                        }
                    }
                }
            }
        }
    }
    if options.recalibrate {
        standardize_channels(&mut latents, c);
    }
    if let Some(v) = latents.iter().find(|v| !v.is_finite()) {
        bail!(
            "the store {} holds a non-finite noise value ({v}); it is damaged: collect a new one",
            store.dir().display()
        );
    }
    let warnings = map.warnings().iter().map(|w| w.to_string()).collect();
    Ok(Construction {
        latents,
        shape: [1, c, h, w],
        cells,
        uses,
        warnings,
    })
}

/// Per-channel mean and (population) standard deviation over all values of `tickets`' blocks.
pub fn channel_stats(store: &Store, tickets: &[u32]) -> Result<(Vec<f64>, Vec<f64>)> {
    let f = store.fingerprint();
    let c = f.latent[0];
    let per = f.block_len() / c;
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    for &t in tickets {
        let block = store.block_flat(t as usize)?;
        for (ch, vals) in block.chunks_exact(per).enumerate() {
            for &v in vals {
                sum[ch] += v as f64;
                sq[ch] += (v as f64) * (v as f64);
            }
        }
    }
    let n = (tickets.len() * per) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / n - m * m).max(0.0).sqrt())
        .collect();
    Ok((mean, std))
}

/// Standardise each of the `channels` planes of a `(C, h, w)` latent to zero mean and unit
/// population variance (a constant plane is only centred).
pub fn standardize_channels(latents: &mut [f32], channels: usize) {
    let plane = latents.len() / channels;
    for p in latents.chunks_exact_mut(plane) {
        let n = p.len() as f64;
        let mean = p.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = if var > 0.0 { 1.0 / var.sqrt() } else { 1.0 };
        for v in p.iter_mut() {
            *v = ((*v as f64 - mean) * inv) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardize() {
        let mut x = vec![1.0, 3.0, 10.0, 10.0];
        standardize_channels(&mut x, 2);
        assert_eq!(x, [-1.0, 1.0, 0.0, 0.0]);
    }
}
