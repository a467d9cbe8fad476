"""Counting reward: counting as point detection (Perception-R1).

Predicted points are the centres of the predicted boxes followed by any points written as points; match indices
(``Match.pred``) refer to that order. Both sides are measured in 0-1000 normalised units of the image so that
images of every size weigh the same, and matched one-to-one by the Hungarian algorithm on Euclidean distance:

    answer = min(N, M) / max(N, M) * (1 - mean matched distance / (1000 * sqrt(2)))

``paper``: points are clipped to the image (so the distance term stays in [0, 1]); N = M = 0 gives 1, exactly one
of them 0 gives 0; a bare-integer answer carries no locations, so it scores the count ratio alone.

``pr1_released`` (PR1 ``pr1_counting_reward``): 0 unless PR1's format gate passes; points are the centres of every
``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` block that Python can evaluate as two pairs; no clipping; GT count 0
(or no readable point) scores 0. The released formula goes below 0 for points far outside the image; the result
is clamped to its documented range [0, 1].
"""

from __future__ import annotations

import ast
import math

import numpy as np

from workbench import boxes, conventions
from workbench.conventions import BOX_END, BOX_START
from workbench.matching import hungarian
from workbench.parsing import MAX_ITEMS, parse
from workbench.rewards.base import Match, TaskScore, released_text
from workbench.rewards.format import paper_format, released_counting_gate

FORMAT_RANGE = {"paper": (-1.0, 1.0), "pr1_released": (0.0, 0.0)}
ANSWER_RANGE = {"paper": (0.0, 1.0), "pr1_released": (0.0, 1.0)}

_NORMALISED = conventions.get("qwen2_vl")  # 0-1000 units of the image
_DIAGONAL = 1000 * math.sqrt(2)  # the largest distance inside the normalised frame
_MAX_BLOCK = 200  # longer box-block bodies are not evaluated (a Qwen box is ~20 characters)


def paper(completion, solution: dict, *, image_size, convention) -> TaskScore:
    pred = parse("counting", completion, convention=convention, image_size=image_size)
    gt_px, n_gt = gt_points(solution)
    located = len(pred.boxes) + len(pred.points) > 0
    pred_px = np.concatenate([boxes.centers(pred.boxes), pred.points]) if located else np.zeros((0, 2))
    pred_px = _clip_points(pred_px, image_size)
    n_pred = pred.count
    parts = {"count_ratio": 0.0, "distance_term": 0.0, "mean_distance": 0.0}
    matches: list[Match] = []
    if n_pred is None:
        answer = 0.0
    elif n_pred == 0 and n_gt == 0:
        answer = parts["count_ratio"] = parts["distance_term"] = 1.0
    elif n_pred == 0 or n_gt == 0:
        answer = 0.0
    else:
        ratio = min(n_pred, n_gt) / max(n_pred, n_gt)
        distance_term = 1.0
        if located and len(gt_px):
            distances = boxes.point_distance_matrix(_NORMALISED.from_pixels(pred_px, image_size),
                                                    _NORMALISED.from_pixels(gt_px, image_size))
            matching = hungarian(distances)
            matches = [Match(r, c, None, d) for (r, c), d in zip(matching.pairs, matching.scores)]
            parts["mean_distance"] = float(np.mean(matching.scores))
            distance_term = 1.0 - parts["mean_distance"] / _DIAGONAL
        else:
            pred.malformed.append("no locations on one side; the count ratio alone is scored")
        parts.update(count_ratio=ratio, distance_term=distance_term)
        answer = ratio * distance_term
    return TaskScore(format=paper_format(pred.format_ok), answer=answer, format_ok=pred.format_ok,
                     prediction=pred, parts=parts, matches=matches)


