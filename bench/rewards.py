"""Throughput of the detection and counting rewards against a per-pair pure-Python implementation.

The baseline computes the same formula the way the released PR1 code does: parse, then loop over every
(prediction, ground truth) pair for IoU or distance, ``linear_sum_assignment`` on the resulting list of lists, and
loop again for the reward terms. Both sides are checked to give the same number before anything is timed.

    python bench/rewards.py            # or: make bench

Goal (issue 2): >= 10x faster than the baseline and < 2 ms per 50-box completion.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from workbench import conventions  # noqa: E402
from workbench.rewards import score  # noqa: E402

IMAGE_SIZE = (640, 480)
CLASSES = ["person", "car", "dog", "cat", "chair"]
_BLOCK = re.compile(r"<\|box_start\|>(.*?)<\|box_end\|>")  # PR1 utils.extract_boxes


# --- the baseline: per-pair Python loops --------------------------------------------------------------------------
def baseline_detection(completion: str, solution: dict) -> float:
    """``paper`` detection total, pixels convention, in plain Python loops."""
    body = completion.split("```json")[1].split("```")[0]
    items = json.loads(body)
    w, h = IMAGE_SIZE
    pred, labels = [], []
    for item in items:
        x1, y1, x2, y2 = item["bbox_2d"]
        x1, x2 = sorted((min(max(x1, 0), w), min(max(x2, 0), w)))
        y1, y2 = sorted((min(max(y1, 0), h), min(max(y2, 0), h)))
        pred.append((x1, y1, x2, y2))
        labels.append(item["label"].strip().lower())
    gt, gt_labels = solution["boxes"], [label.lower() for label in solution["labels"]]
    iou = [[_iou(p, g) for g in gt] for p in pred]
    cost = [[(1 - iou[i][j]) + 0.5 * (labels[i] != gt_labels[j]) for j in range(len(gt))] for i in range(len(pred))]
    rows, cols = linear_sum_assignment(cost)
    tp = [(r, c) for r, c in zip(rows, cols) if iou[r][c] >= 0.5]
    m, n_pred, n_gt = len(tp), len(pred), len(gt)
    f1 = loc = cls = 0.0
    if m:
        precision, recall = m / n_pred, m / n_gt
        f1 = 2 * precision * recall / (precision + recall)
        loc = sum(iou[r][c] for r, c in tp) / m
        cls = sum(labels[r] == gt_labels[c] for r, c in tp) / m
    penalty = 0.5 * ((n_pred - m) / n_pred + (n_gt - m) / n_gt)
    return 1.0 + f1 + loc + cls - penalty


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    if area_a <= 0 or area_b <= 0:
        return 0.0
    return inter / (area_a + area_b - inter)


def baseline_counting(completion: str, solution: dict) -> float:
    """``paper`` counting total, Qwen2-VL 0-1000 frame, parsed as PR1's extract_boxes does (every box block
    evaluated as ``(x1, y1), (x2, y2)``), then plain Python loops."""
    w, h = IMAGE_SIZE
    pred = []
    for body in _BLOCK.findall(completion):
        (x1, y1), (x2, y2) = ast.literal_eval(body)
        cx, cy = (x1 + x2) / 2 * w / 1000, (y1 + y2) / 2 * h / 1000
        pred.append((min(max(cx, 0), w) * 1000 / w, min(max(cy, 0), h) * 1000 / h))
    gt = [(x * 1000 / w, y * 1000 / h) for x, y in solution["points"]]
    dist = [[math.hypot(p[0] - g[0], p[1] - g[1]) for g in gt] for p in pred]
    rows, cols = linear_sum_assignment(dist)
    mean = sum(dist[r][c] for r, c in zip(rows, cols)) / len(rows)
    ratio = min(len(pred), len(gt)) / max(len(pred), len(gt))
    return 1.0 + ratio * (1 - mean / (1000 * math.sqrt(2)))


# --- inputs ----------------------------------------------------------------------------------------------------------
def random_boxes(rng, n: int) -> list[list[int]]:
    w, h = IMAGE_SIZE
    xy = rng.uniform(0, [w - 60, h - 60], (n, 2))
    wh = rng.uniform(10, 60, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).round().astype(int).tolist()


def jitter(rng, boxes: list[list[int]], n: int) -> list[list[int]]:
    picked = [boxes[i % len(boxes)] for i in rng.permutation(n)]
    return (np.asarray(picked) + rng.integers(-8, 9, (n, 4))).tolist()


def detection_inputs(rng, n_pred: int, gt: list) -> str:
    items = [{"bbox_2d": b, "label": str(rng.choice(CLASSES))} for b in jitter(rng, gt, n_pred)]
    return "```json\n" + json.dumps(items) + "\n```"


def counting_inputs(rng, n_pred: int, gt: list) -> str:
    qwen = conventions.get("qwen2_vl")
    return qwen.write_boxes(jitter(rng, gt, n_pred), ["person"] * n_pred, IMAGE_SIZE)


def score_all(task, completions, solution, convention) -> list[float]:
    return [score(task, c, solution, image_size=IMAGE_SIZE, convention=convention).total for c in completions]


def baseline_all(baseline, completions, solution) -> list[float]:
    return [baseline(c, solution) for c in completions]


def best_of(fns, repeats: int) -> list[float]:
    """Seconds per call of each function: the best of ``repeats`` runs, measured as this process's CPU time and
    interleaved, so that other work on a shared machine (a training job) distorts both sides alike and little."""
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.process_time()
            fn()
            best[k] = min(best[k], time.process_time() - start)
    return best


def main() -> None:
    rng = np.random.default_rng(0)
    gt_boxes = random_boxes(rng, 50)
    det_solution = {"boxes": gt_boxes, "labels": [str(rng.choice(CLASSES)) for _ in gt_boxes]}
    cnt_solution = {"points": [[(x1 + x2) / 2, (y1 + y2) / 2] for x1, y1, x2, y2 in gt_boxes]}
    cases = [
        ("detection", "8 x 50 boxes", [detection_inputs(rng, 50, gt_boxes) for _ in range(8)], det_solution,
         "pixels", baseline_detection),
        ("detection", "1 x 1000 boxes", [detection_inputs(rng, 1000, gt_boxes)], det_solution, "pixels",
         baseline_detection),
        ("counting", "8 x 50 boxes", [counting_inputs(rng, 50, gt_boxes) for _ in range(8)], cnt_solution,
         "qwen2_vl", baseline_counting),
        ("counting", "1 x 1000 boxes", [counting_inputs(rng, 1000, gt_boxes)], cnt_solution, "qwen2_vl",
         baseline_counting),
    ]
    rows = []
    for task, label, completions, solution, convention, baseline in cases:
        ours = functools.partial(score_all, task, completions, solution, convention)
        theirs = functools.partial(baseline_all, baseline, completions, solution)
        assert np.allclose(ours(), theirs(), atol=1e-9), (task, label, ours(), theirs())
        t_ours, t_base = best_of([ours, theirs], repeats=30)
        rows.append((task, label, t_base * 1e3, t_ours * 1e3, t_ours * 1e3 / len(completions), t_base / t_ours))

    header = (f"{'reward':<10} {'batch':<15} {'per-pair Python':>16} {'workbench':>10} {'per completion':>15} "
              f"{'speed-up':>9}")
    print(header)
    print("-" * len(header))
    for task, label, base_ms, ours_ms, per_ms, ratio in rows:
        print(f"{task:<10} {label:<15} {base_ms:>13.2f} ms {ours_ms:>7.2f} ms {per_ms:>12.3f} ms {ratio:>8.1f}x")


if __name__ == "__main__":
    main()
