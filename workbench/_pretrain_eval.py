"""Held-out evaluation of the tiny model and its model card.

Metrics (as the issue defines them), each next to a trivial baseline computed on the same records:
format-valid rate (greedy); grounding Acc@0.5 and mean IoU (baseline: always the mean box); counting
exact-match (baseline: always the most common count); OCR mean edit-similarity (baseline: the best constant
word); detection F1@0.5 (baseline: one mean-sized box of the most common class); and GRPO signal, the share of
records whose 8 samples at temperature 1.0 get rewards (``paper`` preset) that are not all equal.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench import _pretrain_build as build
from workbench import boxes as B
from workbench.data import synthetic

TASKS = synthetic.TASK_NAMES
MAX_NEW_TOKENS = {"grounding": 40, "counting": 110, "ocr": 12, "detection": 130}


def held_out(n: int, *, image_size: int = 112, background: str = "plain", seed: int | None = None):
    """``n`` held-out records per task (full difficulty), keyed by task."""
    from workbench.pretrain import EVAL_SEED

    s = EVAL_SEED if seed is None else seed
    return {t: synthetic.generate(t, n, seed=s, image_size=image_size, background=background) for t in TASKS}


@torch.no_grad()
def complete(model, processor, records, *, samples: int = 0, batch: int = 50, max_new_tokens=None):
    """Completions (special tokens kept, end/pad tokens stripped): greedy ([N]) or ``samples`` at T=1 ([N][G])."""
    tok = processor.tokenizer
    out = []
    per = batch if not samples else max(1, batch * 2 // samples)
    for i in range(0, len(records), per):
        chunk = records[i:i + per]
        inputs = build.generation_inputs(processor, chunk).to(model.device)
        task = chunk[0]["task"]
        kw = dict(max_new_tokens=max_new_tokens or MAX_NEW_TOKENS.get(task, 128))
        if samples:
            kw.update(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=samples)
        else:
            kw.update(do_sample=False)
        ids = model.generate(**inputs, **kw)[:, inputs["input_ids"].shape[1]:]
        texts = [t.split("<|im_end|>")[0].replace("<|endoftext|>", "")
                 for t in tok.batch_decode(ids, skip_special_tokens=False)]
        if samples:
            out += [texts[j:j + samples] for j in range(0, len(texts), samples)]
        else:
            out += texts
    return out


def _score_fn():
    try:
        from workbench.rewards import score  # the project's reward (paper preset)

        return score
    except ImportError:
        return None


def parse(task: str, text: str, image_size) -> dict:
    """Prediction in original pixels (``workbench.parsing``): ok, boxes [N, 4], labels, text, count."""
    from workbench.parsing import parse as parse_completion

    pred = parse_completion(task, text, convention="qwen2_vl", image_size=image_size)
    bx = B.as_boxes(pred.boxes)
    if len(bx) == 0 and len(pred.points):
        bx = np.repeat(B.as_points(pred.points), 2, axis=1)  # points as zero-size boxes
    return {"ok": bool(pred.format_ok), "boxes": bx, "labels": list(pred.labels), "text": pred.text,
            "count": pred.count}


def reward(task, text, solution, image_size) -> float:
    score = _score_fn()
    if score is not None:
        return float(score(task, text, solution, image_size=image_size, preset="paper").total)
    p = parse(task, text, image_size)
    return (1.0 if p["ok"] else -1.0) + _answer(task, p, solution)


def _answer(task, p, sol) -> float:
    if task == "grounding":
        return float(B.iou_matrix(p["boxes"][:1], [sol["box"]]).max()) if len(p["boxes"]) else 0.0
    if task == "counting":
        n, m = (p["count"] or 0), len(sol["points"])
        return min(n, m) / max(n, m) if max(n, m) else 1.0
    if task == "ocr":
        return edit_similarity(p["text"], sol["text"])
    return f1_at(p["boxes"], sol["boxes"])


def edit_similarity(a: str, b: str) -> float:
    import Levenshtein

    a, b = " ".join(a.split()), " ".join(b.split())
    if not a and not b:
        return 1.0
    return max(0.0, 1.0 - Levenshtein.distance(a, b) / max(len(a), len(b)))


def f1_at(pred, gt, thr: float = 0.5) -> float:
    from scipy.optimize import linear_sum_assignment

    pred, gt = B.as_boxes(pred), B.as_boxes(gt)
    if len(pred) == 0 and len(gt) == 0:
        return 1.0
    if len(pred) == 0 or len(gt) == 0:
        return 0.0
    iou = B.iou_matrix(pred, gt)
    r, c = linear_sum_assignment(-iou)
    m = int((iou[r, c] >= thr).sum())
    return 0.0 if m == 0 else 2 * m / (len(pred) + len(gt))


def evaluate(model, processor, records_by_task: dict, *, samples: int = 8, max_new_tokens=None) -> dict:
    """Greedy metrics with baselines per task, and (``samples`` > 0) the GRPO-signal share."""
    res = {}
    for task, recs in records_by_task.items():
        greedy = complete(model, processor, recs, max_new_tokens=max_new_tokens)
        preds = [parse(task, t, r["image"].size) for t, r in zip(greedy, recs)]
        sols = [r["solution"] for r in recs]
        m = {"n": len(recs), "format": float(np.mean([p["ok"] for p in preds]))}
        if task == "grounding":
            ious = [float(B.iou_matrix(p["boxes"][:1], [s["box"]]).max()) if len(p["boxes"]) else 0.0
                    for p, s in zip(preds, sols)]
            mean_box = np.mean([s["box"] for s in sols], 0)
            base = [float(B.iou_matrix([mean_box], [s["box"]]).max()) for s in sols]
            m.update(acc50=float(np.mean(np.array(ious) >= 0.5)), mean_iou=float(np.mean(ious)),
                     baseline_acc50=float(np.mean(np.array(base) >= 0.5)), baseline_mean_iou=float(np.mean(base)))
        elif task == "counting":
            gt = [len(s["points"]) for s in sols]
            m.update(exact=float(np.mean([p["count"] == g for p, g in zip(preds, gt)])),
                     baseline_exact=float(np.bincount(gt).max() / len(gt)))
        elif task == "ocr":
            sims = [edit_similarity(p["text"], s["text"]) for p, s in zip(preds, sols)]
            const = max(np.mean([edit_similarity(w, s["text"]) for s in sols]) for w in synthetic.WORDS)
            m.update(edit_sim=float(np.mean(sims)), exact=float(np.mean([p["text"] == s["text"]
                                                                            for p, s in zip(preds, sols)])),
                     baseline_edit_sim=float(const))
        else:
            f1 = [f1_at(p["boxes"], s["boxes"]) for p, s in zip(preds, sols)]
            all_boxes = np.concatenate([np.asarray(s["boxes"], float) for s in sols])
            mean_box = all_boxes.mean(0)
            m.update(f1=float(np.mean(f1)), baseline_f1=float(np.mean([f1_at([mean_box], s["boxes"]) for s in sols])))
        if samples:
            groups = complete(model, processor, recs, samples=samples, max_new_tokens=max_new_tokens)
            stds = [np.std([reward(task, t, r["solution"], r["image"].size) for t in g]) for g, r in zip(groups, recs)]
            m["signal"] = float(np.mean(np.array(stds) > 1e-9))
        m["example"] = greedy[0]
        res[task] = m
    res["reward_source"] = "workbench.rewards (paper)" if _score_fn() else "built-in proxy"
    return res


def summary(res: dict) -> str:
    keys = {"grounding": ("acc50", "mean_iou"), "counting": ("exact",), "ocr": ("edit_sim",), "detection": ("f1",)}
    parts = []
    for task, ks in keys.items():
        if task not in res:
            continue
        m = res[task]
        s = f"{task}: fmt {m['format']:.2f} " + " ".join(
            f"{k} {m[k]:.3f} (base {m.get('baseline_' + k, float('nan')):.3f})" for k in ks)
        if "signal" in m:
            s += f" signal {m['signal']:.2f}"
        parts.append(s)
    return " | ".join(parts)


def model_card(*, recipe: dict, history: dict, scores: dict | None) -> str:
    from workbench._pretrain_card import render

    return render(recipe=recipe, history=history, scores=scores)
