//! Benchmark harnesses for semi, out of the runtime libraries (`semi-diffusion`, `semi-tickets`):
//!
//! - [`models`]: the `semi bench` table, seconds and peak memory of the SD-1.5-size components
//!   (UNet, probe pass, text encoder, VAE) on random weights, optionally next to PyTorch;
//! - [`loading`]: load time and memory of a single-file checkpoint against a folder
//!   (`--only loading`);
//! - [`detect`]: the YOLOv8n/m detector at batch 1 and 8 (`--only YOLOv8`);
//! - [`selection`]: winning-ticket selection timings on a synthetic store (`semi tickets bench`);
//! - [`random_weights`]: full-size models with weights rebuilt from a seed (the rule of
//!   `tools/make_fixtures.py`), also used by `semi-diffusion`'s SD-1.5 parity test.
//!
//! Examples: `cargo run --release -p semi-bench --example bench` (the table) and
//! `--example bench_selection` (selection and construction timings).

pub mod detect;
mod gpu_memory;
pub mod loading;
pub mod models;
pub mod random_weights;
pub mod selection;

use anyhow::Result;

/// The `semi bench` table: the model rows ([`models::run`], with PyTorch's beside them when
/// asked), then the detector rows when named (`--only YOLOv8`), then the loading rows when
/// named (`--only loading`).
pub fn run(
    opts: &models::BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<models::BenchRow>> {
    let mut rows = models::run(opts, progress)?;
    detect::detect_rows(opts, &mut rows, progress)?;
    models::add_torch(opts, &mut rows, progress);
    if models::requested(opts, "loading SD-1.5") {
        for (precision, suffix) in models::precisions(opts) {
            loading::load_rows(
                opts,
                precision,
                precision.weights,
                &suffix,
                &mut rows,
                progress,
            )?;
        }
    }
    Ok(rows)
}
