//! The generation worker: one thread per model (candle's forward passes block), loading the
//! model and then running queued jobs one at a time through `semi_run::Run`, the path `semi
//! generate` and `semi eval` use, so the page's image equals the CLI's for the same layout, seed
//! and method.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use semi_diffusion::latents_io::npy_bytes;
use semi_run::StoreSpec;
use semi_tickets::Store;

use crate::jobs::{Outputs, Shared, Status};
use crate::model::{self, Loaded, ModelInfo, ModelSource};
use crate::preview;
use crate::request::JobRequest;

/// The message of a job stopped by its cancel button.
pub const CANCELLED: &str = "cancelled";

/// Start the worker thread: it loads the model and then serves the queue forever. Returns once
/// the model is loaded (or failed to load).
pub fn spawn(source: ModelSource, shared: Arc<Shared>) -> Result<ModelInfo> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("semi-worker-{}", source.name))
        .spawn(move || {
            let loaded = match model::load(&source) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(loaded.info.clone()));
            loop {
                let (id, request, cancel) = shared.next_job();
                let result = catch_unwind(AssertUnwindSafe(|| {
                    run_job(&loaded, &shared, id, &request, &cancel)
                }))
                .unwrap_or_else(|panic| {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(anyhow::anyhow!("internal error: {msg}"))
                });
                shared.update(id, |job| {
                    job.finished = Some(Instant::now());
                    match result {
                        Ok(outputs) => {
                            job.status = Status::Done;
                            job.phase = "done".into();
                            job.outputs = outputs;
                        }
                        Err(_) if cancel.load(Ordering::SeqCst) => {
                            job.status = Status::Cancelled;
                            job.phase = "cancelled".into();
                            job.error = Some(format!("{CANCELLED} at step {}", job.step));
                        }
                        Err(e) => {
                            job.status = Status::Failed;
                            job.phase = "failed".into();
                            job.error = Some(crate::error::page_message(&e));
                        }
                    }
                });
            }
        })
        .context("cannot start the worker thread")?;
    rx.recv()
        .context("the worker thread stopped while loading the model")?
}

/// The ticket store for a SemI job: `--store`, or the on-the-fly cache store for the layout's
/// categories (toy model: a one-category layout is contrasted with the other toy shapes).
fn store_for(m: &Loaded, shared: &Shared, id: u64, req: &JobRequest) -> Result<Option<Store>> {
    if m.store.is_some() {
        return Ok(None);
    }
    if req.run.layout.categories().len() < 2 && m.model.vocabulary().is_none() {
        bail!(
            "a layout with the single category {:?} has nothing to contrast it with on the fly: \
             add a second category or start the server with --store",
            req.run
                .layout
                .categories()
                .first()
                .cloned()
                .unwrap_or_default()
        );
    }
    shared.update(id, |j| j.phase = "collecting tickets".into());
    let store = req.run.store(
        &m.model,
        &StoreSpec::default(),
        &mut |p| {
            let phase = format!(
                "collecting tickets ({}/{} probe passes)",
                p.passes_done, p.passes_total
            );
            shared.update(id, |j| j.phase = phase);
        },
        &mut |line| eprintln!("{line}"),
    )?;
    Ok(Some(store))
}

fn run_job(
    m: &Loaded,
    shared: &Shared,
    id: u64,
    req: &JobRequest,
    cancel: &AtomicBool,
) -> Result<Outputs> {
    let run = &req.run;
    let cache = if run.needs_store() {
        store_for(m, shared, id, req)?
    } else {
        None
    };
    let store = cache.as_ref().or(m.store.as_ref());
    if cancel.load(Ordering::SeqCst) {
        bail!(CANCELLED);
    }
    shared.update(id, |j| j.phase = "denoising".into());
    let pixel_space = m.info.pixel_space;
    let generation = run.generate(&m.model, store, &mut |ev| {
        if cancel.load(Ordering::SeqCst) {
            bail!(CANCELLED);
        }
        // A preview that cannot be drawn is not worth failing the job for.
        let png = preview::latents_to_image(ev.pred_original, pixel_space)
            .and_then(|t| preview::png_bytes(&t, &[]))
            .ok();
        let (step, steps) = (ev.step + 1, ev.num_steps);
        shared.update(id, |j| {
            j.step = step;
            j.steps = steps;
            if let Some(png) = png {
                j.preview_png = Some(Arc::new(png));
            }
        });
        Ok(())
    })?;
    shared.update(id, |j| {
        j.phase = "finishing".into();
        j.warnings.extend(generation.warnings.iter().cloned());
    });

    let mut params = run.params(&m.info.name, &generation);
    // A layout without boxes is still the page's request.
    params
        .extra
        .insert("layout".into(), serde_json::to_value(&run.layout)?);
    let json = serde_json::to_string(&params)?;
    let image_png = preview::png_bytes(&generation.image, &[("parameters", &json)])?;

    // Unit-variance initial latents, before init_noise_sigma (what `semi generate --latents`
    // takes and what the probe expects).
    let initial = semi_run::run::cpu_f32(&generation.initial)?;
    let flat: Vec<f32> = initial.flatten_all()?.to_vec1()?;
    let initial_npy = npy_bytes(&flat, initial.dims());

    shared.update(id, |j| j.phase = "attention maps".into());
    let attention =
        crate::attention::attention_json(m, req, &initial, generation.construction.as_ref())?;
    let mut metadata = serde_json::Map::new();
    metadata.insert("parameters".into(), serde_json::to_value(&params)?);
    Ok(Outputs {
        image_png: Some(Arc::new(image_png)),
        initial_npy: Some(Arc::new(initial_npy)),
        attention: Some(attention),
        metadata,
    })
}
