"""Trains the toy pixel-space text-to-image model (issue 4) and exports it as a diffusers folder.

One command, seeded and resumable (run it again with the same arguments to continue from the last
checkpoint in CKPT_DIR):

    cargo run --release -p semi-toyworld --example write_dataset -- /work/toydata/train.safetensors 200000 1
    nohup python tools/train_toy.py --data /work/toydata/train.safetensors \
        --ckpt-dir /work/toyckpt > /work/toyckpt/stdout.log 2>&1 &

(The first run builds the tokenizer from the full CLIP vocab.json + merges.txt, by default the
runtime's test fixture crates/diffusion/tests/fixtures/clip-tokenizer; the running job was started
with --clip-dir pointing at that fixture in the text helper's worktree.)

The latent world (issue 22): `write_dataset ... --latent` for the data and `--vae DIR` (a
folder of tools/train_toy_vae.py --export) train the same UNet on 4x32x32 VAE latents; the
export then carries the VAE. Checked end to end on a 3-step run: `semi generate --model EXPORT`
draws 64x64 images and `--init semi` fills the 16x16 probe grid.

Export the EMA weights as a diffusers folder (no `vae` entry: pixel space) at any time, also while
training runs (it reads the last checkpoint):

    python tools/train_toy.py --ckpt-dir /work/toyckpt --export models/toy

Later stages (models/toy/README.md lists every command) resume with a learning-rate decay, or
grow a finished run in place: `--init-from OLD/step6200.pt
--transformer-layers 1,1,3` in a new run directory adds transformer layers as identities and
trains on, with `--object-weights 2,2,1` drawing more one- and two-object scenes.

Training recipe (lessons of an earlier prototype; results in docs/toyworld.md): v-prediction on a
cosine schedule, min-SNR-5 loss weighting, 20% caption dropout (empty caption, for classifier-free
guidance), AdamW with linear warm-up then a constant learning rate (optionally decayed linearly to 5% over the last
steps: --decay-from STEP with --steps END), gradient clipping at 1, EMA of
all weights with decay min(0.999, (1 + step) / (10 + step)). The UNet and the text encoder are
trained together from scratch. One CPU thread by default (the machine is shared).

Outputs in CKPT_DIR: `latest.pt` (model, EMA, optimizer, step, RNG states; written atomically
every --ckpt-minutes), `loss.csv` (step, mean loss over the log interval, lr, throughput),
`tokenizer/` (built by tools/toy_tokenizer.py) and `config.json` (the run's arguments).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toy_model  # noqa: E402
import toy_tokenizer  # noqa: E402

# Arguments that define the run; a resumed run must use the same values.
RUN_KEYS = ("width", "layers", "transformer_layers", "seed", "batch", "lr", "warmup", "caption_dropout", "ema", "snr_gamma", "data",
            "vae")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset .safetensors from write_dataset (captions: same name .jsonl)")
    ap.add_argument("--ckpt-dir", required=True)
    ap.add_argument("--export", metavar="DIR", help="write the EMA weights of the last checkpoint as a diffusers folder and exit")
    ap.add_argument("--export-fp32", action="store_true", help="export float32 instead of float16")
    ap.add_argument("--steps", type=int, default=1_000_000, help="stop after this many optimizer steps")
    ap.add_argument("--width", default="32,64,96", help="UNet block_out_channels")
    ap.add_argument("--layers", type=int, default=1, help="UNet layers_per_block")
    ap.add_argument("--transformer-layers", default="1",
                    help="UNet transformer_layers_per_block, one value or one per down block (e.g. 1,1,3: three "
                         "transformer layers at 8x8, in the mid block and the first up block)")
    ap.add_argument("--init-from", metavar="CKPT",
                    help="start a new run directory from another run's checkpoint (its weights, EMA and step), "
                         "or from an exported diffusers folder such as models/toy-latent (its EMA weights "
                         "as both weights and EMA, the step from its training_state.json); "
                         "transformer layers this run adds are initialised as identities (zero output "
                         "projections), the optimizer starts afresh with a new warm-up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.2e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--caption-dropout", type=float, default=0.2)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--snr-gamma", type=float, default=5.0)
    ap.add_argument("--weighting", choices=("min-snr", "v", "min-snr-flat-noisy"), default="min-snr",
                    help="loss weighting per sample: min-SNR-gamma of the v loss (down-weights the noisiest "
                         "timesteps, where the layout and the object count are decided), the plain v loss "
                         "(every timestep alike), or min-SNR with the noisy half (SNR < 1) held at min-SNR's "
                         "value at SNR 1 (0.5) instead of falling to 0; may be changed on resume")
    ap.add_argument("--object-weights", metavar="W1,W2,W3",
                    help="sample scenes with 1, 2, 3 ... objects in these proportions instead of uniformly "
                         "over the dataset; may be changed on resume")
    ap.add_argument("--decay-from", type=int, default=None, metavar="STEP",
                    help="from this step on, decay the learning rate linearly to 5%% of --lr at --steps (may be set on resume)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--clip-dir", help="full CLIP tokenizer dir for toy_tokenizer.py (default: its default)")
    ap.add_argument("--vae", metavar="DIR",
                    help="a diffusers AutoencoderKL folder (tools/train_toy_vae.py --export): train in its latent "
                         "space (the latent world, issue 22). The dataset is encoded once (posterior mean times "
                         "scaling_factor, cached as latents.pt in --ckpt-dir) and the export gets a `vae`")
    return ap.parse_args()


def load_data(path: str):
    """Images as u8 [N, 3, 32, 32], one caption index per scene into the list of unique captions, and
    each scene's object count (from its object list: captions such as "two circles" name several)."""
    from safetensors.torch import load_file

    images = load_file(path)["images"].permute(0, 3, 1, 2).contiguous()
    jsonl = os.path.splitext(path)[0] + ".jsonl"
    with open(jsonl) as f:
        scenes = [json.loads(line) for line in f]
    captions = [s["caption"] for s in scenes]
    if len(captions) != images.shape[0]:
        raise SystemExit(f"{jsonl}: {len(captions)} captions for {images.shape[0]} images")
    unique = sorted(set(captions))
    index = {c: i for i, c in enumerate(unique)}
    counts = torch.tensor([len(s["objects"]) for s in scenes])
    return images, torch.tensor([index[c] for c in captions]), unique, counts


