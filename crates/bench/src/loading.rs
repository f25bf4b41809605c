//! `semi bench --only loading`: loading the SD-1.5-size UNet, text encoder and VAE from a diffusers
//! folder's three files and from one single-file checkpoint of the same random weights (the
//! original LDM names, read through `semi_diffusion::single_file`'s key map). The single file
//! must cost at most 10% more time and memory than the folder, and never hold two copies of the
//! weights. The files (2 GB in f16, 4 GB in f32, per layout) are written once under the system's
//! temporary folder and removed afterwards.

use crate::models::{time_row, BenchOptions, BenchRow, SD15_TEXT, SD15_UNET, SD15_VAE};
use crate::random_weights::{seeded_tensors, DEFAULT_BASE_SEED};
use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use semi_diffusion::config::{TextEncoderConfig, UNetConfig, VaeConfig};
use semi_diffusion::loading::{source_var_builder, KeyMap};
use semi_diffusion::precision::Precision;
use semi_diffusion::single_file::{self, Layout};
use semi_diffusion::text_encoder::ClipTextModel;
use semi_diffusion::unet::UNet2DConditionModel;
use semi_diffusion::vae::AutoencoderKL;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The load rows for weights stored in `stored` (f32 or f16), loaded with `precision`.
pub fn load_rows(
    opts: &BenchOptions,
    precision: Precision,
    stored: DType,
    suffix: &str,
    rows: &mut Vec<BenchRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let folder_row = format!("loading SD-1.5 UNet + text encoder + VAE, diffusers folder{suffix}");
    let single_row = format!("loading SD-1.5 UNet + text encoder + VAE, single file{suffix}");
    let unet_cfg = UNetConfig::parse(SD15_UNET)?;
    let te_cfg = TextEncoderConfig::parse(SD15_TEXT)?;
    let vae_cfg = VaeConfig::parse(SD15_VAE)?;
    let dir = std::env::temp_dir().join(format!("semi-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = (|| -> Result<()> {
        progress(&format!(
            "writing SD-1.5-size random weights ({stored:?}) as a folder and a single file under {}",
            dir.display()
        ));
        let save = |name: &str, t: std::collections::BTreeMap<String, Tensor>| -> Result<PathBuf> {
            let path = dir.join(name);
            let map: HashMap<String, Tensor> = t.into_iter().collect();
            candle_core::safetensors::save(&map, &path)?;
            Ok(path)
        };
        let unet = save(
            "unet.safetensors",
            seeded_tensors(DEFAULT_BASE_SEED, stored, |vb| {
                UNet2DConditionModel::new(vb, &unet_cfg)
            })?,
        )?;
        let text = save(
            "text_encoder.safetensors",
            seeded_tensors(DEFAULT_BASE_SEED, stored, |vb| {
                ClipTextModel::new(vb, &te_cfg)
            })?,
        )?;
        let vae = save(
            "vae.safetensors",
            seeded_tensors(DEFAULT_BASE_SEED, stored, |vb| {
                AutoencoderKL::new(vb, &vae_cfg)
            })?,
        )?;
        let blocks = vae_cfg.block_out_channels.len();
        let layouts = [
            (unet.clone(), Layout::Unet),
            (
                text.clone(),
                Layout::Clip {
                    prefix: single_file::SD1_TEXT_PREFIX.to_string(),
                },
            ),
            (
                vae.clone(),
                Layout::Vae {
                    prefix: single_file::VAE_PREFIX.to_string(),
                },
            ),
        ];
        let components: Vec<(Vec<PathBuf>, Layout)> = layouts
            .iter()
            .map(|(p, l)| (vec![p.clone()], l.clone()))
            .collect();
        let single = save(
            "model.safetensors",
            single_file::original_tensors_of(&components, &unet_cfg, blocks)?,
        )?;
        let dev = opts.device.clone();
        // The three models, each from its own file (single = None) or from the one file.
        let load = |single: Option<&Path>| -> Result<()> {
            for (path, layout) in &layouts {
                let (files, keys): (Vec<PathBuf>, Option<KeyMap>) = match single {
                    None => (vec![path.clone()], None),
                    Some(s) => {
                        let (l, cfg) = (layout.clone(), unet_cfg.clone());
                        let map: KeyMap = Box::new(move |n: &str| l.original(n, &cfg, blocks));
                        (vec![s.to_path_buf()], Some(map))
                    }
                };
                let (vb, _) = source_var_builder(&files, keys, None, precision, &dev)?;
                match layout {
                    Layout::Unet => drop(UNet2DConditionModel::new(vb, &unet_cfg)?),
                    Layout::Clip { .. } => drop(ClipTextModel::new(vb, &te_cfg)?),
                    _ => drop(AutoencoderKL::new(vb, &vae_cfg)?),
                }
            }
            Ok(())
        };
        rows.push(time_row(&folder_row, opts.runs, &dev, progress, || {
            load(None)
        })?);
        rows.push(time_row(&single_row, opts.runs, &dev, progress, || {
            load(Some(&single))
        })?);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
