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
NMS kernel, as in ultralytics' validation.

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
    save_file({"pred": pred.contiguous(), "nms": nms.contiguous()}, os.path.join(out, "nms.safetensors"))
    print(f"nms: {n} predictions -> {nms.shape[0]} boxes")


if __name__ == "__main__":
    main()
