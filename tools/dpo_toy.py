"""Preference fine-tuning (Diffusion-DPO) of a toy model against its own counting mistakes (issue 4).

The toy model's remaining sample-quality failures are whole duplicate objects ("a circle and a
square" drawn with two circles): the model was trained only on scenes without duplicates and still
draws them. Here the toy world's exact detector, which defines a correct sample, judges the model's
own samples, and Diffusion-DPO (Wallace et al., 2023) raises the likelihood of the correct ones
against the wrong ones for the same caption, relative to the frozen starting model:

    python tools/dpo_toy.py pairs MODEL --n 2400 --seed 100 --out PAIRS          # sample + detect
    python tools/dpo_toy.py train MODEL --pairs PAIRS --ckpt-dir RUN --steps 400  # resumable
    python tools/dpo_toy.py export MODEL --ckpt-dir RUN --out NEW_MODEL          # diffusers folder

`pairs` samples N captions of the toy grammar (seeded; use seeds other than eval_toy.py's 0 and 1,
so no evaluated noise is trained on), one image each, with eval_toy.py's sampler, runs the Rust
detector, and pairs every mismatch with a match of the same caption (up to --pairs-per-loser
different matches). `--favour cross --favour-share 0.5` redraws that share of the captions until
each names one of the favoured shapes, to aim a round at the shapes that fail most (the others keep
the plain grammar's mix, so the round still sees every caption). `train` fine-tunes the UNet only
(the text encoder stays frozen) with the Diffusion-DPO loss on the v-prediction error, the same
timestep and noise for both images of a pair:

    d = (|v_w - f(x_w,t)|^2 - |v_w - f_ref(x_w,t)|^2) - (|v_l - f(x_l,t)|^2 - |v_l - f_ref(x_l,t)|^2)
    loss = -log sigmoid(-beta / 2 * d)

plus, with --sft-weight, the plain v loss of the winners. It writes RUN/latest.pt atomically every
--ckpt-minutes and at the end (run the same command again to continue) and RUN/log.csv (step, loss,
implicit accuracy: the share of pairs with d < 0). `export` writes the fine-tuned UNet (float16)
with MODEL's text encoder, tokenizer and scheduler as a new diffusers folder.

A model with a `vae` (the latent world, issue 22; pass `--max-objects 2`) is judged on its decoded
images by the shape detector, and the pairs hold the sampler's final latents, so the DPO loss is
taken in the latent space the UNet was trained in (as diffusers' DPO example does with SD's VAE
latents). The decoded PNGs stay beside them for inspection.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eval_toy  # noqa: E402
import toy_model  # noqa: E402
import train_toy  # noqa: E402


def favour_captions(captions: list[str], seed: int, max_objects: int, favour: list[str], share: float) -> list[str]:
    """Redraws `share` of the captions (seeded) until each names one of the `favour` shapes."""
    if not favour or share <= 0:
        return captions
    rng = random.Random(seed + 7)  # its own stream: with no favour the captions stay the plain grammar's
    names = lambda c: any(re.search(rf"\ba {f}\b", c) for f in favour)  # noqa: E731
    out = []
    for c in captions:
        if rng.random() < share:
            while not names(c):
                c = eval_toy.random_captions(1, rng.randrange(1 << 30), max_objects)[0]
        out.append(c)
    return out


def sample_pairs(args) -> None:
    favour = [f for f in args.favour.split(",") if f] if args.favour else []
    unknown = [f for f in favour if f not in eval_toy.CATEGORIES]
    if unknown:
        raise SystemExit(f"--favour: unknown shape(s) {', '.join(unknown)} (known: {', '.join(eval_toy.CATEGORIES)})")
    torch.set_num_threads(args.threads)
    tok, text, unet, sched, vae = eval_toy.load(args.model_dir)
    captions = eval_toy.random_captions(args.n, args.seed, args.max_objects)
    captions = favour_captions(captions, args.seed, args.max_objects, favour, args.favour_share)
    size = unet.config.sample_size
    noise_gen = torch.Generator().manual_seed(args.seed)
    step_gen = torch.Generator().manual_seed(args.seed + 1)
    records = []
    images = []  # what the loss is taken on: u8 images, or the latents of a model with a VAE
    for b in range(0, args.n, args.batch):
        folder = os.path.join(args.out, "samples", f"b{b // args.batch:03}")
        caps = captions[b : b + args.batch]
        noise = torch.randn((len(caps), unet.config.in_channels, size, size), generator=noise_gen)
        done = os.path.join(folder, "detections.jsonl")
        if not os.path.exists(done):  # resumable: a finished batch is not sampled again
            os.makedirs(folder, exist_ok=True)
            x = eval_toy.generate(tok, text, unet, sched, caps, noise, args.guidance, args.steps, args.eta, step_gen)
            if vae is not None:
                save_file({"latents": x.contiguous()}, os.path.join(folder, "latents.safetensors"))
                with torch.no_grad():
                    x = vae.decode(x / vae.config.scaling_factor).sample
            out = eval_toy.to_u8(x)
            with open(os.path.join(folder, "captions.jsonl"), "w") as f:
                for i, (img, cap) in enumerate(zip(out, caps)):
                    Image.fromarray(img).save(os.path.join(folder, f"{i:04}.png"))
                    f.write(json.dumps({"file": f"{i:04}.png", "caption": cap}) + "\n")
            recs = eval_toy.detect_dir(folder, shapes=vae is not None)
            with open(done + ".tmp", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in recs)
            os.replace(done + ".tmp", done)
        if vae is not None:
            lat = load_file(os.path.join(folder, "latents.safetensors"))["latents"]
        for r in (json.loads(line) for line in open(done)):
            records.append(r)
            if vae is not None:
                images.append(lat[int(os.path.splitext(r["file"])[0])].numpy())
            else:
                images.append(np.asarray(Image.open(os.path.join(folder, r["file"])).convert("RGB")))
        ok = sum(r["match"] for r in records)
        print(f"{len(records)} samples, {ok} match their caption ({ok / len(records):.0%})", flush=True)

    rng = random.Random(args.seed)
    by_caption: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if r["match"]:
            by_caption.setdefault(r["caption"], []).append(i)
    win, lose, caps = [], [], []
    for i, r in enumerate(records):
        winners = by_caption.get(r["caption"], [])
        if r["match"] or not winners:
            continue
        for w in rng.sample(winners, min(args.pairs_per_loser, len(winners))):
            win.append(images[w])
            lose.append(images[i])
            caps.append(r["caption"])
    if not caps:
        raise SystemExit("no pairs: every sample matched its caption, or no mismatch has a matching sample")
    path = os.path.join(args.out, "pairs.safetensors")
    save_file({"winners": torch.from_numpy(np.stack(win)), "losers": torch.from_numpy(np.stack(lose))}, path + ".tmp")
    os.replace(path + ".tmp", path)
    with open(os.path.join(args.out, "pairs.json"), "w") as f:
        json.dump({"model_dir": args.model_dir, "n": args.n, "seed": args.seed, "steps": args.steps, "eta": args.eta,
                   "guidance": args.guidance, "space": "latent" if vae is not None else "pixel",
                   "favour": favour, "favour_share": args.favour_share if favour else 0.0, "captions": caps}, f)
    losers = sum(not r["match"] for r in records)
    print(f"{len(caps)} pairs from {losers} mismatches ({len(set(caps))} captions) -> {path}", flush=True)


def train(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok, text, unet, _, _ = eval_toy.load(args.model_dir)
    ref = copy.deepcopy(unet).eval()  # the frozen reference: the starting weights
    for p in list(text.parameters()) + list(ref.parameters()):
        p.requires_grad_(False)
    pairs = load_file(os.path.join(args.pairs, "pairs.safetensors"))
    meta = json.load(open(os.path.join(args.pairs, "pairs.json")))
    if meta.get("space") == "latent":  # already the UNet's x0
        xw, xl = pairs["winners"].float(), pairs["losers"].float()
    else:
        to_x = lambda u8: u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # noqa: E731
        xw, xl = to_x(pairs["winners"]), to_x(pairs["losers"])
    unique = sorted(set(meta["captions"]))
    with torch.no_grad():
        ids = tok(unique, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        hidden_by_caption = text(ids).last_hidden_state
    cap_idx = torch.tensor([unique.index(c) for c in meta["captions"]])
    ac = toy_model.train_scheduler().alphas_cumprod
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)

    os.makedirs(args.ckpt_dir, exist_ok=True)
    ckpt = os.path.join(args.ckpt_dir, "latest.pt")
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    if os.path.exists(ckpt):
        ck = torch.load(ckpt, weights_only=False)
        if ck["run"] != run_key(args):
            raise SystemExit(f"{ckpt} belongs to another run: {ck['run']}")
        unet.load_state_dict(ck["unet"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        step = ck["step"]
        print(f"resumed at step {step}", flush=True)
    log_file, log = train_toy.open_csv_log(os.path.join(args.ckpt_dir, "log.csv"),
                                           ["step", "loss", "implicit_acc", "sft", "s_per_step"])

    def save():
        train_toy.atomic_save({"unet": unet.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step,
                     "run": run_key(args)}, ckpt)

    print(f"{xw.shape[0]} pairs over {len(unique)} captions; step {step} -> {args.steps}", flush=True)
    unet.train()
    last_ckpt = t_log = time.time()
    acc_loss = acc_acc = acc_sft = 0.0
    n_acc = 0
    while step < args.steps:
        idx = torch.randint(0, xw.shape[0], (args.batch,), generator=gen)
        x0 = torch.cat([xw[idx], xl[idx]])
        noise = torch.randn(xw[idx].shape, generator=gen).repeat(2, 1, 1, 1)
        t = torch.randint(args.t_min, 1000, (args.batch,), generator=gen).repeat(2)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
        hidden = hidden_by_caption[cap_idx[idx]].repeat(2, 1, 1)
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.no_grad():
            ref_err = F.mse_loss(ref(xt, t, hidden).sample, target, reduction="none").mean(dim=(1, 2, 3))
        err = F.mse_loss(unet(xt, t, hidden).sample, target, reduction="none").mean(dim=(1, 2, 3))
        diff = err - ref_err
        d = diff[: args.batch] - diff[args.batch :]
        loss = -F.logsigmoid(-0.5 * args.beta * d).mean()
        sft = err[: args.batch].mean()
        total = loss + args.sft_weight * sft
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        step += 1
        acc_loss += loss.item()
        acc_acc += (d < 0).float().mean().item()
        acc_sft += sft.item()
        n_acc += 1
        if step % args.log_every == 0:
            dt = (time.time() - t_log) / n_acc
            row = [step, f"{acc_loss / n_acc:.4f}", f"{acc_acc / n_acc:.3f}", f"{acc_sft / n_acc:.5f}", f"{dt:.2f}"]
            log.writerow(row)
            log_file.flush()
            print("step {} loss {} implicit acc {} sft {} ({} s/step)".format(*row), flush=True)
            t_log, acc_loss, acc_acc, acc_sft, n_acc = time.time(), 0.0, 0.0, 0.0, 0
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save()
            last_ckpt = time.time()
    save()
    print(f"done: step {step}", flush=True)


def run_key(args) -> dict:
    """The arguments that define a run; a resumed run must use the same ones."""
    return {k: getattr(args, k) for k in ("model_dir", "pairs", "lr", "beta", "batch", "seed", "t_min", "sft_weight", "warmup")}


def export(args) -> None:
    from diffusers import UNet2DConditionModel

    ck = torch.load(os.path.join(args.ckpt_dir, "latest.pt"), weights_only=False)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(args.model_dir, "unet"), torch_dtype=torch.float32)
    unet.load_state_dict(ck["unet"])
    tmp = args.out.rstrip("/") + ".tmp-export"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(args.model_dir, tmp, ignore=shutil.ignore_patterns("unet", "*.png", "README.md"))
    unet.to(torch.float16).save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
    state_path = os.path.join(tmp, "training_state.json")
    state = json.load(open(state_path)) if os.path.exists(state_path) else {}
    prior = state.get("dpo")  # one entry per fine-tuning round, oldest first
    state["dpo"] = (prior if isinstance(prior, list) else [prior] if prior else []) + [{"step": ck["step"], **ck["run"]}]
    with open(state_path, "w") as f:
        json.dump(state, f, indent=2)
        f.write("\n")
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(tmp, args.out)
    print(f"exported DPO step {ck['step']} to {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pairs", help="sample, detect and pair the model's own images")
    p.add_argument("model_dir")
    p.add_argument("--n", type=int, default=2400)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--max-objects", type=int, default=3)
    p.add_argument("--pairs-per-loser", type=int, default=2)
    p.add_argument("--favour", default="", help="comma-separated shapes to aim the captions at (see above)")
    p.add_argument("--favour-share", type=float, default=0.5, help="share of the captions redrawn for --favour")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    t = sub.add_parser("train", help="Diffusion-DPO fine-tuning of the UNet on the pairs")
    t.add_argument("model_dir")
    t.add_argument("--pairs", required=True, help="the OUT folder of `pairs`")
    t.add_argument("--ckpt-dir", required=True)
    t.add_argument("--steps", type=int, default=400)
    t.add_argument("--batch", type=int, default=32, help="pairs per step")
    t.add_argument("--lr", type=float, default=2e-5)
    t.add_argument("--warmup", type=int, default=20)
    t.add_argument("--beta", type=float, default=5000.0)
    t.add_argument("--t-min", type=int, default=0, help="sample timesteps in [T_MIN, 1000)")
    t.add_argument("--sft-weight", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--ckpt-minutes", type=float, default=5.0)
    t.add_argument("--log-every", type=int, default=10)
    e = sub.add_parser("export", help="write the fine-tuned UNet with MODEL's other parts as a diffusers folder")
    e.add_argument("model_dir")
    e.add_argument("--ckpt-dir", required=True)
    e.add_argument("--out", required=True)
    args = ap.parse_args()
    {"pairs": sample_pairs, "train": train, "export": export}[args.cmd](args)


if __name__ == "__main__":
    main()
