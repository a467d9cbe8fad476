"""Benchmark metrics, as the benchmarks define them, on plain Python structures.

Everything here takes predictions and ground truths already in **original-image pixels** (parsing and the
conversion out of a model's frame happen before, in ``workbench.parsing``):

- :func:`grounding_metrics` — RefCOCO/+/g: Acc@τ (IoU ≥ τ, inclusive) for τ ∈ {0.5, 0.75, 0.95}, their mean,
  and mean IoU;
- :func:`counting_metrics` — PixMo-Count: exact-match accuracy of the count;
- :func:`ocr_metrics` — PageOCR (the Fox benchmark's protocol): normalised edit distance, token-set
  precision/recall/F1, BLEU-4, METEOR where its data is installed;
- :func:`detection_metrics` — COCO: AP, AP50, AP75, APs/m/l and AR1/10/100, ARs/m/l, computed exactly as
  pycocotools' ``COCOeval`` (iouType ``bbox``) does, but vectorised with NumPy (see :func:`coco_precision_recall`).

Fractions are returned in [0, 1]; tables multiply by 100 where the paper does.
"""

from __future__ import annotations

import math
from collections import Counter

import Levenshtein
import numpy as np

from workbench import boxes as B

GROUNDING_THRESHOLDS = (0.5, 0.75, 0.95)


# --- grounding ------------------------------------------------------------------------------------------------

def grounding_ious(pred_boxes, gt_boxes) -> np.ndarray:
    """IoU of each prediction with its ground truth: N boxes (xyxy pixels, or None when unparsed) -> [N].

    A missing, inverted or degenerate predicted box has IoU 0.
    """
    if len(pred_boxes) != len(gt_boxes):
        raise ValueError(f"expected as many predictions as ground truths, got {len(pred_boxes)} and "
                         f"{len(gt_boxes)}")
    out = np.zeros(len(gt_boxes))
    for i, (p, g) in enumerate(zip(pred_boxes, gt_boxes)):
        if p is not None and len(p) == 4:
            out[i] = B.iou_matrix([p], [g])[0, 0]
    return out


def grounding_metrics(pred_boxes, gt_boxes, thresholds=GROUNDING_THRESHOLDS) -> dict:
    """RefCOCO-style accuracy: ``acc@τ`` = share of samples with IoU ≥ τ (inclusive), ``acc_mean`` = their
    mean, ``miou`` = mean IoU, ``n`` = number of samples. Empty input gives NaN scores."""
    ious = grounding_ious(pred_boxes, gt_boxes)
    out = {}
    for t in thresholds:
        out[f"acc@{t:g}"] = float(np.mean(ious >= t)) if len(ious) else math.nan
    out["acc_mean"] = float(np.mean([out[f"acc@{t:g}"] for t in thresholds]))
    out["miou"] = float(ious.mean()) if len(ious) else math.nan
    out["n"] = len(ious)
    return out


# --- counting -------------------------------------------------------------------------------------------------

def counting_metrics(pred_counts, gt_counts) -> dict:
    """PixMo-Count: ``accuracy`` = share of samples whose predicted count equals the ground truth (a GT of 0
    answered 0 is correct; an unparsed prediction, None, is wrong). Also ``mae`` over the parsed predictions,
    ``unparsed`` and ``n``."""
    if len(pred_counts) != len(gt_counts):
        raise ValueError(f"expected as many predictions as ground truths, got {len(pred_counts)} and "
                         f"{len(gt_counts)}")
    correct = [p is not None and int(p) == int(g) for p, g in zip(pred_counts, gt_counts)]
    errors = [abs(int(p) - int(g)) for p, g in zip(pred_counts, gt_counts) if p is not None]
    n = len(gt_counts)
    return {"accuracy": float(np.mean(correct)) if n else math.nan,
            "mae": float(np.mean(errors)) if errors else math.nan,
            "unparsed": n - len(errors), "n": n}


# --- OCR ------------------------------------------------------------------------------------------------------

def normalized_edit_distance(pred: str, gt: str) -> float:
    """Levenshtein(pred, gt) / max(len(pred), len(gt)) on the raw strings; two empty strings give 0."""
    longest = max(len(pred), len(gt))
    return Levenshtein.distance(pred, gt) / longest if longest else 0.0


