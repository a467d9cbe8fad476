"""OCR reward: character edit similarity between the transcription and the ground-truth text.

    answer = max(0, 1 - Levenshtein(pred, gt) / max(len(pred), len(gt)))

on strings whose whitespace runs are collapsed to one space and whose ends are stripped (both presets).

``paper``: the answer inside ``<answer>`` when the thinking wrapper is used; both empty gives 1.
``pr1_released``: PR1 released no OCR reward; the authors' earlier repository (MMR1) used the formula above on the
whole completion, with 0 when either string is empty (or on any error), and no format reward.
"""

from __future__ import annotations

import Levenshtein

from workbench.parsing import parse
from workbench.rewards.base import TaskScore, released_text
from workbench.rewards.format import paper_format

FORMAT_RANGE = {"paper": (-1.0, 1.0), "pr1_released": (0.0, 0.0)}
ANSWER_RANGE = {"paper": (0.0, 1.0), "pr1_released": (0.0, 1.0)}


def normalise(text: str) -> str:
    """Collapse every whitespace run to one space and strip the ends."""
    return " ".join(text.split())


def edit_similarity(pred: str, gt: str) -> float:
    """1 - Levenshtein(pred, gt) / max(len(pred), len(gt)) on normalised strings, in [0, 1]; both empty gives 1."""
    pred, gt = normalise(pred), normalise(gt)
    longest = max(len(pred), len(gt))
    if longest == 0:
        return 1.0
    return max(0.0, 1.0 - Levenshtein.distance(pred, gt) / longest)


def paper(completion, solution: dict, *, image_size, convention) -> TaskScore:
    pred = parse("ocr", completion, convention=convention, image_size=image_size)
    similarity = edit_similarity(pred.text, str(solution.get("text") or ""))
    return TaskScore(format=paper_format(pred.format_ok), answer=similarity, format_ok=pred.format_ok,
                     prediction=pred, parts={"edit_similarity": similarity})


def pr1_released(completion, solution: dict, *, image_size, convention) -> TaskScore:
    text, pred = released_text("ocr", completion, convention)
    gt = str(solution.get("text") or "")
    empty = not normalise(text) or not normalise(gt)
    similarity = 0.0 if empty else edit_similarity(text, gt)
    pred.format_ok = not empty
    if empty:
        pred.malformed.append("empty transcription or ground truth: the MMR1 reward scores 0")
    return TaskScore(format=0.0, answer=similarity, format_ok=pred.format_ok, prediction=pred,
                     parts={"edit_similarity": similarity})
