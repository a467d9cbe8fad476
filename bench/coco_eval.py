"""COCO box AP: ``workbench.metrics.detection_metrics`` against pycocotools' COCOeval on synthetic data.

    python bench/coco_eval.py [--images 5000] [--seed 0] [--repeats 1]

Builds ``--images`` synthetic images (80 categories; small, medium and large boxes; crowd regions; images
without ground truth or without predictions; jittered true positives, label swaps and false positives), times
both implementations end to end from the same plain per-image lists (pycocotools: building the COCO objects,
loadRes, evaluate, accumulate, summarize), checks that the twelve numbers agree to 1e-6, and prints a table.
faster-coco-eval is timed too where it is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from workbench.metrics import COCO_STATS, detection_metrics  # noqa: E402

CATEGORIES = [f"class{k:02d}" for k in range(80)]


def synthetic(n_images: int, seed: int):
    """Per-image predictions and ground truths like a VLM detector's on COCO (about 7 objects an image)."""
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(n_images):
        n = 0 if rng.random() < 0.05 else int(rng.poisson(7))
        scale = rng.choice([12.0, 50.0, 180.0], n, p=[0.4, 0.35, 0.25])
        wh = scale[:, None] * rng.uniform(0.6, 1.6, (n, 2))
        xy = rng.uniform(0, 640 - wh)
        g = np.concatenate([xy, xy + wh], 1)
        labels = rng.choice(CATEGORIES, n)
        hit = rng.random(n) < 0.6
        p = g[hit] + rng.normal(0, 0.05, (int(hit.sum()), 4)) * wh[hit].repeat(2, 1)
        plab = [lab if rng.random() > 0.1 else str(rng.choice(CATEGORIES)) for lab in labels[hit]]
        n_fp = int(rng.poisson(2))
        fp_wh = rng.uniform(10, 200, (n_fp, 2))
        fp_xy = rng.uniform(0, 440, (n_fp, 2))
        p = np.concatenate([p, np.concatenate([fp_xy, fp_xy + fp_wh], 1)])
        plab += [str(v) for v in rng.choice(CATEGORIES, n_fp)]
        if rng.random() < 0.05:
            p, plab = np.zeros((0, 4)), []
        p[:, 2:] = np.maximum(p[:, 2:], p[:, :2] + 1)
        gts.append({"boxes": g.tolist(), "labels": [str(v) for v in labels],
                    "iscrowd": (rng.random(n) < 0.01).tolist()})
        preds.append({"boxes": p.tolist(), "labels": plab})
    return preds, gts


def to_coco(preds, gts):
    """The plain lists as COCO dicts (ids from 1, xywh boxes, area = box area, every score 1.0)."""
    cid = {c: k + 1 for k, c in enumerate(sorted({lab for g in gts for lab in g["labels"]}))}
    anns = [{"id": 0, "image_id": i + 1, "category_id": cid[lab], "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
             "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": int(c)}
            for i, g in enumerate(gts) for b, lab, c in zip(g["boxes"], g["labels"], g["iscrowd"])]
    for k, a in enumerate(anns):
        a["id"] = k + 1
    dataset = {"images": [{"id": i + 1, "width": 640, "height": 640} for i in range(len(gts))],
               "annotations": anns, "categories": [{"id": v, "name": k} for k, v in cid.items()]}
    results = [{"image_id": i + 1, "category_id": cid[lab], "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "score": 1.0} for i, p in enumerate(preds) for b, lab in zip(p["boxes"], p["labels"]) if lab in cid]
    return dataset, results


def run_cocoeval(coco_cls, eval_cls, preds, gts):
    dataset, results = to_coco(preds, gts)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls()
        gt.dataset = dataset
        gt.createIndex()
        ev = eval_cls(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats[:12])


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    preds, gts = synthetic(args.images, args.seed)
    n_gt = sum(len(g["boxes"]) for g in gts)
    n_pred = sum(len(p["boxes"]) for p in preds)
    print(f"{args.images} images, {n_gt} ground-truth boxes, {n_pred} predictions, 80 categories")

    rows = []
    t_ours, ours = timed(lambda: detection_metrics(preds, gts), args.repeats)
    ours = [ours[k] for k in COCO_STATS]
    rows.append(("workbench.metrics (NumPy)", t_ours, ours))
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    t_ref, ref = timed(lambda: run_cocoeval(COCO, COCOeval, preds, gts), args.repeats)
    rows.append(("pycocotools COCOeval", t_ref, ref))
    try:
        from faster_coco_eval import COCO as FCOCO
        from faster_coco_eval import COCOeval_faster

        t_f, f = timed(lambda: run_cocoeval(FCOCO, COCOeval_faster, preds, gts), args.repeats)
        rows.append(("faster-coco-eval", t_f, f))
    except ImportError:
        pass

    width = max(len(r[0]) for r in rows)
    print(f"\n{'implementation'.ljust(width)}  seconds  speed-up vs pycocotools  AP      AP50    AP75    "
          f"max |diff| vs pycocotools")
    for name, t, stats in rows:
        diff = max(abs(a - b) for a, b in zip(stats, ref))
        print(f"{name.ljust(width)}  {t:7.3f}  {t_ref / t:23.1f}x  {stats[0]:.4f}  {stats[1]:.4f}  {stats[2]:.4f}  "
              f"{diff:.1e}")
    diff = max(abs(a - b) for a, b in zip(ours, ref))
    print(f"\nall twelve COCO numbers equal to pycocotools within 1e-6: {diff <= 1e-6} (max |diff| {diff:.1e})")
    return diff <= 1e-6


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
