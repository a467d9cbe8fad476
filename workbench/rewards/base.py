"""Value types shared by the task rewards: the breakdown a reward returns, matched pairs, solution records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from workbench import boxes, conventions
from workbench.parsing import MAX_CHARS, Prediction


class Match(NamedTuple):
    """One matched (prediction, ground truth) pair; ``iou`` for boxes, ``distance`` for counting points.

    Counting distances are in 0-1000 normalised units of the image (REWARDS.md), not pixels.
    """

    pred: int
    gt: int
    iou: float | None = None
    distance: float | None = None


@dataclass
class TaskScore:
    """What a task reward computes before weighting: format part, answer part and their sub-parts."""

    format: float
    answer: float
    format_ok: bool
    prediction: Prediction
    parts: dict[str, float] = field(default_factory=dict)
    matches: list[Match] = field(default_factory=list)


@dataclass
class RewardBreakdown:
    """A scored completion.

    total:      the reward GRPO sees (float, inside ``reward_range(task, preset)``).
    parts:      always "format" and "answer" (answer = total - format, both after weights and gating), plus the
                unweighted sub-parts of the task (iou, f1, loc, cls, penalty, count_ratio, distance_term, ...).
    prediction: the parsed prediction, in original-image pixels.
    matches:    matched (pred, gt) pairs with their IoU or distance, where the task matches.
    malformed:  what was wrong with the completion (empty when nothing was).
    """

    task: str
    preset: str
    total: float
    parts: dict[str, float]
    prediction: Prediction
    matches: list[Match] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    format_ok: bool = False

    def to_dict(self) -> dict:
        """Flat row for a table: task, preset, total, every part, format_ok, malformed notes."""
        return {"task": self.task, "preset": self.preset, "total": self.total, **self.parts,
                "format_ok": self.format_ok, "malformed": "; ".join(self.malformed)}

    def to_pandas(self):
        """One-row ``pandas.DataFrame`` of :meth:`to_dict`."""
        import pandas as pd

        return pd.DataFrame([self.to_dict()])


_REQUIRED_KEYS = {"grounding": ("box",), "counting": ("points", "boxes", "count"), "ocr": ("text",),
                  "detection": ("boxes",)}


def load_solution(task: str, solution) -> dict:
    """The canonical solution record (DESIGN.md), given as a dict or its JSON string.

    Lenient shorthands: grounding ``[x1, y1, x2, y2]``, counting ``[[x, y], ...]``, OCR a plain string.
    """
    if isinstance(solution, str):
        text = solution
        try:
            solution = json.loads(text)
        except ValueError:
            solution = None
        if task == "ocr" and not isinstance(solution, dict):
            return {"text": text}  # OCR ground truth is plain text, even when it happens to look like JSON
        if solution is None:
            raise ValueError(f"expected the {task} solution as a dict or JSON, got {text[:80]!r}")
    if isinstance(solution, dict):
        if not any(key in solution for key in _REQUIRED_KEYS[task]):
            raise ValueError(f"expected the {task} solution to carry one of {_REQUIRED_KEYS[task]}, "
                             f"got keys {list(solution)[:10]}")
        _check_geometry(task, solution)
        return solution
    if task == "grounding" and np.asarray(solution).shape == (4,):
        return {"box": list(solution)}
    if task == "counting" and isinstance(solution, (list, tuple)):
        return {"points": list(solution)}
    raise ValueError(f"expected the canonical {task} solution record (see DESIGN.md), got {solution!r:.80}")


def _check_geometry(task: str, solution: dict) -> None:
    """Raise (with the shape found) on ground truth the rewards cannot read, before any scoring starts."""
    if task == "grounding" and boxes.as_boxes(solution["box"]).shape != (1, 4):
        raise ValueError(f"expected one grounding box [x1, y1, x2, y2], got {solution['box']!r:.80}")
    if task == "detection":
        n_boxes, labels = len(boxes.as_boxes(solution["boxes"])), solution.get("labels")
        if labels is not None and len(labels) != n_boxes:
            raise ValueError(f"expected one label per box, got {n_boxes} boxes and {len(labels)} labels")
    if task == "counting":
        for key, reader in (("points", boxes.as_points), ("boxes", boxes.as_boxes)):
            if solution.get(key) is not None:
                reader(solution[key])


def finite(value: float, lo: float, hi: float) -> float:
    """Clamp to [lo, hi]; NaN becomes lo (a reward must always be a finite number in its range)."""
    value = float(value)
    return lo if value != value else min(max(value, lo), hi)


def released_text(task: str, completion, convention) -> tuple[str, Prediction]:
    """The text the released rewards read (``<|endoftext|>`` padding removed), capped at ``MAX_CHARS``, and an
    empty :class:`Prediction` carrying the notes. Shared by the ``pr1_released`` rewards of every task.

    Only ``<|endoftext|>`` is removed, as in PR1; other special tokens stay part of what its patterns see.
    """
    pred = Prediction(task=task, frame=conventions.get(convention).name)
    text = completion if isinstance(completion, str) else ("" if completion is None else str(completion))
    if len(text) > MAX_CHARS:
        pred.malformed.append(f"completion has {len(text)} characters; only the first {MAX_CHARS} were read")
        pred.truncated, text = True, text[:MAX_CHARS]
    text = text.replace("<|endoftext|>", "")
    pred.text = text.strip()
    return text, pred
