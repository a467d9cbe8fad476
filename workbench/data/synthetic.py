"""ShapesWorld: deterministic synthetic scenes with ground truth for grounding, counting, OCR and detection.

Every record is canonical (DESIGN.md "Canonical records and coordinates")::

    {"image": PIL.Image (RGB), "task": str, "question": str, "solution": dict, "meta": dict}

with the solution in pixels of the original image:

- grounding  ``{"box": [x1, y1, x2, y2], "phrase": "red square"}``
- counting   ``{"points": [[x, y], ...], "boxes": [[x1, y1, x2, y2], ...], "label": "triangles"}``
- ocr        ``{"text": "CAT"}``
- detection  ``{"boxes": [[x1, y1, x2, y2], ...], "labels": ["circle", ...]}``

``meta`` holds the scene layout (every object's shape, colour and box; every character's box) so that
pre-training can supervise image regions directly. The same seed always gives the same records, images
included (PIL's built-in font is embedded in Pillow, so no system font is involved).

Scenes are built for small canvases (112-168 px, where one Qwen2-VL image token covers 28 x 28 px): shapes
are large and few, and OCR words are short uppercase words from a closed list, one character per token
width. ``difficulty`` in [0, 1] shrinks the shapes and adds distractors, for curricula.
"""

from __future__ import annotations

import json
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from workbench import tasks as _tasks

TASK_NAMES = ("grounding", "counting", "ocr", "detection")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
}
SHAPES = ("circle", "square", "triangle")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles"}
# Short uppercase words: a closed list, so a tiny model can learn to read them in minutes.
WORDS = (
    "CAT", "DOG", "SUN", "MAP", "BOX", "RED", "CUP", "HAT", "PEN", "KEY", "BUS", "FOX", "OWL", "BEE", "ANT",
    "EGG", "ICE", "JAM", "LOG", "NET", "OAK", "PIG", "RAT", "SKY", "TOY", "VAN", "WEB", "YAK", "ZIP", "ARM",
    "TREE", "FISH", "BIRD", "CAKE", "DOOR", "FROG", "GOLD", "KITE", "LAMP", "MOON", "NEST", "PARK", "ROAD",
    "SHIP", "STAR", "TIME", "WIND", "BLUE", "JUMP", "QUIZ", "WAVE", "YARD", "MILK", "HOME", "LION", "DUCK",
)
CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

DEFAULTS = {
    "image_size": 112,      # square canvas side in pixels (multiples of 28 keep the token grid exact)
    "difficulty": 1.0,      # 0 = large shapes, no distractors; 1 = the full (evaluation) distribution
    "background": "plain",  # "plain" (light, uniform) or "noise" (light texture)
    "min_count": 1,         # counting: smallest number of matching objects
    "max_count": 5,         # counting: largest
    "max_objects": 4,       # detection: most objects in a scene
}


def generate(task: str, n: int, seed: int = 0, **options) -> list[dict]:
    """``n`` ShapesWorld records of ``task`` (one of :data:`TASK_NAMES`), deterministic for ``seed``.

    Options (see :data:`DEFAULTS`): ``image_size``, ``difficulty``, ``background``, ``min_count``,
    ``max_count``, ``max_objects``; ``with_mask=True`` adds ``meta["mask"]``, an int array [H, W] holding
    1 + the index of the object drawn at each pixel (0 = background), for pre-training.
    """
    if task not in TASK_NAMES:
        raise ValueError(f"unknown task {task!r}; expected one of {TASK_NAMES}")
    with_mask = bool(options.pop("with_mask", False))
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown ShapesWorld options {sorted(unknown)}; expected some of {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **options}
    # One generator per record, keyed on (seed, task, index): records do not depend on n.
    task_key = TASK_NAMES.index(task)
    out = []
    for i in range(n):
        rng = np.random.default_rng([int(seed), task_key, i])
        out.append(_BUILDERS[task](rng, opts, with_mask))
    return out