def token_set_prf(pred_tokens, gt_tokens) -> tuple[float, float, float]:
    """Precision |P∩G|/|P|, recall |P∩G|/|G| and F1 of the token *sets* (nltk.metrics' definitions).

    Both empty gives (1, 1, 1); one empty gives 0 for the undefined ratio; F1 is 0 when P or R is 0.
    """
    p_set, g_set = set(pred_tokens), set(gt_tokens)
    if not p_set and not g_set:
        return 1.0, 1.0, 1.0
    common = len(p_set & g_set)
    precision = common / len(p_set) if p_set else 0.0
    recall = common / len(g_set) if g_set else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return precision, recall, f1


def sentence_bleu4(pred_tokens, gt_tokens) -> float:
    """Sentence BLEU-4 against one reference, uniform weights, no smoothing (nltk's ``sentence_bleu``
    default): BP · exp(Σ ¼ log p_n), with clipped n-gram precisions p_n and BP = exp(1 − r/c) when c < r.
    Any p_n = 0 gives 0 (nltk returns a value below 1e-70 there)."""
    c, r = len(pred_tokens), len(gt_tokens)
    if c == 0:
        return 0.0
    log_sum = 0.0
    for n in range(1, 5):
        hyp = Counter(tuple(pred_tokens[i:i + n]) for i in range(c - n + 1))
        ref = Counter(tuple(gt_tokens[i:i + n]) for i in range(r - n + 1))
        clipped = sum(min(k, ref[g]) for g, k in hyp.items())
        total = max(1, sum(hyp.values()))
        if clipped == 0:
            return 0.0
        log_sum += 0.25 * math.log(clipped / total)
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(log_sum)


def _meteor():
    """nltk's METEOR if nltk and its WordNet data are installed, else (None, why it is missing)."""
    try:
        from nltk.corpus import wordnet
        from nltk.translate.meteor_score import meteor_score

        wordnet.ensure_loaded()
    except Exception as exc:  # nltk absent, or its WordNet data not downloaded (it needs the network)
        return None, f"METEOR needs nltk with its WordNet data, which cannot be installed offline ({exc!r})"
    return meteor_score, None


def ocr_metrics(preds, gts, *, meteor: bool = True) -> dict:
    """PageOCR metrics as the Fox benchmark's evaluation computes them, per sample and then averaged.

    Tokens are whitespace-separated words. ``edit_distance`` (lower is better) is on the raw strings;
    ``precision``/``recall``/``f1`` on token sets; ``bleu4`` is sentence BLEU-4; ``meteor`` is None with the
    reason in ``missing`` where nltk's WordNet data is not installed. A prediction of None counts as "".
    """
    if len(preds) != len(gts):
        raise ValueError(f"expected as many predictions as ground truths, got {len(preds)} and {len(gts)}")
    rows = []
    meteor_fn, why = _meteor() if meteor else (None, "METEOR not requested")
    for p, g in zip(preds, gts):
        p = "" if p is None else str(p)
        pt, gt_tokens = p.split(), str(g).split()
        precision, recall, f1 = token_set_prf(pt, gt_tokens)
        row = {"edit_distance": normalized_edit_distance(p, str(g)), "precision": precision, "recall": recall,
               "f1": f1, "bleu4": sentence_bleu4(pt, gt_tokens)}
        if meteor_fn is not None:
            row["meteor"] = float(meteor_fn([gt_tokens], pt))
        rows.append(row)
    keys = ["edit_distance", "precision", "recall", "f1", "bleu4"]
    out = {k: float(np.mean([r[k] for r in rows])) if rows else math.nan for k in keys}
    out["meteor"] = float(np.mean([r["meteor"] for r in rows])) if meteor_fn is not None and rows else None
    if meteor_fn is None:
        out["missing"] = {"meteor": why}
    out["n"] = len(rows)
    return out


# --- detection: COCO AP, vectorised -------------------------------------------------------------------------

# pycocotools' Params.setDetParams, computed the same way so the floats are identical.
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0 ** 2, 1e5 ** 2), (0 ** 2, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e5 ** 2))
AREA_LABELS = ("all", "small", "medium", "large")
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def detection_metrics(preds, gts) -> dict:
    """COCO box AP/AR of per-image predictions against per-image ground truths, equal to pycocotools.

    ``preds[i]`` and ``gts[i]`` belong to image i: ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [str, ...]}``
    in original pixels. Predictions may carry ``"scores"`` (default 1.0: a VLM states no confidence, so
    ties keep the model's output order). Ground truths may carry ``"areas"`` (COCO's segment areas, which
    decide small/medium/large; default box area) and ``"iscrowd"`` (crowd regions are ignored, as in COCO).

    Returns the twelve ``COCOeval.summarize`` numbers under :data:`COCO_STATS` (-1 where undefined, e.g. no
    ground truth at all, as COCOeval reports), plus ``n_images`` and ``ignored_labels`` (predictions whose
    label is no ground-truth category: COCOeval never evaluates those).
    """
    precision, recall, info = coco_precision_recall(preds, gts)
    out = dict(zip(COCO_STATS, _summarize(precision, recall)))
    out.update(n_images=info["n_images"], ignored_labels=info["ignored_labels"])
    return out


