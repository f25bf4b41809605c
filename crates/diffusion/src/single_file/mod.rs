//! Single-file checkpoints: one `.safetensors` in the original CompVis/Stability layout (SD 1.x,
//! SD 2.x, SDXL), as model hubs, A1111 and ComfyUI keep them.
//!
//! [`recognise`] reads the file's header (names and shapes, no data) and tells the family as
//! diffusers' `infer_diffusers_model_type` does; `loading::ModelFiles::single_file` pairs
//! the file with a diffusers folder of configs and tokenizers (`--config`, or the family's
//! standard one) and marks each component's weights as stored under original names
//! ([`Layout`]). The loader then reads every weight lazily from the one memory-mapped file
//! through the key map of [`keys`]: no converted second copy is made.
//!
//! A `.ckpt` is a Python pickle, which can run code when read; it is refused ([`refuse_pickle`]).

mod keys;

pub use keys::{clip, open_clip, unet, vae, Original, Part};

use crate::config::UNetConfig;
use crate::safetensors_header::{read_header, Header};
use anyhow::{bail, Result};
use std::path::Path;

/// Where a component's weights sit in a single file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `model.diffusion_model.*`.
    Unet,
    /// `first_stage_model.*`, or a standalone VAE file's `encoder.*`/`decoder.*` (prefix "").
    Vae { prefix: String },
    /// transformers' CLIP keys under `prefix` (SD 1.x, SDXL's first encoder).
    Clip { prefix: String },
    /// OpenCLIP keys under `prefix` (SD 2.x, SDXL's second encoder).
    OpenClip { prefix: String },
}

impl Layout {
    /// The original place of the diffusers weight `name` of this component. `unet`: the UNet's
    /// config (the block offsets depend on it); `vae_blocks`: the VAE's number of levels.
    pub fn original(
        &self,
        name: &str,
        unet_cfg: &UNetConfig,
        vae_blocks: usize,
    ) -> Result<Original> {
        match self {
            Layout::Unet => unet(name, unet_cfg),
            Layout::Vae { prefix } => {
                let mut o = vae(name, vae_blocks)?;
                if let Some(rest) = o.name.strip_prefix("first_stage_model.") {
                    o.name = format!("{prefix}{rest}");
                }
                Ok(o)
            }
            Layout::Clip { prefix } => Ok(clip(name, prefix)),
            Layout::OpenClip { prefix } => open_clip(name, prefix),
        }
    }
}

/// The original prefixes, and what each one is.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const VAE_PREFIX: &str = "first_stage_model.";
pub const SD1_TEXT_PREFIX: &str = "cond_stage_model.transformer.";
pub const SD2_TEXT_PREFIX: &str = "cond_stage_model.model.";
pub const SDXL_TEXT_PREFIX: &str = "conditioner.embedders.0.transformer.";
pub const SDXL_TEXT_2_PREFIX: &str = "conditioner.embedders.1.model.";

/// The family of a single file, as diffusers tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SD 1.x: CLIP ViT-L under `cond_stage_model.transformer.`.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H under `cond_stage_model.model.`. diffusers takes it as
    /// v-prediction (SD 2.1 at 768) unless told otherwise.
    Sd2,
    /// SDXL base: CLIP ViT-L and OpenCLIP bigG under `conditioner.embedders.{0,1}`.
    Sdxl,
}

impl Kind {
    /// The folder of `models/standard/` holding this family's configs; `epsilon`: SD 2.x's
    /// epsilon-prediction base model (512) rather than 2.1 (v-prediction, 768).
    pub fn standard_config(self, epsilon: bool) -> &'static str {
        match (self, epsilon) {
            (Kind::Sd1, _) => "sd1",
            (Kind::Sd2, false) => "sd2",
            (Kind::Sd2, true) => "sd2-base",
            (Kind::Sdxl, _) => "sdxl",
        }
    }

    /// The kind of a diffusers model of `family` whose (first) text encoder uses `text_act`,
    /// as tools/to_single_file.py tells it: SDXL by its family, SD 1.x by CLIP's quick_gelu,
    /// else SD 2.x (OpenCLIP).
    pub fn of(family: crate::family::Family, text_act: &str) -> Kind {
        match family {
            crate::family::Family::Sdxl => Kind::Sdxl,
            _ if text_act == "quick_gelu" => Kind::Sd1,
            _ => Kind::Sd2,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Sd1 => "SD 1.x",
            Kind::Sd2 => "SD 2.x",
            Kind::Sdxl => "SDXL",
        }
    }
}

/// What [`recognise`] found in a single file.
#[derive(Debug, Clone)]
pub struct Recognised {
    pub kind: Kind,
    /// The file holds a VAE (`first_stage_model.*`); without one, `--vae` must give it.
    pub has_vae: bool,
    pub header: Header,
}

fn has_prefix(header: &Header, prefix: &str) -> bool {
    header.tensors.keys().any(|k| k.starts_with(prefix))
}

/// Refuses a Python pickle (`.ckpt`, `.pt`, `.bin`, or any file starting like one) in one line
/// that says how to convert it. semi never unpickles: reading a pickle can run arbitrary code.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut magic = [0u8; 4];
    let head = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut magic))
        .unwrap_or(0);
    // Protocol-2+ pickles start with 0x80 <protocol>; torch.save's zip format with "PK\x03\x04".
    let pickle_magic = (head >= 2 && magic[0] == 0x80 && (2..=5).contains(&magic[1]))
        || (head == 4 && magic == *b"PK\x03\x04");
    if pickle_magic || matches!(ext.as_str(), "ckpt" | "pt" | "pth" | "bin") {
        bail!(
            "{} is a Python pickle, which semi does not read (unpickling can run code); convert \
             it once to .safetensors, e.g. python -c \"import torch, safetensors.torch as st; \
             sd = torch.load('{0}', weights_only=True); sd = sd.get('state_dict', sd); \
             st.save_file({{k: v.contiguous() for k, v in sd.items() if torch.is_tensor(v)}}, \
             'model.safetensors')\"",
            path.display()
        );
    }
    Ok(())
}

