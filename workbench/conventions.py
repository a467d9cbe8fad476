"""Coordinate conventions: the one place that converts between a model family's frame and image pixels.

Ground truth lives in absolute pixels of the original image. Each model family writes coordinates in its own frame:

==============  ==========================================================  ==========================
name            frame                                                       how it writes a box
==============  ==========================================================  ==========================
``qwen2_vl``    integers 0-1000 of the image (Qwen2-VL)                     special-token box blocks
``qwen3_vl``    integers 0-1000 of the image (Qwen3-VL)                     JSON ``bbox_2d`` list
``qwen2_5_vl``  pixels of the *resized* image the processor fed the model   JSON ``bbox_2d`` list
``pixels``      pixels of the original image                                JSON ``bbox_2d`` list
==============  ==========================================================  ==========================

Qwen2.5-VL's resized size comes from the processor's own ``smart_resize`` (multiples of 28 within
min/max pixels), imported from transformers rather than re-derived.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

try:  # the PIL backend module imports without torchvision
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
except ImportError:  # pragma: no cover - older transformers keep it in the main module
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

NAMES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "pixels")
NORMALISED_RANGE = 1000  # Qwen2-VL / Qwen3-VL write integers in [0, 1000]
DEFAULT_MIN_PIXELS = 3136  # Qwen2.5-VL processor defaults (56*56, 28*28*16384)
DEFAULT_MAX_PIXELS = 12845056

BOX_START, BOX_END = "<|box_start|>", "<|box_end|>"
REF_START, REF_END = "<|object_ref_start|>", "<|object_ref_end|>"


@dataclass(frozen=True)
class Convention:
    """A model family's coordinate frame and output syntax.

    ``min_pixels``/``max_pixels``/``factor`` only matter for ``qwen2_5_vl`` (the processor's resize settings).
    """

    name: str
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    factor: int = 28

    def __post_init__(self):
        if self.name not in NAMES:
            raise ValueError(f"unknown convention {self.name!r}; expected one of {NAMES}")

    # --- frames -------------------------------------------------------------------------------------------
    def frame_size(self, image_size: tuple[int, int]) -> tuple[float, float]:
        """Extent (width, height) of the model's frame for an original image of ``image_size`` = (w, h)."""
        w, h = _check_size(image_size)
        if self.name in ("qwen2_vl", "qwen3_vl"):
            return float(NORMALISED_RANGE), float(NORMALISED_RANGE)
        if self.name == "qwen2_5_vl":
            rh, rw = smart_resize(h, w, factor=self.factor, min_pixels=self.min_pixels,
                                  max_pixels=self.max_pixels)
            return float(rw), float(rh)
        return float(w), float(h)

    def to_pixels(self, coords, image_size: tuple[int, int]) -> np.ndarray:
        """Model-frame coordinates [..., 2k] (x, y pairs: boxes or points) -> original pixels, same shape."""
        return _scale_xy(coords, _ratio(image_size, self.frame_size(image_size)))

    def from_pixels(self, coords, image_size: tuple[int, int]) -> np.ndarray:
        """Original-pixel coordinates [..., 2k] -> model frame (floats; writers round), same shape."""
        return _scale_xy(coords, _ratio(self.frame_size(image_size), image_size))

    # --- writing (prompts, SFT targets) -----------------------------------------------------------------
    def write_box(self, box_px, image_size, phrase: str | None = None) -> str:
        """One box (original pixels) as this family writes a grounding answer."""
        return self.write_boxes([box_px], [phrase] if phrase else None, image_size)

    def write_boxes(self, boxes_px, labels: list[str] | None, image_size) -> str:
        """Boxes [N, 4] (original pixels) with optional labels, as the family lists objects.

        Qwen2-VL groups consecutive boxes of the same label behind one ``object_ref`` block.
        """
        coords = [self._ints(b, image_size) for b in np.asarray(boxes_px, dtype=float).reshape(-1, 4)]
        labels = list(labels) if labels is not None else [None] * len(coords)
        if self.name == "qwen2_vl":
            return _special_token_blocks(
                [f"({x1},{y1}),({x2},{y2})" for x1, y1, x2, y2 in coords], labels)
        items = [{"bbox_2d": c, **({"label": lab} if lab else {})} for c, lab in zip(coords, labels)]
        return _json_fence(items)

    def write_points(self, points_px, image_size, label: str | None = None) -> str:
        """Points [N, 2] (original pixels) as the family writes them (Qwen2-VL: a point inside a box block)."""
        coords = [self._ints(p, image_size) for p in np.asarray(points_px, dtype=float).reshape(-1, 2)]
        labels = [label] * len(coords)
        if self.name == "qwen2_vl":
            return _special_token_blocks([f"({x},{y})" for x, y in coords], labels)
        return _json_fence([{"point_2d": c, **({"label": label} if label else {})} for c in coords])

    def _ints(self, coords_px, image_size) -> list[int]:
        frame = self.from_pixels(coords_px, image_size)
        fw, fh = self.frame_size(image_size)
        limits = np.tile([fw, fh], len(frame) // 2)
        return [int(v) for v in np.clip(np.rint(frame), 0, limits)]


def get(convention: str | Convention, **resize) -> Convention:
    """Name or Convention -> Convention. ``resize`` (min_pixels, max_pixels, factor) applies to qwen2_5_vl."""
    if isinstance(convention, Convention):
        return convention
    return Convention(convention, **resize)


def for_model_type(model_type: str) -> str:
    """A transformers ``config.model_type`` -> the name of its convention."""
    table = {"qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl",
             "qwen3_vl_moe": "qwen3_vl"}
    if model_type not in table:
        raise ValueError(f"no coordinate convention for model type {model_type!r}; "
                         f"expected one of {sorted(table)}")
    return table[model_type]


def _check_size(image_size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"expected image_size (width, height), got {image_size!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"expected a positive image size (width, height), got {image_size!r}")
    return w, h


def _ratio(num, den) -> tuple[float, float]:
    return float(num[0]) / float(den[0]), float(num[1]) / float(den[1])


def _scale_xy(coords, ratio: tuple[float, float]) -> np.ndarray:
    arr = np.asarray(coords, dtype=np.float64)
    if arr.shape[-1] % 2:
        raise ValueError(f"expected (x, y) pairs in the last axis, got shape {arr.shape}")
    scale = np.tile(np.asarray(ratio), arr.shape[-1] // 2)
    return arr * scale


def _special_token_blocks(bodies: list[str], labels: list[str | None]) -> str:
    out, previous = [], object()
    for body, label in zip(bodies, labels):
        if label and label != previous:
            out.append(f"{REF_START}{label}{REF_END}")
        previous = label
        out.append(f"{BOX_START}{body}{BOX_END}")
    return "".join(out)


def _json_fence(items: list[dict]) -> str:
    lines = ",\n".join("\t" + json.dumps(item) for item in items)
    return f"```json\n[\n{lines}\n]\n```"
