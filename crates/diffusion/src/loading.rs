//! Finding and checking a diffusers folder, and loading its weights.
//!
//! A model is named by a folder or by a Hugging Face repo id resolved offline from the local hub
//! cache (semi never downloads). Before anything is loaded, [`ModelFiles::check`] inspects the
//! whole folder and reports every missing or malformed file in one error, so a user fixes a
//! broken download in one go instead of one file per run.

use crate::config::{ModelIndex, SchedulerConfig, TextEncoderConfig, UNetConfig, VaeConfig};
use crate::family::Family;
use crate::lora::LoraFile;
use crate::lora::{Loras, Slot};
use crate::precision::Precision;
pub use crate::safetensors_header::{read_header, Header, TensorInfo};
use crate::single_file::{self, Kind, Layout, Original, Part};
use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which weight files to prefer when a component has several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// `*.safetensors`; the `*.fp16.safetensors` variant only when it is the only one.
    #[default]
    Full,
    /// `*.fp16.safetensors` when present, else the full-precision file.
    Fp16,
}

// ---------------------------------------------------------------------------------------------
// Resolving a model name

/// The Hugging Face hub cache, found as huggingface_hub finds it: `$HF_HUB_CACHE` (or the legacy
/// `$HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> Option<PathBuf> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = nonempty("HF_HUB_CACHE").or_else(|| nonempty("HUGGINGFACE_HUB_CACHE")) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = nonempty("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    if let Some(p) = nonempty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(p).join("huggingface/hub"));
    }
    nonempty("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// True for `owner/name` with the characters the hub allows.
pub fn is_repo_id(spec: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(spec.split_once('/'), Some((owner, name)) if ok(owner) && ok(name))
}

/// A model folder from a folder path or a cached Hugging Face repo id.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.is_file() {
        bail!("model {spec} is a file; expected a diffusers folder (model_index.json, unet/, ...)");
    }
    if !is_repo_id(spec) {
        bail!("model folder {spec} does not exist");
    }
    let Some(cache) = hf_hub_cache() else {
        bail!("model {spec}: no such folder, and no Hugging Face cache location (set HF_HUB_CACHE or HF_HOME)");
    };
    resolve_in_cache(&cache, spec)
}

/// `owner/name` -> `<cache>/models--owner--name/snapshots/<refs/main>`, or the only/newest
/// snapshot when `refs/main` is missing or points nowhere.
pub fn resolve_in_cache(cache: &Path, repo_id: &str) -> Result<PathBuf> {
    let repo_dir = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let not_found = || {
        anyhow::anyhow!(
            "model {repo_id} not found in the Hugging Face cache at {} (and no folder of that name); \
             download it with `hf download {repo_id}` (or `huggingface-cli download {repo_id}`) or pass a folder",
            cache.display()
        )
    };
    let snapshots = repo_dir.join("snapshots");
    if !snapshots.is_dir() {
        return Err(not_found());
    }
    if let Ok(hash) = std::fs::read_to_string(repo_dir.join("refs/main")) {
        let dir = snapshots.join(hash.trim());
        if !hash.trim().is_empty() && dir.is_dir() {
            return Ok(dir);
        }
    }
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(&snapshots)
        .with_context(|| format!("cannot list {}", snapshots.display()))?
    {
        let entry = entry?;
        if !entry.path().is_dir() {
            continue;
        }
        let mtime = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if newest.as_ref().is_none_or(|(t, _)| mtime > *t) {
            newest = Some((mtime, entry.path()));
        }
    }
    newest.map(|(_, p)| p).ok_or_else(not_found)
}

// ---------------------------------------------------------------------------------------------
// Checking a folder

/// One model component: its parsed config and its weight files (several when sharded).
#[derive(Debug, Clone)]
pub struct Component<C> {
    pub config: C,
    pub config_path: PathBuf,
    pub weights: Vec<PathBuf>,
    /// How the weights are named: `None` for diffusers' names (a folder), else the component's
    /// place in an original single-file checkpoint.
    pub keys: Option<Layout>,
}

impl<C> Component<C> {
    fn new(config: C, config_path: PathBuf, weights: Vec<PathBuf>) -> Self {
        Component {
            config,
            config_path,
            weights,
            keys: None,
        }
    }
}

/// A second text encoder and its tokenizer (SDXL's `text_encoder_2`, `tokenizer_2`).
#[derive(Debug, Clone)]
pub struct TextFiles {
    pub encoder: Component<TextEncoderConfig>,
    pub tokenizer_dir: PathBuf,
    pub tokenizer_files: Vec<PathBuf>,
}

