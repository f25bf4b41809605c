"""Converts a diffusers Stable Diffusion folder to one original-layout (LDM) `.safetensors` file:
the inverse of what diffusers' `from_single_file` reads, written from the published key layout
of the CompVis/Stability checkpoints. For the single-file fixtures of the tiny models (issue:
single-file checkpoints); `--check` loads the result back with diffusers' `from_single_file`
(`config=` the folder) and requires every weight to equal the folder's.

Layouts (the prefixes of the original checkpoints):
- UNet: `model.diffusion_model.` with `input_blocks`, `middle_block`, `output_blocks`; each
  block's resnet is `.0` and its transformer `.1`; resnet parts `in_layers.{0,2}`,
  `emb_layers.1`, `out_layers.{0,3}`, `skip_connection`; down/upsamplers `op` / `conv`.
- VAE: `first_stage_model.` with `encoder.down.{i}.block.{j}`, `decoder.up.{n-1-i}` (reversed),
  `mid.block_{1,2}`, `mid.attn_1` (1x1 convolutions `q`, `k`, `v`, `proj_out`, `norm`).
- SD 1.x text encoder: `cond_stage_model.transformer.` + the transformers keys.

Usage: python tools/to_single_file.py FOLDER OUT.safetensors [--check]
Only SD 1.x folders so far; SD 2.x (OpenCLIP, fused in_proj) and SDXL (conditioner.embedders)
are the next step.
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file


def read_config(folder, component):
    with open(os.path.join(folder, component, "config.json")) as f:
        return json.load(f)


def component_weights(folder, component, name="diffusion_pytorch_model.safetensors"):
    return load_file(os.path.join(folder, component, name))


RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
          ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def rename_prefix(key, old, new):
    return new + key[len(old):] if key.startswith(old) else None


def unet_to_ldm(sd, cfg):
    """diffusers UNet2DConditionModel keys -> `model.diffusion_model.` keys."""
    lpb = cfg["layers_per_block"]
    blocks = len(cfg["block_out_channels"])
    out = {}
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    prefixes = []  # (diffusers prefix, ldm prefix, is_resnet)
    for b in range(blocks):
        for l in range(lpb):
            i = 1 + b * (lpb + 1) + l
            prefixes.append((f"down_blocks.{b}.resnets.{l}.", f"input_blocks.{i}.0.", True))
            prefixes.append((f"down_blocks.{b}.attentions.{l}.", f"input_blocks.{i}.1.", False))
        if b < blocks - 1:
            i = 1 + b * (lpb + 1) + lpb
            prefixes.append((f"down_blocks.{b}.downsamplers.0.conv.", f"input_blocks.{i}.0.op.", False))
    prefixes.append(("mid_block.resnets.0.", "middle_block.0.", True))
    prefixes.append(("mid_block.attentions.0.", "middle_block.1.", False))
    prefixes.append(("mid_block.resnets.1.", "middle_block.2.", True))
    for b in range(blocks):
        has_attn = cfg["up_block_types"][b].startswith("CrossAttn")
        for l in range(lpb + 1):
            i = b * (lpb + 1) + l
            prefixes.append((f"up_blocks.{b}.resnets.{l}.", f"output_blocks.{i}.0.", True))
            prefixes.append((f"up_blocks.{b}.attentions.{l}.", f"output_blocks.{i}.1.", False))
        if b < blocks - 1:
            i = b * (lpb + 1) + lpb
            prefixes.append((f"up_blocks.{b}.upsamplers.0.", f"output_blocks.{i}.{2 if has_attn else 1}.", False))
    for key, value in sd.items():
        new = None
        for d, o in fixed.items():
            if key.startswith(d + "."):
                new = o + key[len(d):]
        for d, o, resnet in prefixes:
            if new is None and key.startswith(d):
                rest = key[len(d):]
                if resnet:
                    for a, bb in RESNET:
                        if rest.startswith(a + "."):
                            rest = bb + rest[len(a):]
                new = o + rest
        if new is None:
            raise SystemExit(f"unet: no original name for {key}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(sd, cfg):
    """diffusers AutoencoderKL keys -> `first_stage_model.` keys."""
    n = len(cfg["block_out_channels"])
    out = {}
    vae_resnet = [("conv_shortcut", "nin_shortcut")]
    attn = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]
    for key, value in sd.items():
        parts = key.split(".")
        new = None
        if parts[0] in ("encoder", "decoder"):
            side = parts[0]
            rest = ".".join(parts[1:])
            if rest.startswith("down_blocks."):
                i, kind, j = parts[2], parts[3], parts[4]
                tail = ".".join(parts[5:])
                if kind == "resnets":
                    new = f"{side}.down.{i}.block.{j}.{tail}"
                else:
                    new = f"{side}.down.{i}.downsample.{'.'.join(parts[5:])}"
            elif rest.startswith("up_blocks."):
                i, kind, j = int(parts[2]), parts[3], parts[4]
                tail = ".".join(parts[5:])
                if kind == "resnets":
                    new = f"{side}.up.{n - 1 - i}.block.{j}.{tail}"
                else:
                    new = f"{side}.up.{n - 1 - i}.upsample.{'.'.join(parts[5:])}"
            elif rest.startswith("mid_block.resnets."):
                new = f"{side}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
            elif rest.startswith("mid_block.attentions.0."):
                tail = ".".join(parts[4:])
                for a, b in attn:
                    if tail.startswith(a + "."):
                        tail = b + tail[len(a):]
                new = f"{side}.mid.attn_1.{tail}"
                if value.dim() == 2:  # linear -> 1x1 convolution
                    value = value[:, :, None, None]
            elif rest.startswith("conv_norm_out."):
                new = f"{side}.norm_out.{'.'.join(parts[2:])}"
            else:
                new = key
            for a, b in vae_resnet:
                new = new.replace(f".{a}.", f".{b}.")
        else:
            new = key  # quant_conv, post_quant_conv
        out["first_stage_model." + new] = value
    return out


def text_to_ldm(sd):
    """transformers CLIPTextModel keys -> `cond_stage_model.transformer.` keys."""
    out = {}
    for key, value in sd.items():
        if key.endswith("position_ids"):
            continue
        key = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + key] = value
    return out


def convert(folder):
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    if "text_encoder_2" in index:
        raise SystemExit("SDXL folders are not converted yet")
    out = {}
    out.update(unet_to_ldm(component_weights(folder, "unet"), read_config(folder, "unet")))
    out.update(vae_to_ldm(component_weights(folder, "vae"), read_config(folder, "vae")))
    text_cfg = read_config(folder, "text_encoder")
    if text_cfg.get("hidden_act") != "quick_gelu":
        raise SystemExit("SD 2.x (OpenCLIP) folders are not converted yet")
    out.update(text_to_ldm(component_weights(folder, "text_encoder", "model.safetensors")))
    return {k: v.contiguous() for k, v in out.items()}


def check(folder, path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_single_file(path, config=folder, local_files_only=True)
    ref = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    worst = 0
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(ref, name).state_dict()
        missing = set(theirs) ^ set(ours)
        if missing:
            raise SystemExit(f"{name}: keys differ: {sorted(missing)[:8]}")
        for k in theirs:
            worst = max(worst, (ours[k].float() - theirs[k].float()).abs().max().item())
    print(f"from_single_file matches the folder: largest difference {worst}")
    if worst != 0:
        raise SystemExit("the converted file does not load back to the same weights")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    save_file(convert(a.folder), a.out)
    print(f"wrote {a.out}")
    if a.check:
        check(a.folder, a.out)


if __name__ == "__main__":
    sys.exit(main())
