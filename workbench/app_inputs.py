"""Inputs of the rollout debugger (``app.py``): bundled examples, ShapesWorld scenes, uploads, typed ground truth.

Everything a user can hand the app is checked here and turned into a canonical record
``{"image": PIL RGB, "task", "question", "solution"}`` (DESIGN.md, original pixels), or rejected with an
:class:`InputError` whose message says what was expected and what was found.

The bundled examples in ``assets/examples/`` are ShapesWorld scenes written once by
``python -m workbench.app_inputs`` (a PNG and a JSON with task, question and solution per example).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from workbench import tasks as _tasks
from workbench.data import synthetic

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
TASK_NAMES = synthetic.TASK_NAMES
SOURCES = ("example", "ShapesWorld scene", "upload")
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
MAX_ASPECT = 200  # Qwen-VL's smart_resize refuses more extreme aspect ratios
SCENE_SIZE = 112  # the tiny model's training canvas (workbench.pretrain.Recipe.image_size)

SHAPES_OF_GROUND_TRUTH = {
    "grounding": '{"box": [x1, y1, x2, y2], "phrase": "red square"}',
    "counting": '{"points": [[x, y], ...], "label": "circles"}',
    "ocr": '{"text": "CAT"}',
    "detection": '{"boxes": [[x1, y1, x2, y2], ...], "labels": ["circle", ...]}',
}


class InputError(ValueError):
    """A user input the app cannot use; the message is shown as it is."""


# ----------------------------------------------------------------------------------------------------------------
# examples and scenes
# ----------------------------------------------------------------------------------------------------------------


def list_examples(task: str) -> list[str]:
    """Names of the bundled examples of ``task`` (``grounding-0``, ...), sorted."""
    return sorted(p.stem for p in EXAMPLES_DIR.glob(f"{task}-*.json"))


def load_example(name: str) -> dict:
    """The bundled example ``name`` as a canonical record."""
    meta_path = EXAMPLES_DIR / f"{name}.json"
    if not name or not meta_path.is_file():
        raise InputError(f"no bundled example named {name!r}; expected one of "
                         f"{sorted(p.stem for p in EXAMPLES_DIR.glob('*.json'))}")
    meta = json.loads(meta_path.read_text())
    with Image.open(EXAMPLES_DIR / meta["image"]) as im:
        image = im.convert("RGB")
    return {"image": image, "task": meta["task"], "question": meta["question"], "solution": meta["solution"]}


def scene(task: str, seed: int) -> dict:
    """A fresh ShapesWorld scene of ``task`` (deterministic for ``seed``), without the layout metadata."""
    seed = int(seed or 0)
    if seed < 0:
        raise InputError(f"the scene seed must be a non-negative integer, got {seed}")
    rec = synthetic.generate(task, 1, seed=seed, image_size=SCENE_SIZE)[0]
    return {k: rec[k] for k in ("image", "task", "question", "solution")}


def write_examples(per_task: int = 2, seed: int = 2026, out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """Write ``per_task`` ShapesWorld examples per task as ``{task}-{k}.png`` + ``{task}-{k}.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in TASK_NAMES:
        for k, rec in enumerate(synthetic.generate(task, per_task, seed=seed, image_size=SCENE_SIZE)):
            name = f"{task}-{k}"
            rec["image"].save(out_dir / f"{name}.png", optimize=True)
            meta = {"task": task, "image": f"{name}.png", "question": rec["question"],
                    "solution": rec["solution"], "source": f"ShapesWorld seed={seed} index={k}"}
            (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
            written += [out_dir / f"{name}.png", out_dir / f"{name}.json"]
    return written


# ----------------------------------------------------------------------------------------------------------------
# uploads
# ----------------------------------------------------------------------------------------------------------------


def read_upload(path, *, min_side: int = 28) -> tuple[Image.Image, list[str]]:
    """An uploaded file -> (RGB image, notes on what was converted). Raises :class:`InputError` when unusable.

    ``min_side``: the smallest side the vision encoder takes (patch size x spatial merge, 28 for Qwen2-VL).
    """
    if path is None or str(path) == "":
        raise InputError("no image uploaded: drop an image file (PNG, JPEG, WebP, ...) on the upload box, "
                         "or pick a bundled example or a ShapesWorld scene")
    path = str(path)
    name = os.path.basename(path)
    nbytes = os.path.getsize(path)
    if nbytes > MAX_UPLOAD_BYTES:
        raise InputError(f"{name} is {nbytes / 2**20:.1f} MB; the app takes files up to "
                         f"{MAX_UPLOAD_BYTES / 2**20:.0f} MB")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            w, h = im.size  # read from the header, before decoding any pixels
            _check_size(name, w, h, min_side)
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"{name} has {im.n_frames} frames; the first one is used")
            im.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(f"{name} is too large to decode safely ({err}); the app takes at most "
                         f"{MAX_PIXELS / 1e6:.1f} megapixels") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise InputError(f"could not read {name} as an image ({type(err).__name__}: {err}); expected a PNG, "
                         f"JPEG, WebP, BMP or GIF file") from err
    if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: show the image the way viewers do
        im = ImageOps.exif_transpose(im)
        notes.append("rotated as its EXIF orientation says; give the ground truth in the rotated image's pixels")
    if im.mode != "RGB":
        notes.append(f"converted {im.mode} to RGB" + (" (transparent areas on white)" if _has_alpha(im) else ""))
        im = _to_rgb(im)
    return im, notes


