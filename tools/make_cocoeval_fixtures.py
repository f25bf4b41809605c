"""Made-up COCO ground truth and detection results, and what pycocotools' COCOeval (bbox) makes of
them, for `crates/eval/tests/cocoeval.rs` (semi's `semi eval coco-metrics` must match every figure
of `stats` to 1e-6).

The cases cover what COCOeval treats specially: crowd boxes (ignored, matched by the detection's
own area), images with no ground truth (their detections are false positives), duplicate
detections of one object, ties in score (stable order), every area bucket with boxes on the
bucket edges, more than 100 detections on one image (only the 100 best count), categories with
no ground truth, gt ids of 0, and boxes that only touch.

Usage: python tools/make_cocoeval_fixtures.py OUT_DIR  (needs pycocotools; numpy)
"""

import contextlib
import io
import json
import os
import random
import sys

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def box_of_area(rng, area, W=640, H=480):
    ratio = rng.uniform(0.5, 2.0)
    w = max(1.0, (area * ratio) ** 0.5)
    h = area / w
    x = rng.uniform(0, max(0.0, W - w))
    y = rng.uniform(0, max(0.0, H - h))
    return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]


def jitter(rng, b, s):
    return [round(b[0] + rng.uniform(-s, s), 2), round(b[1] + rng.uniform(-s, s), 2),
            round(max(0.5, b[2] * rng.uniform(0.8, 1.2)), 2), round(max(0.5, b[3] * rng.uniform(0.8, 1.2)), 2)]


def scenario_main(seed):
    rng = random.Random(seed)
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3, 7, 90)]
    images, anns, results = [], [], []
    ann_id = 0  # the first gt id is 0, which COCOeval cannot tell from "unmatched"
    for img in range(1, 13):
        images.append({"id": img, "width": 640, "height": 480, "file_name": f"{img}.jpg"})
        if img in (4, 9):
            n_gt = 0  # images with no ground truth
        else:
            n_gt = rng.randint(1, 9)
        gts = []
        for _ in range(n_gt):
            area = rng.choice([20.0, 32.0 ** 2, 500.0, 96.0 ** 2, 3000.0, 20000.0, 60000.0])
            b = box_of_area(rng, area)
            cat = rng.choice([1, 2, 3, 7])
            crowd = 1 if rng.random() < 0.12 else 0
            a = {"id": ann_id, "image_id": img, "category_id": cat, "bbox": b,
                 "area": area if rng.random() < 0.7 else round(b[2] * b[3] * 0.8, 3), "iscrowd": crowd}
            ann_id += 1
            anns.append(a)
            gts.append(a)
        for g in gts:
            # a hit, sometimes a duplicate, sometimes a miss
            if rng.random() < 0.85:
                results.append({"image_id": img, "category_id": g["category_id"],
                                "bbox": jitter(rng, g["bbox"], 3), "score": round(rng.random(), 2)})
            if rng.random() < 0.3:
                results.append({"image_id": img, "category_id": g["category_id"],
                                "bbox": jitter(rng, g["bbox"], 6), "score": round(rng.random(), 2)})
        # false positives, some in a category without ground truth, ties in score
        for _ in range(rng.randint(0, 6)):
            results.append({"image_id": img, "category_id": rng.choice([1, 2, 3, 7, 90]),
                            "bbox": box_of_area(rng, rng.choice([50.0, 2000.0, 30000.0])),
                            "score": rng.choice([0.5, 0.5, 0.25, round(rng.random(), 3)])})
    # one image with 150 detections of one category (only the 100 best count)
    img = 12
    g = {"id": ann_id, "image_id": img, "category_id": 2, "bbox": [100.0, 100.0, 50.0, 40.0],
         "area": 2000.0, "iscrowd": 0}
    anns.append(g)
    for k in range(150):
        results.append({"image_id": img, "category_id": 2, "bbox": jitter(rng, g["bbox"], 20),
                        "score": round(0.3 + 0.4 * rng.random(), 2)})
    # boxes that only touch a gt (IoU 0) and one exact match on the edge of a bucket
    results.append({"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.9})
    return {"images": images, "annotations": anns, "categories": cats}, results


def scenario_sparse():
    """One image, one small gt, no medium or large objects (their figures are -1)."""
    gt = {"images": [{"id": 5, "width": 100, "height": 100}],
          "annotations": [{"id": 3, "image_id": 5, "category_id": 1, "bbox": [10, 10, 20, 20],
                           "area": 400, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "a"}]}
    results = [{"image_id": 5, "category_id": 1, "bbox": [11, 10, 20, 20], "score": 0.8},
               {"image_id": 5, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.8},
               {"image_id": 5, "category_id": 1, "bbox": [60, 60, 30, 30], "score": 0.95}]
    return gt, results


def evaluate(gt, results):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        dt = coco.loadRes(json.loads(json.dumps(results)))
        e = COCOeval(coco, dt, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return dict(zip(STATS, [float(s) for s in e.stats]))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cases = {"main": scenario_main(0), "other-seed": scenario_main(7), "sparse": scenario_sparse()}
    for name, (gt, results) in cases.items():
        with open(os.path.join(out, f"{name}.gt.json"), "w") as f:
            json.dump(gt, f, separators=(",", ":"))
        with open(os.path.join(out, f"{name}.results.json"), "w") as f:
            json.dump(results, f, separators=(",", ":"))
        stats = evaluate(gt, results)
        with open(os.path.join(out, f"{name}.stats.json"), "w") as f:
            json.dump(stats, f, indent=1)
        print(name, len(gt["annotations"]), "gt,", len(results), "results:",
              " ".join(f"{k}={v:.4f}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
