"""The four perception tasks: prompt wording, chat messages, SFT targets, and access to parser and reward.

A task is what Perception-R1 trains one model on: a question template (the paper's wording by default, see
REWARDS.md "Prompts"), the text a model of a given family should answer (written by ``conventions.py``), and
the parser/reward of ``workbench.parsing`` / ``workbench.rewards`` (used here, never re-implemented).
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench import conventions

SYSTEM_PROMPT = "You are a helpful assistant."

# Perception-R1's prompts. Detection has two: the paper's and the one PR1's evaluation script used.
TEMPLATES = {
    "grounding": {"paper": "Output the bounding box of the {phrase} in the image."},
    "counting": {"paper": "Output all the bounding boxes of the {label}"},
    "ocr": {"paper": "OCR this image."},
    "detection": {
        "paper": "Please output bbox coordinates and names of {classes}.",
        "pr1_eval": ("Locate every item from the category list in the image and output the coordinates in JSON "
                     "format. The category set includes {classes}."),
    },
}


@dataclass(frozen=True)
class Task:
    """One perception task: its name and question templates, plus parser/reward access.

    ``fields`` names what the question needs (e.g. ``phrase`` for grounding).
    """

    name: str
    fields: tuple[str, ...]
    templates: dict

    def question(self, variant: str = "paper", **fields) -> str:
        return question(self.name, variant=variant, **fields)

    def score(self, completion: str, solution: dict, *, image_size, convention: str = "qwen2_vl",
              preset: str = "paper"):
        """Reward breakdown of one completion (``workbench.rewards.score``): ``.total``, ``.parts``, ...."""
        from workbench.rewards import score

        return score(self.name, completion, solution, image_size=image_size, convention=convention,
                     preset=preset)

    def parse(self, completion: str, *, image_size, convention: str = "qwen2_vl"):
        """The parsed prediction of one completion (``workbench.parsing.parse``), in original pixels."""
        from workbench.parsing import parse

        return parse(self.name, completion, convention=convention, image_size=image_size)

TASKS: dict[str, Task] = {
    "grounding": Task("grounding", ("phrase",), TEMPLATES["grounding"]),
    "counting": Task("counting", ("label",), TEMPLATES["counting"]),
    "ocr": Task("ocr", (), TEMPLATES["ocr"]),
    "detection": Task("detection", ("classes",), TEMPLATES["detection"]),
}


def get(task: str) -> Task:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    return TASKS[task]


def question(task: str, variant: str = "paper", **fields) -> str:
    """The question for ``task`` in Perception-R1's wording.

    ``question("grounding", phrase="red square")`` -> "Output the bounding box of the red square in the image."
    Detection takes ``classes`` as a list (joined with ", ") or a string; ``variant="pr1_eval"`` gives the
    wording of PR1's evaluation script.
    """
    t = get(task)
    if variant not in t.templates:
        raise ValueError(f"unknown {task} prompt variant {variant!r}; expected one of {sorted(t.templates)}")
    missing = [f for f in t.fields if f not in fields]
    if missing:
        raise ValueError(f"the {task} question needs {missing}; got fields {sorted(fields)}")
    if task == "detection" and not isinstance(fields["classes"], str):
        fields = {**fields, "classes": ", ".join(fields["classes"])}
    return t.templates[variant].format(**fields)


def messages(record: dict, convention: str = "qwen2_vl", *, system: bool = True) -> list[dict]:
    """Chat messages for a record: optional system prompt, then the image and the question.

    Content parts are ``{"type": "image", "image": PIL.Image}`` and ``{"type": "text", "text": ...}``, the
    form ``processor.apply_chat_template`` and TRL's conversational datasets take. The convention does not
    change the prompt (Perception-R1 asks every family the same question); it is accepted for symmetry with
    :func:`sft_target`.
    """
    conventions.get(convention)  # validates the name
    out = [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]}] if system else []
    out.append({"role": "user", "content": [{"type": "image", "image": record["image"]},
                                            {"type": "text", "text": record["question"]}]})
    return out


prompt = messages  # DESIGN.md's name for the same step: record -> chat messages with the image


def sft_target(record: dict, convention: str = "qwen2_vl") -> str:
    """The answer a model of ``convention``'s family should give for ``record`` (an SFT target).

    grounding: the phrase and its box; counting: one box per instance behind the label (the question asks
    for bounding boxes; a count of 0 is answered "0"); ocr: the text; detection: every box with its class.
    """
    conv = conventions.get(convention)
    task, sol = record["task"], record["solution"]
    size = record["image"].size
    if task == "grounding":
        return conv.write_box(sol["box"], size, sol.get("phrase"))
    if task == "counting":
        boxes = sol.get("boxes")
        if boxes is None:  # points-only solutions (e.g. PixMo-Count) are answered as points
            pts = sol["points"]
            return conv.write_points(pts, size, sol.get("label")) if len(pts) else "0"
        if not boxes:
            return "0"
        return conv.write_boxes(boxes, [sol.get("label")] * len(boxes), size)
    if task == "ocr":
        return sol["text"]
    if task == "detection":
        return conv.write_boxes(sol["boxes"], sol["labels"], size)
    raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
