"""The format reward and how it combines with the answer reward.

``paper``: +1 when the completion parses into the task's required structure, -1 when it does not (Perception-R1,
"+1 for correct output structure, -1 for incorrect format"); ``parsing.parse`` decides, per task, what the
structure is. Combined with the answer either additively (default) or as a gate (the answer counts only when the
format is right).

``pr1_released``: the released code's own checks, kept verbatim because their quirks change the numbers:
the grounding pattern's ``|`` are unescaped (so it is an alternation that matches almost anything starting with
``<``), and the counting pattern is a real gate that demands ``<|im_end|>`` after the last box block.
"""

from __future__ import annotations

import re

FORMAT_MODES = ("additive", "gate")
PARTS = ("format", "answer")

# Verbatim from PR1 (rewards.py, pr1_grounding_format_reward): the unescaped '|' make this
# "^<" | "object_ref_start" | ">.*?<" | ... — re.match succeeds on any text starting with '<' (among others).
RELEASED_GROUNDING_PATTERN = re.compile(
    r"^<|object_ref_start|>.*?<|object_ref_end|><|box_start|>.*?<|box_end|><|im_end|>")
# From PR1 (utils.py, pr1_counting_format_reward): one phrase, one or more adjacent box blocks, <|im_end|>.
# One change: the released completions still carried their <|im_end|>; ours arrive with the end-of-turn token dropped
# (workbench rollouts and TRL both strip it), so the end of the text stands for it.
RELEASED_COUNTING_PATTERN = re.compile(
    r"<\|object_ref_start\|>[^<]*<\|object_ref_end\|>(?:<\|box_start\|>[^<]*<\|box_end\|>)+(?:<\|im_end\|>|\s*$)")


def paper_format(format_ok: bool) -> float:
    """+1 for the required structure, -1 otherwise."""
    return 1.0 if format_ok else -1.0


def released_grounding_format(text: str) -> float:
    """1/0 from PR1's (mis-escaped) grounding pattern, matched at the start of the text."""
    return 1.0 if RELEASED_GROUNDING_PATTERN.match(text) else 0.0


def released_counting_gate(text: str) -> bool:
    """PR1's counting format gate (matched at the start of the text, not anchored at the end)."""
    return RELEASED_COUNTING_PATTERN.match(text) is not None


def check_weights(weights: dict | None) -> dict[str, float]:
    """{"format": w_f, "answer": w_a} with defaults 1.0; rejects unknown keys with the expected names."""
    weights = dict(weights or {})
    unknown = set(weights) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown reward weight(s) {sorted(unknown)}; expected keys among {PARTS}")
    return {part: float(weights.get(part, 1.0)) for part in PARTS}


def combine(format_value: float, answer_value: float, format_ok: bool, *, weights: dict[str, float],
            format_mode: str = "additive") -> tuple[float, float]:
    """(weighted format part, weighted answer part). ``gate`` zeroes the answer when the format is wrong."""
    if format_mode not in FORMAT_MODES:
        raise ValueError(f"unknown format_mode {format_mode!r}; expected one of {FORMAT_MODES}")
    if format_mode == "gate" and not format_ok:
        answer_value = 0.0
    return weights["format"] * format_value, weights["answer"] * answer_value
