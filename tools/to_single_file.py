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

- SD 2.x text encoder: OpenCLIP's `cond_stage_model.model.` (`token_embedding`,
  `positional_embedding`, `transformer.resblocks.{i}` with a fused `attn.in_proj_*`, `ln_final`).
- SDXL: `conditioner.embedders.0.transformer.` (CLIP-L) and `conditioner.embedders.1.model.`
  (OpenCLIP-bigG, with `text_projection`).

`--check` is exact (largest difference 0) on tiny-sd1, tiny-sd2 and tiny-sdxl-ssd. On tiny-sdxl
it fails, but not because of this converter: both of its text encoders are 32 wide, and
diffusers 0.42.1's `from_single_file` then loads embedder 0's weights into `text_encoder_2`
(its token embedding equals `text_encoder`'s). A diffusers reference for single-file SDXL
needs encoders of different widths, as tiny-sdxl-ssd has.

Usage: python tools/to_single_file.py FOLDER OUT.safetensors [--check]
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


def open_clip_to_ldm(sd, prefix, projection):
    """transformers CLIPTextModel(WithProjection) keys -> OpenCLIP's layout under `prefix`: one
    fused `in_proj` per attention (q, k, v stacked), `text_projection` as OpenCLIP multiplies it
    (`x @ P`, the transpose of the Linear weight)."""
    sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}
    out = {prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": sd["final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["final_layer_norm.bias"]}
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        d, o = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for a, b in [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"),
                     ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]:
            for w in ("weight", "bias"):
                out[f"{o}{b}.{w}"] = sd[f"{d}{a}.{w}"]
        for w in ("weight", "bias"):
            out[f"{o}attn.in_proj_{w}"] = torch.cat(
                [sd[f"{d}self_attn.{p}_proj.{w}"] for p in ("q", "k", "v")], 0)
    if projection:
        out[prefix + "text_projection"] = sd["text_projection.weight"].t()
    return out


def convert(folder):
    """(original-layout weights, family) of a diffusers folder."""
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    out = {}
    out.update(unet_to_ldm(component_weights(folder, "unet"), read_config(folder, "unet")))
    out.update(vae_to_ldm(component_weights(folder, "vae"), read_config(folder, "vae")))
    text = component_weights(folder, "text_encoder", "model.safetensors")
    if "text_encoder_2" in index:
        # SGM layout: CLIP-L as embedder 0, OpenCLIP-bigG (with its projection) as embedder 1.
        family = "sdxl"
        out.update({k.replace("cond_stage_model.transformer.", "conditioner.embedders.0.transformer."): v
                    for k, v in text_to_ldm(text).items()})
        text2 = component_weights(folder, "text_encoder_2", "model.safetensors")
        out.update(open_clip_to_ldm(text2, "conditioner.embedders.1.model.", projection=True))
    elif read_config(folder, "text_encoder").get("hidden_act") == "quick_gelu":
        family = "sd1"
        out.update(text_to_ldm(text))
    else:
        family = "sd2"
        out.update(open_clip_to_ldm(text, "cond_stage_model.model.", projection=False))
    return {k: v.contiguous() for k, v in out.items()}, family


def check(folder, path, family):
    import diffusers

    cls = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
    pipe = cls.from_single_file(path, config=folder, local_files_only=True)
    ref = cls.from_pretrained(folder, local_files_only=True)
    worst = 0
    names = ("unet", "vae", "text_encoder") + (("text_encoder_2",) if family == "sdxl" else ())
    for name in names:
        ours, theirs = getattr(pipe, name).state_dict(), getattr(ref, name).state_dict()
        missing = set(theirs) ^ set(ours)
        if missing:
            raise SystemExit(f"{name}: keys differ: {sorted(missing)[:8]}")
        for k in theirs:
            worst = max(worst, (ours[k].float() - theirs[k].float()).abs().max().item())
    print(f"from_single_file matches the folder: largest difference {worst}")
    if worst != 0:
        raise SystemExit("the converted file does not load back to the same weights")
    # The final latents of both pipelines for the folder's reference request (DDIM for SD, the
    # first run of an SDXL fixture), which semi's tests hold semi's single-file runs to.
    ref_path = os.path.join(folder, "reference.json")
    if os.path.exists(ref_path):
        with open(ref_path) as f:
            info = json.load(f)
        run = info["runs"][0] if "runs" in info else info
        def final(p):
            if "runs" not in info:
                p.scheduler = diffusers.DDIMScheduler.from_config(p.scheduler.config)
            p.set_progress_bar_config(disable=True)
            kw = {"eta": run["eta"]} if "eta" in run else {}
            return p(info["prompt"], negative_prompt=run.get("negative_prompt", run.get("negative")),
                     num_inference_steps=run["steps"], guidance_scale=run["guidance"],
                     height=run["height"], width=run["width"], output_type="latent",
                     generator=torch.Generator().manual_seed(run["seed"]), **kw).images
        a, b = final(pipe), final(ref)
        print(f"final latents, from_single_file vs from_pretrained: rel err "
              f"{((a - b).norm() / b.norm()).item():.1e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--digest", metavar="JSON",
                    help="also write {name: [shape, sum, sum of |x|]} of every tensor (the "
                         "crates/diffusion/tests/fixtures/single-file/*.json the Rust test holds "
                         "its own writer to)")
    a = ap.parse_args()
    weights, family = convert(a.folder)
    save_file(weights, a.out)
    print(f"wrote {a.out} ({family})")
    if a.digest:
        digest = {k: [list(v.shape), float(v.double().sum()), float(v.double().abs().sum())]
                  for k, v in sorted(weights.items())}
        with open(a.digest, "w") as f:
            json.dump(digest, f, separators=(",", ":"))
    if a.check:
        check(a.folder, a.out, family)


if __name__ == "__main__":
    sys.exit(main())