/// A complete, well-formed diffusers Stable Diffusion (1.x/2.x or XL) folder.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub root: PathBuf,
    pub index: ModelIndex,
    /// SD 1.x/2.x or SDXL, from the pipeline class.
    pub family: Family,
    pub unet: Component<UNetConfig>,
    pub text_encoder: Component<TextEncoderConfig>,
    /// The family's second text encoder (SDXL).
    pub text_2: Option<TextFiles>,
    /// `None` for pixel-space models (model_index.json without `vae`): the latents are the image.
    pub vae: Option<Component<VaeConfig>>,
    pub tokenizer_dir: PathBuf,
    /// The tokenizer files present (vocab.json + merges.txt, or tokenizer.json, plus configs).
    pub tokenizer_files: Vec<PathBuf>,
    pub scheduler: SchedulerConfig,
    pub scheduler_path: PathBuf,
    /// The single-file checkpoint the weights come from (`root` then holds only configs and
    /// tokenizers).
    pub single_file: Option<PathBuf>,
    /// LoRAs merged into the UNet and text encoders at load (`--lora`).
    pub loras: Vec<LoraFile>,
    /// Where the VAE was replaced from (`--vae`), which the fingerprint records.
    pub vae_from: Option<PathBuf>,
}

/// Where [`ModelFiles::check_with`] finds the weights.
#[derive(Debug, Clone, Copy)]
pub enum WeightsFrom<'a> {
    /// The folder's own weight files, preferring a variant.
    Folder(Variant),
    /// Every component from one single-file checkpoint.
    SingleFile(&'a Path),
}

impl WeightsFrom<'_> {
    fn find(
        &self,
        root: &Path,
        dir: &str,
        stem: &str,
        problems: &mut Problems,
    ) -> Option<Vec<PathBuf>> {
        match self {
            WeightsFrom::Folder(variant) => find_weights(root, dir, stem, *variant, problems),
            WeightsFrom::SingleFile(file) => Some(vec![file.to_path_buf()]),
        }
    }
}

/// Collects every problem of a folder before failing.
#[derive(Default)]
struct Problems {
    missing: Vec<String>,
    malformed: Vec<String>,
}

impl Problems {
    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.malformed.is_empty()
    }
}

/// Strips the generic `what: ` prefix that the config parsers put in front of their messages.
fn reason(err: &anyhow::Error, what: &str) -> String {
    let msg = format!("{err:#}");
    msg.strip_prefix(&format!("{what}: "))
        .map(str::to_string)
        .unwrap_or(msg)
}

fn read_config<C>(
    root: &Path,
    rel: &str,
    parse: impl Fn(&str) -> Result<C>,
    what: &str,
    problems: &mut Problems,
) -> Option<(C, PathBuf)> {
    let path = root.join(rel);
    if !path.is_file() {
        problems.missing.push(rel.to_string());
        return None;
    }
    let parsed = std::fs::read_to_string(&path)
        .map_err(anyhow::Error::from)
        .and_then(|t| parse(&t));
    match parsed {
        Ok(c) => Some((c, path)),
        Err(e) => {
            problems
                .malformed
                .push(format!("{rel} ({})", reason(&e, what)));
            None
        }
    }
}

/// Checks that a safetensors file has a complete header whose tensors lie inside the file.
pub fn check_safetensors(path: &Path) -> Result<()> {
    read_header(path).map(|_| ())
}

/// Finds the weights of the component in `dir` (file stem `stem`), preferring `variant`.
fn find_weights(
    root: &Path,
    dir: &str,
    stem: &str,
    variant: Variant,
    problems: &mut Problems,
) -> Option<Vec<PathBuf>> {
    let full = format!("{dir}/{stem}.safetensors");
    let half = format!("{dir}/{stem}.fp16.safetensors");
    let order = match variant {
        Variant::Full => [&full, &half],
        Variant::Fp16 => [&half, &full],
    };
    let mut found = None;
    for rel in order {
        if root.join(rel).is_file() {
            found = Some(vec![rel.clone()]);
            break;
        }
        let index = format!("{rel}.index.json");
        if root.join(&index).is_file() {
            match shard_list(root, dir, &index) {
                Ok(shards) => found = Some(shards),
                Err(e) => {
                    problems.malformed.push(format!("{index} ({e:#})"));
                    return None;
                }
            }
            break;
        }
    }
    let Some(rels) = found else {
        let bin = [
            format!("{dir}/{stem}.bin"),
            format!("{dir}/{stem}.fp16.bin"),
        ];
        if let Some(b) = bin.iter().find(|b| root.join(b).is_file()) {
            problems.malformed.push(format!(
                "{b} (only safetensors weights are supported; convert it to {full})"
            ));
        } else {
            problems.missing.push(full);
        }
        return None;
    };
    let mut ok = true;
    for rel in &rels {
        let path = root.join(rel);
        if !path.is_file() {
            problems.missing.push(rel.clone());
            ok = false;
        } else if let Err(e) = check_safetensors(&path) {
            problems.malformed.push(format!("{rel} ({e:#})"));
            ok = false;
        }
    }
    ok.then(|| rels.iter().map(|r| root.join(r)).collect())
}

