"""Reference trajectories of diffusers' samplers for semi's schedulers (one Rust file each).

Writes two fixture sets:

1. crates/diffusion/tests/fixtures/schedulers/{steps.json,steps.safetensors}: for each case (a
   scheduler class, a config built by `from_config` from a model's scheduler config as a pipeline
   would, overrides, a step count) the timesteps, `init_noise_sigma`, and per step the recorded
   model output (a fixed function of diffusers' own sample, so the values are realistic), the
   scaled model input, the step noise of stochastic samplers, and `prev_sample`. The Rust test
   feeds the recorded model outputs to its own scheduler and compares every step.
2. crates/diffusion/tests/fixtures/pipeline/schedulers-runs.{json,safetensors}: full
   StableDiffusionPipeline runs of the tiny SD 1.x (epsilon) and SD 2.x (v-prediction) fixture
   models with each scheduler, seeded, final latents.

Run from the repository root (the tiny models come from tools/make_fixtures.py):
    python tools/make_sampler_fixtures.py
"""

import json
import os

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)
from safetensors.torch import save_file

FIX = os.path.join("crates", "diffusion", "tests", "fixtures")
CLASSES = {c.__name__: c for c in [
    DDIMScheduler, PNDMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
    DPMSolverMultistepScheduler, UniPCMultistepScheduler]}

torch.use_deterministic_algorithms(True)


def model_config(name):
    with open(os.path.join(FIX, name, "scheduler", "scheduler_config.json")) as f:
        return json.load(f)


SD1 = model_config("tiny-sd1")   # PNDM config of SD 1.x: scaled_linear, leading + offset 1
SD2 = model_config("tiny-sd2")   # DDIM config, v-prediction, trailing
COSINE = {"_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2",
          "clip_sample": False, "set_alpha_to_one": False}

# (case name, class, base config, overrides, steps)
CASES = [
    ("pndm_sd1", "PNDMScheduler", SD1, {}, 10),
    ("pndm_prk_sd1", "PNDMScheduler", SD1, {"skip_prk_steps": False}, 10),
    ("pndm_sd2v", "PNDMScheduler", SD2, {}, 7),
    ("euler_sd1", "EulerDiscreteScheduler", SD1, {}, 10),
    ("euler_sd1_leading", "EulerDiscreteScheduler", SD1, {"timestep_spacing": "leading"}, 10),
    ("euler_sd1_karras", "EulerDiscreteScheduler", SD1, {"use_karras_sigmas": True}, 12),
    ("euler_sd2v", "EulerDiscreteScheduler", SD2, {}, 8),
    ("euler_a_sd1", "EulerAncestralDiscreteScheduler", SD1, {}, 10),
    ("euler_a_sd2v", "EulerAncestralDiscreteScheduler", SD2, {}, 8),
    ("dpm2m_sd1", "DPMSolverMultistepScheduler", SD1, {}, 10),
    ("dpm2m_sd1_20", "DPMSolverMultistepScheduler", SD1, {}, 20),
    ("dpm1_sd1", "DPMSolverMultistepScheduler", SD1, {"solver_order": 1}, 10),
    ("dpm2m_sd1_karras", "DPMSolverMultistepScheduler", SD1, {"use_karras_sigmas": True}, 12),
    ("dpm2m_heun_sd1", "DPMSolverMultistepScheduler", SD1, {"solver_type": "heun"}, 10),
    ("dpm2m_sd2v", "DPMSolverMultistepScheduler", SD2, {}, 8),
    ("unipc_sd1", "UniPCMultistepScheduler", SD1, {}, 10),
    ("unipc_sd1_20", "UniPCMultistepScheduler", SD1, {}, 20),
    ("unipc3_sd1", "UniPCMultistepScheduler", SD1, {"solver_order": 3}, 10),
    ("unipc_bh1_sd1", "UniPCMultistepScheduler", SD1, {"solver_type": "bh1"}, 10),
    ("unipc_sd1_karras", "UniPCMultistepScheduler", SD1, {"use_karras_sigmas": True}, 12),
    ("unipc_sd2v", "UniPCMultistepScheduler", SD2, {}, 8),
    ("ddim_eta_sd1", "DDIMScheduler", SD1, {}, 10),
]


def make(cls_name, base, overrides):
    cfg = dict(base)
    sched = CLASSES[cls_name].from_config(cfg, **overrides)
    return sched


