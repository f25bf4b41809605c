"""Random LoRAs for a tiny diffusers folder in the two formats users have, and what diffusers makes
of them (groundwork for `--lora FILE[:WEIGHT]`; the Rust side does not read these yet).

- `kohya.safetensors`: `lora_unet_<module path, dots as underscores>` and `lora_te_...` with
  `.lora_down.weight` [r, in], `.lora_up.weight` [out, r] and `.alpha` (scalar). kohya's
  sd-scripts name SD modules by their diffusers paths.
- `peft.safetensors`: diffusers' own (PEFT) format, `unet.<path>.lora_A.weight` [r, in] and
  `.lora_B.weight` [out, r]; no alpha in the file, so the scale is 1 (alpha = rank).

Both files hold the same update: the PEFT `lora_B` is kohya's `lora_up` times alpha / rank. The
merged weight is `W + weight * (alpha / rank) * up @ down` (diffusers' `fuse_lora(lora_scale=
weight)`). The script checks that diffusers' `load_lora_weights` + `fuse_lora` gives that for
both files, for weight 0.7, and that weight 0 leaves the model as it was.

It also writes `reference.safetensors`: the final latents of diffusers' DDIM pipeline with each
LoRA fused at weight 0.7 (`kohya/final_latents`, `peft/final_latents`), for the request of the
folder's `reference.json` (tools/make_fixtures.py), which `crates/diffusion/tests/lora.rs` holds
semi's `--lora` to.

Usage: python tools/make_lora_fixtures.py FOLDER OUT_DIR (needs diffusers 0.42.1 and peft).
"""

import argparse
import os

import torch
from safetensors.torch import save_file

RANK, ALPHA, WEIGHT = 4, 2.0, 0.7
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def targets(model, names):
    """(module path, nn.Linear) of every Linear whose path ends in one of `names`."""
    return [(p, m) for p, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and any(p.endswith("." + n) for n in names)]


def make(pipe, gen):
    kohya, peft, deltas = {}, {}, {}
    for prefix, kprefix, model, names in [("unet", "lora_unet", pipe.unet, UNET_TARGETS),
                                          ("text_encoder", "lora_te", pipe.text_encoder, TEXT_TARGETS)]:
        for path, lin in targets(model, names):
            down = torch.randn(RANK, lin.in_features, generator=gen) * 0.1
            up = torch.randn(lin.out_features, RANK, generator=gen) * 0.1
            name = kprefix + "_" + path.replace(".", "_")
            kohya[name + ".lora_down.weight"] = down
            kohya[name + ".lora_up.weight"] = up
            kohya[name + ".alpha"] = torch.tensor(ALPHA)
            peft[f"{prefix}.{path}.lora_A.weight"] = down
            peft[f"{prefix}.{path}.lora_B.weight"] = up * (ALPHA / RANK)
            deltas[(prefix, path)] = (ALPHA / RANK) * up @ down
    return kohya, peft, deltas


def fused(folder, lora, weight):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    pipe.load_lora_weights(os.path.dirname(lora), weight_name=os.path.basename(lora))
    pipe.fuse_lora(lora_scale=weight)
    pipe.unload_lora_weights()
    return pipe


def main():
    from diffusers import StableDiffusionPipeline

    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("out")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    base = StableDiffusionPipeline.from_pretrained(a.folder, local_files_only=True)
    kohya, peft, deltas = make(base, torch.Generator().manual_seed(0))
    files = {"kohya": os.path.join(a.out, "kohya.safetensors"),
             "peft": os.path.join(a.out, "peft.safetensors")}
    save_file(kohya, files["kohya"])
    save_file(peft, files["peft"])
    for fmt, path in files.items():
        for weight in (WEIGHT, 0.0):
            pipe = fused(a.folder, path, weight)
            worst = 0.0
            for (prefix, p), delta in deltas.items():
                got = dict(getattr(pipe, prefix).named_modules())[p].weight
                want = dict(getattr(base, prefix).named_modules())[p].weight + weight * delta
                worst = max(worst, (got - want).abs().max().item())
            print(f"{fmt}, weight {weight}: fused weights vs W + weight * alpha/rank * up @ down: {worst:.1e}")
            assert worst < 1e-6, (fmt, weight, worst)
    print(f"wrote {files['kohya']} and {files['peft']} ({len(deltas)} layers, rank {RANK}, alpha {ALPHA})")
    finals = {}
    for fmt, path in files.items():
        finals[f"{fmt}/final_latents"] = run_reference(a.folder, path, WEIGHT)
    err = ((finals["kohya/final_latents"] - finals["peft/final_latents"]).norm()
           / finals["peft/final_latents"].norm()).item()
    print(f"final latents, kohya vs peft: rel err {err:.1e}")
    save_file({k: v.contiguous() for k, v in finals.items()}, os.path.join(a.out, "reference.safetensors"))


def run_reference(folder, lora, weight):
    """Final latents of the DDIM run of `folder`'s reference.json with `lora` fused at `weight`."""
    import json
    from diffusers import DDIMScheduler

    with open(os.path.join(folder, "reference.json")) as f:
        ref = json.load(f)
    pipe = fused(folder, lora, weight)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe(ref["prompt"], negative_prompt=ref["negative_prompt"],
                num_inference_steps=ref["steps"], guidance_scale=ref["guidance"], eta=ref["eta"],
                height=ref["height"], width=ref["width"],
                generator=torch.Generator().manual_seed(ref["seed"]), output_type="latent").images


if __name__ == "__main__":
    main()