def pr1_released(completion, solution: dict, *, image_size, convention) -> TaskScore:
    text, pred = released_text("counting", completion, convention)
    gate = released_counting_gate(text)
    pred.format_ok = gate
    conv = conventions.get(convention)
    bodies = released_box_blocks(text)
    if len(bodies) > MAX_ITEMS:  # bounded work; the reward of such a completion is 0 or near it anyway
        pred.malformed.append(f"more than {MAX_ITEMS} box blocks; only the first {MAX_ITEMS} were read")
        pred.truncated, bodies = True, bodies[:MAX_ITEMS]
    centres = [c for c in map(_released_centre, bodies) if c is not None]
    with np.errstate(over="ignore", invalid="ignore"):
        pred_px = conv.to_pixels(np.asarray(centres, dtype=np.float64).reshape(-1, 2), image_size)
    pred.points, pred.count = pred_px[np.isfinite(pred_px).all(axis=1)], len(centres)  # drawable points
    gt_px, _ = gt_points(solution)
    parts = {"gate": float(gate), "count_ratio": 0.0, "distance_term": 0.0, "mean_distance": 0.0}
    answer, matches = 0.0, []
    if not gate:
        pred.malformed.append("the released format gate failed (phrase, adjacent box blocks, <|im_end|>)")
    elif not centres or not len(gt_px) or not np.isfinite(pred_px).all():
        pred.malformed.append("no readable point or no ground-truth point: the released code scores 0")
    else:  # the released num_scale(): 0-1000 frame, no clipping
        distances = boxes.point_distance_matrix(_NORMALISED.from_pixels(pred_px, image_size),
                                                _NORMALISED.from_pixels(gt_px, image_size))
        if np.isfinite(distances).all():
            matching = hungarian(distances)
            matches = [Match(r, c, None, d) for (r, c), d in zip(matching.pairs, matching.scores)]
            ratio = min(len(centres), len(gt_px)) / max(len(centres), len(gt_px))
            mean = float(np.mean(matching.scores))
            parts.update(count_ratio=ratio, distance_term=1.0 - mean / _DIAGONAL, mean_distance=mean)
            answer = ratio * (1.0 - mean / _DIAGONAL)
            if answer < 0:
                pred.malformed.append(f"released formula gave {answer:.4f} (points far outside the image); "
                                      "clamped to 0")
                answer = 0.0
    return TaskScore(format=0.0, answer=answer, format_ok=gate, prediction=pred, parts=parts, matches=matches)


def gt_points(solution: dict) -> tuple[np.ndarray, int]:
    """Ground-truth points [M, 2] in pixels (``points``, else centres of ``boxes``) and the count M
    (``count`` when the record carries no locations)."""
    if solution.get("points") is not None and len(solution["points"]):
        points = boxes.as_points(solution["points"])
    elif solution.get("boxes") is not None and len(solution["boxes"]):
        points = boxes.centers(solution["boxes"])
    else:
        points = np.zeros((0, 2))
    count = len(points) if len(points) or "count" not in solution else int(solution["count"])
    return points, count


def released_box_blocks(text: str) -> list[str]:
    """Bodies of ``<|box_start|>(.*?)<|box_end|>`` as ``re.findall`` returns them (``.`` does not cross a
    newline), found with two forward cursors so that unclosed blocks cost linear, not quadratic, time."""
    bodies, pos, end, newline = [], 0, -1, -1
    while True:
        start = text.find(BOX_START, pos)
        if start < 0:
            return bodies
        body = start + len(BOX_START)
        if end < body:
            end = text.find(BOX_END, body)
            if end < 0:
                return bodies
        if newline < body:
            newline = text.find("\n", body)
            newline = len(text) if newline < 0 else newline
        if newline < end:  # this start cannot match; the regex moves on to the next one
            pos = start + 1
            continue
        bodies.append(text[body:end])
        pos = end + len(BOX_END)


def _released_centre(body: str) -> tuple[float, float] | None:
    """PR1 evaluates the block body and unpacks ``(x1, y1), (x2, y2)``; anything else is skipped."""
    if len(body) > _MAX_BLOCK:
        return None
    try:
        (x1, y1), (x2, y2) = ast.literal_eval(body.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not all(isinstance(v, (int, float)) for v in (x1, y1, x2, y2)):
        return None
    return (x1 + x2) / 2, (y1 + y2) / 2


def _clip_points(points: np.ndarray, image_size) -> np.ndarray:
    w, h = image_size
    return np.stack([np.clip(points[:, 0], 0, w), np.clip(points[:, 1], 0, h)], axis=1)