/// Reads the header of a single-file checkpoint and tells its family, or fails listing what was
/// recognised and what is missing.
pub fn recognise(path: &Path) -> Result<Recognised> {
    refuse_pickle(path)?;
    let header = read_header(path)?;
    let unet = has_prefix(&header, UNET_PREFIX);
    let has_vae = has_prefix(&header, VAE_PREFIX);
    let parts = [
        (SD1_TEXT_PREFIX, "a CLIP text encoder (SD 1.x)"),
        (SD2_TEXT_PREFIX, "an OpenCLIP text encoder (SD 2.x)"),
        (SDXL_TEXT_PREFIX, "SDXL's first text encoder"),
        (SDXL_TEXT_2_PREFIX, "SDXL's second text encoder"),
    ];
    let found: Vec<&str> = std::iter::once((UNET_PREFIX, "a UNet"))
        .chain(std::iter::once((VAE_PREFIX, "a VAE")))
        .chain(parts)
        .filter(|(p, _)| has_prefix(&header, p))
        .map(|(_, what)| what)
        .collect();
    let kind = if has_prefix(&header, SDXL_TEXT_PREFIX) && has_prefix(&header, SDXL_TEXT_2_PREFIX) {
        Some(Kind::Sdxl)
    } else if has_prefix(&header, "conditioner.embedders.0.model.") {
        bail!(
            "{} looks like an SDXL refiner (one OpenCLIP encoder in conditioner.embedders.0), \
             which semi does not run",
            path.display()
        );
    } else if has_prefix(&header, SD2_TEXT_PREFIX) {
        Some(Kind::Sd2)
    } else if has_prefix(&header, SD1_TEXT_PREFIX) {
        Some(Kind::Sd1)
    } else {
        None
    };
    let in_channels = header
        .tensors
        .get("model.diffusion_model.input_blocks.0.0.weight")
        .and_then(|t| t.shape.get(1).copied());
    match (unet, kind) {
        (true, Some(kind)) => {
            if in_channels.is_some_and(|c| c != 4) {
                bail!(
                    "{} is a {} checkpoint whose UNet takes {} input channels (an inpainting or \
                     other variant); semi runs text-to-image models (4 channels)",
                    path.display(),
                    kind.label(),
                    in_channels.unwrap_or_default()
                );
            }
            Ok(Recognised {
                kind,
                has_vae,
                header,
            })
        }
        _ => {
            let mut missing = Vec::new();
            if !unet {
                missing.push(format!("a UNet ({UNET_PREFIX}*)"));
            }
            if kind.is_none() {
                missing.push(format!(
                    "text encoders ({SD1_TEXT_PREFIX}*, {SD2_TEXT_PREFIX}*, or \
                     {SDXL_TEXT_PREFIX}* + {SDXL_TEXT_2_PREFIX}*)"
                ));
            }
            let found = if found.is_empty() {
                format!(
                    "none of its {} tensors (e.g. {})",
                    header.tensors.len(),
                    header.tensors.keys().next().map_or("-", String::as_str)
                )
            } else {
                found.join(", ")
            };
            bail!(
                "{} is not a Stable Diffusion 1.x/2.x/XL single-file checkpoint: recognised {found}; \
                 missing {}",
                path.display(),
                missing.join(" and ")
            )
        }
    }
}

/// A diffusers folder's weights under their original single-file names (the inverse of the key
/// map: q, k and v stacked into OpenCLIP's `in_proj`, the VAE attention as 1x1 convolutions,
/// OpenCLIP's projection transposed), on the CPU in their stored dtype. What tests and
/// benchmarks make single files from; tools/to_single_file.py is the independent reference.
/// A single file's tensors made from weight files given with their layouts (the inverse of
/// the key map; `loading::ModelFiles::original_tensors` for a whole folder); `unet_cfg` and `vae_blocks`
/// place the UNet's and the VAE's blocks.
pub fn original_tensors_of(
    components: &[(Vec<std::path::PathBuf>, Layout)],
    unet_cfg: &UNetConfig,
    vae_blocks: usize,
) -> Result<std::collections::BTreeMap<String, candle_core::Tensor>> {
    use candle_core::{Device, Tensor};
    let (files_cfg, blocks) = (unet_cfg, vae_blocks);
    let mut parts: std::collections::BTreeMap<String, Vec<(Part, Tensor)>> = Default::default();
    for (weights, layout) in components {
        for w in weights {
            for (name, t) in candle_core::safetensors::load(w, &Device::Cpu)? {
                if name.ends_with("position_ids") {
                    continue;
                }
                let o = layout.original(&name, files_cfg, blocks)?;
                parts.entry(o.name).or_default().push((o.part, t));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for (name, mut ts) in parts {
        let t = match ts[0].0 {
            Part::Whole => ts.remove(0).1,
            Part::Squeeze1x1 => ts[0].1.unsqueeze(2)?.unsqueeze(3)?,
            Part::Transposed => ts[0].1.t()?.contiguous()?,
            Part::Rows { of, .. } => {
                if ts.len() != of {
                    bail!("{name}: {} of its {of} row blocks", ts.len());
                }
                ts.sort_by_key(|(p, _)| match p {
                    Part::Rows { index, .. } => *index,
                    _ => usize::MAX,
                });
                let rows: Vec<Tensor> = ts.into_iter().map(|(_, t)| t).collect();
                Tensor::cat(&rows, 0)?
            }
        };
        out.insert(name, t);
    }
    Ok(out)
}
