//! Where a diffusers weight lives in an original single-file checkpoint (CompVis/Stability LDM and
//! SGM layouts): the key map a single-file loader asks per tensor, so it can read each weight
//! lazily from the memory-mapped file, with no converted second copy.
//!
//! | diffusers component | original prefix |
//! |---|---|
//! | `unet` | `model.diffusion_model.` (`input_blocks`, `middle_block`, `output_blocks`) |
//! | `vae` | `first_stage_model.` (`encoder.down`, `decoder.up` reversed, `mid.attn_1`) |
//! | SD 1.x `text_encoder` | `cond_stage_model.transformer.` (transformers' own keys) |
//! | SD 2.x `text_encoder` | `cond_stage_model.model.` (OpenCLIP: fused `in_proj`) |
//! | SDXL `text_encoder` | `conditioner.embedders.0.transformer.` |
//! | SDXL `text_encoder_2` | `conditioner.embedders.1.model.` (OpenCLIP-bigG) |
//!
//! `tools/to_single_file.py` writes the inverse, and its `--keys` output is what the tests hold
//! this map to.

use anyhow::{bail, Result};

use crate::config::UNetConfig;

/// The part of an original tensor that is the diffusers weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Whole,
    /// Rows `index * n / of .. (index + 1) * n / of` of the first dimension: OpenCLIP's fused
    /// `in_proj` holds q, k and v stacked.
    Rows {
        index: usize,
        of: usize,
    },
    /// A 1x1 convolution `[out, in, 1, 1]` read as a linear weight `[out, in]` (the VAE's
    /// mid-block attention).
    Squeeze1x1,
    /// Transposed: OpenCLIP's `text_projection` is multiplied as `x @ P`.
    Transposed,
}

/// One diffusers weight's place in the original file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub name: String,
    pub part: Part,
}

impl Original {
    fn whole(name: String) -> Self {
        Original {
            name,
            part: Part::Whole,
        }
    }
}

/// A resnet's diffusers parts and their LDM names.
const UNET_RESNET: [(&str, &str); 6] = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
];

/// `rest` with its first dotted part renamed by `table` (longest diffusers part first).
fn rename_head(rest: &str, table: &[(&str, &str)]) -> String {
    for (d, o) in table {
        if let Some(tail) = rest.strip_prefix(d).filter(|t| t.starts_with('.')) {
            return format!("{o}{tail}");
        }
    }
    rest.to_string()
}

