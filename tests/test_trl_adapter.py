"""The TRL adapter, called the way TRL's GRPOTrainer calls reward functions."""

import inspect
import math

import pytest
from PIL import Image

from workbench.rewards import TASKS, score, trl_reward_funcs

BOX = "<|box_start|>{}<|box_end|>"


def batch():
    """A batch mixing every task, as TRL passes dataset columns: one value per completion."""
    wide, qwen25 = Image.new("RGB", (500, 250)), Image.new("RGB", (500, 300))
    rows = [
        # (task, completion, solution, image)
        ("grounding", BOX.format("(100,200),(200,400)"), {"box": [50, 50, 150, 100]}, wide),
        ("ocr", [{"role": "assistant", "content": "helo world"}], '{"text": "Hello world"}', wide),
        ("grounding", [{"role": "assistant", "content": [{"type": "text", "text": "<|box_start|>(100,200),"},
                                                         {"type": "text", "text": "(300,400)<|box_end|>"}]}],
         '{"box": [50, 50, 150, 100]}', wide),
        ("counting", "3", {"points": [[100, 50], [400, 200]]}, wide),
        ("detection", '[{"bbox_2d": [252, 154, 504, 308], "label": "dog"}]',
         {"boxes": [[250, 150, 500, 300]], "labels": ["dog"]}, qwen25),
        ("ocr", "no text here", {"text": ""}, wide),
    ]
    tasks, completions, solutions, images = (list(column) for column in zip(*rows))
    prompts = [[{"role": "user", "content": "..."}] for _ in rows]
    return prompts, completions, {"task": tasks, "solution": solutions, "image": images}


class Recorder:
    def __init__(self):
        self.metrics = {}

    def __call__(self, name, value):
        self.metrics[name] = value


def test_one_function_per_task_with_distinct_names():
    funcs = trl_reward_funcs()
    assert [f.__name__ for f in funcs] == [f"{task}_reward" for task in TASKS]
    assert list(inspect.signature(funcs[0]).parameters)[:2] == ["prompts", "completions"]
    assert [f.__name__ for f in trl_reward_funcs("ocr")] == ["ocr_reward"]


def test_called_like_trl_with_a_mixed_batch():
    prompts, completions, columns = batch()
    recorder = Recorder()
    extra = {"trainer_state": None, "log_extra": lambda column, values: None, "log_metric": recorder,
             "completion_ids": [[1, 2]] * len(completions)}
    results = {f.__name__: f(prompts=prompts, completions=completions, **columns, **extra)
               for f in trl_reward_funcs(convention="qwen2_vl")}
    for values in results.values():
        assert len(values) == len(completions)
    # exactly one function scores each row; the others return None
    for i, task in enumerate(columns["task"]):
        scored = [name for name, values in results.items() if values[i] is not None]
        assert scored == [f"{task}_reward"]
    grounding = results["grounding_reward"]
    # row 0: IoU 0.5 on the 500x250 image (see test_rewards_paper) -> 1.5;
    # row 2: the conversational text parts join into (100,200),(300,400): the GT box exactly -> 2.0
    assert grounding[0] == pytest.approx(1.5) and grounding[2] == pytest.approx(2.0)
    # row 1: "helo world" vs "Hello world": 1 + (1 - 2/11); row 5: 1 + (1 - 12/12) = 1
    assert results["ocr_reward"][1] == pytest.approx(2 - 2 / 11) and results["ocr_reward"][5] == 1.0
    # row 3: a bare count 3 for 2 GT points: 1 + 2/3
    assert results["counting_reward"][3] == pytest.approx(1 + 2 / 3)
    # per-part metrics for TRL's log: grounding IoU averaged over its two rows (0.5 + 1) / 2
    assert recorder.metrics["grounding/iou"] == pytest.approx(0.75)


def test_options_pass_through_and_other_size_columns():
    prompts, completions, columns = batch()
    (detection,) = trl_reward_funcs(["detection"], preset="pr1_released", convention="qwen2_5_vl")
    values = detection(prompts=prompts, completions=completions, **columns)
    # row 4: 504x308 frame box equals the GT: 0.25 + 0.75 + 1 + 1 = 3
    assert values[4] == pytest.approx(3.0) and values.count(None) == 5
    expected = score("detection", completions[4], columns["solution"][4], image_size=(500, 300),
                     convention="qwen2_5_vl", preset="pr1_released").total
    assert values[4] == expected
    # an `images` column (a list of images per row) or an `image_size` column work the same way
    images = {"task": columns["task"], "solution": columns["solution"], "images": [[im] for im in columns["image"]]}
    assert detection(prompts=prompts, completions=completions, **images) == values
    sizes = {"task": columns["task"], "solution": columns["solution"],
             "image_size": [im.size for im in columns["image"]]}
    assert detection(prompts=prompts, completions=completions, **sizes) == values


def test_gate_and_weights_reach_score():
    prompts, completions, columns = batch()
    (grounding,) = trl_reward_funcs(["grounding"], weights={"format": 0, "answer": 1})
    values = grounding(prompts=prompts, completions=completions, **columns)
    assert values[0] == pytest.approx(0.5) and values[2] == pytest.approx(1.0)
    assert all(v is None or math.isfinite(v) for v in values)


def test_missing_columns_are_explained():
    (grounding,) = trl_reward_funcs(["grounding"])
    with pytest.raises(ValueError, match="'image', 'images' or 'image_size'"):
        grounding(prompts=["p"], completions=["[1,2,3,4]"], task=["grounding"], solution=[{"box": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match="'solution' column"):
        grounding(prompts=["p"], completions=["[1,2,3,4]"], image_size=[(9, 9)])
