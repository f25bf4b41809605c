"""Reference outputs of ultralytics' YOLOv8 on random weights, for the coming candle YOLOv8
detector (issue 21): nothing but these small tensors is committed, because the weights are
rebuilt on both sides from a seed.

The seed rule (the one of tools/make_fixtures.py's SD-1.5 weights, with base seed 2000): sort the
state dict's floating-point tensor names (byte order) and give the k-th
`r = torch.randn(shape, generator=manual_seed(2000 + k))`, then `0.02 r` for names ending in
`.bias`, `1 + 0.1 r` for other 1-D tensors (BatchNorm weights, running means and variances),
`r / sqrt(fan_in)` otherwise; a BatchNorm running mean is then shifted by -1 (computed as
`(1 + 0.1 r) - 1` in f32). The DFL convolution (`model.22.dfl.conv.weight`) keeps
ultralytics' fixed 0..15 ramp, as in every trained file; `num_batches_tracked` is skipped.

`image.safetensors` holds `image` [1, 3, 160, 160], a synthetic image already letterboxed (RGB
in [0, 1], CHW), textured so that no two anchors tie in score. For each size (n, s; ultralytics' layout: BatchNorm eps 1e-3, SiLU),
`yolov8<size>.safetensors` holds:
`raw` [1, 84, 525], the Detect head's decoded output in eval mode (xywh in pixels, then the 80
class probabilities), anchors in stride order 8, 16, 32.

`nms.safetensors` holds made-up predictions `pred` [1, 84, 1000] (boxes in clusters, random class
scores with no ties) and `nms` [K, 6]: `ultralytics.utils.nms.non_max_suppression(pred,
conf_thres=0.001, iou_thres=0.7, max_det=300)` (x0, y0, x1, y1, score, class) with torchvision's
NMS kernel; `nms_multi` the same with `multi_label=True`, as in ultralytics' validation.

`letterbox.safetensors` holds, for the synthetic PNGs `scene.png` (200x150) and `tall.png`
(90x128), ultralytics' `LetterBox(new_shape=S, auto=False)` output (uint8, HWC, RGB) at S = 160
and S = 64 (`scene_160`, ...), and `cv2.resize(..., INTER_LINEAR)` of seeded random images
(`resize_<h>x<w>_to_<H>x<W>` with its source `src_<h>x<w>`), down and up, odd sizes included.

`pipeline.safetensors` holds ultralytics' path on those PNGs with the seeded YOLOv8n at S = 160,
its class logits spread (`model.22.cv3.{0,1,2}.2`: weight * 100, bias * 100 - 16; a random head
otherwise scores all anchors alike, with exact ties): LetterBox, /255, the model's output
`<stem>_raw` [1, 84, 525], then `non_max_suppression(conf_thres=0.25, iou_thres=0.7,
max_det=300, multi_label=True)` and `scale_boxes` back to the image: `<stem>` [K, 6] (x0, y0,
x1, y1, score, class). The spread also amplifies float noise (a logit error of ~2e-4 becomes
0.02), so semi's own output is held to `<stem>_raw` within 1e-4 relative, and semi's NMS and
mapping to `<stem>` from `<stem>_raw`.

Usage: python tools/make_yolo_fixtures.py OUT_DIR  (needs ultralytics 8.x, torch; no download)
"""

import math
import os
import sys

import torch
from safetensors.torch import save_file

BASE_SEED = 2000


