#!/usr/bin/env python3
"""Tiny random-weight SDXL pipelines and diffusers' outputs on them, for
crates/diffusion/tests/sdxl_parity.rs.

Two shapes, each a `StableDiffusionXLPipeline.save_pretrained` folder under
crates/diffusion/tests/fixtures/:

- tiny-sdxl: SDXL base 1.0's layout scaled down (DownBlock2D then two cross-attention levels,
  linear projections, `upcast_attention: null`, transformer depths [1, 1, 2] where base has
  [1, 2, 10]), an Euler scheduler config like base 1.0's, `force_zeros_for_empty_prompt` true;
- tiny-sdxl-ssd: SSD-1B's layout scaled down (per-layer depths [[1], [1, 2], [2, 1]] with
  `reverse_transformer_layers_per_block`, a resnet-only `UNetMidBlock2D`), other text-encoder
  widths, the legacy `eos_token_id` 2 in the second encoder (pooling by the highest token id),
  `force_zeros_for_empty_prompt` false, and an Euler ancestral trailing config like SDXL-Turbo's.

Each folder gets reference.json + reference.safetensors:
- `embeds/{prompt,uncond,negative}` and `pooled/...`: `pipe.encode_prompt` for the prompt, the
  unconditional row without a negative prompt, and with the negative prompt;
- `unet_in_sample`, `unet_out`: one batch-2 UNet call at t = 999 on [uncond, cond] with the added
  conditions of a 64x64 image;
- runs: the pipeline (output_type="latent") with the folder's own scheduler, DDIM with a negative
  prompt, DPM-Solver++ without guidance, and a non-square size; `<run>/final_latents`, and
  `<run>/image` (the VAE decode of the final latents) for the first run.

Usage, from the repository root (diffusers 0.42.1, transformers 5.24, torch 2.15 CPU; the CLIP BPE
file comes from `pip install --no-deps open_clip_torch`, as for make_fixtures.py):
    python3 tools/make_sdxl_fixtures.py
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import (  # noqa: E402
    OUT, check, gen, perturb, vae_sd1, well_scaled, write_json, write_tokenizer,
)

PROMPT = "a photo of a dog and a car"
NEGATIVE = "blurry"


def text_config(tok, hidden, layers, heads, projection, act, eos=None):
    return CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        hidden_act=act,
        max_position_embeddings=77,
        projection_dim=projection,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id if eos is None else eos,
    )


# make_fixtures.py's tiny VAE with SDXL's scaling factor and upcast flag.
VAE = dict(vae_sd1(), scaling_factor=0.13025, force_upcast=True)

# SDXL base 1.0's scheduler config (EulerDiscreteScheduler, leading, offset 1).
SCHED_BASE = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

# SDXL-Turbo's: the same but EulerAncestralDiscreteScheduler with trailing spacing.
SCHED_TURBO = dict(
    SCHED_BASE,
    _class_name="EulerAncestralDiscreteScheduler",
    _diffusers_version="0.24.0.dev0",
    timestep_spacing="trailing",
)
del SCHED_TURBO["use_karras_sigmas"]

MODELS = {
    "tiny-sdxl": dict(
        unet=dict(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=[32, 64, 64],
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            layers_per_block=2,
            attention_head_dim=[2, 4, 4],
            transformer_layers_per_block=[1, 1, 2],
            cross_attention_dim=64,
            norm_num_groups=32,
            use_linear_projection=True,
            upcast_attention=None,
            addition_embed_type="text_time",
            addition_embed_type_num_heads=64,
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=32 + 6 * 8,
        ),
        text1=dict(hidden=32, layers=2, heads=4, projection=32, act="quick_gelu"),
        text2=dict(hidden=32, layers=3, heads=4, projection=32, act="gelu"),
        sched=SCHED_BASE,
        force_zeros=True,
        guidance=5.0,
    ),
    "tiny-sdxl-ssd": dict(
        unet=dict(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=[32, 64, 64],
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            mid_block_type="UNetMidBlock2D",
            layers_per_block=2,
            attention_head_dim=[2, 2, 4],
            transformer_layers_per_block=[[1], [1, 2], [2, 1]],
            reverse_transformer_layers_per_block=[[2, 1, 1], [1, 1, 2], 1],
            cross_attention_dim=24 + 40,
            norm_num_groups=32,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=24 + 6 * 4,
        ),
        text1=dict(hidden=24, layers=2, heads=4, projection=24, act="quick_gelu"),
        text2=dict(hidden=40, layers=2, heads=4, projection=24, act="gelu", eos=2),
        sched=SCHED_TURBO,
        force_zeros=False,
        guidance=3.0,
    ),
}

RUNS = [
    # (name, scheduler, negative prompt, guidance factor (None = the model's), steps, h, w, seed)
    dict(name="model_scheduler", scheduler=None, negative="", guidance=None, steps=4, height=64, width=64, seed=42),
    dict(name="ddim_negative", scheduler="DDIMScheduler", negative=NEGATIVE, guidance=None, steps=4, height=64, width=64, seed=7),
    dict(name="dpm_no_guidance", scheduler="DPMSolverMultistepScheduler", negative="", guidance=1.0, steps=5, height=64, width=64, seed=3),
    dict(name="non_square", scheduler=None, negative="", guidance=None, steps=3, height=32, width=96, seed=11),
]
SCHEDULERS = {"DDIMScheduler": DDIMScheduler, "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler}


def make(name):
    spec = MODELS[name]
    root = OUT / name
    if root.exists():
        shutil.rmtree(root)
    print(f"[{name}] building")
    tok = write_tokenizer(root / "tokenizer", "<|endoftext|>")
    tok2 = write_tokenizer(root / "tokenizer_2", "!")

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**spec["unet"])
    perturb(unet, 200)
    torch.manual_seed(0)
    te1 = CLIPTextModel(text_config(tok, **spec["text1"]))
    perturb(te1, 201)
    torch.manual_seed(0)
    te2 = CLIPTextModelWithProjection(text_config(tok2, **spec["text2"]))
    perturb(te2, 202)
    torch.manual_seed(0)
    vae = AutoencoderKL(**VAE)
    perturb(vae, 203)
    sched_cls = getattr(diffusers, spec["sched"]["_class_name"])
    scheduler = sched_cls.from_config(spec["sched"])
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=tok,
        tokenizer_2=tok2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=spec["force_zeros"],
        add_watermarker=False,
    )
    pipe.save_pretrained(root)
    # The published configs carry the scheduler's own JSON, written by hand as in make_fixtures.py.
    write_json(root / "scheduler" / "scheduler_config.json", spec["sched"])
    return root


def references(name, root):
    spec = MODELS[name]
    torch.use_deterministic_algorithms(True)
    pipe = StableDiffusionXLPipeline.from_pretrained(root)
    pipe.set_progress_bar_config(disable=True)
    check(pipe.config.force_zeros_for_empty_prompt == spec["force_zeros"], "force_zeros round trip")
    tensors = {}
    with torch.no_grad():
        cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=True)
        _, neg, _, neg_pooled = pipe.encode_prompt(
            PROMPT, do_classifier_free_guidance=True, negative_prompt=NEGATIVE
        )
    for key, e, p in [("prompt", cond, pooled), ("uncond", uncond, uncond_pooled), ("negative", neg, neg_pooled)]:
        tensors[f"embeds/{key}"] = e.contiguous()
        tensors[f"pooled/{key}"] = p.contiguous()
    well_scaled(f"{name} prompt embeds", cond)
    if spec["force_zeros"]:
        check(uncond.abs().max().item() == 0.0, "force_zeros gives zero unconditional states")

    # One UNet call with the added conditions of a 64x64 image.
    sample = torch.randn((2, 4, 32, 32), generator=gen(1))
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)
    with torch.no_grad():
        out = pipe.unet(
            sample,
            999,
            encoder_hidden_states=torch.cat([uncond, cond]),
            added_cond_kwargs={"text_embeds": torch.cat([uncond_pooled, pooled]), "time_ids": time_ids},
        ).sample
    tensors["unet_in_sample"] = sample
    tensors["unet_out"] = out
    well_scaled(f"{name} unet out", out)

    runs = []
    original = pipe.scheduler
    for run in RUNS:
        cls = SCHEDULERS.get(run["scheduler"])
        pipe.scheduler = cls.from_config(original.config) if cls else original
        guidance = run["guidance"] if run["guidance"] is not None else spec["guidance"]
        with torch.no_grad():
            latents = pipe(
                PROMPT,
                negative_prompt=run["negative"] or None,
                num_inference_steps=run["steps"],
                guidance_scale=guidance,
                height=run["height"],
                width=run["width"],
                generator=gen(run["seed"]),
                output_type="latent",
            ).images
        tensors[f"{run['name']}/final_latents"] = latents.contiguous()
        well_scaled(f"{name} {run['name']}", latents)
        runs.append(
            dict(
                run,
                scheduler=run["scheduler"] or "model",
                guidance=guidance,
                timesteps=[float(t) for t in pipe.scheduler.timesteps],
            )
        )
    with torch.no_grad():
        first = tensors[f"{RUNS[0]['name']}/final_latents"]
        image = pipe.vae.decode(first / pipe.vae.config.scaling_factor).sample
    tensors[f"{RUNS[0]['name']}/image"] = image.contiguous()

    save_file({k: v.float().contiguous() for k, v in tensors.items()}, root / "reference.safetensors")
    write_json(
        root / "reference.json",
        dict(
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            unet_timestep=999,
            unet_time_ids=[64, 64, 0, 0, 64, 64],
            force_zeros_for_empty_prompt=spec["force_zeros"],
            runs=runs,
            versions=dict(diffusers=diffusers.__version__, torch=torch.__version__),
        ),
    )


def main():
    for name in MODELS:
        root = make(name)
        references(name, root)


if __name__ == "__main__":
    main()
