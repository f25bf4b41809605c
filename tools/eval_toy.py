"""Quick quality check of a toy model folder: caption match rate with the toy world's exact detector.

    python tools/eval_toy.py models/toy --n 50 --guidance 1,2,4 --steps 25
    python tools/eval_toy.py models/toy --n 200 --guidance 2 --steps 50 --eta 1   # ancestral DDIM
    python tools/eval_toy.py models/toy --n 200 --guidance 2 --guidance-range 400,999  # guidance at t >= 400 only

Samples N random captions of the toy grammar (1-3 distinct shapes, random order; seeded), generates
one image per caption and guidance scale with DDIM from the same seeded noise (with `--eta` > 0
the step noise comes from a second generator seeded with seed + 1), writes them as PNGs
with `captions.jsonl` into OUT/g<scale>/, runs the Rust detector over each folder
(`cargo run --release -p semi-toyworld --example detect_dir`, so the detector is not re-implemented
here), and prints the share of images whose detected categories and counts equal the caption's,
overall and by object count. OUT/summary.json holds the numbers, OUT/grid_g<scale>.png a sample grid.

The model folder is loaded the way diffusers and transformers load any SD folder (UNet, CLIP text
encoder, CLIP tokenizer from vocab.json + merges.txt, DDIM scheduler config); without a `vae` the
latents are the image in [-1, 1]. With a `vae` (the latent world, issue 22) the latents are
decoded (divided by `scaling_factor`) and the detector names objects by shape (`detect_dir
--shapes`); pass `--max-objects 2` for that world's captions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

CATEGORIES = ["circle", "square", "triangle", "cross", "ring", "diamond"]
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def random_captions(n: int, seed: int, max_objects: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, max_objects)
        items = [f"a {c}" for c in rng.sample(CATEGORIES, k)]
        out.append(items[0] if k == 1 else ", ".join(items[:-1]) + " and " + items[-1])
    return out


def load(model_dir: str):
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    index = json.load(open(os.path.join(model_dir, "model_index.json")))
    vae = None
    if index.get("vae") not in (None, [None, None]):
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(os.path.join(model_dir, "vae"), torch_dtype=torch.float32).eval()
    tok = CLIPTokenizer.from_pretrained(os.path.join(model_dir, "tokenizer"))
    text = CLIPTextModel.from_pretrained(os.path.join(model_dir, "text_encoder"), torch_dtype=torch.float32).eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet"), torch_dtype=torch.float32).eval()
    sched = DDIMScheduler.from_pretrained(model_dir, subfolder="scheduler")
    return tok, text, unet, sched, vae


@torch.no_grad()
def generate(tok, text, unet, sched, captions, noise, guidance: float, steps: int, eta: float = 0.0,
             step_noise: torch.Generator | None = None, eta_range: tuple[int, int] | None = None,
             guidance_range: tuple[int, int] | None = None) -> torch.Tensor:
    """DDIM with classifier-free guidance (skipped at scale 1; applied only at timesteps within
    `guidance_range` when given, plain conditional elsewhere) and DDIM's eta (0: deterministic, 1:
    ancestral, DDPM-like; the step noise comes from `step_noise`), applied only at timesteps within
    `eta_range` when given (a diagnostic: where does fresh noise matter?); returns images in [-1, 1]."""

    def embed(texts):
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        return text(ids).last_hidden_state

    cond = embed(captions)
    uncond = embed([""] * len(captions))
    sched.set_timesteps(steps)
    x = noise * sched.init_noise_sigma
    for t in sched.timesteps:
        if guidance == 1.0 or (guidance_range is not None and not guidance_range[0] <= int(t) <= guidance_range[1]):
            out = unet(x, t, cond).sample
        else:
            both = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample
            u, c = both.chunk(2)
            out = u + guidance * (c - u)
        e = eta if eta_range is None or eta_range[0] <= int(t) <= eta_range[1] else 0.0
        x = sched.step(out, t, x, eta=e, generator=step_noise).prev_sample
    return x


def to_u8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def grid(images: np.ndarray, columns: int = 8, scale: int = 4, pad: int = 2) -> Image.Image:
    n, h, w, _ = images.shape
    rows = (n + columns - 1) // columns
    canvas = np.full((rows * (h * scale + pad) + pad, columns * (w * scale + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        big = img.repeat(scale, 0).repeat(scale, 1)
        y, x = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
        canvas[y : y + h * scale, x : x + w * scale] = big
    return Image.fromarray(canvas)


def detect_dir(folder: str, shapes: bool = False) -> list[dict]:
    cmd = ["cargo", "run", "-q", "--release", "-p", "semi-toyworld", "--example", "detect_dir", "--", folder]
    if shapes:
        cmd.append("--shapes")
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"detector failed: {res.stderr.strip()}")
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def pipeline_check(model_dir: str, tok, text, unet, sched, steps: int) -> float:
    """Generates one image with diffusers' own StableDiffusionPipeline (loaded from the folder with
    `vae=None`; `output_type="latent"` returns the pixel-space image) and with `generate` from the
    same noise; returns the largest absolute difference. Without a VAE the pipeline assumes a scale
    factor of 8, hence height = width = 8 * sample_size."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        model_dir, vae=None, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, torch_dtype=torch.float32,
    )
    size = unet.config.sample_size
    noise = torch.randn((1, unet.config.in_channels, size, size), generator=torch.Generator().manual_seed(123))
    px = size * pipe.vae_scale_factor
    theirs = pipe("a circle and a ring", height=px, width=px, num_inference_steps=steps, guidance_scale=3.0,
                  latents=noise.clone(), output_type="latent").images
    ours = generate(tok, text, unet, sched, ["a circle and a ring"], noise, 3.0, steps)
    return (theirs - ours).abs().max().item()


