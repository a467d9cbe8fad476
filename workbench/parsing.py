"""Completion text -> structured prediction in original-image pixels. Never raises on any string.

Reads every output form of REWARDS.md ("Output formats the parsers must read"):

- Qwen2-VL special tokens: ``<|object_ref_start|>cat<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``;
  several box blocks may follow one phrase; a single ``(x,y)`` inside a box block is a point;
- Qwen2.5-VL / Qwen3-VL JSON, with or without a ```json fence: ``[{"bbox_2d": [...], "label": "cat"}]``,
  ``{"point_2d": [x, y]}``; a JSON list cut off mid-way is recovered item by item (and reported);
- plain forms: ``[x1,y1,x2,y2]``, ``(x1,y1,x2,y2)``, ``(x1,y1),(x2,y2)``, points ``(x,y)`` / ``[x,y]``;
- 0-1 fractions (every coordinate in [0, 1] and at least one written with a decimal point);
- a ``<think>...</think><answer>...</answer>`` wrapper (only the answer is parsed);
- bare integers for counting, plain text for OCR.

Numbers are read in the frame of the given convention (``conventions.py`` converts them to pixels).
Coordinates are kept as written otherwise: boxes are neither sorted nor clipped here — that is a scoring decision
that differs between reward presets.

Hostile input costs bounded work: only the first ``MAX_CHARS`` characters are scanned and at most ``MAX_ITEMS``
items are read (``truncated`` is set and ``malformed`` says so); every pattern is linear (no nested quantifiers,
bracket contents exclude the closing delimiter).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from workbench import conventions
from workbench.conventions import BOX_END, BOX_START, REF_END, REF_START

TASKS = ("grounding", "counting", "ocr", "detection")
MAX_CHARS = 262_144  # a generous training completion is < 20k characters
MAX_ITEMS = 2_000  # COCO has at most ~90 objects per image
MAX_NOTES = 20
END_TOKENS = ("<|endoftext|>", "<|im_end|>")  # end-of-turn padding a decoder may keep; never content

_NUM = r"[-+]?(?:\d{1,20}(?:\.\d{0,20})?|\.\d{1,20})(?:[eE][-+]?\d{1,3})?"
_NUM_RE = re.compile(_NUM)
_SEP = r"\s*,\s*"
_PLAIN_RE = re.compile(
    rf"\[\s*({_NUM}){_SEP}({_NUM}){_SEP}({_NUM}){_SEP}({_NUM})\s*\]"  # [x1,y1,x2,y2]
    rf"|\(\s*({_NUM}){_SEP}({_NUM}){_SEP}({_NUM}){_SEP}({_NUM})\s*\)"  # (x1,y1,x2,y2)
    rf"|\(\s*({_NUM}){_SEP}({_NUM})\s*\)\s*,\s*\(\s*({_NUM}){_SEP}({_NUM})\s*\)"  # (x1,y1),(x2,y2)
    rf"|[\[(]\s*({_NUM}){_SEP}({_NUM})\s*[\])]")  # a point (x,y) or [x,y]
# A phrase | a box block in Qwen2-VL's own form (x1,y1),(x2,y2), read in one pass | any other box block.
_TOKEN_RE = re.compile(
    "(" + re.escape(REF_START) + r")([^<]*)" + re.escape(REF_END)
    + "|" + re.escape(BOX_START) + rf"\(\s*({_NUM}){_SEP}({_NUM})\s*\)\s*,\s*\(\s*({_NUM}){_SEP}({_NUM})\s*\)"
    + re.escape(BOX_END)
    + "|" + re.escape(BOX_START) + r"([^<]*)" + re.escape(BOX_END))
_JSON_OBJECT_RE = re.compile(r"\{[^{}]{0,2000}\}")  # a flat JSON object, for recovering broken lists
_JSON_FIELD_RE = re.compile(r'"(bbox_2d|point_2d)"\s*:\s*\[([^\[\]]{0,400})\]|"label"\s*:\s*"([^"\\]{0,400})"')
_INTEGER_RE = re.compile(r"\s*(\d{1,9})\s*\.?\s*")
_FIRST_INTEGER_RE = re.compile(r"(?<![\w.])(\d{1,9})(?![\w.]|\.\d)")


@dataclass
class Prediction:
    """What a completion says, in original-image pixels.

    boxes:   [N, 4] float xyxy, as written (not sorted, not clipped); ``labels`` has one entry per box (None if
             the form carries no label).
    points:  [K, 2] float (x, y) points written as points (box centres are not added here).
    count:   number of boxes + points, or the integer of a bare-number counting answer; None if neither.
    text:    the answer text (inside ``<answer>`` when present, end-of-turn tokens removed); OCR reads this.
    format_ok: the completion has the task's required structure (REWARDS.md, format reward).
    malformed: human-readable notes on what was wrong or skipped.
    truncated: the completion hit ``MAX_CHARS`` or ``MAX_ITEMS`` and was only partly read.
    frame:   how the numbers were read: the convention's name, or ``"fractions"`` (0-1 of the image).
    """

    task: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: list[str | None] = field(default_factory=list)
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    count: int | None = None
    text: str = ""
    format_ok: bool = False
    malformed: list[str] = field(default_factory=list)
    truncated: bool = False
    frame: str = ""


@dataclass(slots=True)
class _Item:
    """One coordinate group as written: 4 numbers (box) or 2 (point), in the model's frame."""

    coords: list[float]
    label: str | None
    decimal: bool  # written with a decimal point (evidence for 0-1 fractions)


