"""Trains the latent toy world's autoencoder (issue 22): a small diffusers `AutoencoderKL` that
maps the 64x64 scenes of `WorldConfig::latent` to 4x32x32 latents (scale factor 2), so that the
latent toy model's probe grid is 16x16 cells of 2x2 latent pixels, as SD's is of 4x4.

    cargo run --release -p semi-toyworld --example write_dataset -- \
        /work/toydata/latent-vae.safetensors 20000 101 --latent
    nohup python tools/train_toy_vae.py --data /work/toydata/latent-vae.safetensors \
        --ckpt-dir /work/toyvae > /work/toyvae/stdout.log 2>&1 &
    python tools/train_toy_vae.py --ckpt-dir /work/toyvae --export models/toy-latent/vae

Seeded and resumable: run the same command again to continue from `latest.pt` (model,
optimizer, step, RNG state; written atomically every --ckpt-minutes). Loss: mean squared error
of the reconstruction in [-1, 1] plus `--kl` times the KL term (a tiny weight: the latents only
need to be smooth enough for a diffusion model, as SD's VAE). `--export` writes the diffusers
folder (config.json + diffusion_pytorch_model.safetensors, f32) with `scaling_factor` set to
1 / std of the latents of 2,000 training images, as SD's 0.18215 was chosen.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time

import torch
from safetensors.torch import load_file

CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
    up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
    block_out_channels=[32, 64], layers_per_block=1, norm_num_groups=16, sample_size=64,
    act_fn="silu",
)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset .safetensors from write_dataset --latent")
    ap.add_argument("--ckpt-dir", required=True)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decay-from", type=int, metavar="STEP",
                    help="from this step on, decay the learning rate linearly to 10%% of --lr at --steps "
                         "(may be set on resume)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--export", help="write the diffusers VAE folder here and exit")
    return ap.parse_args()


def images(path):
    x = load_file(path)["images"]  # [N, H, W, 3] uint8
    return x.permute(0, 3, 1, 2).contiguous()


def to_unit(batch):
    return batch.float() / 127.5 - 1.0


def save_atomic(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export(args, model, data):
    from safetensors.torch import save_file

    model.eval()
    with torch.no_grad():
        idx = torch.arange(0, min(2000, data.shape[0]))
        lat = torch.cat([model.encode(to_unit(data[idx[i:i + 100]])).latent_dist.mean
                         for i in range(0, len(idx), 100)])
        std = lat.std().item()
    cfg = dict(CONFIG, _class_name="AutoencoderKL", scaling_factor=round(1.0 / std, 5))
    os.makedirs(args.export, exist_ok=True)
    with open(os.path.join(args.export, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    sd = {k: v.contiguous().float() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(args.export, "diffusion_pytorch_model.safetensors"))
    print(f"exported {args.export}: latent std {std:.4f}, scaling_factor {cfg['scaling_factor']}")


def main():
    from diffusers import AutoencoderKL

    args = parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.ckpt_dir, exist_ok=True)
    latest = os.path.join(args.ckpt_dir, "latest.pt")
    torch.manual_seed(args.seed)
    model = AutoencoderKL(**CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    step, run = 0, None
    if os.path.exists(latest):
        ck = torch.load(latest, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, run = ck["step"], ck["args"]
        torch.set_rng_state(ck["rng"])
        args.data = args.data or run["data"]
    if args.data is None:
        raise SystemExit("--data is needed for a new run")
    data = images(args.data)
    if args.export:
        return export(args, model, data)
    if run is not None:
        for k in ("batch", "lr", "kl", "seed", "data"):
            if run[k] != vars(args)[k]:
                raise SystemExit(f"resumed run has {k}={run[k]!r}, not {vars(args)[k]!r}")
    log = open(os.path.join(args.ckpt_dir, "loss.csv"), "a", newline="")
    w = csv.writer(log)
    g = torch.Generator().manual_seed(args.seed * 1000003 + step)
    t_save, t0, acc, n = time.time(), time.time(), 0.0, 0
    model.train()
    while step < args.steps:
        lr = args.lr
        if args.decay_from is not None and step >= args.decay_from:
            lr *= 1.0 - 0.9 * (step - args.decay_from) / max(1, args.steps - args.decay_from)
        for group in opt.param_groups:
            group["lr"] = lr
        x = to_unit(data[torch.randint(0, data.shape[0], (args.batch,), generator=g)])
        post = model.encode(x).latent_dist
        z = post.sample(generator=g)
        rec = model.decode(z).sample
        loss = torch.nn.functional.mse_loss(rec, x) + args.kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        acc, n = acc + loss.item(), n + 1
        if step % 50 == 0:
            w.writerow([step, f"{acc / n:.6f}", f"{(time.time() - t0) / n:.3f}", f"{lr:.2e}"])
            log.flush()
            print(f"step {step}: loss {acc / n:.6f}, {(time.time() - t0) / n:.2f} s/step", flush=True)
            t0, acc, n = time.time(), 0.0, 0
        if time.time() - t_save > 60 * args.ckpt_minutes or step == args.steps:
            save_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                         "args": vars(args), "rng": torch.get_rng_state()}, latest)
            t_save = time.time()


if __name__ == "__main__":
    main()