def parse_range(flag: str, value: str | None) -> tuple[int, int] | None:
    """A timestep range LO,HI from the command line; None when the flag is not given."""
    if not value:
        return None
    try:
        lo, hi = (int(v) for v in value.split(","))
    except ValueError:
        raise SystemExit(f"{flag} {value}: expected LO,HI") from None
    return lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--guidance", default="1,2,4", help="comma-separated guidance scales")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0, help="seed of the captions (and of the noise, unless --noise-seed)")
    ap.add_argument("--noise-seed", type=int, default=None,
                    help="seed of the noise: the same captions with another noise set [default: --seed]")
    ap.add_argument("--eta", type=float, default=0.0,
                    help="DDIM eta: 0 deterministic (default), 1 ancestral (fresh noise at every step)")
    ap.add_argument("--eta-range", metavar="LO,HI",
                    help="apply --eta only at timesteps LO <= t <= HI (deterministic elsewhere)")
    ap.add_argument("--guidance-range", metavar="LO,HI",
                    help="apply guidance only at timesteps LO <= t <= HI (the plain conditional model elsewhere)")
    ap.add_argument("--max-objects", type=int, default=3)
    ap.add_argument("--out", default="/tmp/eval_toy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pipeline-check", action="store_true",
                    help="also check that diffusers' StableDiffusionPipeline loads the folder and agrees with this script's sampler")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tok, text, unet, sched, vae = load(args.model_dir)
    if args.pipeline_check and vae is not None:
        raise SystemExit("--pipeline-check is for pixel-space models")
    if args.pipeline_check:
        diff = pipeline_check(args.model_dir, tok, text, unet, sched, args.steps)
        print(f"StableDiffusionPipeline vs this sampler: max abs difference {diff:.2e}", flush=True)
        if diff > 1e-3:
            raise SystemExit("the samplers disagree")
    captions = random_captions(args.n, args.seed, args.max_objects)
    size = unet.config.sample_size
    noise_seed = args.seed if args.noise_seed is None else args.noise_seed
    noise = torch.randn((args.n, unet.config.in_channels, size, size), generator=torch.Generator().manual_seed(noise_seed))
    eta_range = parse_range("--eta-range", args.eta_range)
    guidance_range = parse_range("--guidance-range", args.guidance_range)
    summary = {"model_dir": args.model_dir, "n": args.n, "steps": args.steps, "eta": args.eta,
               "eta_range": eta_range, "guidance_range": guidance_range, "seed": args.seed,
               "noise_seed": noise_seed, "results": {}}
    for g in [float(s) for s in args.guidance.split(",")]:
        folder = os.path.join(args.out, f"g{g:g}")
        os.makedirs(folder, exist_ok=True)
        step_noise = torch.Generator().manual_seed(noise_seed + 1)
        x = generate(tok, text, unet, sched, captions, noise, g, args.steps, args.eta, step_noise,
                     eta_range, guidance_range)
        if vae is not None:
            with torch.no_grad():
                x = torch.cat([vae.decode(x[i:i + 64] / vae.config.scaling_factor).sample
                               for i in range(0, x.shape[0], 64)])
        images = to_u8(x)
        with open(os.path.join(folder, "captions.jsonl"), "w") as f:
            for i, (img, cap) in enumerate(zip(images, captions)):
                name = f"{i:04}.png"
                Image.fromarray(img).save(os.path.join(folder, name))
                f.write(json.dumps({"file": name, "caption": cap}) + "\n")
        grid(images[:32]).save(os.path.join(args.out, f"grid_g{g:g}.png"))
        records = detect_dir(folder, shapes=vae is not None)
        by_k: dict[int, list[bool]] = {}
        for r in records:
            by_k.setdefault(r["caption"].count(" a ") + r["caption"].startswith("a "), []).append(r["match"])
        # Objects requested vs present (a category counts as present when detected at least once).
        wanted = found = 0
        for r in records:
            cats = [c for c in CATEGORIES if c in r["caption"]]
            det = {d["category"] for d in r["detections"]}
            wanted += len(cats)
            found += sum(c in det for c in cats)
        res = {
            "match_rate": sum(r["match"] for r in records) / len(records),
            "match_rate_by_objects": {str(k): sum(v) / len(v) for k, v in sorted(by_k.items())},
            "objects_present": found / wanted,
        }
        summary["results"][f"{g:g}"] = res
        print(f"guidance {g:g}: exact caption match {res['match_rate']:.0%} "
              f"(by object count {', '.join(f'{k}: {v:.0%}' for k, v in res['match_rate_by_objects'].items())}); "
              f"requested objects present {res['objects_present']:.0%}", flush=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
