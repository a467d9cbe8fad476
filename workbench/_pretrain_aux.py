"""The auxiliary vision head used during pre-training only (dropped before saving).

Why: Qwen2-VL's vision tower has no absolute position embedding (2-D rotary only), and in a tiny language
model M-RoPE barely separates a 4 x 4 grid of image tokens, so a from-scratch model learns *what* is in an
image long before it learns *where* (PLATFORM-NOTES: grounding Acc@0.5 6% after 30 CPU-minutes). A throwaway
linear head on the merged vision tokens (what the language model sees) is trained to read out, per token,
its own row and column, the colour and shape of the object covering it, that object's box, and the
character under it. This dense signal puts position and identity into the tokens' content; the head is then
discarded, so the saved checkpoint is the stock ``Qwen2VLForConditionalGeneration``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from workbench.data import synthetic

CELL = 28            # pixels per merged image token (patch 14 x merge 2)
MAX_GRID = 8         # up to 224 px canvases
N_COLOR = len(synthetic.COLORS) + 1
N_SHAPE = len(synthetic.SHAPES) + 1
N_CHAR = len(synthetic.CHARSET) + 1
MAX_RANK = 8         # reading-order ranks 1..7 (0 = no object)
# Class heads (cross-entropy). "digits" are the hundreds (0-10) and tens (0-9) digits of the covering
# object's four 0-1000 coordinates, exactly the tokens the answer spells: linearly readable digit features
# give the language model a short path from "attend to the right token" to "write its coordinates".
# "rank_color"/"rank_shape": the object's place in reading order among objects of its colour / shape (the
# order counting and detection answers list them in); "char_pos": a glyph's place in its word (OCR order).
CLASS_HEADS = {"row": MAX_GRID, "col": MAX_GRID, "color": N_COLOR, "shape": N_SHAPE, "char": N_CHAR,
               "rank_color": MAX_RANK, "rank_shape": MAX_RANK, "char_pos": MAX_RANK}
DIGITS = (11, 10)
HEADS = {**CLASS_HEADS, "digits": 4 * sum(DIGITS), "box": 4}


class AuxHead(nn.Module):
    """Linear read-outs from merged vision tokens [N, hidden] to per-token targets."""

    def __init__(self, hidden: int):
        super().__init__()
        self.proj = nn.Linear(hidden, sum(HEADS.values()))

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        y = self.proj(tokens)
        for name, k in HEADS.items():
            out[name] = y[:, i:i + k]
            i += k
        return out


def cell_targets(records: list[dict]) -> dict[str, torch.Tensor]:
    """Per-token targets for records generated with ``with_mask=True``, in the merged tokens' raster order.

    Returns row, col, color, shape, char [N] (class ids; 0 = background for the last three) and box [N, 4]
    (the covering object's box / image side, NaN where no object covers the token); N = sum of tokens.
    """
    rows, cols, colors, shapes, chars, boxes = [], [], [], [], [], []
    rank_c, rank_s, char_pos, digits = [], [], [], []
    colour_ids = {c: i + 1 for i, c in enumerate(synthetic.COLORS)}
    shape_ids = {s: i + 1 for i, s in enumerate(synthetic.SHAPES)}
    for r in records:
        meta = r["meta"]
        mask = meta["mask"]
        h, w = mask.shape
        gh, gw = h // CELL, w // CELL
        cells = mask[:gh * CELL, :gw * CELL].reshape(gh, CELL, gw, CELL).transpose(0, 2, 1, 3).reshape(gh * gw, -1)
        n_ids = int(mask.max()) + 1
        counts = np.stack([(cells == k).sum(1) for k in range(n_ids)], 1)  # [cells, ids]
        counts[:, 0] = 0
        dom = counts.argmax(1)
        is_ocr = r["task"] == "ocr"
        # a glyph's strokes cover far less of a cell than a filled shape does
        dom[counts.max(1) < (0.03 if is_ocr else 0.12) * CELL * CELL] = 0
        gy, gx = np.divmod(np.arange(gh * gw), gw)
        rows.append(gy)
        cols.append(gx)
        items = meta.get("chars", []) if is_ocr else meta["objects"]
        ranks = _ranks(items, is_ocr)
        for k in dom:
            if k == 0:
                colors.append(0), shapes.append(0), chars.append(0), boxes.append([np.nan] * 4)
                rank_c.append(0), rank_s.append(0), char_pos.append(0), digits.append([-100] * 8)
                continue
            item = items[k - 1]
            boxes.append([v / w if j % 2 == 0 else v / h for j, v in enumerate(item["box"])])
            norm = [int(np.clip(np.rint(v * 1000 / (w if j % 2 == 0 else h)), 0, 1000))
                    for j, v in enumerate(item["box"])]
            digits.append([v // 100 for v in norm] + [(v // 10) % 10 for v in norm])
            rc, rs, cp = ranks[k - 1]
            rank_c.append(rc), rank_s.append(rs), char_pos.append(cp)
            if is_ocr:
                colors.append(0), shapes.append(0), chars.append(synthetic.CHARSET.index(item["char"]) + 1)
            else:
                colors.append(colour_ids[item["color"]]), shapes.append(shape_ids[item["shape"]]), chars.append(0)
    cat = np.concatenate
    return {"row": torch.as_tensor(cat(rows)), "col": torch.as_tensor(cat(cols)),
            "color": torch.as_tensor(colors), "shape": torch.as_tensor(shapes), "char": torch.as_tensor(chars),
            "box": torch.as_tensor(np.asarray(boxes, dtype=np.float32)),
            "rank_color": torch.as_tensor(rank_c), "rank_shape": torch.as_tensor(rank_s),
            "char_pos": torch.as_tensor(char_pos), "digits": torch.as_tensor(digits)}


def _ranks(items, is_ocr) -> list[tuple[int, int, int]]:
    """(rank among same colour, rank among same shape, place in word), 1-based, capped at MAX_RANK - 1."""
    cap = MAX_RANK - 1
    if is_ocr:
        return [(0, 0, min(i + 1, cap)) for i in range(len(items))]
    order = sorted(range(len(items)), key=lambda i: (items[i]["box"][1], items[i]["box"][0]))
    out, seen_c, seen_s = [None] * len(items), {}, {}
    for i in order:
        c, s = items[i]["color"], items[i]["shape"]
        seen_c[c], seen_s[s] = seen_c.get(c, 0) + 1, seen_s.get(s, 0) + 1
        out[i] = (min(seen_c[c], cap), min(seen_s[s], cap), 0)
    return out


def aux_loss(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Sum of per-head losses (cross-entropy for classes, 5 x L1 for boxes where an object is present)."""
    parts = {}
    for name in CLASS_HEADS:
        parts[name] = F.cross_entropy(pred[name], target[name])
    logits = pred["digits"]
    losses, i = [], 0
    for j, k in enumerate([DIGITS[0]] * 4 + [DIGITS[1]] * 4):
        t = target["digits"][:, j]
        if (t >= 0).any():
            losses.append(F.cross_entropy(logits[:, i:i + k], t, ignore_index=-100))
        i += k
    parts["digits"] = torch.stack(losses).mean() if losses else logits.sum() * 0.0
    has = ~torch.isnan(target["box"][:, 0])
    if has.any():
        parts["box"] = 5.0 * F.l1_loss(torch.sigmoid(pred["box"][has]), target["box"][has])
    else:
        parts["box"] = pred["box"].sum() * 0.0
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


class MergerTap:
    """Forward hook that keeps the vision merger's output (the image tokens the language model receives)."""

    def __init__(self, model):
        self.output = None
        self.handle = model.model.visual.merger.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.output = output if isinstance(output, torch.Tensor) else output[0]

    def remove(self):
        self.handle.remove()
