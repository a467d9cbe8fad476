"""Rule-based rewards for grounding, counting, OCR and detection, under two presets (REWARDS.md).

    from workbench.rewards import score
    b = score("grounding", completion, {"box": [x1, y1, x2, y2]}, image_size=(w, h), preset="paper")
    b.total, b.parts, b.prediction, b.matches

One module per task (``grounding``, ``counting``, ``ocr``, ``detection``), each with a ``paper`` and a
``pr1_released`` function; ``format`` holds the format reward and how it combines with the answer; ``presets`` is
the table and ``score``; ``trl_adapter`` wraps ``score`` in TRL's reward-function contract.
"""

from workbench.rewards.base import Match, RewardBreakdown
from workbench.rewards.presets import PRESETS, REGISTRY, TASKS, reward_range, score
from workbench.rewards.trl_adapter import trl_reward_funcs

__all__ = ["score", "RewardBreakdown", "Match", "PRESETS", "TASKS", "REGISTRY", "reward_range", "trl_reward_funcs"]