/// The tokenizer folder `dir` and its files (vocab.json + merges.txt, or tokenizer.json, plus
/// the configs present); a missing vocabulary is recorded as a problem.
fn find_tokenizer(root: &Path, dir: &str, problems: &mut Problems) -> (PathBuf, Vec<PathBuf>) {
    let tok_dir = root.join(dir);
    let bpe = ["vocab.json", "merges.txt"].map(|f| tok_dir.join(f));
    let fast = tok_dir.join("tokenizer.json");
    let mut files: Vec<PathBuf> = if bpe.iter().all(|f| f.is_file()) {
        bpe.to_vec()
    } else if fast.is_file() {
        vec![fast]
    } else {
        problems.missing.push(format!(
            "{dir}/vocab.json + {dir}/merges.txt (or {dir}/tokenizer.json)"
        ));
        Vec::new()
    };
    for extra in ["special_tokens_map.json", "tokenizer_config.json"] {
        let f = tok_dir.join(extra);
        if f.is_file() {
            files.push(f);
        }
    }
    (tok_dir, files)
}

/// The shard files named by a `*.safetensors.index.json` (relative to the root).
fn shard_list(root: &Path, dir: &str, index: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join(index))?)?;
    let map = v
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .context("no weight_map")?;
    let mut shards: Vec<String> = map
        .values()
        .map(|s| {
            s.as_str()
                .map(|s| format!("{dir}/{s}"))
                .context("bad weight_map entry")
        })
        .collect::<Result<_>>()?;
    shards.sort();
    shards.dedup();
    Ok(shards)
}

impl ModelFiles {
    /// Inspects a diffusers folder and returns its files and parsed configs, or one error that
    /// lists every missing and malformed file.
    pub fn check(root: &Path, variant: Variant) -> Result<Self> {
        Self::check_with(root, WeightsFrom::Folder(variant))
    }

