"""TRL's reward contract around ``score``: ``f(prompts, completions, **kwargs) -> list[float | None]``.

TRL's ``GRPOTrainer`` calls every reward function on the whole batch, passing each dataset column as a keyword
argument (one value per completion) plus ``trainer_state``, ``log_extra`` and ``log_metric``. Each function made here
scores the rows of its own task (column ``task``) and returns None for the others, so one trainer can mix tasks
and TRL logs ``rewards/grounding_reward`` etc. separately. Image sizes come from ``image`` (a PIL image),
``images`` (a list of them; the first is scored) or an ``image_size`` column of (width, height).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from workbench.rewards.presets import TASKS, score


def trl_reward_funcs(tasks=TASKS, *, preset: str = "paper", convention="qwen2_vl", weights: dict | None = None,
                     format_mode: str = "additive") -> list[Callable]:
    """One TRL reward function per task, named ``{task}_reward``."""
    if isinstance(tasks, str):
        tasks = (tasks,)
    return [_reward_func(task, preset=preset, convention=convention, weights=weights, format_mode=format_mode)
            for task in tasks]


def _reward_func(task: str, **options) -> Callable:
    def reward(prompts=None, completions=None, **kwargs) -> list[float | None]:
        n = len(completions)
        task_column = kwargs.get("task") or [task] * n
        solutions = _column(kwargs, "solution", n)
        sizes = image_sizes(kwargs, n)
        rewards: list[float | None] = []
        parts: dict[str, list[float]] = {}
        for i in range(n):
            if task_column[i] != task:
                rewards.append(None)
                continue
            breakdown = score(task, completion_text(completions[i]), solutions[i], image_size=sizes[i], **options)
            rewards.append(breakdown.total)
            for name, value in breakdown.parts.items():
                parts.setdefault(name, []).append(value)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):  # TRL averages these per logging step, next to rewards/{task}_reward
            for name, values in parts.items():
                log_metric(f"{task}/{name}", float(np.mean(values)))
        return rewards

    reward.__name__ = reward.__qualname__ = f"{task}_reward"
    reward.__doc__ = f"TRL reward function for {task} rows ({options['preset']} preset); None for other tasks."
    return reward


def completion_text(completion) -> str:
    """A standard completion (str) or a conversational one ([{"role": "assistant", "content": ...}], content a
    string or a list of {"type": "text", "text": ...} parts) -> the assistant's text."""
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, dict) else list(completion or [])
    texts = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(part.get("text", "") for part in content
                         if isinstance(part, dict) and part.get("type", "text") == "text")
    return "".join(text for text in texts if isinstance(text, str))


def image_sizes(kwargs: dict, n: int) -> list[tuple[int, int]]:
    """(width, height) per row from the ``image_size``, ``image`` or ``images`` column."""
    if kwargs.get("image_size") is not None:
        return [tuple(int(v) for v in size) for size in _column(kwargs, "image_size", n)]
    for key in ("image", "images"):
        if kwargs.get(key) is not None:
            return [_size_of(image, key) for image in _column(kwargs, key, n)]
    raise ValueError("expected an 'image', 'images' or 'image_size' column to convert coordinates to pixels; "
                     f"got columns {sorted(kwargs)}")


def _size_of(image, key: str) -> tuple[int, int]:
    if isinstance(image, (list, tuple)) and image and not isinstance(image[0], (int, float)):
        image = image[0]  # a list of images: the first one is the one the boxes refer to
    if hasattr(image, "size") and isinstance(image.size, tuple) and len(image.size) == 2:
        return int(image.size[0]), int(image.size[1])  # PIL: (width, height)
    if isinstance(image, np.ndarray) and image.ndim >= 2:
        return int(image.shape[1]), int(image.shape[0])  # [H, W, C]
    if isinstance(image, dict) and {"width", "height"} <= set(image):
        return int(image["width"]), int(image["height"])
    raise ValueError(f"expected a PIL image (or a list of them) in column {key!r}, got {type(image).__name__}")


def _column(kwargs: dict, key: str, n: int) -> list:
    values = kwargs.get(key)
    if values is None or len(values) != n:
        got = "nothing" if values is None else f"{len(values)} values"
        raise ValueError(f"expected a {key!r} column with one value per completion ({n}), got {got}")
    return list(values)
