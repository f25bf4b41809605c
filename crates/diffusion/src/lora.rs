//! LoRA files (`--lora FILE[:WEIGHT]`), merged into the weights as they are loaded.
//!
//! Two formats are read:
//! - kohya (sd-scripts, A1111, ComfyUI): `lora_unet_<module>`, `lora_te_<module>` (SD 1.x/2.x),
//!   `lora_te1_`/`lora_te2_` (SDXL), each with `.lora_down.weight` [r, in(, kh, kw)],
//!   `.lora_up.weight` [out, r(, 1, 1)] and an optional scalar `.alpha`. The module is the
//!   diffusers path with dots as underscores, or for the UNet its original (SGM) path
//!   (`input_blocks_4_1_...`), as kohya writes SDXL LoRAs.
//! - diffusers/PEFT: `unet.<path>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r] (also
//!   `text_encoder.`, `text_encoder_2.`); alpha = rank unless the file has `.alpha`.
//!
//! The merged weight is `W + weight * alpha / r * (up @ down)`, diffusers' `fuse_lora(lora_scale=
//! weight)`, computed in f32 and then stored in the model's dtype. Every LoRA weight must land
//! in the model: one that matches nothing, or a LoRA of the other family, is an error.

use crate::config::UNetConfig;
use crate::family::Family;
use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One `--lora FILE[:WEIGHT]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraFile {
    pub path: PathBuf,
    pub weight: f64,
}

impl LoraFile {
    /// Parses `FILE[:WEIGHT]` (weight 1 when absent). A path that itself contains `:` is taken
    /// whole when what follows the last `:` is not a number.
    pub fn parse(spec: &str) -> Result<LoraFile> {
        if let Some((path, w)) = spec.rsplit_once(':') {
            if let Ok(weight) = w.parse::<f64>() {
                if !weight.is_finite() {
                    bail!("--lora {spec}: the weight must be a finite number");
                }
                return Ok(LoraFile {
                    path: PathBuf::from(path),
                    weight,
                });
            }
        }
        Ok(LoraFile {
            path: PathBuf::from(spec),
            weight: 1.0,
        })
    }
}

/// The model part a LoRA weight targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    Unet,
    /// SD 1.x/2.x's text encoder (`lora_te_`).
    Text,
    /// SDXL's first text encoder (`lora_te1_`).
    Text1,
    /// SDXL's second text encoder (`lora_te2_`).
    Text2,
}

impl Slot {
    /// The slot of a model's `i`-th text encoder.
    pub fn text(family: Family, i: usize) -> Slot {
        match (family, i) {
            (Family::Sd, _) => Slot::Text,
            (Family::Sdxl, 0) => Slot::Text1,
            (Family::Sdxl, _) => Slot::Text2,
        }
    }
}

/// One low-rank update: the tensor names of its factors.
#[derive(Debug)]
struct Pair {
    down: String,
    up: String,
    alpha: Option<String>,
}

/// One opened LoRA file.
struct Opened {
    file: LoraFile,
    tensors: MmapedSafetensors,
    /// (slot, module with underscores) -> its factors.
    pairs: BTreeMap<(Slot, String), Pair>,
}

/// The LoRAs of a model, open for merging, with a record of which updates were applied.
pub struct Loras {
    files: Vec<Opened>,
    used: Mutex<HashSet<(usize, Slot, String)>>,
}

/// A module key as it is matched: text encoder modules without transformers' `text_model_`
/// (kohya writes it; other exporters, and files saved by newer transformers, do not).
fn text_module(slot: Slot, module: &str) -> String {
    match slot {
        Slot::Unet => module.to_string(),
        _ => module
            .strip_prefix("text_model_")
            .unwrap_or(module)
            .to_string(),
    }
}

/// (slot, module, factor) of one tensor name, or None when it is no LoRA factor.
fn split_key(name: &str, family: Family) -> Option<(Slot, String, &'static str)> {
    let kohya = [
        ("lora_unet_", Slot::Unet),
        ("lora_te1_", Slot::Text1),
        ("lora_te2_", Slot::Text2),
        ("lora_te_", Slot::Text),
    ];
    for (prefix, slot) in kohya {
        if let Some(rest) = name.strip_prefix(prefix) {
            for (suffix, factor) in [
                (".lora_down.weight", "down"),
                (".lora_up.weight", "up"),
                (".alpha", "alpha"),
            ] {
                if let Some(module) = rest.strip_suffix(suffix) {
                    return Some((slot, text_module(slot, module), factor));
                }
            }
            return None;
        }
    }
    let text = if family == Family::Sdxl {
        Slot::Text1
    } else {
        Slot::Text
    };
    let peft = [
        ("unet.", Slot::Unet),
        ("text_encoder_2.", Slot::Text2),
        ("text_encoder.", text),
    ];
    for (prefix, slot) in peft {
        if let Some(rest) = name.strip_prefix(prefix) {
            for (suffix, factor) in [
                (".lora_A.weight", "down"),
                (".lora_B.weight", "up"),
                (".alpha", "alpha"),
            ] {
                if let Some(module) = rest.strip_suffix(suffix) {
                    return Some((slot, text_module(slot, &module.replace('.', "_")), factor));
                }
            }
            return None;
        }
    }
    None
}

impl Loras {
    /// Opens and checks the LoRA files for a model of `family`: every tensor must be a factor of
    /// a complete update, and the family must be the model's.
    pub fn open(files: &[LoraFile], family: Family) -> Result<Loras> {
        let mut opened = Vec::new();
        for file in files {
            opened.push(
                open_one(file, family).with_context(|| format!("LoRA {}", file.path.display()))?,
            );
        }
        Ok(Loras {
            files: opened,
            used: Mutex::new(HashSet::new()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The sum of the updates of every LoRA to the weight `name` of `slot` (shape `shape`), in
    /// f32 on `dev`, or None when no LoRA touches it. `unet_cfg` lets UNet weights also be found
    /// under their original (SGM) names.
    pub fn delta(
        &self,
        slot: Slot,
        name: &str,
        shape: &[usize],
        unet_cfg: Option<&UNetConfig>,
        dev: &Device,
    ) -> Result<Option<Tensor>> {
        let Some(module) = name.strip_suffix(".weight") else {
            return Ok(None);
        };
        let mut keys = vec![text_module(slot, &module.replace('.', "_"))];
        if let (Slot::Unet, Some(cfg)) = (slot, unet_cfg) {
            if let Ok(o) = crate::single_file::unet(name, cfg) {
                if let Some(m) = o
                    .name
                    .strip_prefix(crate::single_file::UNET_PREFIX)
                    .and_then(|n| n.strip_suffix(".weight"))
                {
                    keys.push(m.replace('.', "_"));
                }
            }
        }
        let mut total: Option<Tensor> = None;
        for (i, f) in self.files.iter().enumerate() {
            for key in &keys {
                let Some(pair) = f.pairs.get(&(slot, key.clone())) else {
                    continue;
                };
                let d = update(f, pair, shape, name)
                    .with_context(|| format!("LoRA {}", f.file.path.display()))?;
                self.used
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((i, slot, key.clone()));
                total = Some(match total {
                    None => d,
                    Some(t) => (t + d)?,
                });
                break;
            }
        }
        total
            .map(|t| t.to_device(dev))
            .transpose()
            .map_err(Into::into)
    }

    /// Fails naming the updates of a LoRA that matched no weight of the model (a LoRA of another
    /// architecture, or of a part the model does not have).
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        for (i, f) in self.files.iter().enumerate() {
            let unused: Vec<String> = f
                .pairs
                .keys()
                .filter(|(slot, m)| !used.contains(&(i, *slot, m.clone())))
                .map(|(slot, m)| format!("{slot:?} {m}"))
                .collect();
            if !unused.is_empty() {
                bail!(
                    "LoRA {}: {} of its {} updates match no weight of this model (e.g. {}): it \
                     was made for another model or architecture",
                    f.file.path.display(),
                    unused.len(),
                    f.pairs.len(),
                    unused[0]
                );
            }
        }
        Ok(())
    }
}

fn open_one(file: &LoraFile, family: Family) -> Result<Opened> {
    let header = crate::safetensors_header::read_header(&file.path)?;
    // SAFETY: read-only map of a file nobody should truncate while the model loads.
    let tensors = unsafe { MmapedSafetensors::new(&file.path) }.context("cannot map the file")?;
    // (slot, module) -> [down, up, alpha] as they are found.
    let mut pairs: BTreeMap<(Slot, String), [Option<String>; 3]> = BTreeMap::new();
    for name in header.tensors.keys() {
        let Some((slot, module, factor)) = split_key(name, family) else {
            bail!(
                "tensor `{name}` is not a LoRA factor semi reads (kohya lora_down/lora_up/alpha \
                 or PEFT lora_A/lora_B; LoHa, LoKr and DoRA are not supported)"
            );
        };
        let entry = pairs.entry((slot, module)).or_default();
        let i = match factor {
            "down" => 0,
            "up" => 1,
            _ => 2,
        };
        entry[i] = Some(name.clone());
    }
    if pairs.is_empty() {
        bail!("the file holds no LoRA weights");
    }
    let slots: HashSet<Slot> = pairs.keys().map(|(s, _)| *s).collect();
    match family {
        Family::Sd if slots.contains(&Slot::Text1) || slots.contains(&Slot::Text2) => bail!(
            "this LoRA is for SDXL (it has weights for SDXL's two text encoders) and the model is \
             SD 1.x/2.x"
        ),
        Family::Sdxl if slots.contains(&Slot::Text) => bail!(
            "this LoRA is for SD 1.x/2.x (lora_te_ weights for one text encoder) and the model is \
             SDXL"
        ),
        _ => {}
    }
    let mut out = BTreeMap::new();
    for ((slot, module), [down, up, alpha]) in pairs {
        let (Some(down), Some(up)) = (down, up) else {
            bail!("the update of `{module}` lacks its down (lora_A) or up (lora_B) factor");
        };
        out.insert((slot, module), Pair { down, up, alpha });
    }
    Ok(Opened {
        file: file.clone(),
        tensors,
        pairs: out,
    })
}

/// `weight * alpha / r * up @ down` shaped as the target weight `shape`, in f32 on the CPU.
fn update(f: &Opened, pair: &Pair, shape: &[usize], target: &str) -> Result<Tensor> {
    let cpu = Device::Cpu;
    let load = |n: &str| -> Result<Tensor> { Ok(f.tensors.load(n, &cpu)?.to_dtype(DType::F32)?) };
    let down = load(&pair.down)?;
    let up = load(&pair.up)?;
    let rank = down.dims().first().copied().unwrap_or(0);
    if rank == 0 || up.rank() < 2 || up.dims()[1] != rank {
        bail!(
            "`{}` {:?} and `{}` {:?} are not the factors of one rank-r update",
            pair.down,
            down.dims(),
            pair.up,
            up.dims()
        );
    }
    let alpha = match &pair.alpha {
        Some(a) => load(a)?.flatten_all()?.to_vec1::<f32>()?[0] as f64,
        None => rank as f64,
    };
    let out = up.dims()[0];
    let d = up
        .reshape((out, rank))?
        .matmul(&down.reshape((rank, ()))?)?;
    let want: usize = shape.iter().product();
    if d.elem_count() != want || out != shape[0] {
        bail!(
            "`{}` makes a {:?} update for `{target}`, which is {shape:?} in this model (a LoRA for \
             another model?)",
            pair.up,
            [out, d.dims()[1]]
        );
    }
    Ok((d.reshape(shape)? * (f.file.weight * alpha / rank as f64))?)
}

/// The LoRA files named, each checked to exist (before anything is loaded).
pub fn check_files(files: &[LoraFile]) -> Result<()> {
    for f in files {
        let p: &Path = &f.path;
        if !p.is_file() {
            bail!("--lora {}: no such file", p.display());
        }
        crate::single_file::refuse_pickle(p).with_context(|| format!("--lora {}", p.display()))?;
        crate::safetensors_header::read_header(p)
            .with_context(|| format!("--lora {}: malformed", p.display()))?;
    }
    Ok(())
}