def _check_size(name: str, w: int, h: int, min_side: int) -> None:
    if w * h > MAX_PIXELS:
        raise InputError(f"{name} is {w}×{h} = {w * h / 1e6:.1f} megapixels; the app takes at most "
                         f"{MAX_PIXELS / 1e6:.1f} megapixels (e.g. 4096×4096): downscale it and scale the "
                         f"ground truth with it")
    if min(w, h) < min_side:
        raise InputError(f"{name} is {w}×{h} px; the vision encoder needs at least {min_side}×{min_side} px "
                         f"(one merged patch)")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise InputError(f"{name} is {w}×{h} px, an aspect ratio of {max(w, h) / min(w, h):.0f}:1; Qwen-VL "
                         f"processors take at most {MAX_ASPECT}:1")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def _to_rgb(im: Image.Image) -> Image.Image:
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode.startswith(("I", "F")):  # 16/32-bit or float greyscale: stretch its range to 8 bits
        values = np.asarray(im.convert("F"), dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        im = Image.fromarray(((values - lo) / (hi - lo or 1.0) * 255).round().astype(np.uint8))
    return im.convert("RGB")


# ----------------------------------------------------------------------------------------------------------------
# ground truth typed as JSON
# ----------------------------------------------------------------------------------------------------------------


def solution_template(task: str, image_size) -> dict:
    """A placeholder ground truth for an uploaded image of ``image_size`` (to be edited by the user)."""
    w, h = image_size
    box = [round(w / 4), round(h / 4), round(3 * w / 4), round(3 * h / 4)]
    return {
        "grounding": {"box": box, "phrase": "object"},
        "counting": {"points": [[round(w / 2), round(h / 2)]], "label": "objects"},
        "ocr": {"text": "TEXT"},
        "detection": {"boxes": [box], "labels": ["object"]},
    }[task]


def dump_solution(solution: dict) -> str:
    """The ground truth as compact JSON for the editor (numbers rounded to 0.01 px)."""
    def clean(v):
        if isinstance(v, float):
            return int(v) if v.is_integer() else round(v, 2)
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return json.dumps(clean(solution))


def parse_ground_truth(task: str, text: str, image_size) -> dict:
    """Typed ground truth -> canonical solution in original pixels, validated against the image size.

    Accepts the canonical records of DESIGN.md, plus shorthands: a bare ``[x1, y1, x2, y2]`` for grounding,
    a list of points for counting, plain text for OCR.
    """
    if task not in TASK_NAMES:
        raise InputError(f"unknown task {task!r}; expected one of {list(TASK_NAMES)}")
    text = "" if text is None else str(text)
    expected = f"expected JSON like {SHAPES_OF_GROUND_TRUTH[task]} in original pixels"
    if not text.strip():
        raise InputError(f"the {task} ground truth is empty; {expected}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        if task == "ocr":
            return {"text": text.strip()}
        raise InputError(f"the ground truth is not valid JSON ({err.msg} at line {err.lineno} column "
                         f"{err.colno}); {expected}") from None
    if task == "grounding" and isinstance(obj, list):
        obj = {"box": obj}
    elif task == "counting" and isinstance(obj, list):
        obj = {"points": obj}
    elif task == "ocr" and isinstance(obj, str):
        obj = {"text": obj}
    if not isinstance(obj, dict):
        raise InputError(f"the {task} ground truth must be a JSON object; got {_short(obj)}; {expected}")
    w, h = image_size
    if task == "grounding":
        box = _box(obj.get("box"), "box", w, h, expected)
        phrase = obj.get("phrase", "object")
        return {"box": box, "phrase": _string(phrase, "phrase", expected)}
    if task == "counting":
        if "points" not in obj and "boxes" in obj:
            boxes = [_box(b, f"boxes[{i}]", w, h, expected) for i, b in enumerate(_list(obj["boxes"], "boxes",
                                                                                          expected))]
            obj = {**obj, "points": [[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in boxes], "boxes": boxes}
        points = [_point(p, f"points[{i}]", w, h, expected)
                  for i, p in enumerate(_list(obj.get("points"), "points", expected))]
        out = {"points": points, "label": _string(obj.get("label", "objects"), "label", expected)}
        if "boxes" in obj:
            boxes = [_box(b, f"boxes[{i}]", w, h, expected)
                     for i, b in enumerate(_list(obj["boxes"], "boxes", expected))]
            if len(boxes) != len(points):
                raise InputError(f"counting ground truth has {len(points)} points but {len(boxes)} boxes; "
                                 f"give one box per point, or points only")
            out["boxes"] = boxes
        return out
    if task == "ocr":
        return {"text": _string(obj.get("text"), "text", expected)}
    boxes = [_box(b, f"boxes[{i}]", w, h, expected) for i, b in enumerate(_list(obj.get("boxes"), "boxes", expected))]
    labels = obj.get("labels")
    if labels is None:
        raise InputError(f'the detection ground truth needs "labels" (one class name per box); {expected}')
    labels = [_string(lab, f"labels[{i}]", expected) for i, lab in enumerate(_list(labels, "labels", expected))]
    if len(labels) != len(boxes):
        raise InputError(f"the detection ground truth has {len(boxes)} boxes but {len(labels)} labels; "
                         f"expected one label per box")
    return {"boxes": boxes, "labels": labels}


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _list(value, name: str, expected: str) -> list:
    if not isinstance(value, list):
        raise InputError(f'"{name}" must be a list; got {_short(value)}; {expected}')
    return value


def _string(value, name: str, expected: str) -> str:
    if not isinstance(value, str):
        raise InputError(f'"{name}" must be a string; got {_short(value)}; {expected}')
    return value


def _numbers(value, n: int, name: str, what: str, expected: str) -> list[float]:
    ok = (isinstance(value, list) and len(value) == n
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if not ok:
        raise InputError(f'expected "{name}" to be {what}, got {_short(value)}; {expected}')
    return [float(v) for v in value]


def _box(value, name: str, w: int, h: int, expected: str) -> list[float]:
    x1, y1, x2, y2 = _numbers(value, 4, name, "a box [x1, y1, x2, y2]", expected)
    if not (x1 < x2 and y1 < y2):
        raise InputError(f'"{name}" {_short(value)} is empty or inverted; expected x1 < x2 and y1 < y2')
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        raise InputError(f'"{name}" {_short(value)} lies outside the {w}×{h} image; expected original pixels '
                         f"with 0 ≤ x ≤ {w} and 0 ≤ y ≤ {h}")
    return [x1, y1, x2, y2]


def _point(value, name: str, w: int, h: int, expected: str) -> list[float]:
    x, y = _numbers(value, 2, name, "a point [x, y]", expected)
    if not (0 <= x <= w and 0 <= y <= h):
        raise InputError(f'"{name}" {_short(value)} lies outside the {w}×{h} image; expected original pixels')
    return [x, y]


def default_question(task: str, solution: dict) -> str:
    """The task's question in Perception-R1's wording, filled from the ground truth."""
    if task == "grounding":
        return _tasks.question(task, phrase=solution.get("phrase") or "object")
    if task == "counting":
        return _tasks.question(task, label=solution.get("label") or "objects")
    if task == "detection":
        classes = list(dict.fromkeys(solution.get("labels") or [])) or list(synthetic.SHAPES)
        return _tasks.question(task, classes=classes)
    return _tasks.question(task)


# ----------------------------------------------------------------------------------------------------------------
# inputs -> record
# ----------------------------------------------------------------------------------------------------------------


def source_record(task: str, source: str, example: str | None, scene_seed, upload, *,
                  min_side: int = 28) -> tuple[dict, list[str]]:
    """The record the chosen source gives (image, task, question, solution) and notes on conversions.

    Uploads carry no ground truth: their solution is a placeholder for the user to edit.
    """
    if task not in TASK_NAMES:
        raise InputError(f"unknown task {task!r}; expected one of {list(TASK_NAMES)}")
    if source == "example":
        if example and not (EXAMPLES_DIR / f"{example}.json").is_file():
            load_example(example)  # raises with the list of bundled examples
        if not example or not example.startswith(f"{task}-"):  # e.g. the task changed before the example list
            choices = list_examples(task)
            if not choices:
                raise InputError(f"no bundled {task} example in {EXAMPLES_DIR}; "
                                 f"write them with `python -m workbench.app_inputs`")
            example = choices[0]
        return load_example(example), []
    if source == "ShapesWorld scene":
        try:
            seed = int(scene_seed if scene_seed is not None else 0)
        except (TypeError, ValueError):
            raise InputError(f"the scene seed must be an integer, got {scene_seed!r}") from None
        return scene(task, seed), []
    if source == "upload":
        image, notes = read_upload(upload, min_side=min_side)
        solution = solution_template(task, image.size)
        return {"image": image, "task": task, "question": default_question(task, solution),
                "solution": solution}, notes
    raise InputError(f"unknown image source {source!r}; expected one of {list(SOURCES)}")


def build_record(task: str, source: str, example: str | None, scene_seed, upload, gt_json: str, prompt: str, *,
                 min_side: int = 28) -> tuple[dict, list[str]]:
    """The record to sample on: the source's image, the (possibly edited) ground truth JSON and prompt."""
    record, notes = source_record(task, source, example, scene_seed, upload, min_side=min_side)
    solution = parse_ground_truth(task, gt_json, record["image"].size)
    question = (prompt or "").strip() or default_question(task, solution)
    return {"image": record["image"], "task": task, "question": question, "solution": solution}, notes


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write the app's bundled ShapesWorld examples to assets/examples/")
    parser.add_argument("--per-task", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    for path in write_examples(args.per_task, args.seed):
        print(path.relative_to(EXAMPLES_DIR.parent.parent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