def steps_fixtures():
    shape = (2, 4, 3, 5)
    tensors, cases = {}, []
    for name, cls_name, base, overrides, n in CASES:
        gen = torch.Generator().manual_seed(len(cases) + 1)
        sched = make(cls_name, base, overrides)
        sched.set_timesteps(n)
        ts = [float(t) for t in sched.timesteps]
        sample = torch.randn(shape, generator=gen) * float(sched.init_noise_sigma)
        tensors[f"{name}/init"] = sample.clone()
        weights = torch.randn(len(ts), *shape, generator=gen)
        stochastic = cls_name == "EulerAncestralDiscreteScheduler" or name == "ddim_eta_sd1"
        for i, t in enumerate(ts):
            model_in = sched.scale_model_input(sample, sched.timesteps[i])
            # A smooth stand-in for a UNet: depends on the input and the step.
            model_output = 0.6 * weights[i] + 0.25 * model_in
            kw = {}
            if stochastic:
                noise = torch.randn(shape, generator=torch.Generator().manual_seed(1000 + i))
                tensors[f"{name}/{i}/noise"] = noise
                if cls_name == "DDIMScheduler":
                    kw = dict(eta=0.7, variance_noise=noise)
                else:
                    kw = dict(generator=torch.Generator().manual_seed(1000 + i))
            out = sched.step(model_output, sched.timesteps[i], sample, **kw)
            tensors[f"{name}/{i}/model_in"] = model_in.clone()
            tensors[f"{name}/{i}/model_output"] = model_output.clone()
            tensors[f"{name}/{i}/prev_sample"] = out.prev_sample.clone()
            sample = out.prev_sample
        cases.append(dict(name=name, class_name=cls_name, config=base, overrides=overrides,
                          steps=n, timesteps=ts, init_noise_sigma=float(sched.init_noise_sigma),
                          eta=0.7 if name == "ddim_eta_sd1" else 0.0, stochastic=stochastic))
    out = os.path.join(FIX, "schedulers")
    os.makedirs(out, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()},
              os.path.join(out, "steps.safetensors"))
    with open(os.path.join(out, "steps.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)
    print(f"{len(cases)} scheduler cases")


RUNS = [
    ("tiny-sd1", "PNDMScheduler", {}, 6),
    ("tiny-sd1", "EulerDiscreteScheduler", {}, 6),
    ("tiny-sd1", "EulerAncestralDiscreteScheduler", {}, 6),
    ("tiny-sd1", "DPMSolverMultistepScheduler", {}, 6),
    ("tiny-sd1", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, 6),
    ("tiny-sd1", "UniPCMultistepScheduler", {}, 6),
    ("tiny-sd2", "EulerDiscreteScheduler", {}, 5),
    ("tiny-sd2", "EulerAncestralDiscreteScheduler", {}, 5),
    ("tiny-sd2", "DPMSolverMultistepScheduler", {}, 5),
    ("tiny-sd2", "UniPCMultistepScheduler", {}, 5),
    ("tiny-sd2", "PNDMScheduler", {}, 5),
]


def pipeline_fixtures():
    tensors, runs = {}, []
    pipes = {}
    for model, cls_name, overrides, n in RUNS:
        if model not in pipes:
            p = StableDiffusionPipeline.from_pretrained(os.path.join(FIX, model),
                                                        safety_checker=None)
            p.set_progress_bar_config(disable=True)
            pipes[model] = (p, p.scheduler.config)
        pipe, base = pipes[model]
        pipe.scheduler = CLASSES[cls_name].from_config(base, **overrides)
        name = f"{model}/{cls_name}" + "".join(f"/{k}={v}" for k, v in overrides.items())
        run = dict(name=name, model=model, class_name=cls_name, overrides=overrides,
                   prompt="a photo of a dog and a car", negative_prompt="blurry", seed=len(runs) + 3,
                   steps=n, guidance=7.5, height=32, width=32)
        with torch.no_grad():
            out = pipe(run["prompt"], negative_prompt=run["negative_prompt"],
                       num_inference_steps=n, guidance_scale=run["guidance"],
                       height=run["height"], width=run["width"],
                       generator=torch.Generator().manual_seed(run["seed"]),
                       output_type="latent").images
        run["timesteps"] = [float(t) for t in pipe.scheduler.timesteps]
        tensors[name + "/final_latents"] = out
        runs.append(run)
        print(name, float(out.std()))
    save_file({k: v.float().contiguous() for k, v in tensors.items()},
              os.path.join(FIX, "pipeline", "schedulers-runs.safetensors"))
    with open(os.path.join(FIX, "pipeline", "schedulers-runs.json"), "w") as f:
        json.dump({"runs": runs}, f, indent=1)


if __name__ == "__main__":
    steps_fixtures()
    pipeline_fixtures()
