"""PyTorch side of `semi bench --torch PYTHON`: the same rows, shapes and timing rule in diffusers.

Random (default-initialised) weights: only the timing matters here, not the values. Runs with
2 threads unless --threads says otherwise, prints one JSON object on stdout:
{"torch": version, "threads": n, "rows": [{"work", "seconds": [...], "peak_bytes"}]}.
Row names must match crates/bench/src/models.rs.
"""

import argparse
import json
import sys
import time

import torch

SD15_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1,
    norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)
SD15_VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, in_channels=3, latent_channels=4,
    layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=512,
    up_block_types=["UpDecoderBlock2D"] * 4,
)
SD15_SCHEDULER = dict(
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None,
    clip_sample=False,
)
SDXL_UNET = dict(
    addition_embed_type="text_time", addition_time_embed_dim=256, attention_head_dim=[5, 10, 20],
    block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    layers_per_block=2, projection_class_embeddings_input_dim=2816, sample_size=128,
    transformer_layers_per_block=[1, 2, 10], upcast_attention=None, use_linear_projection=True,
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
)
ROWS = [
    "UNet forward, batch 1",
    "UNet forward, batch 2",
    "CLIP text encoder, batch 1",
    "VAE decode, batch 1",
]
PROBE_ROW = "probe pass (to down_blocks.2.attentions.1), batch {}"
# Rows run only when named with --only, as in crates/bench/src/models.rs.
ON_REQUEST = [
    "denoising, 50 DDIM steps (UNet batch 2)",
    "denoising, 20 DPM++ 2M steps (UNet batch 2)",
    "SDXL-size UNet at 1024x1024, batch 1",
    "50-step generation end to end (text encoder, 50 DDIM steps, VAE decode)",
]
# The detector rows (crates/bench/src/detect.rs), run when named (--only YOLOv8): ultralytics'
# model built from its yaml (its own initialisation, no download), fused as its predictor and
# validator fuse it, then the validation NMS (conf 0.001, IoU 0.7, multi-label, 300 boxes).
YOLO_ROWS = [(size, batch, f"YOLOv8{size} detect, 640x640, batch {batch}") for size in ("n", "m") for batch in (1, 8)]


class Stop(Exception):
    pass


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def time_row(work, runs, fn, dev):
    cuda = dev.type == "cuda"
    resettable = reset_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    fn()  # warm-up, as bench.rs does
    secs = []
    for _ in range(max(runs, 1)):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        secs.append(time.perf_counter() - t)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = peak_rss() if resettable else None
    return {"work": work, "seconds": secs, "peak_bytes": peak}


