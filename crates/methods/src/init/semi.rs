//! SemI, the paper's semantic-driven initialisation: each layout box's grid cells filled with
//! its category's winning tickets from a store, the rest with background tickets
//! ([`semi_tickets::semi_init`] with the options' rule, seeded with the run's seed).

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use semi_tickets::{semi_init, InitMethod, InitOptions};
use serde_json::{json, Value};

use super::{InitContext, InitStage, InitState};
use crate::Needs;

pub struct Semi;

/// What SemI and its colour control need: boxes, a store, and no given latents.
pub(super) const NEEDS: Needs = Needs {
    boxes: Some("the boxes say where each category's tickets go"),
    store: Some("SemI draws its latents from one"),
    own_latents: Some("it builds its latents from tickets"),
    tokens: false,
};

impl InitStage for Semi {
    fn needs(&self) -> Needs {
        NEEDS
    }

    fn apply(&self, cx: &InitContext, state: &mut InitState) -> Result<()> {
        from_store(cx, state, InitMethod::SemI)
    }
}

/// Latents assembled from the store's tickets by `how` (SemI or the colour-matched control).
pub(super) fn from_store(cx: &InitContext, state: &mut InitState, how: InitMethod) -> Result<()> {
    let name = cx.method;
    let store = cx.store.with_context(|| {
        format!(
            "method {name} needs a ticket store ({})",
            NEEDS.store.unwrap_or_default()
        )
    })?;
    let options = cx.options;
    let init = InitOptions {
        seed: cx.seed,
        method: how,
        recalibrate: options.recalibrate,
    };
    let (_, c) = semi_init(store, cx.layout, &options.rule, &init)?;
    ensure!(
        c.shape.as_slice() == cx.shape,
        "the store {} makes latents of shape {:?}, but this model needs {:?} at {}x{}",
        store.dir().display(),
        c.shape,
        cx.shape,
        cx.layout.width,
        cx.layout.height
    );
    let t = Tensor::from_vec(c.latents.clone(), c.shape.to_vec(), &Device::Cpu)?;
    let f = store.fingerprint();
    let m = &mut state.metadata;
    m.insert("store".into(), store.dir().display().to_string().into());
    m.insert("store_fingerprint".into(), f.digest().into());
    m.insert("store_model".into(), f.model.clone().into());
    m.insert("rule".into(), options.rule.to_string().into());
    m.insert("recalibrate".into(), options.recalibrate.into());
    match how {
        InitMethod::SemI => {}
        // The key sidecars have always had for this control.
        InitMethod::ColourMatchedControl => {
            m.insert("colour_control".into(), true.into());
        }
        other => {
            m.insert("control".into(), other.name().into());
        }
    }
    let uses: Vec<Value> = c
        .uses
        .iter()
        .map(|u| json!({"set": u.name, "cells": u.cells, "available": u.available, "reused": u.reused}))
        .collect();
    m.insert("tickets".into(), uses.into());
    state.construction = Some(c);
    state.latents = Some(t);
    Ok(())
}