def object_count_weights(spec, counts):
    """Per-scene sampling weights so that scenes with k objects make up the k-th share of `spec`
    (e.g. "2,2,1": 40% one-object, 40% two-object, 20% three-object scenes); None for uniform."""
    if not spec:
        return None
    shares = [float(w) for w in spec.split(",")]
    weights = torch.zeros(counts.shape[0], dtype=torch.float64)
    for k, share in enumerate(shares, start=1):
        mask = counts == k
        if mask.any():
            weights[mask] = share / mask.sum().item()
    if weights.sum() == 0:
        raise SystemExit(f"--object-weights {spec}: no scene has a weighted object count")
    print("scene shares by object count: " + ", ".join(
        f"{k}: {weights[counts == k].sum().item() / weights.sum().item():.0%}" for k in sorted(set(counts.tolist()))), flush=True)
    return weights


def load_tokenizer(tok_dir: str):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        os.path.join(tok_dir, "vocab.json"),
        os.path.join(tok_dir, "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=77,
    )


def tokenize(tok, texts):
    return tok(list(texts), padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def atomic_save(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def open_csv_log(path: str, header: list[str]):
    """Opens a run's CSV log for appending (a resumed run continues it), writing `header` when the
    file is new; returns the file (to flush) and its writer."""
    new = not os.path.exists(path)
    f = open(path, "a", newline="")
    writer = csv.writer(f)
    if new:
        writer.writerow(header)
    return f, writer


def build(run: dict, tok):
    bos = tok.convert_tokens_to_ids("<|startoftext|>")
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    return toy_model.build_models(run["width"], run["layers"], len(tok.get_vocab()), bos, eos,
                                  run.get("transformer_layers", "1"), 4 if run.get("vae") else 3)


def encode_latents(vae_dir: str, images, cache: str):
    """The dataset's latents, `scaling_factor * mean` of the VAE posterior, [N, 4, h, w] float32."""
    if os.path.exists(cache):
        return torch.load(cache, weights_only=True)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], 256):
            x = images[i:i + 256].float() / 127.5 - 1.0
            out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    lat = torch.cat(out)
    atomic_save(lat, cache)
    print(f"encoded {lat.shape[0]} scenes to latents {tuple(lat.shape[1:])}, std {lat.std():.3f}", flush=True)
    return lat


