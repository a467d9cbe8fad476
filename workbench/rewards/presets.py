"""The preset table: which formula scores which task under which preset, its documented range, and ``score``.

==============  ===================================  ==================================================
task            ``paper`` total (format + answer)     ``pr1_released`` total
==============  ===================================  ==================================================
grounding       [-1, 2]  +-1 + IoU                   [0, 2]  pattern 1/0 + IoU^2 (0-1000 frame)
counting        [-1, 2]  +-1 + ratio * dist term     [0, 1]  format gate * ratio * dist term
ocr             [-1, 2]  +-1 + edit similarity       [0, 1]  edit similarity (MMR1), no format part
detection       [-2, 4]  +-1 + F1 + loc + cls - pen  [0, 3]  0.25 * valid + 0.75 F1 + cls + loc
==============  ===================================  ==================================================

Ranges are for the default weights; ``reward_range(task, preset, weights=...)`` scales them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from workbench import conventions
from workbench.parsing import Prediction
from workbench.rewards import counting, detection, grounding, ocr
from workbench.rewards.base import RewardBreakdown, TaskScore, finite, load_solution
from workbench.rewards.format import FORMAT_MODES, check_weights, combine

TASKS = ("grounding", "counting", "ocr", "detection")
PRESETS = ("paper", "pr1_released")
_MODULES = {"grounding": grounding, "counting": counting, "ocr": ocr, "detection": detection}


@dataclass(frozen=True)
class RewardSpec:
    """One cell of the preset table: the function and the ranges of its (unweighted) format and answer parts."""

    task: str
    preset: str
    fn: Callable[..., TaskScore]
    format_range: tuple[float, float]
    answer_range: tuple[float, float]


REGISTRY: dict[tuple[str, str], RewardSpec] = {
    (task, preset): RewardSpec(task, preset, getattr(module, preset), module.FORMAT_RANGE[preset],
                               module.ANSWER_RANGE[preset])
    for task, module in _MODULES.items() for preset in PRESETS
}


def spec(task: str, preset: str) -> RewardSpec:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if preset not in PRESETS:
        raise ValueError(f"unknown reward preset {preset!r}; expected one of {PRESETS}")
    return REGISTRY[task, preset]


def reward_range(task: str, preset: str = "paper", *, weights: dict | None = None) -> tuple[float, float]:
    """(lo, hi) of ``score(...).total`` for ``task`` under ``preset`` (and ``weights``, default 1/1)."""
    s, w = spec(task, preset), check_weights(weights)
    lo = hi = 0.0
    for weight, (a, b) in ((w["format"], s.format_range), (w["answer"], s.answer_range)):
        lo += min(weight * a, weight * b)
        hi += max(weight * a, weight * b)
    return lo, hi


def score(task: str, completion, solution, *, image_size, convention="qwen2_vl", preset: str = "paper",
          weights: dict | None = None, format_mode: str = "additive") -> RewardBreakdown:
    """Score one completion against its ground truth (original-image pixels). Never raises on completion text.

    Args:
        task: "grounding" | "counting" | "ocr" | "detection".
        completion: the model's text.
        solution: canonical record field (DESIGN.md), a dict or its JSON string.
        image_size: (width, height) of the original image.
        convention: a name in ``conventions.NAMES`` or a ``Convention`` (qwen2_5_vl with its min/max pixels).
        preset: "paper" | "pr1_released" (REWARDS.md).
        weights: {"format": w_f, "answer": w_a}, default 1 each.
        format_mode: "additive" (total = w_f f + w_a a) or "gate" (the answer counts only when the format is ok).
    """
    s, w = spec(task, preset), check_weights(weights)
    if format_mode not in FORMAT_MODES:
        raise ValueError(f"unknown format_mode {format_mode!r}; expected one of {FORMAT_MODES}")
    conv = conventions.get(convention)
    conv.frame_size(image_size)  # a bad image size is a caller's error: raise it here, with the value
    record = load_solution(task, solution)
    lo, hi = reward_range(task, preset, weights=w)
    try:
        result = s.fn(completion, record, image_size=image_size, convention=conv)
    except Exception as error:  # a bug must not end a training run; the note makes it visible
        note = f"reward failed: {type(error).__name__}: {error}"
        return RewardBreakdown(task, preset, lo, {"format": lo, "answer": 0.0}, Prediction(task=task),
                               malformed=[note])
    format_part, answer_part = combine(result.format, result.answer, result.format_ok, weights=w,
                                       format_mode=format_mode)
    total = finite(format_part + answer_part, lo, hi)
    parts = {"format": format_part, "answer": total - format_part,
             **{name: float(value) for name, value in result.parts.items()}}
    return RewardBreakdown(task=task, preset=preset, total=total, parts=parts, prediction=result.prediction,
                           matches=result.matches, malformed=list(result.prediction.malformed),
                           format_ok=result.format_ok)