def coco_precision_recall(preds, gts):
    """COCOeval's ``evaluate()`` + ``accumulate()``: precision [T, R, K, A, M] and recall [T, K, A, M].

    T = 10 IoU thresholds, R = 101 recall thresholds, K = categories (sorted GT labels), A = 4 area ranges,
    M = 3 max-detection limits; -1 marks an absent category. Also returns an info dict with ``categories``.

    How it stays exact yet fast: COCOeval matches each detection greedily, in score order within its
    (image, category), to the best still-free GT with IoU ≥ t, preferring non-ignored GTs and, among equal
    IoUs, the later GT. Detections of the same rank in different (image, category) groups never compete, so
    one NumPy step per rank matches all groups, all 10 thresholds and all 4 area ranges at once.
    """
    if len(preds) != len(gts):
        raise ValueError(f"expected one prediction entry per image: got {len(preds)} predictions for "
                         f"{len(gts)} images")
    categories = sorted({str(lab) for g in gts for lab in g.get("labels", [])})
    cat_index = {c: k for k, c in enumerate(categories)}
    gt = _flatten(gts, cat_index, is_gt=True)
    dt = _flatten(preds, cat_index, is_gt=False)
    K, T, R, A, M = len(categories), len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)

    # GTs grouped by (image, category), keeping their input order inside a group (COCO's annotation order).
    g_order = np.lexsort((np.arange(len(gt["img"])), gt["cat"], gt["img"]))
    gt = {k: v[g_order] for k, v in gt.items()}
    g_key = gt["img"] * max(K, 1) + gt["cat"]
    lo = np.array([a[0] for a in AREA_RANGES])
    hi = np.array([a[1] for a in AREA_RANGES])
    g_ignore = gt["crowd"][:, None] | (gt["area"][:, None] < lo) | (gt["area"][:, None] > hi)  # [G, A]

    # Detections: per group, highest score first (stable), at most MAX_DETS[-1] of them.
    d_order = np.lexsort((np.arange(len(dt["img"])), -dt["score"], dt["cat"], dt["img"]))
    dt = {k: v[d_order] for k, v in dt.items()}
    d_key = dt["img"] * max(K, 1) + dt["cat"]
    first = np.r_[True, d_key[1:] != d_key[:-1]] if len(d_key) else np.zeros(0, bool)
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(d_key)), 0)) if len(d_key) else first
    rank = np.arange(len(d_key)) - group_start
    keep = rank < MAX_DETS[-1]
    dt = {k: v[keep] for k, v in dt.items()}
    d_key, rank = d_key[keep], rank[keep]

    matched, match_ignored = _match(dt, d_key, rank, gt, g_key, g_ignore)  # [D, A, T] each
    d_out = (dt["area"][:, None] < lo) | (dt["area"][:, None] > hi)  # [D, A]
    d_ignore = match_ignored | (~matched & d_out[:, :, None])

    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    # COCOeval concatenates images in id order, each in score order, then stable-sorts by score.
    acc_order = np.lexsort((rank, dt["img"], -dt["score"], dt["cat"]))
    cats_sorted = dt["cat"][acc_order]
    bounds = np.searchsorted(cats_sorted, np.arange(K + 1))
    npig_all = np.stack([np.bincount(gt["cat"][~g_ignore[:, a]], minlength=K) for a in range(A)], axis=1) \
        if K else np.zeros((0, A), int)  # [K, A]
    max_dets = np.array(MAX_DETS)
    for k in range(K):
        idx = acc_order[bounds[k]:bounds[k + 1]]
        npig = npig_all[k]  # [A]
        valid_a = npig > 0
        if not valid_a.any():
            continue
        nd = len(idx)
        if nd == 0:
            recall[:, k, valid_a, :] = 0
            precision[:, :, k, valid_a, :] = 0
            continue
        in_m = rank[idx][None, :] < max_dets[:, None]  # [M, n]
        live = ~d_ignore[idx].transpose(1, 2, 0)[None] & in_m[:, None, None, :]  # [M, A, T, n]
        hit = matched[idx].transpose(1, 2, 0)[None]  # [1, A, T, n]
        tp = np.cumsum(live & hit, axis=-1).astype(float)
        fp = np.cumsum(live & ~hit, axis=-1).astype(float)
        rc = tp / np.where(valid_a, npig, 1)[None, :, None, None]  # rows of absent areas are dropped below
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[..., ::-1], axis=-1)[..., ::-1]  # precision envelope
        q = _precision_at_recalls(rc, pr)  # [M, A, T, R]
        for a in np.flatnonzero(valid_a):
            recall[:, k, a, :] = rc[:, a, :, -1].T
            precision[:, :, k, a, :] = q[:, a].transpose(1, 2, 0)
    return precision, recall, {"categories": categories, "n_images": len(gts),
                               "ignored_labels": int(_count_ignored(preds, cat_index))}