def seeded(model):
    sd = model.state_dict()
    names = sorted(k for k, v in sd.items() if v.is_floating_point() and not k.endswith("dfl.conv.weight"))
    new = {}
    for k, name in enumerate(names):
        shape = sd[name].shape
        r = torch.randn(shape, generator=torch.Generator().manual_seed(BASE_SEED + k), dtype=torch.float32)
        if name.endswith(".bias"):
            v = 0.02 * r
        elif r.dim() == 1:
            v = 1 + 0.1 * r
            if name.endswith("running_mean"):
                v = v - 1  # centred, so the random network does not collapse to constant scores
        else:
            v = r * float(1.0 / math.sqrt(r.numel() // shape[0]))
        new[name] = v
    missing, unexpected = model.load_state_dict(new, strict=False)
    assert not unexpected, unexpected
    assert all(m.endswith("num_batches_tracked") or m.endswith("dfl.conv.weight") for m in missing), missing
    return model


def image(size=160):
    """Shapes on a gradient, deterministic."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    img = torch.stack([x / size, y / size, 0.5 + 0 * x])
    img[:, 20:70, 30:110] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    disk = (x - 110) ** 2 + (y - 115) ** 2 < 30 ** 2
    img[:, disk] = torch.tensor([0.1, 0.2, 0.8])[:, None]
    # Texture everywhere: flat regions give many anchors the same score, and NMS then depends on
    # how each implementation's sort orders ties.
    noise = torch.rand((3, size, size), generator=torch.Generator().manual_seed(5))
    return (0.6 * img + 0.4 * noise)[None]


def main():
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.nms import non_max_suppression

    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    save_file({"image": image().contiguous()}, os.path.join(out, "image.safetensors"))
    import torchvision  # noqa: F401  (ultralytics then uses torchvision.ops.nms, as in its validation)

    for size in ("n", "s"):
        model = seeded(DetectionModel(f"yolov8{size}.yaml", nc=80, verbose=False)).eval()
        x = image()
        with torch.no_grad():
            raw = model(x)
            raw = raw[0] if isinstance(raw, (tuple, list)) else raw
        path = os.path.join(out, f"yolov8{size}.safetensors")
        save_file({"raw": raw.contiguous()}, path)
        print(f"yolov8{size}: {sum(p.numel() for p in model.parameters())} parameters, raw {tuple(raw.shape)} -> {path}")
    # NMS on made-up predictions: random scores never tie (a random network's do, and then NMS
    # depends on how each implementation's sort orders ties); boxes in clusters, so that
    # suppression happens within a class and not across classes.
    g = torch.Generator().manual_seed(11)
    n = 1000
    centres = torch.rand((40, 2), generator=g) * 600
    k = torch.randint(0, 40, (n,), generator=g)
    xy = centres[k] + torch.randn((n, 2), generator=g) * 8
    wh = 30 + torch.rand((n, 2), generator=g) * 60
    best = (torch.randperm(n, generator=g).float() + 1) / (n + 1)  # distinct by construction
    cls = torch.rand((80, n), generator=g) * best * 0.99
    cls[torch.randint(0, 80, (n,), generator=g) % 5, torch.arange(n)] = best  # 5 classes in use
    pred = torch.cat([xy.T, wh.T, cls])[None]
    best = pred[0, 4:].amax(0)
    assert len(set(best.tolist())) == n, "tied scores"
    nms = non_max_suppression(pred.clone(), conf_thres=0.001, iou_thres=0.7, max_det=300)[0]
    multi = non_max_suppression(pred.clone(), conf_thres=0.001, iou_thres=0.7, max_det=300, multi_label=True)[0]
    save_file({"pred": pred.contiguous(), "nms": nms.contiguous(), "nms_multi": multi.contiguous()},
              os.path.join(out, "nms.safetensors"))
    print(f"nms: {n} predictions -> {nms.shape[0]} boxes")

    pipeline(out)


def scene(w, h, seed):
    """A textured synthetic picture (uint8 HWC RGB): a gradient, a box and a disk, and noise."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                          indexing="ij")
    img = torch.stack([x / w, y / h, 0.5 + 0 * x], -1)
    img[h // 6:h // 2, w // 5:w // 2] = torch.tensor([0.9, 0.1, 0.1])
    img[(x - 0.7 * w) ** 2 + (y - 0.65 * h) ** 2 < (0.2 * min(w, h)) ** 2] = torch.tensor([0.1, 0.2, 0.8])
    img = 0.6 * img + 0.4 * torch.rand((h, w, 3), generator=g)
    return (img * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def pipeline(out):
    import cv2
    import numpy as np
    from ultralytics.data.augment import LetterBox
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import ops
    from ultralytics.utils.nms import non_max_suppression

    images = {"scene": scene(200, 150, 21), "tall": scene(90, 128, 22)}
    lb = {}
    for stem, img in images.items():
        cv2.imwrite(os.path.join(out, f"{stem}.png"), img[..., ::-1])  # cv2 writes BGR
        back = cv2.imread(os.path.join(out, f"{stem}.png"))[..., ::-1]
        assert (back == img).all()
        for size in (160, 64):
            lb[f"{stem}_{size}"] = torch.from_numpy(np.ascontiguousarray(
                LetterBox(new_shape=(size, size), auto=False)(image=img)))
    rng = np.random.default_rng(3)
    for (h, w, H, W) in [(37, 53, 89, 128), (300, 200, 96, 64), (81, 97, 40, 41), (50, 40, 61, 49)]:
        src = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        lb[f"src_{h}x{w}"] = torch.from_numpy(src)
        lb[f"resize_{h}x{w}_to_{H}x{W}"] = torch.from_numpy(cv2.resize(src, (W, H), interpolation=cv2.INTER_LINEAR))
    save_file(lb, os.path.join(out, "letterbox.safetensors"))

    model = seeded(DetectionModel("yolov8n.yaml", nc=80, verbose=False)).eval()
    # A random head scores every anchor and class about alike (sigmoid ~ 0.54, exact ties in
    # f32), so which boxes survive would hang on float noise: the class logits are spread (the
    # last 1x1 convolution of each class branch: weight times 100, bias times 100 then - 16, in
    # f32) and the threshold is ultralytics' prediction default, 0.25, which leaves ~60 boxes.
    with torch.no_grad():
        for i in range(3):
            conv = model.model[22].cv3[i][2]
            conv.weight.mul_(100.0)
            conv.bias.mul_(100.0).add_(-16.0)
    found = {}
    for stem, img in images.items():
        square = LetterBox(new_shape=(160, 160), auto=False)(image=img)
        x = torch.from_numpy(np.ascontiguousarray(square.transpose(2, 0, 1)))[None].float() / 255
        with torch.no_grad():
            raw = model(x)
            raw = raw[0] if isinstance(raw, (tuple, list)) else raw
        det = non_max_suppression(raw, conf_thres=0.25, iou_thres=0.7, max_det=300, multi_label=True)[0]
        det[:, :4] = ops.scale_boxes((160, 160), det[:, :4], img.shape[:2])
        found[stem] = det.contiguous()
        found[f"{stem}_raw"] = raw.contiguous()
        scores = det[:, 4].sort().values
        gap = (scores[1:] - scores[:-1]).min().item() if len(scores) > 1 else float("inf")
        print(f"pipeline {stem}: {det.shape[0]} boxes, scores {scores[0]:.4f}..{scores[-1]:.4f}, "
              f"smallest gap {gap:.2e}")
    save_file(found, os.path.join(out, "pipeline.safetensors"))


if __name__ == "__main__":
    main()
