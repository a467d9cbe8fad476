"""Visual grounding reward: one box for one referring phrase, scored by IoU with the ground-truth box.

``paper``: answer = IoU(pred, gt) in [0, 1], continuous, in original pixels; the first box counts; inverted boxes
are sorted, boxes are clipped to the image, degenerate boxes give 0.

``pr1_released`` (PR1 ``pr1_grounding_reward``): answer = IoU squared, in the 0-1000 frame, on the first
``[a,b,c,d]`` / ``(a,b,c,d)`` / ``(a,b),(c,d)`` anywhere in the text ([0,0,0,0] when none); without
``<|box_start|>`` the numbers are read as 0-1 fractions, times 1000, truncated to int; an inverted box is not
sorted (IoU 0); no clipping. Format: PR1's mis-escaped pattern (see ``format.py``).
"""

from __future__ import annotations

import math
import re

import numpy as np

from workbench import boxes, conventions
from workbench.conventions import BOX_START
from workbench.parsing import parse
from workbench.rewards.base import Match, TaskScore, released_text
from workbench.rewards.format import paper_format, released_grounding_format

FORMAT_RANGE = {"paper": (-1.0, 1.0), "pr1_released": (0.0, 1.0)}
ANSWER_RANGE = {"paper": (0.0, 1.0), "pr1_released": (0.0, 1.0)}

_NORMALISED = conventions.get("qwen2_vl")  # the 0-1000 frame PR1 scores in

# Verbatim from PR1 (utils.py, parse_float_sequence_within), tried in this order; each is linear (the digit runs
# cannot overlap the separators).
_F = r"(-?\d+(?:\.\d+)?)"
_RELEASED_PATTERNS = (
    re.compile(rf"\[\s*{_F},\s*{_F},\s*{_F},\s*{_F}\s*\]"),
    re.compile(rf"\(\s*{_F},\s*{_F},\s*{_F},\s*{_F}\s*\)"),
    re.compile(rf"\(\s*{_F},\s*{_F}\),\s*\(\s*{_F},\s*{_F}\)"),
)


def paper(completion, solution: dict, *, image_size, convention) -> TaskScore:
    pred = parse("grounding", completion, convention=convention, image_size=image_size)
    gt = boxes.sort_corners(solution["box"])
    iou, matches = 0.0, []
    if len(pred.boxes):
        box = boxes.clip_to_image(boxes.sort_corners(pred.boxes[:1]), image_size)
        iou = float(boxes.iou_matrix(box, gt)[0, 0])
        matches = [Match(0, 0, iou=iou)]
    return TaskScore(format=paper_format(pred.format_ok), answer=iou, format_ok=pred.format_ok,
                     prediction=pred, parts={"iou": iou}, matches=matches)


def pr1_released(completion, solution: dict, *, image_size, convention) -> TaskScore:
    text, pred = released_text("grounding", completion, convention)
    numbers = _released_box(text)
    found = numbers is not None
    if not found:
        pred.malformed.append("no box found; the released code scores [0, 0, 0, 0]")
        numbers = [0.0, 0.0, 0.0, 0.0]
    with np.errstate(over="ignore", invalid="ignore"):
        if BOX_START in text:  # written in the model's frame (0-1000 for Qwen2-VL, where the two agree)
            conv = conventions.get(convention)
            box = _NORMALISED.from_pixels(conv.to_pixels(numbers, image_size), image_size)
        else:  # read as 0-1 fractions: int(x * 1000), truncated toward zero
            box = np.asarray([float(math.trunc(x * 1000)) if math.isfinite(x * 1000) else math.nan for x in numbers])
        gt = _NORMALISED.from_pixels(boxes.as_boxes(solution["box"]), image_size)
        usable = bool(np.isfinite(box).all())
        iou = float(boxes.iou_matrix(box, gt)[0, 0]) if usable else 0.0
    if found and usable:
        pred.boxes, pred.labels, pred.count = _NORMALISED.to_pixels(np.reshape(box, (1, 4)), image_size), [None], 1
    fmt = released_grounding_format(text)
    pred.format_ok = fmt == 1.0
    return TaskScore(format=fmt, answer=iou ** 2, format_ok=pred.format_ok, prediction=pred,
                     parts={"iou": iou, "iou_squared": iou ** 2},
                     matches=[Match(0, 0, iou=iou)] if len(pred.boxes) else [])


def _released_box(text: str) -> list[float] | None:
    for pattern in _RELEASED_PATTERNS:
        match = pattern.search(text)
        if match:
            return [float(g) for g in match.groups()]
    return None
