"""An ultralytics YOLOv8 detect checkpoint (`.pt`) as safetensors for semi (`semi-detect`'s
`YoloV8::from_file`): the model's state dict in f32 under ultralytics' own names (EMA weights
when the checkpoint has them), `num_batches_tracked` dropped, the class names in the metadata.

An ultralytics `.pt` is a pickle of the model object, and reading it runs code: convert only
files you trust. semi itself never reads pickles.

Usage: python tools/convert_yolo.py yolov8m.pt yolov8m.safetensors  (needs ultralytics, torch)
"""

import json
import sys

import torch
from safetensors.torch import save_file


def main():
    src, out = sys.argv[1], sys.argv[2]
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt["model"] if isinstance(ckpt, dict) else ckpt
    model = model.float()
    head = model.model[-1]
    if type(head).__name__ != "Detect" or len(model.model) != 23:
        raise SystemExit(f"{src}: not a YOLOv8 detect model (head {type(head).__name__}, "
                         f"{len(model.model)} layers)")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()
          if v.is_floating_point()}
    names = getattr(model, "names", None) or {}
    save_file(sd, out, metadata={"format": "pt", "names": json.dumps({int(k): v for k, v in dict(names).items()})})
    print(f"wrote {out}: {len(sd)} tensors, {head.nc} classes")


if __name__ == "__main__":
    main()
