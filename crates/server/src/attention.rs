//! The page's attention toggle: per layout category, the first-step cross-attention map of the
//! initial latents for the user's prompt, and (SemI) which grid cells got which category's
//! tickets.
//!
//! The map is the ticket probe's ([`semi_tickets::SdProber::attention_maps`]: the first
//! timestep, the probed layer, head-averaged), but for the user's prompt instead of the
//! contrastive `a {c1} and a {c2}`: a category's column is the sum of its tokens' columns in the
//! prompt (the category word, its plural, or else the phrase of an object of that category),
//! min-max normalised over the grid. A category the prompt does not contain gets no map and a
//! note saying so.

use anyhow::Result;
use candle_core::Tensor;
use semi_tickets::{min_max_normalize, Construction, Region, SdProber};
use serde_json::{json, Value};

use crate::model::Loaded;
use crate::request::JobRequest;

/// Token positions of `category` in the prompt's ids: the word, its plurals, then any phrase of
/// an object with that category.
fn category_tokens(
    m: &Loaded,
    req: &JobRequest,
    ids: &[u32],
    category: &str,
) -> Option<Vec<usize>> {
    let tok = m.model.sd.tokenizer();
    let mut candidates = vec![
        category.to_lowercase(),
        format!("{}s", category.to_lowercase()),
        format!("{}es", category.to_lowercase()),
    ];
    candidates.extend(
        req.run
            .layout
            .objects
            .iter()
            .filter(|o| o.category == category)
            .map(|o| o.phrase.to_lowercase()),
    );
    candidates
        .iter()
        .find_map(|c| tok.token_positions(ids, c))
        // The end-of-text token (and padding after it) is not the category.
        .filter(|span| span.iter().all(|&i| ids[i] != tok.eos_id()))
}

/// Maps and cell fill as JSON (shape documented in the crate docs).
pub fn attention_json(
    m: &Loaded,
    req: &JobRequest,
    initial_unit: &Tensor,
    construction: Option<&Construction>,
) -> Result<Value> {
    let (h, w) = (
        req.run.layout.height as usize,
        req.run.layout.width as usize,
    );
    let mut prober = SdProber::new(
        &m.model.sd,
        m.model.fingerprint()?.to_string(),
        &semi_run::store::probe_options(&req.run.settings, &m.model.sd.files.scheduler, 1, h, w)?,
    )?;
    let grid = prober.plan().grid;
    let prompt = req.run.layout.prompt.to_lowercase();
    let maps = prober.attention_maps(initial_unit, std::slice::from_ref(&prompt))?;
    let map = &maps[0];
    let ids = m.model.sd.tokenizer().encode(&prompt)?;
    let mut out = Vec::new();
    for category in req.run.layout.categories() {
        match category_tokens(m, req, &ids, &category) {
            Some(span) => {
                let mut values: Vec<f32> = map
                    .iter()
                    .map(|row| span.iter().map(|&k| row[k]).sum())
                    .collect();
                min_max_normalize(&mut values)?;
                out.push(json!({"category": category, "tokens": span, "values": values}));
            }
            None => out.push(json!({
                "category": category,
                "tokens": [],
                "values": null,
                "note": format!("the prompt does not contain {category:?} (nor a phrase of it)"),
            })),
        }
    }
    let cells = construction.map(|c| {
        let owners: Vec<Value> = c
            .cells
            .iter()
            .map(|cell| match cell.region {
                Region::Object(i) => req
                    .run
                    .layout
                    .objects
                    .get(i)
                    .map(|o| Value::from(o.category.clone()))
                    .unwrap_or(Value::Null),
                Region::Background => Value::from("background"),
            })
            .collect();
        let uses: Vec<Value> = c
            .uses
            .iter()
            .map(|u| {
                json!({"name": u.name, "cells": u.cells, "available": u.available,
                       "reused": u.reused})
            })
            .collect();
        // The store's grid (the default probe's, unless a --store used other layers).
        let cells_grid = if c.cells.len() == grid[0] * grid[1] {
            grid
        } else {
            m.info.grid
        };
        json!({"grid": cells_grid, "owners": owners, "uses": uses, "warnings": c.warnings})
    });
    Ok(json!({
        "grid": grid,
        "prompt": prompt,
        "maps": out,
        "cells": cells,
    }))
}