    /// [`Self::check`] with the weights from `from`: the folder's files, or a single file (the
    /// folder then needs only its configs and tokenizers).
    pub fn check_with(root: &Path, from: WeightsFrom) -> Result<Self> {
        if !root.is_dir() {
            bail!("model folder {} does not exist", root.display());
        }
        let mut p = Problems::default();
        let index = read_config(
            root,
            "model_index.json",
            |t| ModelIndex::parse(t, "model_index.json"),
            "model_index.json",
            &mut p,
        );
        // Without a readable index, assume a standard latent-space SD folder.
        let has_vae = index.as_ref().is_none_or(|(i, _)| i.has("vae"));
        let family = match &index {
            Some((i, _)) => match Family::of(i) {
                Ok(f) => Some(f),
                Err(e) => {
                    p.malformed.push(format!("model_index.json ({e:#})"));
                    None
                }
            },
            None => Some(Family::Sd),
        };

        let unet_cfg = read_config(
            root,
            "unet/config.json",
            UNetConfig::parse,
            "unet config",
            &mut p,
        );
        let unet_w = from.find(root, "unet", "diffusion_pytorch_model", &mut p);
        let te_cfg = read_config(
            root,
            "text_encoder/config.json",
            TextEncoderConfig::parse,
            "text encoder config",
            &mut p,
        );
        let te_w = from.find(root, "text_encoder", "model", &mut p);
        let (vae_cfg, vae_w) = if has_vae {
            (
                read_config(
                    root,
                    "vae/config.json",
                    VaeConfig::parse,
                    "vae config",
                    &mut p,
                ),
                from.find(root, "vae", "diffusion_pytorch_model", &mut p),
            )
        } else {
            (None, None)
        };
        let sched = read_config(
            root,
            "scheduler/scheduler_config.json",
            SchedulerConfig::parse,
            "scheduler config",
            &mut p,
        );

        let (tok_dir, tokenizer_files) = find_tokenizer(root, "tokenizer", &mut p);
        // The family's further text encoders (SDXL's text_encoder_2 + tokenizer_2).
        let second = family.and_then(|f| f.text_slots().get(1)).map(|slot| {
            let cfg = read_config(
                root,
                &format!("{}/config.json", slot.encoder),
                TextEncoderConfig::parse,
                "text encoder config",
                &mut p,
            );
            let weights = from.find(root, slot.encoder, "model", &mut p);
            let (dir, files) = find_tokenizer(root, slot.tokenizer, &mut p);
            (cfg, weights, dir, files)
        });
        // The text width against the UNet's, when every encoder's config could be read.
        let second_width = match &second {
            None => Some(0),
            Some((Some((te2, _)), ..)) => Some(te2.hidden_size),
            Some((None, ..)) => None,
        };
        if let (Some((unet, _)), Some((te, _)), Some(second_width)) =
            (&unet_cfg, &te_cfg, second_width)
        {
            let width = te.hidden_size + second_width;
            if let Ok(blocks) = unet.down_blocks() {
                if let Some(b) = blocks.last().filter(|b| b.cross_attention_dim != width) {
                    p.malformed.push(format!(
                        "unet/config.json (cross_attention_dim {} but the text encoders give {width} \
                         values per token)",
                        b.cross_attention_dim
                    ));
                }
            }
        }

        if !p.is_empty() {
            let mut parts = Vec::new();
            if !p.missing.is_empty() {
                parts.push(format!("missing {}", p.missing.join(", ")));
            }
            if !p.malformed.is_empty() {
                parts.push(format!("malformed {}", p.malformed.join(", ")));
            }
            bail!(
                "model folder {} is incomplete: {}",
                root.display(),
                parts.join("; ")
            );
        }
        // Every Option below is Some: a None would have recorded a problem.
        let (index, _) = index.context("model_index.json")?;
        let (unet_config, unet_path) = unet_cfg.context("unet")?;
        let (te_config, te_path) = te_cfg.context("text_encoder")?;
        let (scheduler, scheduler_path) = sched.context("scheduler")?;
        let text_2 = match second {
            Some((Some((config, config_path)), Some(weights), tokenizer_dir, tokenizer_files)) => {
                Some(TextFiles {
                    encoder: Component::new(config, config_path, weights),
                    tokenizer_dir,
                    tokenizer_files,
                })
            }
            _ => None,
        };
        let vae = match (vae_cfg, vae_w) {
            (Some((config, config_path)), Some(weights)) => {
                Some(Component::new(config, config_path, weights))
            }
            _ => None,
        };
        Ok(Self {
            root: root.to_path_buf(),
            index,
            family: family.context("family")?,
            text_2,
            unet: Component::new(unet_config, unet_path, unet_w.context("unet weights")?),
            text_encoder: Component::new(te_config, te_path, te_w.context("text encoder weights")?),
            vae,
            tokenizer_dir: tok_dir,
            tokenizer_files,
            scheduler,
            scheduler_path,
            single_file: None,
            loras: Vec::new(),
            vae_from: None,
        })
    }

