"""Reference values for semi's DDIM scheduler, produced by diffusers' DDIMScheduler.

Writes crates/diffusion/tests/fixtures/ddim/{ddim.json,ddim.safetensors}:
- ddim.json: scheduler configs, the timesteps diffusers chooses for several step counts, and the
  list of step cases (config, step count, timestep, eta, tensor keys);
- ddim.safetensors: the shared step inputs (model_output, sample, variance_noise), each config's
  alphas_cumprod, and each case's prev_sample and pred_original_sample.

Run from the repository root: python tools/make_scheduler_fixtures.py
"""

import json
import os

import torch
from diffusers import DDIMScheduler
from safetensors.torch import save_file

OUT = os.path.join("crates", "diffusion", "tests", "fixtures", "ddim")

gen = torch.Generator().manual_seed(1234)
trained = (torch.rand(100, generator=gen, dtype=torch.float64) * 0.02 + 0.0005).tolist()

CONFIGS = {
    # SD 1.x as shipped (PNDM config reused for DDIM): scaled_linear, leading + offset 1.
    "sd1": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                timestep_spacing="leading", prediction_type="epsilon"),
    # diffusers defaults: linear betas, clip_sample to [-1, 1], final alpha 1.
    "default": dict(),
    # SD 2.x-v style with zero-terminal-SNR rescale and trailing spacing.
    "v_zero_snr": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                       prediction_type="v_prediction", rescale_betas_zero_snr=True,
                       timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=False),
    # Cosine schedule, linspace spacing, x0 prediction, narrow clip range.
    "cosine_sample": dict(beta_schedule="squaredcos_cap_v2", timestep_spacing="linspace",
                          prediction_type="sample", clip_sample=True, clip_sample_range=0.5),
    # Trained betas on a short schedule.
    "trained": dict(num_train_timesteps=100, trained_betas=trained, clip_sample=False,
                    steps_offset=2, set_alpha_to_one=False),
}

STEP_COUNTS = [1, 2, 7, 10, 50, 61, 100, 1000]
STEP_CASE_COUNTS = [10, 61]

shape = (2, 4, 3, 5)
model_output = torch.randn(shape, generator=gen) * 1.3
sample = torch.randn(shape, generator=gen) * 2.0
variance_noise = torch.randn(shape, generator=gen)

tensors = {"model_output": model_output, "sample": sample, "variance_noise": variance_noise}
meta = {"configs": {}, "timesteps": {}, "steps": []}

for name, cfg in CONFIGS.items():
    sched = DDIMScheduler(**cfg)
    meta["configs"][name] = cfg
    tensors[f"{name}/alphas_cumprod"] = sched.alphas_cumprod.clone()
    meta["timesteps"][name] = {}
    for n in STEP_COUNTS:
        if n > sched.config.num_train_timesteps:
            continue
        sched.set_timesteps(n)
        meta["timesteps"][name][str(n)] = [int(t) for t in sched.timesteps]
    for n in STEP_CASE_COUNTS:
        if n > sched.config.num_train_timesteps:
            continue
        sched.set_timesteps(n)
        ts = [int(t) for t in sched.timesteps]
        # First, second, a middle and the last two timesteps (the last one uses the final alpha).
        picks = sorted(set([0, 1, len(ts) // 2, len(ts) - 2, len(ts) - 1]))
        for i in picks:
            t = ts[i]
            for eta in (0.0, 0.5):
                kw = dict(eta=eta)
                if eta > 0:
                    kw["variance_noise"] = variance_noise
                out = sched.step(model_output, t, sample, **kw)
                key = f"{name}/n{n}/t{t}/eta{eta}"
                tensors[key + "/prev_sample"] = out.prev_sample.contiguous()
                tensors[key + "/pred_original_sample"] = out.pred_original_sample.contiguous()
                meta["steps"].append(dict(config=name, n=n, t=t, eta=eta, key=key))

os.makedirs(OUT, exist_ok=True)
save_file({k: v.to(torch.float32).contiguous() for k, v in tensors.items()},
          os.path.join(OUT, "ddim.safetensors"))
with open(os.path.join(OUT, "ddim.json"), "w") as f:
    json.dump(meta, f, indent=1)
print(f"{len(meta['steps'])} step cases written to {OUT}")