def clip_text():
    """The SD 1.x text encoder (CLIP ViT-L/14 text tower), default-initialised."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(hidden_act="quick_gelu", hidden_size=768, intermediate_size=3072,
                         max_position_embeddings=77, num_attention_heads=12,
                         num_hidden_layers=12, projection_dim=768, vocab_size=49408)
    return CLIPTextModel(cfg)


def denoise(unet, scheduler, steps, init, text, x):
    """`steps` of `scheduler` from f32 noise `init`, guidance 7.5 over the batch-2 `text`."""
    scheduler.set_timesteps(steps)
    latents = x(init * scheduler.init_noise_sigma)
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        uncond, cond = unet(inp, t, text).sample.chunk(2)
        pred = uncond + 7.5 * (cond - uncond)
        latents = scheduler.step(pred, t, latents).prev_sample
    return latents


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--suffix", default="", help="appended to every row name (semi's dtype suffix)")
    ap.add_argument("--probe-batches", default="1", help="noise images per probe pass, comma-separated")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    # Models are initialised on the device they run on (on a GPU, initialising 860M weights on
    # 2 CPU threads would take longer than the rows).
    torch.set_default_device(dev)
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    names = [r + a.suffix for r in ROWS]
    probes = [(int(n), PROBE_ROW.format(int(n)) + a.suffix) for n in a.probe_batches.split(",")]
    extra = [r + a.suffix for r in ON_REQUEST]
    wanted = lambda w: not a.only or any(o in w for o in a.only)
    requested = lambda w: any(o in w for o in a.only)
    h, w = a.height // 8, a.width // 8
    rows = []
    x = lambda t: t.to(device=dev, dtype=dt)
    with torch.inference_mode():
        if any(wanted(r) for r in names[:2] + [p for _, p in probes]):
            from diffusers import UNet2DConditionModel

            unet = UNet2DConditionModel(**SD15_UNET).eval().to(device=dev, dtype=dt)
            s1, c1 = x(torch.randn(1, 4, h, w)), x(torch.randn(1, 77, 768))
            s2, c2 = torch.cat([s1, s1]), torch.cat([c1, c1])
            t = torch.tensor(981.0, device=dev)
            if wanted(names[0]):
                rows.append(time_row(names[0], a.runs, lambda: unet(s1, t, c1), dev))
            if wanted(names[1]):
                rows.append(time_row(names[1], a.runs, lambda: unet(s2, t, c2), dev))
            # Stop right after the probed cross-attention layer, as our probe pass does.
            layer = unet.down_blocks[2].attentions[1].transformer_blocks[0].attn2

            def stop(*_):
                raise Stop()

            handle = layer.register_forward_hook(stop)
            for n, work in probes:
                if not wanted(work):
                    continue
                sn, cn = x(torch.randn(n, 4, h, w)), c1.repeat(n, 1, 1)

                def probe():
                    try:
                        unet(sn, t, cn)
                    except Stop:
                        return
                    raise RuntimeError("probe hook did not fire")

                rows.append(time_row(work, a.runs, probe, dev))
            handle.remove()
            del unet
        if wanted(names[2]):
            te = clip_text().eval().to(device=dev, dtype=dt)
            ids = torch.tensor([[49406] + [321 + i for i in range(8)] + [49407] * 68], device=dev)
            rows.append(time_row(names[2], a.runs, lambda: te(ids), dev))
            del te
        if wanted(names[3]):
            from diffusers import AutoencoderKL

            vae = AutoencoderKL(**SD15_VAE).eval().to(device=dev, dtype=dt)
            z = x(torch.randn(1, 4, h, w))
            rows.append(time_row(names[3], a.runs, lambda: vae.decode(z), dev))
        if requested(extra[0]) or requested(extra[1]):
            from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel

            unet = UNet2DConditionModel(**SD15_UNET).eval().to(device=dev, dtype=dt)
            init, text = torch.randn(1, 4, h, w), x(torch.randn(2, 77, 768))

            for work, cls, steps in [(extra[0], DDIMScheduler, 50), (extra[1], DPMSolverMultistepScheduler, 20)]:
                if requested(work):
                    sched = cls.from_config(dict(SD15_SCHEDULER, _class_name="PNDMScheduler"))
                    rows.append(time_row(work, a.runs, lambda: denoise(unet, sched, steps, init, text, x), dev))
            del unet
        if requested(extra[3]):
            from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

            te = clip_text().eval().to(device=dev, dtype=dt)
            unet = UNet2DConditionModel(**SD15_UNET).eval().to(device=dev, dtype=dt)
            vae = AutoencoderKL(**SD15_VAE).eval().to(device=dev, dtype=dt)
            sched = DDIMScheduler.from_config(dict(SD15_SCHEDULER, _class_name="PNDMScheduler"))
            prompt = [49406] + [321 + i for i in range(8)] + [49407] * 68
            ids = torch.tensor([[49406] + [49407] * 76, prompt], device=dev)
            init = torch.randn(1, 4, h, w)

            def generate():
                text = torch.cat([te(ids[0:1])[0], te(ids[1:2])[0]])
                latents = denoise(unet, sched, 50, init, text, x)
                return vae.decode(latents / 0.18215).sample

            rows.append(time_row(extra[3], a.runs, generate, dev))
            del te, unet, vae
        if requested(extra[2]):
            from diffusers import UNet2DConditionModel

            unet = UNet2DConditionModel(**SDXL_UNET).eval().to(device=dev, dtype=dt)
            s1, c1 = x(torch.randn(1, 4, 128, 128)), x(torch.randn(1, 77, 2048))
            added = {"text_embeds": x(torch.randn(1, 1280)),
                     "time_ids": x(torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]]))}
            t = torch.tensor(981.0, device=dev)
            rows.append(time_row(extra[2], a.runs, lambda: unet(s1, t, c1, added_cond_kwargs=added), dev))
            del unet
        for size in ("n", "m"):
            todo = [(b, name + a.suffix) for s_, b, name in YOLO_ROWS if s_ == size and requested(name + a.suffix)]
            if not todo:
                continue
            from ultralytics.nn.tasks import DetectionModel
            from ultralytics.utils.nms import non_max_suppression

            model = DetectionModel(f"yolov8{size}.yaml", nc=80, verbose=False).eval().fuse(verbose=False)
            model = model.to(device=dev, dtype=dt)
            for batch, name in todo:
                img = x(torch.rand(batch, 3, 640, 640))

                def detect(model=model, img=img):
                    out = model(img)
                    out = out[0] if isinstance(out, (tuple, list)) else out
                    return non_max_suppression(out, 0.001, 0.7, multi_label=True, max_det=300)

                rows.append(time_row(name, a.runs, detect, dev))
            del model
    json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows},
              sys.stdout)
    print()


if __name__ == "__main__":
    main()