/// The UNet weight `name` (diffusers path, e.g. `down_blocks.1.attentions.0.proj_in.weight`).
pub fn unet(name: &str, cfg: &UNetConfig) -> Result<Original> {
    let fixed = [
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("conv_in", "input_blocks.0.0"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
    ];
    let ldm = |s: String| Ok(Original::whole(format!("model.diffusion_model.{s}")));
    for (d, o) in fixed {
        if let Some(tail) = name.strip_prefix(d).filter(|t| t.starts_with('.')) {
            return ldm(format!("{o}{tail}"));
        }
    }
    let parts: Vec<&str> = name.splitn(5, '.').collect();
    let index = |i: usize| -> Result<usize> {
        parts.get(i).and_then(|p| p.parse().ok()).ok_or_else(|| {
            anyhow::anyhow!("single file: no original name for UNet weight `{name}`")
        })
    };
    let tail_from = |i: usize| parts[i..].join(".");
    // A resnet (`.0.`) or transformer (`.1.`) of a down or up block: `<side>.<start + j>...`.
    let layer = |side: &str, start: usize| -> Result<Option<Original>> {
        let (sub, tail) = match parts.get(2).copied() {
            Some("resnets") => (0, rename_head(&tail_from(4), &UNET_RESNET)),
            Some("attentions") => (1, tail_from(4)),
            _ => return Ok(None),
        };
        let i = start + index(3)?;
        Ok(Some(Original::whole(format!(
            "model.diffusion_model.{side}.{i}.{sub}.{tail}"
        ))))
    };
    match parts.first().copied() {
        Some("down_blocks") => {
            let down = cfg.down_blocks()?;
            let b = index(1)?;
            // input_blocks.0 is conv_in; each block holds its layers, then its downsampler.
            let start = 1 + down[..b.min(down.len())]
                .iter()
                .map(|s| s.layers + 1)
                .sum::<usize>();
            if let Some(o) = layer("input_blocks", start)? {
                return Ok(o);
            }
            match parts.get(2).copied() {
                Some("downsamplers") => {
                    let i = start + down.get(b).map_or(0, |s| s.layers);
                    // downsamplers.0.conv.<weight|bias> -> input_blocks.i.0.op.<weight|bias>
                    let tail = tail_from(4);
                    let tail = tail.strip_prefix("conv.").unwrap_or(&tail);
                    ldm(format!("input_blocks.{i}.0.op.{tail}"))
                }
                _ => bail!("single file: no original name for UNet weight `{name}`"),
            }
        }
        Some("mid_block") => match (parts.get(1).copied(), index(2)?) {
            (Some("resnets"), r) => ldm(format!(
                "middle_block.{}.{}",
                2 * r,
                rename_head(&tail_from(3), &UNET_RESNET)
            )),
            (Some("attentions"), 0) => ldm(format!("middle_block.1.{}", tail_from(3))),
            _ => bail!("single file: no original name for UNet weight `{name}`"),
        },
        Some("up_blocks") => {
            let up = cfg.up_blocks()?;
            let b = index(1)?;
            let start = up[..b.min(up.len())]
                .iter()
                .map(|s| s.layers)
                .sum::<usize>();
            let spec = up.get(b).ok_or_else(|| {
                anyhow::anyhow!("single file: UNet weight `{name}`: no up block {b}")
            })?;
            if let Some(o) = layer("output_blocks", start)? {
                return Ok(o);
            }
            match parts.get(2).copied() {
                Some("upsamplers") => {
                    let i = start + spec.layers - 1;
                    let sub = if spec.has_cross_attention { 2 } else { 1 };
                    ldm(format!("output_blocks.{i}.{sub}.{}", tail_from(4)))
                }
                _ => bail!("single file: no original name for UNet weight `{name}`"),
            }
        }
        _ => bail!("single file: no original name for UNet weight `{name}`"),
    }
}

/// The VAE weight `name` of a VAE with `blocks` levels (`block_out_channels.len()`).
pub fn vae(name: &str, blocks: usize) -> Result<Original> {
    let out = |s: String, part| Original {
        name: format!("first_stage_model.{s}"),
        part,
    };
    let parts: Vec<&str> = name.split('.').collect();
    let side = parts[0];
    if side != "encoder" && side != "decoder" {
        return Ok(out(name.to_string(), Part::Whole)); // quant_conv, post_quant_conv
    }
    let num = |i: usize| -> Result<usize> {
        parts
            .get(i)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("single file: no original name for VAE weight `{name}`"))
    };
    let tail = |i: usize| parts.get(i..).map(|p| p.join(".")).unwrap_or_default();
    let resnet = |t: String| rename_head(&t, &[("conv_shortcut", "nin_shortcut")]);
    let mapped = match parts.get(1).copied() {
        Some("down_blocks") => match parts.get(3).copied() {
            Some("resnets") => format!(
                "{side}.down.{}.block.{}.{}",
                num(2)?,
                num(4)?,
                resnet(tail(5))
            ),
            Some("downsamplers") => format!("{side}.down.{}.downsample.{}", num(2)?, tail(5)),
            _ => bail!("single file: no original name for VAE weight `{name}`"),
        },
        Some("up_blocks") => {
            let level = blocks.checked_sub(1 + num(2)?).ok_or_else(|| {
                anyhow::anyhow!("single file: VAE weight `{name}`: no such block")
            })?;
            match parts.get(3).copied() {
                Some("resnets") => {
                    format!("{side}.up.{level}.block.{}.{}", num(4)?, resnet(tail(5)))
                }
                Some("upsamplers") => format!("{side}.up.{level}.upsample.{}", tail(5)),
                _ => bail!("single file: no original name for VAE weight `{name}`"),
            }
        }
        Some("mid_block") => match parts.get(2).copied() {
            Some("resnets") => format!("{side}.mid.block_{}.{}", num(3)? + 1, resnet(tail(4))),
            Some("attentions") => {
                let attn = [
                    ("group_norm", "norm"),
                    ("to_q", "q"),
                    ("to_k", "k"),
                    ("to_v", "v"),
                    ("to_out.0", "proj_out"),
                ];
                let t = rename_head(&tail(4), &attn);
                let part = if t.ends_with(".weight") && !t.starts_with("norm.") {
                    Part::Squeeze1x1
                } else {
                    Part::Whole
                };
                return Ok(out(format!("{side}.mid.attn_1.{t}"), part));
            }
            _ => bail!("single file: no original name for VAE weight `{name}`"),
        },
        Some("conv_norm_out") => format!("{side}.norm_out.{}", tail(2)),
        _ => name.to_string(), // conv_in, conv_out
    };
    Ok(out(mapped, Part::Whole))
}