def load_grown(model, state: dict) -> list[str]:
    """Loads `state` into `model`, which may have more transformer layers per block than the model
    that `state` came from; the new layers' output projections (attention outputs and the
    feed-forward's last linear) are zeroed, so each new layer starts as the identity and the grown
    model computes exactly what the old one did. Returns the new parameters' names."""
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise SystemExit(f"--init-from: the checkpoint has weights this model lacks, e.g. {unexpected[:3]}")
    new = sorted(set(own) - set(state))
    bad = [k for k in new if ".transformer_blocks." not in k or ".transformer_blocks.0." in k]
    if bad:
        raise SystemExit(f"--init-from: only added transformer layers may be new, not e.g. {bad[:3]}")
    merged = dict(own)
    merged.update(state)
    for k in new:
        if any(part in k for part in (".attn1.to_out.0.", ".attn2.to_out.0.", ".ff.net.2.")):
            merged[k] = torch.zeros_like(own[k])
    model.load_state_dict(merged)
    return new


def load_init(path: str) -> dict:
    """The weights to start a run from: a checkpoint of this script, or an exported diffusers
    folder (float32 copies of its EMA weights, which serve as both weights and EMA). The folder
    form lets a run go on from what is committed when the checkpoints are gone."""
    if not os.path.isdir(path):
        return torch.load(path, weights_only=False)
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(os.path.join(path, "unet"), torch_dtype=torch.float32).state_dict()
    text = CLIPTextModel.from_pretrained(os.path.join(path, "text_encoder"), torch_dtype=torch.float32).state_dict()
    with open(os.path.join(path, "training_state.json")) as f:
        step = json.load(f)["step"]
    return dict(unet=unet, ema_unet=unet, text=text, ema_text=text, step=step)


