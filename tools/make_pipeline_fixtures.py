"""Reference runs of diffusers' StableDiffusionPipeline (DDIM) on the tiny SD 1.x fixture model
for the request features the plain parity run does not cover: eta > 0 (step noise drawn from the
seeded generator after the initial latents), no classifier-free guidance, a negative prompt, and
explicit initial latents (the generator then starts fresh for the step noise).

Writes crates/diffusion/tests/fixtures/pipeline/tiny-sd1-runs.{json,safetensors}: one entry per
run with its request, and tensors `<name>/latents_in` (explicit latents, when given) and
`<name>/final_latents`.

Usage (the tiny-sd1 folder comes from tools/make_fixtures.py):
    python tools/make_pipeline_fixtures.py [path/to/tiny-sd1]
"""

import json
import os
import sys

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from safetensors.torch import save_file

MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    "crates", "diffusion", "tests", "fixtures", "tiny-sd1")
OUT = os.path.join("crates", "diffusion", "tests", "fixtures", "pipeline")

RUNS = [
    dict(name="eta_cfg_negative", prompt="a photo of a dog and a car", negative_prompt="blurry",
         seed=42, steps=4, guidance=7.5, eta=0.5, height=64, width=64),
    dict(name="no_guidance", prompt="a car", negative_prompt="", seed=7, steps=3, guidance=1.0,
         eta=0.0, height=32, width=64),
    dict(name="given_latents_eta1", prompt="a dog", negative_prompt="", seed=5, steps=5,
         guidance=3.0, eta=1.0, height=64, width=32, latents_seed=11),
]

torch.use_deterministic_algorithms(True)
pipe = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)
scale = pipe.vae_scale_factor

tensors = {}
for run in RUNS:
    kw = {}
    if "latents_seed" in run:
        shape = (1, pipe.unet.config.in_channels, run["height"] // scale, run["width"] // scale)
        lat = torch.randn(shape, generator=torch.Generator().manual_seed(run["latents_seed"]))
        tensors[run["name"] + "/latents_in"] = lat
        kw["latents"] = lat
    with torch.no_grad():
        out = pipe(
            run["prompt"],
            negative_prompt=run["negative_prompt"] or None,
            num_inference_steps=run["steps"],
            guidance_scale=run["guidance"],
            eta=run["eta"],
            height=run["height"],
            width=run["width"],
            generator=torch.Generator().manual_seed(run["seed"]),
            output_type="latent",
            **kw,
        ).images
    tensors[run["name"] + "/final_latents"] = out
    run["timesteps"] = [int(t) for t in pipe.scheduler.timesteps]
    print(run["name"], list(out.shape), float(out.std()))

os.makedirs(OUT, exist_ok=True)
save_file({k: v.float().contiguous() for k, v in tensors.items()},
          os.path.join(OUT, "tiny-sd1-runs.safetensors"))
with open(os.path.join(OUT, "tiny-sd1-runs.json"), "w") as f:
    json.dump({"model": "tiny-sd1", "runs": RUNS}, f, indent=1)