/// A transformers CLIP text weight stored with transformers' own keys under `prefix` (SD 1.x's
/// `cond_stage_model.transformer.`, SDXL's `conditioner.embedders.0.transformer.`).
pub fn clip(name: &str, prefix: &str) -> Original {
    let name = name.strip_prefix("text_model.").unwrap_or(name);
    Original::whole(format!("{prefix}text_model.{name}"))
}

/// A transformers CLIP text weight in OpenCLIP's layout under `prefix` (SD 2.x's
/// `cond_stage_model.model.`, SDXL's `conditioner.embedders.1.model.`).
pub fn open_clip(name: &str, prefix: &str) -> Result<Original> {
    let name = name.strip_prefix("text_model.").unwrap_or(name);
    let whole = |s: &str| Ok(Original::whole(format!("{prefix}{s}")));
    match name {
        "embeddings.token_embedding.weight" => return whole("token_embedding.weight"),
        "embeddings.position_embedding.weight" => return whole("positional_embedding"),
        "final_layer_norm.weight" => return whole("ln_final.weight"),
        "final_layer_norm.bias" => return whole("ln_final.bias"),
        "text_projection.weight" => {
            return Ok(Original {
                name: format!("{prefix}text_projection"),
                part: Part::Transposed,
            })
        }
        _ => {}
    }
    let Some(rest) = name.strip_prefix("encoder.layers.") else {
        bail!("single file: no OpenCLIP name for text encoder weight `{name}`")
    };
    let (layer, rest) = rest
        .split_once('.')
        .ok_or_else(|| anyhow::anyhow!("single file: no OpenCLIP name for `{name}`"))?;
    let block = format!("{prefix}transformer.resblocks.{layer}.");
    for (index, p) in ["q_proj", "k_proj", "v_proj"].into_iter().enumerate() {
        if let Some(kind) = rest.strip_prefix(&format!("self_attn.{p}.")) {
            return Ok(Original {
                name: format!("{block}attn.in_proj_{kind}"),
                part: Part::Rows { index, of: 3 },
            });
        }
    }
    let table = [
        ("layer_norm1", "ln_1"),
        ("layer_norm2", "ln_2"),
        ("self_attn.out_proj", "attn.out_proj"),
        ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"),
    ];
    let renamed = rename_head(rest, &table);
    if renamed == rest {
        bail!("single file: no OpenCLIP name for text encoder weight `{name}`")
    }
    Ok(Original::whole(format!("{block}{renamed}")))
}