def train(args) -> None:
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    os.makedirs(args.ckpt_dir, exist_ok=True)
    ckpt_path = os.path.join(args.ckpt_dir, "latest.pt")
    tok_dir = os.path.join(args.ckpt_dir, "tokenizer")
    resume = os.path.exists(ckpt_path)
    run = {k: getattr(args, k) for k in RUN_KEYS}
    cfg_path = os.path.join(args.ckpt_dir, "config.json")
    if resume:
        with open(cfg_path) as f:
            saved = json.load(f)
        saved.setdefault("transformer_layers", "1")  # runs from before the option
        saved.setdefault("vae", None)
        diff = {k: (saved.get(k), v) for k, v in run.items() if saved.get(k) != v}
        if diff:
            raise SystemExit(f"{args.ckpt_dir} holds a run with other settings (saved, given): {diff}")
    else:
        if args.init_from:
            # The same token ids as the run the weights come from.
            src = args.init_from if os.path.isdir(args.init_from) else os.path.dirname(os.path.abspath(args.init_from))
            shutil.copytree(os.path.join(src, "tokenizer"), tok_dir)
        else:
            toy_tokenizer.build(args.clip_dir or _default_clip_dir(), tok_dir)
        with open(cfg_path, "w") as f:
            json.dump(run, f, indent=2)

    torch.manual_seed(args.seed)
    tok = load_tokenizer(tok_dir)
    images, cap_idx, captions, obj_counts = load_data(args.data)
    latents = encode_latents(args.vae, images, os.path.join(args.ckpt_dir, "latents.pt")) if args.vae else None
    scene_weights = object_count_weights(args.object_weights, obj_counts)
    cap_ids = tokenize(tok, captions)  # [C, 77]
    empty_ids = tokenize(tok, [""])  # the unconditional caption
    unet, text = build(run, tok)
    ema_unet, ema_text = build(run, tok)
    ema_unet.load_state_dict(unet.state_dict())
    ema_text.load_state_dict(text.state_dict())
    for p in list(ema_unet.parameters()) + list(ema_text.parameters()):
        p.requires_grad_(False)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sched = toy_model.train_scheduler()
    ac = sched.alphas_cumprod  # [1000], float32
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    warm_from = 0  # the step the learning-rate warm-up counts from
    if not resume and args.init_from:
        ck = load_init(args.init_from)
        new = load_grown(unet, ck["unet"])
        load_grown(ema_unet, ck["ema_unet"])
        text.load_state_dict(ck["text"])
        ema_text.load_state_dict(ck["ema_text"])
        step = warm_from = ck["step"]
        print(f"initialised from {args.init_from} (step {step}); {len(new)} new UNet tensors", flush=True)
    if resume:
        ck = torch.load(ckpt_path, weights_only=False)
        unet.load_state_dict(ck["unet"])
        text.load_state_dict(ck["text"])
        ema_unet.load_state_dict(ck["ema_unet"])
        ema_text.load_state_dict(ck["ema_text"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        step = ck["step"]
        warm_from = ck.get("warm_from", 0)
        print(f"resumed from {ckpt_path} at step {step} (loss weighting: {args.weighting})", flush=True)
    print(toy_model.describe(unet, text), flush=True)
    print(f"data: {images.shape[0]} scenes, {len(captions)} distinct captions; threads {args.threads}", flush=True)

    csv_file, log = open_csv_log(os.path.join(args.ckpt_dir, "loss.csv"),
                                 ["step", "loss", "lr", "sec_per_step", "images_per_sec", "wall_time"])
    ema_pairs = list(zip(list(ema_unet.parameters()) + list(ema_text.parameters()), params))
    last_ckpt = time.time()
    t_log, loss_acc, n_acc = time.time(), 0.0, 0

    def save():
        atomic_save(
            dict(
                unet=unet.state_dict(),
                text=text.state_dict(),
                ema_unet=ema_unet.state_dict(),
                ema_text=ema_text.state_dict(),
                opt=opt.state_dict(),
                gen=gen.get_state(),
                torch_rng=torch.get_rng_state(),
                step=step,
                warm_from=warm_from,
                args=vars(args),
            ),
            ckpt_path,
        )

    unet.train()
    text.train()
    while step < args.steps:
        if scene_weights is None:
            idx = torch.randint(0, images.shape[0], (args.batch,), generator=gen)
        else:
            idx = torch.multinomial(scene_weights, args.batch, replacement=True, generator=gen)
        x0 = latents[idx] if latents is not None else images[idx].float() / 127.5 - 1.0
        ids = cap_ids[cap_idx[idx]]
        drop = torch.rand(args.batch, generator=gen) < args.caption_dropout
        ids = torch.where(drop[:, None], empty_ids, ids)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), generator=gen)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
        snr = ac[t] / (1 - ac[t])
        if args.weighting == "v":
            weight = torch.ones_like(snr)
        else:
            weight = torch.clamp(snr, max=args.snr_gamma) / (snr + 1)  # min-SNR for v-prediction
            if args.weighting == "min-snr-flat-noisy":
                weight = torch.where(snr < 1, torch.full_like(snr, 0.5), weight)

        lr = args.lr * min(1.0, (step + 1 - warm_from) / args.warmup)
        if args.decay_from is not None and step >= args.decay_from:
            frac = (step - args.decay_from) / max(1, args.steps - args.decay_from)
            lr = min(lr, args.lr * max(0.05, 1.0 - 0.95 * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        hidden = text(ids).last_hidden_state
        pred = unet(xt, t, hidden).sample
        loss = (F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3)) * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in ema_pairs:
                e.lerp_(p, 1 - decay)

        loss_acc += loss.item()
        n_acc += 1
        if step % args.log_every == 0:
            dt = (time.time() - t_log) / n_acc
            log.writerow([step, f"{loss_acc / n_acc:.5f}", f"{lr:.3g}", f"{dt:.3f}", f"{args.batch / dt:.1f}", f"{time.time():.0f}"])
            csv_file.flush()
            print(f"step {step} loss {loss_acc / n_acc:.4f} lr {lr:.3g} {dt:.2f} s/step {args.batch / dt:.1f} img/s", flush=True)
            t_log, loss_acc, n_acc = time.time(), 0.0, 0
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save()
            last_ckpt = time.time()
            print(f"checkpoint at step {step}", flush=True)
    save()
    print(f"done: step {step}", flush=True)


def _default_clip_dir() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "crates", "diffusion", "tests", "fixtures", "clip-tokenizer")


MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
}


def export(args) -> None:
    """Writes the EMA weights as a diffusers folder and checks that it reloads to the same outputs."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.set_num_threads(args.threads)
    ck = torch.load(os.path.join(args.ckpt_dir, "latest.pt"), weights_only=False)
    tok_dir = os.path.join(args.ckpt_dir, "tokenizer")
    tok = load_tokenizer(tok_dir)
    unet, text = build(ck["args"], tok)
    unet.load_state_dict(ck["ema_unet"])
    text.load_state_dict(ck["ema_text"])
    unet.eval()
    text.eval()
    out = args.export
    tmp = out.rstrip("/") + ".tmp-export"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    dtype = torch.float32 if args.export_fp32 else torch.float16
    # Copies: saving must not change the float32 reference models used in the check below.
    build_copy = build(ck["args"], tok)
    build_copy[0].load_state_dict(unet.state_dict())
    build_copy[1].load_state_dict(text.state_dict())
    build_copy[0].to(dtype).save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
    build_copy[1].to(dtype).save_pretrained(os.path.join(tmp, "text_encoder"), safe_serialization=True)
    os.makedirs(os.path.join(tmp, "tokenizer"))
    for f in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), os.path.join(tmp, "tokenizer", f))
    toy_model.ddim_scheduler().save_pretrained(os.path.join(tmp, "scheduler"))
    index = dict(MODEL_INDEX)
    vae_dir = ck["args"].get("vae")
    if vae_dir:
        shutil.copytree(vae_dir, os.path.join(tmp, "vae"))
        index["vae"] = ["diffusers", "AutoencoderKL"]
    with open(os.path.join(tmp, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")

    # Reload (as float32, the way the runtime computes) and compare with the in-memory EMA model.
    u2 = UNet2DConditionModel.from_pretrained(os.path.join(tmp, "unet"), torch_dtype=torch.float32).eval()
    t2 = CLIPTextModel.from_pretrained(os.path.join(tmp, "text_encoder"), torch_dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, u2.config.in_channels, 32, 32, generator=g)
    ids = tokenize(tok, ["a circle", "a square and a ring", "a cross, a triangle and a diamond", ""])
    t = torch.tensor([981, 500, 100, 981])
    with torch.no_grad():
        ref = unet(x, t, text(ids).last_hidden_state).sample
        got = u2(x, t, t2(ids).last_hidden_state).sample
    rel = ((got - ref).norm() / ref.norm()).item()
    print(f"reload check ({dtype}): relative L2 error of the UNet output {rel:.2e}")
    if rel > 1e-2:
        raise SystemExit(f"exported weights differ too much ({rel:.2e}); try --export-fp32")
    with open(os.path.join(tmp, "training_state.json"), "w") as f:
        json.dump({"step": ck["step"], "args": ck["args"], "dtype": str(dtype).replace("torch.", ""), "reload_rel_error": rel}, f, indent=2)
        f.write("\n")
    if os.path.isdir(out):
        # Keep files we do not write (e.g. a hand-written README.md, sample grids).
        for name in os.listdir(out):
            if not os.path.exists(os.path.join(tmp, name)):
                shutil.move(os.path.join(out, name), os.path.join(tmp, name))
        shutil.rmtree(out)
    os.replace(tmp, out)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"exported step {ck['step']} EMA weights to {out} ({size / 1e6:.1f} MB)")


def main() -> None:
    args = parse_args()
    if args.export:
        export(args)
    else:
        if not args.data:
            raise SystemExit("--data is required for training")
        train(args)


if __name__ == "__main__":
    main()