def generate_mixed(n: int, seed: int = 0, tasks=TASK_NAMES, **options) -> list[dict]:
    """``n`` records cycling through ``tasks`` (grounding, counting, ocr, detection, grounding, ...)."""
    per = [generate(t, -(-n // len(tasks)), seed=seed, **options) for t in tasks]
    return [per[i % len(tasks)][i // len(tasks)] for i in range(n)]


# --- scenes -----------------------------------------------------------------------------------------------

def _size_range(opts) -> tuple[float, float]:
    """Shape side as a fraction of the canvas: large when easy, smaller at full difficulty."""
    d = float(np.clip(opts["difficulty"], 0.0, 1.0))
    return 0.30 - 0.08 * d, 0.42 - 0.10 * d


def _place(rng, specs, opts, size_range=None) -> list[dict]:
    """Non-overlapping square footprints for ``specs`` [(colour, shape), ...]; returns object dicts."""
    side = opts["image_size"]
    lo, hi = size_range or _size_range(opts)
    objects, boxes = [], []
    for colour, shape in specs:
        for _ in range(200):
            s = int(round(rng.uniform(lo, hi) * side))
            x1, y1 = (int(v) for v in rng.integers(2, side - s - 2, size=2, endpoint=True))
            box = [x1, y1, x1 + s, y1 + s]
            if all(_gap(box, b) >= 3 for b in boxes):
                break
        else:  # crowded scene: shrink until it fits (rare at the default sizes)
            s = max(8, s // 2)
            x1, y1 = (int(v) for v in rng.integers(2, side - s - 2, size=2, endpoint=True))
            box = [x1, y1, x1 + s, y1 + s]
        boxes.append(box)
        objects.append({"shape": shape, "color": colour, "box": box})
    return objects


def _gap(a, b) -> float:
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


def _canvas(rng, opts) -> Image.Image:
    side = opts["image_size"]
    base = rng.integers(225, 250, size=3)
    arr = np.broadcast_to(base, (side, side, 3)).astype(np.int16)
    if opts["background"] == "noise":
        arr = arr + rng.integers(-8, 9, size=(side, side, 1))
    elif opts["background"] != "plain":
        raise ValueError(f"unknown background {opts['background']!r}; expected 'plain' or 'noise'")
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _draw(rng, opts, objects, with_mask) -> tuple[Image.Image, np.ndarray | None]:
    image = _canvas(rng, opts)
    draw = ImageDraw.Draw(image)
    mask = Image.new("L", image.size, 0) if with_mask else None
    mdraw = ImageDraw.Draw(mask) if with_mask else None
    for k, obj in enumerate(objects):
        fill = tuple(int(np.clip(c + v, 0, 255)) for c, v in zip(COLORS[obj["color"]], rng.integers(-15, 16, 3)))
        for d, f in ((draw, fill), (mdraw, k + 1)):
            if d is not None:
                _shape(d, obj["shape"], obj["box"], f)
    return image, (np.asarray(mask, dtype=np.int64) if with_mask else None)


def _shape(draw, shape, box, fill) -> None:
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif shape == "square":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif shape == "triangle":
        draw.polygon([((x1 + x2) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _record(task, image, question, solution, objects, mask, extra=None) -> dict:
    meta = {"objects": objects, "image_size": list(image.size), **(extra or {})}
    if mask is not None:
        meta["mask"] = mask
    return {"image": image, "task": task, "question": question, "solution": solution, "meta": meta}


def _grounding(rng, opts, with_mask) -> dict:
    d = float(np.clip(opts["difficulty"], 0.0, 1.0))
    colour = str(rng.choice(list(COLORS)))
    shape = str(rng.choice(SHAPES))
    n_distract = int(rng.integers(0, 1 + round(3 * d)))
    specs = [(colour, shape)]
    while len(specs) < 1 + n_distract:  # distractors share at most one attribute with the target
        c, s = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
        if (c, s) != (colour, shape):
            specs.append((c, s))
    objects = _place(rng, specs, opts)
    image, mask = _draw(rng, opts, objects, with_mask)
    phrase = f"{colour} {shape}"
    solution = {"box": list(objects[0]["box"]), "phrase": phrase}
    return _record("grounding", image, _tasks.question("grounding", phrase=phrase), solution, objects, mask,
                   {"target": 0})


def _counting(rng, opts, with_mask) -> dict:
    d = float(np.clip(opts["difficulty"], 0.0, 1.0))
    by_colour = bool(rng.integers(0, 2))
    if by_colour:
        key = str(rng.choice(list(COLORS)))
        label = f"{key} shapes"
    else:
        key = str(rng.choice(SHAPES))
        label = PLURALS[key]
    k = int(rng.integers(opts["min_count"], opts["max_count"] + 1))
    n_other = int(rng.integers(0, 1 + round(2 * d)))
    specs = []
    for _ in range(k):
        specs.append((key, str(rng.choice(SHAPES))) if by_colour else (str(rng.choice(list(COLORS))), key))
    for _ in range(n_other):
        if by_colour:
            specs.append((str(rng.choice([c for c in COLORS if c != key])), str(rng.choice(SHAPES))))
        else:
            specs.append((str(rng.choice(list(COLORS))), str(rng.choice([s for s in SHAPES if s != key]))))
    order = rng.permutation(len(specs))
    specs = [specs[i] for i in order]
    objects = _place(rng, specs, opts, size_range=(0.17, 0.24))
    image, mask = _draw(rng, opts, objects, with_mask)
    matching = [o for o in objects if (o["color"] if by_colour else o["shape"]) == key]
    matching.sort(key=lambda o: (o["box"][1], o["box"][0]))  # reading order: a canonical answer order
    boxes = [list(o["box"]) for o in matching]
    points = [[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in boxes]
    solution = {"points": points, "boxes": boxes, "label": label}
    return _record("counting", image, _tasks.question("counting", label=label), solution, objects, mask,
                   {"query": {"color" if by_colour else "shape": key}})


def _detection(rng, opts, with_mask) -> dict:
    d = float(np.clip(opts["difficulty"], 0.0, 1.0))
    top = max(1, round(1 + (opts["max_objects"] - 1) * max(d, 0.5)))
    n = int(rng.integers(1, top + 1))
    specs = [(str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))) for _ in range(n)]
    objects = _place(rng, specs, opts)
    image, mask = _draw(rng, opts, objects, with_mask)
    # Canonical answer order: by class (as listed in the question), then reading order.
    ordered = sorted(objects, key=lambda o: (SHAPES.index(o["shape"]), o["box"][1], o["box"][0]))
    solution = {"boxes": [list(o["box"]) for o in ordered], "labels": [o["shape"] for o in ordered]}
    return _record("detection", image, _tasks.question("detection", classes=list(SHAPES)), solution,
                   objects, mask)


_FONT_CACHE: dict[int, ImageFont.FreeTypeFont] = {}


def _font(size: int):
    if size not in _FONT_CACHE:
        _FONT_CACHE[size] = ImageFont.load_default(size=size)
    return _FONT_CACHE[size]


def _ocr(rng, opts, with_mask) -> dict:
    side = opts["image_size"]
    word = str(rng.choice(WORDS))
    pitch = int(round(side / 4.6))       # about one 28-px image token per character at 112-168 px
    font = _font(int(round(pitch * 1.05)))
    width = pitch * len(word)
    x0 = int(rng.integers(2, max(3, side - width - 1)))
    y0 = int(rng.integers(2, max(3, side - pitch - 4)))
    image = _canvas(rng, opts)
    draw = ImageDraw.Draw(image)
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    mask = Image.new("L", image.size, 0) if with_mask else None
    chars = []
    for i, ch in enumerate(word):
        cx = x0 + i * pitch + pitch / 2
        l, t, r, b = font.getbbox(ch, anchor="mm")
        draw.text((cx, y0 + pitch / 2), ch, font=font, fill=ink, anchor="mm")
        box = [int(cx + l), int(y0 + pitch / 2 + t), int(math.ceil(cx + r)), int(math.ceil(y0 + pitch / 2 + b))]
        if mask is not None:
            mdraw = ImageDraw.Draw(mask)
            mdraw.fontmode = "1"  # no anti-aliasing: mask values are character indices
            mdraw.text((cx, y0 + pitch / 2), ch, font=font, fill=i + 1, anchor="mm")
        chars.append({"char": ch, "box": box})
    text_box = [min(c["box"][0] for c in chars), min(c["box"][1] for c in chars),
                max(c["box"][2] for c in chars), max(c["box"][3] for c in chars)]
    return _record("ocr", image, _tasks.question("ocr"), {"text": word}, [],
                   np.asarray(mask, dtype=np.int64) if mask is not None else None,
                   {"chars": chars, "text_box": text_box})


_BUILDERS = {"grounding": _grounding, "counting": _counting, "ocr": _ocr, "detection": _detection}


# --- datasets view ----------------------------------------------------------------------------------------

def to_dataset(records: list[dict]):
    """Records -> ``datasets.Dataset`` with columns image (Image feature), prompt, task, question, solution, meta.

    ``prompt`` is the conversational prompt TRL's ``GRPOTrainer`` takes (system + user turn with an image
    placeholder; TRL inserts the ``image`` column). ``solution`` and ``meta`` are stored as JSON strings,
    because the four tasks' solutions have different shapes and one Arrow column needs one schema;
    :func:`from_dataset` and :func:`decode_solution` undo it.
    """
    import datasets

    rows = {
        "image": [r["image"] for r in records],
        "prompt": [[{"role": "system", "content": [{"type": "text", "text": _tasks.SYSTEM_PROMPT}]},
                    {"role": "user", "content": [{"type": "image", "text": None},
                                                 {"type": "text", "text": r["question"]}]}] for r in records],
        "task": [r["task"] for r in records],
        "question": [r["question"] for r in records],
        "solution": [json.dumps(r["solution"]) for r in records],
        "meta": [json.dumps({k: v for k, v in r.get("meta", {}).items() if k != "mask"}) for r in records],
    }
    turn = {"role": datasets.Value("string"),
            "content": datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")})}
    features = datasets.Features({
        "image": datasets.Image(), "prompt": datasets.List(turn),
        "task": datasets.Value("string"), "question": datasets.Value("string"),
        "solution": datasets.Value("string"), "meta": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict(rows, features=features)


def decode_solution(solution) -> dict:
    """A solution as stored in a dataset row (JSON string) or already a dict -> dict."""
    return json.loads(solution) if isinstance(solution, str) else dict(solution)


def from_dataset(dataset) -> list[dict]:
    """``datasets.Dataset`` made by :func:`to_dataset` -> canonical records (images as RGB PIL images)."""
    out = []
    for row in dataset:
        out.append({
            "image": row["image"].convert("RGB"),
            "task": row["task"],
            "question": row["question"],
            "solution": decode_solution(row["solution"]),
            "meta": json.loads(row["meta"]) if row.get("meta") else {},
        })
    return out