def _flatten(entries, cat_index, *, is_gt: bool) -> dict:
    """Per-image lists -> flat arrays: img, cat, box (xywh, as COCO stores it), area, crowd, score."""
    img, cat, boxes, area, crowd, score = [], [], [], [], [], []
    what = "ground truth" if is_gt else "prediction"
    for i, e in enumerate(entries):
        bx = B.as_boxes(e.get("boxes", []))
        labels = list(e.get("labels", []))
        if len(labels) != len(bx):
            raise ValueError(f"{what} {i}: expected one label per box, got {len(bx)} boxes and "
                             f"{len(labels)} labels")
        xywh = np.stack([bx[:, 0], bx[:, 1], bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1]], axis=1)
        n = len(bx)
        a = np.asarray(e["areas"], float) if is_gt and e.get("areas") is not None else xywh[:, 2] * xywh[:, 3]
        c = np.asarray(e["iscrowd"], bool) if is_gt and e.get("iscrowd") is not None else np.zeros(n, bool)
        s = np.asarray(e["scores"], float) if not is_gt and e.get("scores") is not None else np.ones(n)
        for name, arr in (("areas", a), ("iscrowd", c), ("scores", s)):
            if len(arr) != n:
                raise ValueError(f"{what} {i}: expected one of {name!r} per box, got {len(arr)} for {n} boxes")
        known = np.array([str(lab) in cat_index for lab in labels], bool)
        img.append(np.full(int(known.sum()), i))
        cat.append(np.array([cat_index[str(lab)] for lab, ok in zip(labels, known) if ok], int))
        boxes.append(xywh[known])
        area.append(a[known])
        crowd.append(c[known])
        score.append(s[known])
    def joined(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return {"img": joined(img, int), "cat": joined(cat, int),
            "box": np.concatenate(boxes) if boxes else np.zeros((0, 4)),
            "area": joined(area, float), "crowd": joined(crowd, bool), "score": joined(score, float)}


def _count_ignored(preds, cat_index) -> int:
    return sum(str(lab) not in cat_index for p in preds for lab in p.get("labels", []))


def _pair_ious(d_box, g_box, g_crowd) -> np.ndarray:
    """pycocotools' bbIou for aligned (detection, GT) pairs of xywh boxes; a crowd GT's union is the
    detection's own area. Same operations in the same order, so the doubles are identical."""
    w = np.minimum(d_box[:, 2] + d_box[:, 0], g_box[:, 2] + g_box[:, 0]) - np.maximum(d_box[:, 0], g_box[:, 0])
    h = np.minimum(d_box[:, 3] + d_box[:, 1], g_box[:, 3] + g_box[:, 1]) - np.maximum(d_box[:, 1], g_box[:, 1])
    inter = w * h
    da = d_box[:, 2] * d_box[:, 3]
    union = np.where(g_crowd, da, da + g_box[:, 2] * g_box[:, 3] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def _match(dt, d_key, rank, gt, g_key, g_ignore):
    """Greedy COCO matching for every threshold and area range: -> matched, matched-to-ignored [D, A, T]."""
    nD, A, T = len(d_key), len(AREA_RANGES), len(IOU_THRESHOLDS)
    matched = np.zeros((nD, A, T), bool)
    match_ignored = np.zeros((nD, A, T), bool)
    if nD == 0 or len(g_key) == 0:
        return matched, match_ignored
    # Every (detection, GT) pair of the same (image, category): detections ordered by rank, GTs in order.
    ukeys, g_start, g_count = np.unique(g_key, return_index=True, return_counts=True)
    pos = np.searchsorted(ukeys, d_key)
    pos = np.minimum(pos, len(ukeys) - 1)
    has = ukeys[pos] == d_key
    n_pairs = np.where(has, g_count[pos], 0)
    d_order = np.lexsort((np.arange(nD), rank))  # rank-major
    n_sorted = n_pairs[d_order]
    total = int(n_sorted.sum())
    pair_d = np.repeat(d_order, n_sorted)
    offsets = np.arange(total) - np.repeat(np.cumsum(n_sorted) - n_sorted, n_sorted)
    pair_g = np.repeat(g_start[pos][d_order], n_sorted) + offsets
    pair_iou = _pair_ious(dt["box"][pair_d], gt["box"][pair_g], gt["crowd"][pair_g])
    pair_rank = rank[pair_d]
    crowd = gt["crowd"]
    threshold = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    g_matched = np.zeros((len(g_key), A, T), bool)
    rank_bounds = np.searchsorted(pair_rank, np.arange(int(rank.max()) + 2))
    for r in range(len(rank_bounds) - 1):
        sl = slice(rank_bounds[r], rank_bounds[r + 1])
        pd, pg, piou = pair_d[sl], pair_g[sl], pair_iou[sl]
        if len(pd) == 0:
            continue
        starts = np.flatnonzero(np.r_[True, pd[1:] != pd[:-1]])
        seg = np.cumsum(np.r_[True, pd[1:] != pd[:-1]]) - 1
        free = ~g_matched[pg] | crowd[pg][:, None, None]
        elig = (piou[:, None, None] >= threshold) & free  # [P, A, T]
        ig = g_ignore[pg][:, :, None]  # [P, A, 1]
        any_regular = np.logical_or.reduceat(elig & ~ig, starts, axis=0)  # [S, A, T]
        cand = elig & (ig != any_regular[seg])
        val = np.where(cand, piou[:, None, None], -1.0)
        best = np.maximum.reduceat(val, starts, axis=0)
        chosen = cand & (val == best[seg])
        where = np.where(chosen, np.arange(len(pd))[:, None, None], -1)
        pick = np.maximum.reduceat(where, starts, axis=0)  # [S, A, T], -1 = unmatched
        ok = pick >= 0
        s_idx, a_idx, t_idx = np.nonzero(ok)
        p_idx = pick[s_idx, a_idx, t_idx]
        d_idx = pd[starts][s_idx]
        matched[d_idx, a_idx, t_idx] = True
        match_ignored[d_idx, a_idx, t_idx] = g_ignore[pg[p_idx], a_idx]
        g_matched[pg[p_idx], a_idx, t_idx] = True
    return matched, match_ignored


def _precision_at_recalls(rc, pr) -> np.ndarray:
    """For each row of recall/precision [..., n]: precision at the first index whose recall ≥ each recall
    threshold (``np.searchsorted(rc, recThrs, 'left')``), 0 past the end -> [..., R]."""
    shape, n = rc.shape[:-1], rc.shape[-1]
    rows = int(np.prod(shape))
    rc2, pr2 = rc.reshape(rows, n), pr.reshape(rows, n)
    # Complex numbers sort by (real, imag): one searchsorted over all rows, exact comparisons on imag.
    row = np.arange(rows, dtype=float)[:, None]
    hay = (row + 1j * rc2).ravel()
    needles = (row + 1j * RECALL_THRESHOLDS[None, :]).ravel()
    found = np.searchsorted(hay, needles, side="left").reshape(rows, -1) - np.arange(rows)[:, None] * n
    inside = found < n
    q = np.where(inside, np.take_along_axis(pr2, np.minimum(found, n - 1), axis=1), 0.0)
    return q.reshape(*shape, len(RECALL_THRESHOLDS))


def _summarize(precision, recall) -> list[float]:
    """COCOeval.summarize's twelve numbers from the accumulated arrays."""

    def one(ap: bool, iou=None, area="all", max_det=100):
        a = AREA_LABELS.index(area)
        m = MAX_DETS.index(max_det)
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, a, m] if ap else s[:, :, a, m]
        return float(np.mean(s[s > -1])) if (s > -1).any() else -1.0

    return [one(True), one(True, .5), one(True, .75), one(True, area="small"), one(True, area="medium"),
            one(True, area="large"), one(False, max_det=1), one(False, max_det=10), one(False),
            one(False, area="small"), one(False, area="medium"), one(False, area="large")]
