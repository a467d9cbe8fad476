"""Detection reward: multi-instance boxes with class labels, scored after bipartite matching.

``paper`` (Perception-R1): Hungarian matching on cost = (1 - IoU) + 0.5 * [labels differ] (localisation dominates,
a label mismatch only breaks ties); pairs with IoU >= 0.5 are true positives (m).

    F1 from P = m / N_pred, R = m / N_gt;  loc = mean IoU of the m pairs;  cls = share of them with the GT label;
    penalty = 0.5 * (false-positive rate + false-negative rate);   answer = F1 + loc + cls - penalty

Boxes are sorted and clipped to the image; labels compare case- and space-insensitively. Empty GT and empty
prediction give full marks (3); otherwise nothing matched gives F1 = loc = cls = 0.

``pr1_released`` (PR1 ``pr1_detection_reward``): Qwen2.5-VL JSON, labels mapped to COCO ids (an unknown label or a
missing key makes the item malformed); in the model's frame, coordinates as written:

    r = 0.25 * (1 - malformed / items) + 0.75 * F1 + cls + loc,   clamped to [0, 3], no missing penalty

matched with DETR's cost 5 * L1(cxcywh) - p(class) - 2 * GIoU, keeping pairs with IoU > 0.5 (strictly). The L1
term on raw pixels dominates, so the matching is effectively nearest-box. Invalid JSON, a list with no valid item,
a box that is not 4 numbers, a box with x2 < x1 or y2 < y1, or a non-finite cost score 0 (the released code's
``except: 0``); m = 0 or an empty GT returns the format part alone.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np

from workbench import boxes, conventions
from workbench.matching import hungarian
from workbench.parsing import parse
from workbench.rewards.base import Match, TaskScore, released_text
from workbench.rewards.format import paper_format

FORMAT_RANGE = {"paper": (-1.0, 1.0), "pr1_released": (0.0, 0.25)}
ANSWER_RANGE = {"paper": (-1.0, 3.0), "pr1_released": (0.0, 2.75)}

# PR1 utils.get_cate_to_id(): the 80 COCO category names -> their (non-contiguous) COCO ids.
COCO_IDS = {name: i for i, name in [
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"),
    (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush")]}
# DETR's class cost is -softmax(logits)[gt class]; PR1's logits are one-hot 1.0 over 90 classes, so the term is
# e/(e+89) ~ 0.030 for the right class and 1/(e+89) ~ 0.011 otherwise. We take prediction and target on the same
# class index (REWARDS.md: the code after the class-index fix); the term is so small next to 5 * L1 in pixels that
# it only breaks exact ties.
_P_SAME = math.e / (math.e + 89)
_P_OTHER = 1.0 / (math.e + 89)


def paper(completion, solution: dict, *, image_size, convention) -> TaskScore:
    pred = parse("detection", completion, convention=convention, image_size=image_size)
    gt = boxes.sort_corners(_field(solution, "boxes"))
    pred_boxes = boxes.clip_to_image(boxes.sort_corners(pred.boxes), image_size)
    pred_ids, gt_ids = _label_ids(pred.labels, _field(solution, "labels") or [""] * len(gt))
    n_pred, n_gt = len(pred_boxes), len(gt)
    parts = {"f1": 0.0, "loc": 0.0, "cls": 0.0, "penalty": 0.0, "precision": 0.0, "recall": 0.0}
    matches: list[Match] = []
    if n_pred == 0 and n_gt == 0:
        parts.update(f1=1.0, loc=1.0, cls=1.0, precision=1.0, recall=1.0)
    else:
        iou = boxes.iou_matrix(pred_boxes, gt)  # [N, M]
        same = pred_ids[:, None] == gt_ids[None, :]  # [N, M]
        matching = hungarian((1.0 - iou) + 0.5 * ~same, keep=iou >= 0.5)
        rows, cols, m = matching.rows, matching.cols, len(matching)
        matches = [Match(r, c, v) for (r, c), v in zip(matching.pairs, iou[rows, cols].tolist())]
        if m:
            precision, recall = m / n_pred, m / n_gt
            parts.update(precision=precision, recall=recall, f1=2 * precision * recall / (precision + recall),
                         loc=float(iou[rows, cols].sum()) / m, cls=float(same[rows, cols].sum()) / m)
        false_pos = (n_pred - m) / n_pred if n_pred else 0.0
        false_neg = (n_gt - m) / n_gt if n_gt else 0.0
        parts["penalty"] = 0.5 * (false_pos + false_neg)
    answer = parts["f1"] + parts["loc"] + parts["cls"] - parts["penalty"]
    return TaskScore(format=paper_format(pred.format_ok), answer=answer, format_ok=pred.format_ok,
                     prediction=pred, parts=parts, matches=matches)


def pr1_released(completion, solution: dict, *, image_size, convention) -> TaskScore:
    text, pred = released_text("detection", completion, convention)
    parts = {"valid_fraction": 0.0, "f1": 0.0, "loc": 0.0, "cls": 0.0}

    def zero(why: str) -> TaskScore:  # the released code's `except: reward 0`
        pred.malformed.append(f"{why}: the released reward scores 0")
        pred.format_ok = False
        return TaskScore(format=0.0, answer=0.0, format_ok=False, prediction=pred, parts=parts)

    # The released detection run decoded with skip_special_tokens=True: its text carried no <|im_end|>.
    body = text.replace("<|im_end|>", "").replace("```json", "").replace("```", "")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return zero("invalid JSON")
    categories = _released_categories(solution)
    items = data if isinstance(data, list) else []  # iterating a dict/str/number yields no valid item
    valid = [e for e in items if isinstance(e, dict) and "bbox_2d" in e and _hashable(e.get("label"))
             and e.get("label") in categories]
    if not valid:
        return zero("no item with a bbox_2d and a known label")
    raw = [e["bbox_2d"] for e in valid]
    if not all(isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b) for b in raw):
        return zero("a bbox_2d is not 4 numbers")
    conv = conventions.get(convention)
    pred_box = np.asarray(raw, dtype=np.float64)  # [N, 4] in the model's frame, as written
    with np.errstate(over="ignore", invalid="ignore"):
        px = conv.to_pixels(pred_box, image_size)
    shown = np.isfinite(px).all(axis=1)  # the prediction keeps drawable boxes; the score uses all of them
    pred.boxes, pred.count = px[shown], len(valid)
    pred.labels = [e["label"] for e, ok in zip(valid, shown.tolist()) if ok]
    valid_fraction = len(valid) / len(items)
    pred.format_ok = len(valid) == len(items)
    if not pred.format_ok:
        pred.malformed.append(f"{len(items) - len(valid)} of {len(items)} items malformed")
    parts["valid_fraction"] = valid_fraction
    fmt = 0.25 * valid_fraction
    scored = TaskScore(format=fmt, answer=0.0, format_ok=pred.format_ok, prediction=pred, parts=parts)

    gt = conv.from_pixels(boxes.as_boxes(_field(solution, "boxes")), image_size)
    if len(gt) == 0:
        return scored
    if (pred_box[:, 2:] < pred_box[:, :2]).any() or (gt[:, 2:] < gt[:, :2]).any():
        return zero("a box with x2 < x1 or y2 < y1 fails the released GIoU assertion")
    pred_ids = np.asarray([categories[e["label"]] for e in valid])
    gt_ids = np.asarray([categories.get(label, -1) if _hashable(label) else -1
                         for label in _field(solution, "labels") or [None] * len(gt)])
    with np.errstate(over="ignore", invalid="ignore"):
        class_prob = np.where(pred_ids[:, None] == gt_ids[None, :], _P_SAME, _P_OTHER)
        l1 = boxes.l1_matrix(boxes.convert(pred_box, "xyxy", "cxcywh"), boxes.convert(gt, "xyxy", "cxcywh"))
        # boxes.giou_matrix gives a zero-area box -1 where PR1's epsilon-guarded GIoU still measures the hull; at
        # most 2 * 2 cost units against 5 * L1 in pixels, so it changes a match only between near-equal candidates.
        cost = 5.0 * l1 - class_prob - 2.0 * boxes.giou_matrix(pred_box, gt)
        iou = boxes.iou_matrix(pred_box, gt)
    if not np.isfinite(cost).all():
        return zero("non-finite matching cost")
    matching = hungarian(cost, keep=iou > 0.5)
    m = len(matching)
    rows, cols = matching.rows, matching.cols
    scored.matches = [Match(r, c, v) for (r, c), v in zip(matching.pairs, iou[rows, cols].tolist())]
    if m == 0:
        return scored
    precision, recall = m / len(pred_box), m / len(gt)
    f1 = 2 * precision * recall / (precision + recall + 1e-8)  # PR1's epsilon
    cls = float((pred_ids[rows] == gt_ids[cols]).mean())
    loc = float(iou[rows, cols].mean())
    total = min(max(fmt + 0.75 * f1 + cls + loc, 0.0), 3.0)
    parts.update(f1=f1, cls=cls, loc=loc, precision=precision, recall=recall)
    scored.answer = total - fmt
    return scored


def _label_ids(pred_labels, gt_labels) -> tuple[np.ndarray, np.ndarray]:
    """Labels -> integer ids shared by both sides (normalised text); a missing predicted label matches nothing."""
    vocabulary: dict[str, int] = {}
    gt_ids = [vocabulary.setdefault(_norm(label), len(vocabulary)) for label in gt_labels]
    pred_ids = [vocabulary.get(_norm(label), -1) if label else -2 for label in pred_labels]
    return np.asarray(pred_ids, dtype=np.int64), np.asarray(gt_ids, dtype=np.int64)


def _norm(label) -> str:
    """Label -> lower case with single spaces (None -> "")."""
    return "" if label is None else _norm_text(label if isinstance(label, str) else str(label))


@functools.lru_cache(maxsize=4096)  # a detection answer repeats a handful of class names
def _norm_text(text: str) -> str:
    return " ".join(text.lower().split())


def _released_categories(solution: dict) -> dict:
    """COCO ids, extended (ids from 1001) by the record's own ``categories``/``labels`` when they are not COCO
    names: the released code only knew COCO, and would score every other dataset 0."""
    categories = dict(COCO_IDS)
    for name in _field(solution, "categories") + _field(solution, "labels"):
        if isinstance(name, str) and name not in categories:
            categories[name] = 1001 + len(categories) - len(COCO_IDS)
    return categories


def _field(solution: dict, key: str) -> list:
    """A list field of the solution record ([] when absent; arrays become lists)."""
    value = solution.get(key)
    return [] if value is None else list(value)


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
