"""Every reward, preset and convention: any text gives a finite total inside the documented range, fast."""

import json
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.conventions import Convention
from workbench.rewards import PRESETS, TASKS, reward_range, score

CONVENTIONS = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "pixels", Convention("qwen2_5_vl", max_pixels=50_000)]
SIZE = (640, 480)
SOLUTIONS = {
    "grounding": {"box": [100, 120, 300, 400]},
    "counting": {"points": [[100, 100], [320, 240], [600, 400]]},
    "ocr": {"text": "Perception R1\nreads  pages"},
    "detection": {"boxes": [[100, 120, 300, 400], [400, 50, 600, 200]], "labels": ["cat", "dog"]},
}
EMPTY_SOLUTIONS = {"grounding": {"box": [0, 0, 0, 0]}, "counting": {"points": []}, "ocr": {"text": ""},
                   "detection": {"boxes": [], "labels": []}}
# Pieces of every output grammar, so that random strings often come close to a real answer.
GRAMMAR = st.sampled_from([
    "<|box_start|>", "<|box_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|im_end|>", "<|endoftext|>",
    "cat", "dog", "(", ")", "[", "]", "{", "}", ",", ":", '"bbox_2d"', '"point_2d"', '"label"', '"cat"', "1", "0",
    "0.5", "-3", "250", "999", "1e999", "1e308", "NaN", "-Infinity", "```json", "```", "<answer>", "</answer>",
    "<think>", "</think>", " ", "\n", "(100,120),(300,400)", "[100, 120, 300, 400]", "[]", "3"])
TEXT = st.one_of(st.text(max_size=200), st.lists(GRAMMAR, max_size=50).map("".join))


def check(breakdown, task, preset, weights=None):
    lo, hi = reward_range(task, preset, weights=weights)
    assert isinstance(breakdown.total, float) and math.isfinite(breakdown.total)
    assert lo - 1e-12 <= breakdown.total <= hi + 1e-12
    assert breakdown.parts["format"] + breakdown.parts["answer"] == pytest.approx(breakdown.total)
    assert all(math.isfinite(v) for v in breakdown.parts.values())
    assert not any(note.startswith("reward failed") for note in breakdown.malformed), breakdown.malformed


@settings(max_examples=400, deadline=None)
@given(text=TEXT, task=st.sampled_from(TASKS), preset=st.sampled_from(PRESETS),
       convention=st.sampled_from(CONVENTIONS), empty_gt=st.booleans(), gate=st.booleans())
def test_any_text_scores_finite_and_in_range(text, task, preset, convention, empty_gt, gate):
    solution = (EMPTY_SOLUTIONS if empty_gt else SOLUTIONS)[task]
    b = score(task, text, solution, image_size=SIZE, convention=convention, preset=preset,
              format_mode="gate" if gate else "additive")
    check(b, task, preset)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), task=st.sampled_from(["grounding", "counting", "detection"]),
       preset=st.sampled_from(PRESETS), convention=st.sampled_from(CONVENTIONS))
def test_well_formed_answers_with_arbitrary_numbers_stay_in_range(data, task, preset, convention):
    number = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32))
    boxes = data.draw(st.lists(st.lists(number, min_size=4, max_size=4), max_size=8))
    labels = data.draw(st.lists(st.sampled_from(["cat", "dog", "person", ""]), min_size=len(boxes),
                                max_size=len(boxes)))
    items = [{"bbox_2d": b, "label": lab} for b, lab in zip(boxes, labels)]
    tokens = "".join(f"<|box_start|>({b[0]},{b[1]}),({b[2]},{b[3]})<|box_end|>" for b in boxes)
    text = data.draw(st.sampled_from([json.dumps(items), "<|object_ref_start|>cat<|object_ref_end|>" + tokens
                                      + "<|im_end|>"]))
    weights = data.draw(st.sampled_from([None, {"format": 0.5, "answer": 2.0}]))
    b = score(task, text, SOLUTIONS[task], image_size=SIZE, convention=convention, preset=preset, weights=weights)
    check(b, task, preset, weights)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("preset", PRESETS)
def test_a_10000_box_completion_is_scored_well_under_2_seconds(task, preset):
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 900, (10_000, 2))
    boxes = np.concatenate([xy, xy + rng.integers(1, 100, (10_000, 2))], axis=1).tolist()
    as_json = json.dumps([{"bbox_2d": b, "label": "cat"} for b in boxes])
    as_tokens = "<|object_ref_start|>cat<|object_ref_end|>" + "".join(
        f"<|box_start|>({a},{b}),({c},{d})<|box_end|>" for a, b, c, d in boxes) + "<|im_end|>"
    for text in (as_json, as_tokens):
        start = time.perf_counter()
        b = score(task, text, SOLUTIONS[task], image_size=SIZE, convention="qwen2_vl", preset=preset)
        assert time.perf_counter() - start < 1.5  # typically ~30 ms; slack for a loaded machine
        check(b, task, preset)
        assert b.prediction.truncated  # 10,000 boxes exceed the parser's caps, and it says so


HOSTILE = [
    "<|box_start|>(" * 20_000,  # unclosed blocks
    "<|box_start|>\n<|box_end|>" * 10_000,  # blocks PR1's `.` cannot cross
    "[" * 100_000 + "1",  # deep nesting for json
    "[" + "1" * 200_000,  # a very long digit run
    '[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, ' * 5_000,  # a list that never closes
    "<answer>" + "<think>" * 20_000,
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("preset", PRESETS)
def test_hostile_text_costs_bounded_time_under_every_preset(hostile, preset):
    for task in TASKS:
        start = time.perf_counter()
        b = score(task, hostile, SOLUTIONS[task], image_size=SIZE, preset=preset)
        assert time.perf_counter() - start < 1.0
        check(b, task, preset)