def parse(task: str, completion, *, convention="qwen2_vl", image_size) -> Prediction:
    """Parse one completion for ``task`` into a :class:`Prediction` in original pixels of ``image_size`` (w, h)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    conv = conventions.get(convention)
    malformed: list[str] = []
    text = completion if isinstance(completion, str) else ("" if completion is None else str(completion))
    if not isinstance(completion, str):
        malformed.append(f"expected the completion as a string, got {type(completion).__name__}")
    truncated = len(text) > MAX_CHARS
    if truncated:
        malformed.append(f"completion has {len(text)} characters; only the first {MAX_CHARS} were read")
        text = text[:MAX_CHARS]
    for token in END_TOKENS:
        text = text.replace(token, "")
    answer, wrapper_ok = answer_region(text, malformed)
    pred = Prediction(task=task, text=answer.strip(), malformed=malformed, truncated=truncated, frame=conv.name)
    if task == "ocr":
        pred.format_ok = wrapper_ok and not truncated
        return pred

    items, structured_ok, items_truncated = _read_items(answer, malformed)
    pred.truncated |= items_truncated
    if _to_prediction(pred, items, conv, image_size):
        structured_ok = False  # some items had non-finite coordinates
    if items:
        pred.count = len(pred.boxes) + len(pred.points)
    elif structured_ok and _is_empty_list(answer):
        pred.count = 0  # "[]": an explicit answer of no objects
    elif task == "counting":
        structured_ok = _read_count(pred, answer)
    else:
        structured_ok = False
        malformed.append("no coordinates found")
    ok = structured_ok and wrapper_ok and not pred.truncated
    if task == "grounding" and not len(pred.boxes):
        if items:
            malformed.append("grounding expects a box, found none")
        ok = False
    elif task == "counting":
        ok &= pred.count is not None
    elif task == "detection":
        if pred.points.size:
            malformed.append(f"detection expects boxes, found {len(pred.points)} points")
            ok = False
        if not all(pred.labels):
            malformed.append("detection expects a label for every box")
            ok = False
    if len(malformed) > MAX_NOTES:  # one note per bad item could be thousands
        malformed[MAX_NOTES:] = [f"... and {len(malformed) - MAX_NOTES} more notes"]
    pred.format_ok = bool(ok)
    return pred


def answer_region(text: str, malformed: list[str]) -> tuple[str, bool]:
    """The part of ``text`` to parse: inside ``<answer>...</answer>`` when present (the paper's thinking ablation).

    Returns (region, wrapper_ok); a broken wrapper (unclosed tags, thinking without an answer) is reported.
    """
    start = text.find("<answer>")
    if start >= 0:
        end = text.find("</answer>", start)
        if end < 0:
            malformed.append("<answer> is never closed")
            return text[start + len("<answer>"):], False
        return text[start + len("<answer>"):end], True
    if "<think>" in text or "</think>" in text:
        close = text.rfind("</think>")
        if close < 0:
            malformed.append("<think> is never closed and there is no <answer>")
            return "", False
        malformed.append("no <answer>...</answer> after </think>")
        return text[close + len("</think>"):], False
    return text, True


def _read_items(answer: str, malformed: list[str]) -> tuple[list[_Item], bool, bool]:
    """Coordinate groups in ``answer`` -> (items, structure_ok, truncated). Tries special tokens, JSON, plain."""
    if BOX_START in answer:
        return _read_special_tokens(answer, malformed)
    if "bbox_2d" in answer or "point_2d" in answer:
        items, ok, truncated = _read_json(answer, malformed)
        if items or truncated:
            return items, ok, truncated
        malformed.append("found bbox_2d/point_2d keys but no readable item; reading plain coordinates")
        items, _, truncated = _read_plain(answer, malformed)
        return items, False, truncated
    return _read_plain(answer, malformed)


def _read_special_tokens(answer: str, malformed: list[str]) -> tuple[list[_Item], bool, bool]:
    items, ok, phrase = [], True, None
    for is_ref, ref, x1, y1, x2, y2, body in _TOKEN_RE.findall(answer):
        if is_ref:
            phrase = ref.strip() or None
            continue
        if len(items) >= MAX_ITEMS:
            malformed.append(f"more than {MAX_ITEMS} items; only the first {MAX_ITEMS} were read")
            return items, False, True
        if x1:  # the common case, already split by the pattern
            items.append(_Item([float(x1), float(y1), float(x2), float(y2)], phrase, "." in x1 + y1 + x2 + y2))
            continue
        numbers = _NUM_RE.findall(body)
        if len(numbers) != 4 and len(numbers) != 2:
            malformed.append(f"expected (x1,y1),(x2,y2) or (x,y) inside a box block, got {body[:60]!r}")
            ok = False
            continue
        items.append(_Item(list(map(float, numbers)), phrase, "." in body))
    opened = answer.count(BOX_START)
    if opened > len(items) and ok:
        malformed.append(f"{opened - len(items)} box block(s) not closed by {BOX_END}")
        ok = False
    return items, ok, False


def _read_json(answer: str, malformed: list[str]) -> tuple[list[_Item], bool, bool]:
    body, fence_ok = _strip_fence(answer, malformed)
    data = _loads(body)
    if data is _INVALID:
        return _recover_json_items(body, malformed)
    entries = data if isinstance(data, list) else [data]
    items, ok = [], fence_ok
    for index, entry in enumerate(entries):
        if len(items) >= MAX_ITEMS:
            malformed.append(f"more than {MAX_ITEMS} items; only the first {MAX_ITEMS} were read")
            return items, False, True
        item, problem = _json_item(entry)
        if item is None:
            malformed.append(f"item {index}: {problem}")
            ok = False
        else:
            items.append(item)
    return items, ok, False


def _json_item(entry) -> tuple[_Item | None, str]:
    if type(entry) is not dict:
        return None, f"expected an object with bbox_2d or point_2d, got {type(entry).__name__}"
    key, size = ("bbox_2d", 4) if "bbox_2d" in entry else ("point_2d", 2) if "point_2d" in entry else (None, 0)
    if key is None:
        return None, f"expected a bbox_2d or point_2d key, got keys {sorted(map(str, entry))[:5]}"
    value = entry[key]
    # type(v) is int/float on purpose: JSON true/false are bools, which are not coordinates
    if type(value) is not list or len(value) != size or not all(type(v) in (int, float) for v in value):
        return None, f"expected {key} as {size} numbers, got {str(value)[:60]!r}"
    label = entry.get("label")
    label = (label.strip() or None) if type(label) is str else None
    return _Item(value, label, float in map(type, value)), ""


def _recover_json_items(body: str, malformed: list[str]) -> tuple[list[_Item], bool, bool]:
    """Invalid JSON (typically a list cut off by the length limit): read each flat object on its own."""
    items = []
    for match in _JSON_OBJECT_RE.finditer(body):
        if len(items) >= MAX_ITEMS:
            malformed.append(f"more than {MAX_ITEMS} items; only the first {MAX_ITEMS} were read")
            return items, False, True
        coords, label = None, None
        for field_match in _JSON_FIELD_RE.finditer(match.group(0)):
            if field_match.group(3) is not None:
                label = field_match.group(3).strip() or None
            elif coords is None:
                numbers = _NUM_RE.findall(field_match.group(2))
                if len(numbers) == (4 if field_match.group(1) == "bbox_2d" else 2):
                    coords = numbers
        if coords is not None:
            items.append(_Item([float(v) for v in coords], label, any("." in v for v in coords)))
    malformed.append(f"invalid JSON; recovered {len(items)} item(s) object by object")
    return items, False, False


def _read_plain(answer: str, malformed: list[str]) -> tuple[list[_Item], bool, bool]:
    items = []
    for match in _PLAIN_RE.finditer(answer):
        if len(items) >= MAX_ITEMS:
            malformed.append(f"more than {MAX_ITEMS} items; only the first {MAX_ITEMS} were read")
            return items, False, True
        numbers = [g for g in match.groups() if g is not None]
        items.append(_Item([float(v) for v in numbers], None, any("." in v for v in numbers)))
    return items, True, False


def _read_count(pred: Prediction, answer: str) -> bool:
    """A counting answer without coordinates: a bare integer (format ok) or the first integer in free text."""
    bare = _INTEGER_RE.fullmatch(answer)
    if bare:
        pred.count = int(bare.group(1))
        return True
    first = _FIRST_INTEGER_RE.search(answer)
    if first:
        pred.count = int(first.group(1))
        pred.malformed.append(f"count {pred.count} read from free text, expected a list or a bare integer")
    else:
        pred.malformed.append("no coordinates and no count found")
    return False


def _to_prediction(pred: Prediction, items: list[_Item], conv, image_size) -> int:
    """Convert items (model frame or 0-1 fractions) to pixels, boxes [N, 4] and points [K, 2] at once; drop
    non-finite ones and return how many were dropped."""
    dropped = 0
    groups = {size: [item for item in items if len(item.coords) == size] for size in (4, 2)}
    arrays = {size: np.asarray([item.coords for item in group], dtype=np.float64).reshape(-1, size)
              for size, group in groups.items()}
    fractions = any(item.decimal for item in items) and all(
        a.size == 0 or (a.min() >= 0 and a.max() <= 1) for a in arrays.values())
    if fractions:
        pred.frame = "fractions"
    for size, coords in arrays.items():
        with np.errstate(over="ignore", invalid="ignore"):
            px = _fractions_to_pixels(coords, image_size) if fractions else conv.to_pixels(coords, image_size)
        finite = np.isfinite(px).all(axis=1)
        if not finite.all():
            dropped += int((~finite).sum())
            pred.malformed.append(f"{int((~finite).sum())} item(s) with non-finite coordinates skipped")
        if size == 4:
            pred.boxes = px[finite]
            pred.labels = [item.label for item, ok in zip(groups[4], finite.tolist()) if ok]
        else:
            pred.points = px[finite]
    return dropped


def _fractions_to_pixels(coords: np.ndarray, image_size) -> np.ndarray:
    """0-1 fractions of the image [..., 2k] -> original pixels: the one frame conventions.py has no name for."""
    w, h = (float(v) for v in image_size)
    return coords * np.tile([w, h], coords.shape[-1] // 2)


_INVALID = object()


def _is_empty_list(answer: str) -> bool:
    body, _ = _strip_fence(answer, [])
    return body.strip().replace(" ", "") == "[]"


def _loads(body: str):
    """json.loads that reports failure (including RecursionError on deep nesting) as ``_INVALID``."""
    for candidate in (body, _outer_brackets(body)):
        if candidate:
            try:
                return json.loads(candidate)
            except (ValueError, RecursionError):
                continue
    return _INVALID


def _outer_brackets(body: str) -> str:
    """The span from the first '[' or '{' to the last ']' or '}' (drops prose around a JSON answer)."""
    starts = [i for i in (body.find("["), body.find("{")) if i >= 0]
    end = max(body.rfind("]"), body.rfind("}"))
    return body[min(starts):end + 1] if starts and end > min(starts) else ""


def _strip_fence(answer: str, malformed: list[str]) -> tuple[str, bool]:
    """Content of a ```json ... ``` (or ``` ... ```) fence if there is one."""
    start = answer.find("```")
    if start < 0:
        return answer, True
    body_start = start + 3
    if answer.startswith("json", body_start):
        body_start += 4
    end = answer.find("```", body_start)
    if end < 0:
        malformed.append("code fence ``` is never closed")
        return answer[body_start:], False
    return answer[body_start:end], True