    /// Pixels per latent pixel: the VAE's scale factor, 1 for pixel-space models.
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.as_ref().map_or(1, |v| v.config.scale_factor())
    }

    /// Image sizes must be multiples of this: the VAE scale times the UNet's downsampling.
    pub fn size_multiple(&self) -> usize {
        self.vae_scale_factor() * self.unet.config.downsampling_factor()
    }

    /// diffusers' default image size `unet.sample_size * vae scale factor`, as (height, width).
    pub fn default_size(&self) -> Option<(usize, usize)> {
        self.unet.config.default_image_size(self.vae_scale_factor())
    }

    /// The latent shape `[1, C, H/s, W/s]` of an image size.
    pub fn latent_shape(&self, height: usize, width: usize) -> Vec<usize> {
        let s = self.vae_scale_factor();
        vec![1, self.unet.config.in_channels, height / s, width / s]
    }

    /// A stable identity of everything the ticket probe depends on: the configs and weights of
    /// the UNet and text encoder, the tokenizer files and the scheduler config (see [`fingerprint`]).
    pub fn fingerprint(&self) -> Result<String> {
        self.with_additions(self.base_fingerprint()?)
    }

    /// The digest of [`Self::fingerprint_files`] alone, named by their paths relative to the
    /// root (a single file as `single-file`), so it does not depend on where the model lives.
    pub fn base_fingerprint(&self) -> Result<String> {
        let labelled = self
            .fingerprint_files()
            .into_iter()
            .map(|f| {
                let label = if Some(&f) == self.single_file.as_ref() {
                    "single-file".to_string()
                } else {
                    relative_label(&self.root, &f)
                };
                (label, f)
            })
            .collect::<Vec<_>>();
        fingerprint_labelled(&labelled)
    }

    /// `base` (see [`Self::base_fingerprint`]) extended by what was put on the model at load:
    /// each LoRA's digest and weight, and a replaced VAE's weights. Unchanged when there is none,
    /// so stores of plain models keep their digest.
    pub fn with_additions(&self, base: String) -> Result<String> {
        if self.loras.is_empty() && self.vae_from.is_none() {
            return Ok(base);
        }
        let mut h = Sha256::new();
        h.update(base.as_bytes());
        for l in &self.loras {
            h.update(format!("\nlora {} {}", file_sha256(&l.path)?, l.weight).as_bytes());
        }
        if let (Some(_), Some(vae)) = (&self.vae_from, &self.vae) {
            for w in &vae.weights {
                h.update(format!("\nvae {}", file_sha256(w)?).as_bytes());
            }
        }
        Ok(hex(&h.finalize()))
    }

    /// The files [`Self::base_fingerprint`] hashes (so callers can cache the result across
    /// processes keyed by their sizes and modification times).
    pub fn fingerprint_files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.unet.config_path.clone(),
            self.text_encoder.config_path.clone(),
            self.scheduler_path.clone(),
        ];
        files.extend(self.tokenizer_files.iter().cloned());
        files.extend(self.unet.weights.iter().cloned());
        files.extend(self.text_encoder.weights.iter().cloned());
        if let Some(t) = &self.text_2 {
            files.push(t.encoder.config_path.clone());
            files.extend(t.tokenizer_files.iter().cloned());
            files.extend(t.encoder.weights.iter().cloned());
        }
        // A single file is every component's weights: hash it once.
        let mut seen = std::collections::HashSet::new();
        files.retain(|f| seen.insert(f.clone()));
        files
    }

    /// Replaces the VAE by `path` (`--vae`): a diffusers VAE folder (config.json and weights), a
    /// model folder with `vae/`, or one file of VAE weights in diffusers' names or the original
    /// ones (`first_stage_model.*`, or a standalone VAE's `encoder.down.*`), which keeps the
    /// model's VAE config.
    pub fn replace_vae(&mut self, path: &Path) -> Result<()> {
        let what = || format!("--vae {}", path.display());
        if path.is_dir() {
            let dir = if path.join("vae/config.json").is_file() {
                path.join("vae")
            } else {
                path.to_path_buf()
            };
            let mut p = Problems::default();
            let cfg = read_config(&dir, "config.json", VaeConfig::parse, "vae config", &mut p);
            let weights = find_weights(&dir, ".", "diffusion_pytorch_model", Variant::Full, &mut p);
            match (cfg, weights) {
                (Some((config, config_path)), Some(weights)) if p.is_empty() => {
                    self.vae = Some(Component::new(config, config_path, weights));
                }
                _ => bail!(
                    "{}: not a diffusers VAE folder ({})",
                    what(),
                    p.missing
                        .iter()
                        .map(|m| format!("missing {m}"))
                        .chain(p.malformed.iter().map(|m| format!("malformed {m}")))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        } else if path.is_file() {
            crate::single_file::refuse_pickle(path).with_context(what)?;
            let header = read_header(path).with_context(|| format!("{}: malformed", what()))?;
            let any = |prefix: &str| header.tensors.keys().any(|k| k.starts_with(prefix));
            let keys = if any(crate::single_file::VAE_PREFIX) {
                Some(Layout::Vae {
                    prefix: crate::single_file::VAE_PREFIX.to_string(),
                })
            } else if any("encoder.down.") || any("decoder.up.") {
                Some(Layout::Vae {
                    prefix: String::new(),
                })
            } else if any("encoder.down_blocks.") || any("decoder.up_blocks.") {
                None
            } else {
                bail!(
                    "{}: no VAE weights (expected encoder.*/decoder.* in diffusers' or the \
                     original names, or first_stage_model.*)",
                    what()
                );
            };
            let Some(old) = &self.vae else {
                bail!("{}: the model has no VAE (a pixel-space model)", what());
            };
            self.vae = Some(Component {
                config: old.config.clone(),
                config_path: old.config_path.clone(),
                weights: vec![path.to_path_buf()],
                keys,
            });
        } else {
            bail!("{}: no such file or folder", what());
        }
        self.vae_from = Some(path.to_path_buf());
        Ok(())
    }

    /// Sets the scheduler config's `prediction_type` (`--prediction`): `epsilon`,
    /// `v_prediction` or `sample`.
    pub fn set_prediction(&mut self, prediction: &str) -> Result<()> {
        crate::schedulers::Prediction::parse(prediction)
            .with_context(|| format!("--prediction {prediction}"))?;
        self.scheduler.prediction_type = prediction.to_string();
        Ok(())
    }
}

/// Memory-maps safetensors files into a VarBuilder; tensors are converted to `dtype` on access
/// (so fp16 files load as f32 on CPU by default).
pub fn var_builder(
    weights: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    var_builder_with(weights, Precision::uniform(dtype), device)
}

/// [`var_builder`] with weight matrices stored in `precision.weights` (see [`Precision`]).
pub fn var_builder_with(
    weights: &[PathBuf],
    precision: Precision,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    Ok(checked_var_builder(weights, precision, device)?.0)
}

/// [`var_builder_with`], and a record of the tensors the model asks for, so that after building
/// it [`UsedWeights::check_all_used`] can refuse a file with tensors the model has no place for
/// (another architecture's, or a file of several models). Integer tensors are refused when
/// asked for: weights are floating point.
pub fn checked_var_builder(
    weights: &[PathBuf],
    precision: Precision,
    device: &Device,
) -> Result<(VarBuilder<'static>, UsedWeights)> {
    source_var_builder(weights, None, None, precision, device)
}

/// Maps a diffusers weight name to its place in an original single file.
pub type KeyMap = Box<dyn Fn(&str) -> Result<Original> + Send + Sync>;

/// LoRAs to merge into one component's weights as they are read.
pub struct Merge {
    pub loras: Arc<Loras>,
    pub slot: Slot,
    /// The UNet's config, so UNet weights are also found under their original (SGM) names.
    pub unet_cfg: Option<UNetConfig>,
}

/// [`checked_var_builder`] over files whose names `keys` maps (a single file: no check that
/// every tensor is used, since it holds the other components and maybe EMA copies), merging
/// `merge`'s LoRAs.
pub fn source_var_builder(
    weights: &[PathBuf],
    keys: Option<KeyMap>,
    merge: Option<Merge>,
    precision: Precision,
    device: &Device,
) -> Result<(VarBuilder<'static>, UsedWeights)> {
    for w in weights {
        check_safetensors(w).with_context(|| format!("malformed weights {}", w.display()))?;
    }
    // SAFETY: the files are memory-mapped read-only; like every mmap user we rely on nobody
    // truncating them while the model is loaded.
    let files = unsafe { MmapedSafetensors::multi(weights) }.with_context(|| {
        let names: Vec<String> = weights.iter().map(|w| w.display().to_string()).collect();
        format!("cannot load weights {}", names.join(", "))
    })?;
    let all: Vec<String> = if keys.is_some() {
        Vec::new()
    } else {
        files.tensors().into_iter().map(|(name, _)| name).collect()
    };
    let used = UsedWeights {
        files: weights.to_vec(),
        all,
        used: Arc::new(Mutex::new(std::collections::HashSet::new())),
    };
    let backend = CheckedWeights {
        inner: files,
        keys,
        merge,
        used: used.used.clone(),
    };
    Ok((precision.var_builder(Box::new(backend), device), used))
}

/// Buffers of some exporters that no model reads (transformers saved CLIP's `position_ids`
/// before 4.31).
const IGNORED_TENSOR_SUFFIXES: &[&str] = &["position_ids"];

/// The tensor names of some weight files, and which of them a model asked for.
pub struct UsedWeights {
    files: Vec<PathBuf>,
    all: Vec<String>,
    used: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl UsedWeights {
    /// Fails naming the tensors of the files that the model built from them never read.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut extra: Vec<&str> = self
            .all
            .iter()
            .filter(|n| !used.contains(*n))
            .filter(|n| !IGNORED_TENSOR_SUFFIXES.iter().any(|s| n.ends_with(s)))
            .map(String::as_str)
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        extra.sort();
        let shown = extra.iter().take(3).copied().collect::<Vec<_>>().join(", ");
        let more = if extra.len() > 3 {
            format!(" and {} more", extra.len() - 3)
        } else {
            String::new()
        };
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        bail!(
            "{} holds {} tensor(s) this model has no place for: {shown}{more}; the file belongs \
             to another architecture or config",
            files.join(", "),
            extra.len()
        )
    }
}

/// Memory-mapped safetensors that record what is read and refuse integer tensors; names go
/// through `keys` (a single file), and LoRAs are merged on the way out.
struct CheckedWeights {
    inner: MmapedSafetensors,
    keys: Option<KeyMap>,
    merge: Option<Merge>,
    used: Arc<Mutex<std::collections::HashSet<String>>>,
}

fn msg(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

impl CheckedWeights {
    fn check(&self, name: &str) -> candle_core::Result<()> {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        if let Ok(view) = self.inner.get(name) {
            // Named by text: candle links its own version of the safetensors crate.
            let dtype = format!("{:?}", view.dtype());
            if !matches!(dtype.as_str(), "F16" | "BF16" | "F32" | "F64") {
                return Err(candle_core::Error::Msg(format!(
                    "tensor {name} is {dtype}; weights must be floating point (F16, BF16, F32 \
                     or F64)"
                )));
            }
        }
        Ok(())
    }

    /// Where `name` is stored.
    fn original(&self, name: &str) -> candle_core::Result<Original> {
        match &self.keys {
            None => Ok(Original {
                name: name.to_string(),
                part: Part::Whole,
            }),
            Some(map) => map(name).map_err(msg),
        }
    }

    /// The weight `name` in `dtype` on `dev`: its part of the stored tensor, LoRAs merged.
    fn fetch(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let o = self.original(name)?;
        self.check(&o.name)?;
        if self.keys.is_some() && self.inner.get(&o.name).is_err() {
            return Err(msg(format!(
                "the checkpoint has no tensor `{}` (the weight `{name}`)",
                o.name
            )));
        }
        let t = self.inner.load(&o.name, dev)?;
        let t = match o.part {
            Part::Whole => t,
            Part::Rows { index, of } => {
                let n = t.dim(0)? / of;
                t.narrow(0, index * n, n)?
            }
            Part::Squeeze1x1 if t.rank() == 4 => t.squeeze(3)?.squeeze(2)?,
            Part::Squeeze1x1 => t,
            Part::Transposed => t.t()?.contiguous()?,
        };
        let Some(m) = &self.merge else {
            return t.to_dtype(dtype);
        };
        match m
            .loras
            .delta(m.slot, name, t.dims(), m.unet_cfg.as_ref(), dev)
            .map_err(|e| msg(format!("{e:#}")))?
        {
            Some(delta) => (t.to_dtype(DType::F32)? + delta)?.to_dtype(dtype),
            None => t.to_dtype(dtype),
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for CheckedWeights {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.fetch(name, dtype, dev)?;
        if t.shape() != &s {
            let stored = match &self.keys {
                Some(_) => format!(" (stored as `{}`)", self.original(name)?.name),
                None => String::new(),
            };
            return Err(msg(format!(
                "weight `{name}`{stored} has shape {:?} in the file but the config gives {:?}",
                t.dims(),
                s.dims()
            )));
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.fetch(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.original(name)
            .is_ok_and(|o| self.inner.get(&o.name).is_ok())
    }
}

// ---------------------------------------------------------------------------------------------
// Single-file checkpoints

impl ModelFiles {
    /// The model of the single file `file` (recognised as `found`), with the configs and
    /// tokenizers of the diffusers folder `config` (`--config`, or the family's standard one).
    /// `vae_given`: a `--vae` will replace the VAE, so the file need not hold one.
    pub fn single_file(
        file: &Path,
        config: &Path,
        found: &single_file::Recognised,
        vae_given: bool,
    ) -> Result<ModelFiles> {
        let mut files = ModelFiles::check_with(config, WeightsFrom::SingleFile(file))
            .with_context(|| format!("the config folder of {}", file.display()))?;
        let family = match found.kind {
            Kind::Sd1 | Kind::Sd2 => Family::Sd,
            Kind::Sdxl => Family::Sdxl,
        };
        if files.family != family {
            bail!(
                "{} is a {} checkpoint, but the config folder {} is for {}",
                file.display(),
                found.kind.label(),
                config.display(),
                files.family.label()
            );
        }
        if !found.has_vae && !vae_given {
            bail!(
                "{} holds no VAE (first_stage_model.*): give one with --vae FILE|FOLDER",
                file.display()
            );
        }
        let text = |prefix: &str| -> Layout {
            let prefix = prefix.to_string();
            if prefix.ends_with(".model.") {
                Layout::OpenClip { prefix }
            } else {
                Layout::Clip { prefix }
            }
        };
        files.unet.keys = Some(Layout::Unet);
        match found.kind {
            Kind::Sd1 => files.text_encoder.keys = Some(text(single_file::SD1_TEXT_PREFIX)),
            Kind::Sd2 => files.text_encoder.keys = Some(text(single_file::SD2_TEXT_PREFIX)),
            Kind::Sdxl => {
                files.text_encoder.keys = Some(text(single_file::SDXL_TEXT_PREFIX));
                if let Some(t) = files.text_2.as_mut() {
                    t.encoder.keys = Some(text(single_file::SDXL_TEXT_2_PREFIX));
                }
            }
        }
        if let Some(v) = files.vae.as_mut() {
            v.keys = Some(Layout::Vae {
                prefix: single_file::VAE_PREFIX.to_string(),
            });
        }
        files.single_file = Some(file.to_path_buf());
        Ok(files)
    }

    /// This folder's weights under their original single-file names (see
    /// [`single_file::original_tensors_of`]): what tests and benchmarks make single files from.
    pub fn original_tensors(&self) -> Result<std::collections::BTreeMap<String, Tensor>> {
        let blocks = self
            .vae
            .as_ref()
            .map_or(0, |v| v.config.block_out_channels.len());
        let kind = Kind::of(self.family, &self.text_encoder.config.hidden_act);
        single_file::original_tensors_of(&self.original_layouts(kind), &self.unet.config, blocks)
    }

    /// Each component's weight files and its place in a single file of this kind.
    fn original_layouts(&self, kind: Kind) -> Vec<(Vec<PathBuf>, Layout)> {
        let files = self;
        let l = |p: &str| p.to_string();
        let mut out = vec![(files.unet.weights.clone(), Layout::Unet)];
        if let Some(v) = &files.vae {
            out.push((
                v.weights.clone(),
                Layout::Vae {
                    prefix: l(single_file::VAE_PREFIX),
                },
            ));
        }
        let te = files.text_encoder.weights.clone();
        match kind {
            Kind::Sd1 => out.push((
                te,
                Layout::Clip {
                    prefix: l(single_file::SD1_TEXT_PREFIX),
                },
            )),
            Kind::Sd2 => out.push((
                te,
                Layout::OpenClip {
                    prefix: l(single_file::SD2_TEXT_PREFIX),
                },
            )),
            Kind::Sdxl => {
                out.push((
                    te,
                    Layout::Clip {
                        prefix: l(single_file::SDXL_TEXT_PREFIX),
                    },
                ));
                if let Some(t) = &files.text_2 {
                    out.push((
                        t.encoder.weights.clone(),
                        Layout::OpenClip {
                            prefix: l(single_file::SDXL_TEXT_2_PREFIX),
                        },
                    ));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Fingerprint

/// (canonical path, size, mtime): a file's digest is reused while these stay the same.
type DigestKey = (PathBuf, u64, std::time::SystemTime);

/// Per-file digests already computed in this process.
static DIGESTS: Mutex<Option<HashMap<DigestKey, String>>> = Mutex::new(None);

/// The sha256 of one file, hex. Hugging Face cache blobs of LFS files are named by their sha256,
/// so a file that resolves to `.../blobs/<64 hex>` is not read at all; others are streamed once
/// per process.
pub fn file_sha256(path: &Path) -> Result<String> {
    let canon =
        std::fs::canonicalize(path).with_context(|| format!("cannot read {}", path.display()))?;
    if canon.parent().and_then(Path::file_name) == Some(std::ffi::OsStr::new("blobs")) {
        if let Some(name) = canon.file_name().and_then(|n| n.to_str()) {
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(name.to_ascii_lowercase());
            }
        }
    }
    let meta = std::fs::metadata(&canon)?;
    let key = (canon.clone(), meta.len(), meta.modified()?);
    if let Some(d) = DIGESTS
        .lock()
        .ok()
        .and_then(|m| m.as_ref().and_then(|m| m.get(&key).cloned()))
    {
        return Ok(d);
    }
    let mut f =
        std::fs::File::open(&canon).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let digest = hex(&h.finalize());
    if let Ok(mut m) = DIGESTS.lock() {
        m.get_or_insert_with(HashMap::new)
            .insert(key, digest.clone());
    }
    Ok(digest)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `f` relative to `root`, with `/` separators (the whole path when it is not under `root`).
fn relative_label(root: &Path, f: &Path) -> String {
    f.strip_prefix(root)
        .unwrap_or(f)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// sha256 over `relative path NUL file sha256 LF` of each file, sorted by relative path, so the
/// value does not depend on where the folder lives (a copy and the HF cache agree).
pub fn fingerprint(root: &Path, files: &[PathBuf]) -> Result<String> {
    let labelled: Vec<(String, PathBuf)> = files
        .iter()
        .map(|f| (relative_label(root, f), f.clone()))
        .collect();
    fingerprint_labelled(&labelled)
}

/// [`fingerprint`] over files given with their labels.
pub fn fingerprint_labelled(files: &[(String, PathBuf)]) -> Result<String> {
    let mut entries = Vec::new();
    for (label, f) in files {
        entries.push((label.clone(), file_sha256(f)?));
    }
    entries.sort();
    let mut h = Sha256::new();
    for (rel, d) in entries {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(d.as_bytes());
        h.update([b'\n']);
    }
    Ok(hex(&h.finalize()))
}
