"""Evaluate a policy on a benchmark: batched greedy generation, parsing, the benchmark's metrics, a table.

    python -m workbench.evaluate --benchmark shapesworld --task counting --limit 20 --out runs/eval
    python -m workbench.evaluate --model Qwen/Qwen2-VL-2B-Instruct --benchmark refcoco --split val \\
        --data /data/lmms-lab-RefCOCO --limit 500 --out runs/eval

Writes ``predictions.jsonl`` (one line per sample: question, completion, parsed prediction, ground truth, the
sample's score) and ``metrics.json`` (the metrics, the paper's numbers, the run's settings) into ``--out``,
and prints the metrics next to the paper's. The metric functions live in ``workbench.metrics``.

Differences from PR1's released evaluation, on purpose: random subsets instead of the first N rows; COCO boxes
rescaled to original pixels (Qwen2.5-VL answers in the resized frame) and no image skipped; every score 1.0.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench import metrics as M

BENCHMARKS = ("refcoco", "refcoco+", "refcocog", "pixmo_count", "pageocr", "coco", "shapesworld")

# The Perception-R1 paper's numbers, as fractions: metric -> (base model, Perception-R1).
PAPER = {
    ("refcoco", "val"): ("Qwen2-VL-2B", {"acc@0.5": (0.868, 0.891)}),
    ("refcoco+", "val"): ("Qwen2-VL-2B", {"acc_mean": (0.584, 0.626)}),
    ("refcocog", "val"): ("Qwen2-VL-2B", {"acc@0.5": (0.833, 0.857)}),
    ("pixmo_count", "validation"): ("Qwen2-VL-2B", {"accuracy": (0.602, 0.781)}),
    ("pixmo_count", "test"): ("Qwen2-VL-2B", {"accuracy": (0.505, 0.756)}),
    ("pageocr", "test"): ("Qwen2-VL-2B", {"edit_distance": (0.080, 0.035)}),
    ("coco", "val2017"): ("Qwen2.5-VL-3B", {"AP": (0.161, 0.319), "AP50": (None, 0.467), "AP75": (None, 0.334)}),
}
# Long enough for each task's answers: a Fox page runs to ~2k tokens, a COCO image to ~50 boxes.
MAX_NEW_TOKENS = {"grounding": 128, "counting": 512, "ocr": 2048, "detection": 2048}
SHAPESWORLD_MAX_NEW_TOKENS = 128
# Metrics a table shows per task (fractions shown x100 like the paper; n and counts as they are).
SHOWN = {
    "grounding": ("acc@0.5", "acc@0.75", "acc@0.95", "acc_mean", "miou"),
    "counting": ("accuracy", "mae", "unparsed"),
    "ocr": ("edit_distance", "f1", "precision", "recall", "bleu4", "meteor"),
    "detection": M.COCO_STATS,
}
NOT_PERCENT = {"mae", "unparsed", "n", "n_images", "ignored_labels"}


@dataclass
class EvalResult:
    """What one evaluation produced: ``metrics`` (name -> value) and ``rows`` (one dict per sample)."""

    metrics: dict
    rows: list[dict] = field(default_factory=list)

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


# --- generation -----------------------------------------------------------------------------------------------

def generate(policy, records, *, max_new_tokens: int = 128, batch_size: int = 8, progress: bool = True) -> list[str]:
    """Greedy completions for ``records``, ``batch_size`` prompts per ``generate`` call (left padding).

    Decoded with special tokens kept (Qwen2-VL writes boxes with them), without padding and end-of-turn tokens.
    """
    import torch
    from tqdm.auto import tqdm

    from workbench.rollouts import encode_prompts, eos_token_ids

    tok = policy.processor.tokenizer
    eos = eos_token_ids(policy)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    device = next(policy.model.parameters()).device
    out: list[str] = []
    bar = tqdm(total=len(records), desc="generating", disable=not progress, unit="sample")
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        enc = {k: v.to(device) for k, v in encode_prompts(policy, batch).items()}
        with torch.no_grad():
            seqs = policy.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                         pad_token_id=pad, temperature=None, top_p=None, top_k=None)
        for row in seqs[:, enc["input_ids"].size(1):].tolist():
            ids = []
            for t in row:
                if t in eos:
                    break
                if t != pad:
                    ids.append(t)
            out.append(tok.decode(ids, skip_special_tokens=False))
        bar.update(len(batch))
    bar.close()
    return out


# --- parsing and scoring --------------------------------------------------------------------------------------

def policy_convention(policy):
    """The policy's coordinate convention, with Qwen2.5-VL's resize settings read from its processor (its
    boxes are in pixels of the resized image, so min/max pixels must be the processor's own)."""
    from workbench import conventions

    name = policy.convention
    if name != "qwen2_5_vl":
        return conventions.get(name)
    ip = getattr(getattr(policy, "processor", None), "image_processor", None)
    size = getattr(ip, "size", None) or {}
    resize = {"min_pixels": getattr(ip, "min_pixels", None) or size.get("shortest_edge"),
              "max_pixels": getattr(ip, "max_pixels", None) or size.get("longest_edge")}
    if getattr(ip, "patch_size", None) and getattr(ip, "merge_size", None):
        resize["factor"] = int(ip.patch_size) * int(ip.merge_size)
    return conventions.get(name, **{k: int(v) for k, v in resize.items() if v})


def parse_prediction(task: str, completion: str, record: dict, convention: str) -> dict:
    """One completion -> a plain prediction in original pixels (what ``predictions.jsonl`` stores)."""
    from workbench.parsing import parse

    p = parse(task, completion, convention=convention, image_size=record["image"].size)
    out = {"format_ok": bool(p.format_ok), "malformed": list(p.malformed)}
    if task == "grounding":
        out["box"] = [float(v) for v in p.boxes[0]] if len(p.boxes) else None
    elif task == "counting":
        out["count"] = None if p.count is None else int(p.count)
        out["points"] = np.asarray(p.points).tolist()
        out["boxes"] = np.asarray(p.boxes).tolist()
    elif task == "ocr":
        out["text"] = p.text
    else:
        out["boxes"] = np.asarray(p.boxes).tolist()
        out["labels"] = [lab or "" for lab in p.labels]
    return out


def ground_truth(task: str, record: dict):
    """What the metric compares against, from a canonical record (COCO crowd regions and areas from meta)."""
    sol, meta = record["solution"], record.get("meta") or {}
    if task == "grounding":
        return sol["box"]
    if task == "counting":
        return int(sol["count"]) if sol.get("count") is not None else len(sol["points"])
    if task == "ocr":
        return sol["text"]
    boxes, labels = list(sol["boxes"]), list(sol["labels"])
    gt = {"boxes": boxes + list(meta.get("crowd_boxes", [])), "labels": labels + list(meta.get("crowd_labels", [])),
          "iscrowd": [False] * len(boxes) + [True] * len(meta.get("crowd_boxes", []))}
    if meta.get("areas") is not None and len(meta["areas"]) == len(boxes):
        gt["areas"] = list(meta["areas"]) + list(meta.get("crowd_areas", []))
    return gt


def compute_metrics(task: str, predictions: list[dict], gts: list) -> dict:
    """The benchmark metrics of ``task`` from parsed predictions and ground truths (see ``workbench.metrics``)."""
    if task == "grounding":
        return M.grounding_metrics([p["box"] for p in predictions], gts)
    if task == "counting":
        return M.counting_metrics([p["count"] for p in predictions], gts)
    if task == "ocr":
        return M.ocr_metrics([p["text"] for p in predictions], gts)
    if task == "detection":
        return M.detection_metrics([{"boxes": p["boxes"], "labels": p["labels"]} for p in predictions], gts)
    raise ValueError(f"unknown task {task!r}")


def sample_score(task: str, prediction: dict, gt) -> dict:
    """A per-sample number for the JSONL (IoU, correct, edit distance; detection: counts only)."""
    if task == "grounding":
        return {"iou": float(M.grounding_ious([prediction["box"]], [gt])[0])}
    if task == "counting":
        return {"correct": prediction["count"] is not None and prediction["count"] == gt}
    if task == "ocr":
        return {"edit_distance": M.normalized_edit_distance(prediction["text"] or "", gt)}
    return {"n_pred": len(prediction["boxes"]), "n_gt": int(sum(not c for c in gt["iscrowd"]))}


def evaluate(policy, records, *, task: str, max_new_tokens: int | None = None, batch_size: int = 8,
             progress: bool = True, completions: list[str] | None = None, chunk: int = 256) -> EvalResult:
    """Generate (unless ``completions`` are given), parse with the policy's convention, and score.

    ``records`` is a list of canonical records or a ``datasets.Dataset`` of them (as the loaders return); a
    dataset is decoded ``chunk`` records at a time, so 5,000 COCO images never sit in memory at once.
    """
    from tqdm.auto import tqdm

    if completions is not None and len(completions) != len(records):
        raise ValueError(f"expected one completion per record, got {len(completions)} for {len(records)}")
    conv = policy_convention(policy)
    preds, gts, rows = [], [], []
    bar = tqdm(total=len(records), desc=f"evaluating {task}", disable=not progress or completions is not None,
               unit="sample")
    for start in range(0, len(records), chunk):
        recs = _decoded(records, start, start + chunk)
        if completions is not None:
            outs = completions[start:start + chunk]
        else:
            outs = []
            for b in range(0, len(recs), batch_size):
                outs += generate(policy, recs[b:b + batch_size], batch_size=batch_size, progress=False,
                                 max_new_tokens=max_new_tokens or MAX_NEW_TOKENS[task])
                bar.update(len(recs[b:b + batch_size]))
        for i, (r, c) in enumerate(zip(recs, outs), start=start):
            p, g = parse_prediction(task, c, r, conv), ground_truth(task, r)
            preds.append(p)
            gts.append(g)
            rows.append({"index": i, "task": task, "question": r["question"], "completion": c, "prediction": p,
                         "ground_truth": g, "image_size": list(r["image"].size), **sample_score(task, p, g),
                         "meta": r.get("meta") or {}})
    bar.close()
    return EvalResult(metrics=compute_metrics(task, preds, gts), rows=rows)


def _decoded(records, start: int, stop: int) -> list[dict]:
    if isinstance(records, list):
        return records[start:stop]
    from workbench.data.synthetic import from_dataset

    return from_dataset(records.select(range(start, min(stop, len(records)))))


# --- data -----------------------------------------------------------------------------------------------------

def load_records(benchmark: str, *, task: str | None, split: str | None, data, limit: int | None, seed: int,
                 image_dir=None, prompt: str = "paper"):
    """(task, split, records) for a benchmark: ShapesWorld is generated (``limit`` records, default 50, a
    list); the others are read from ``data`` by ``workbench.data.loaders`` (a ``datasets.Dataset``)."""
    from workbench.data import loaders
    from workbench.data.synthetic import generate as synth

    if benchmark == "shapesworld":
        if task is None:
            raise ValueError("--benchmark shapesworld needs --task (grounding, counting, ocr or detection)")
        return task, split or "synthetic", synth(task, 50 if limit is None else limit, seed=seed)
    if benchmark not in loaders.BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    own_task = loaders.TASK_OF[benchmark]
    if task is not None and task != own_task:
        raise ValueError(f"{benchmark} is a {own_task} benchmark; got --task {task}")
    if data is None:
        raise ValueError(f"--benchmark {benchmark} needs --data: a local path in its public layout "
                         f"(see workbench/data/loaders.py) or a hub id where the network is reachable")
    options = {"image_dir": image_dir} if image_dir else {}
    if benchmark == "coco":
        options["prompt"] = prompt
    split = split or {"pixmo_count": "validation", "pageocr": "test", "coco": "val2017"}.get(benchmark, "val")
    ds = loaders.load_benchmark(benchmark, data, split=split, limit=limit, seed=seed, **options)
    return own_task, split, ds


# --- reporting ------------------------------------------------------------------------------------------------

def paper_table(benchmark: str, split: str, task: str, metrics: dict, *, model: str = "") -> str:
    """The run's metrics next to the paper's numbers for this benchmark and split (x100 like the paper)."""
    base, paper = PAPER.get((benchmark, split), ("", {}))
    names = [m for m in SHOWN[task] if m in metrics]
    header = ["metric", f"this run ({model or 'model'})", f"paper {base or '-'}", "paper Perception-R1"]
    lines = [header]
    for name in names:
        ref = paper.get(name, (None, None))
        lines.append([name, _fmt(name, metrics[name]), _fmt(name, ref[0]), _fmt(name, ref[1])])
    lines.append(["n", str(metrics.get("n", metrics.get("n_images", ""))), "", ""])
    widths = [max(len(r[c]) for r in lines) for c in range(4)]
    out = [f"{benchmark} / {split} ({task})"]
    for k, row in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    if "missing" in metrics:
        out += [f"missing: {k}: {v}" for k, v in metrics["missing"].items()]
    return "\n".join(out)


def _fmt(name: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if name in NOT_PERCENT or not isinstance(value, float):
        return f"{value:.2f}" if isinstance(value, float) else str(value)
    return "-" if value < 0 else f"{100 * value:.1f}"  # COCO reports -1 for undefined


def _jsonable(obj):
    """NumPy scalars/arrays to Python, NaN/inf to null, so the files are strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_outputs(out_dir, result: EvalResult, summary: dict) -> tuple[Path, Path]:
    """``predictions.jsonl`` and ``metrics.json`` (strict JSON) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preds = out / "predictions.jsonl"
    with preds.open("w") as f:
        for row in result.rows:
            f.write(json.dumps(_jsonable(row), allow_nan=False) + "\n")
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(_jsonable({**summary, "metrics": result.metrics}), indent=2, allow_nan=False))
    return preds, metrics_path


# --- CLI ------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m workbench.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint path or hub id (default: the shipped tiny model)")
    ap.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    ap.add_argument("--task", default=None, choices=("grounding", "counting", "ocr", "detection"),
                    help="required for shapesworld; checked against the benchmark otherwise")
    ap.add_argument("--split", default=None, help="val/testA/testB (RefCOCO), validation/test (PixMo-Count), ...")
    ap.add_argument("--data", default=None, help="local dataset path in its public layout (or a hub id)")
    ap.add_argument("--image-dir", default=None, help="image folder, where the layout keeps images apart")
    ap.add_argument("--limit", type=int, default=None, help="evaluate a seeded random subset of N samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: per task (see MAX_NEW_TOKENS)")
    ap.add_argument("--prompt", default="paper", choices=("paper", "pr1_eval"), help="COCO question wording")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="runs/eval", help="output folder for predictions.jsonl and metrics.json")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    from workbench.models import load_policy

    task, split, records = load_records(args.benchmark, task=args.task, split=args.split, data=args.data,
                                        limit=args.limit, seed=args.seed, image_dir=args.image_dir,
                                        prompt=args.prompt)
    if len(records) == 0:
        raise SystemExit(f"no records to evaluate in {args.benchmark} / {split}")
    policy = load_policy(args.model, device=args.device)
    max_new = args.max_new_tokens or (SHAPESWORLD_MAX_NEW_TOKENS if args.benchmark == "shapesworld"
                                      else MAX_NEW_TOKENS[task])
    t0 = time.time()
    result = evaluate(policy, records, task=task, max_new_tokens=max_new, batch_size=args.batch_size,
                      progress=not args.no_progress)
    base, paper = PAPER.get((args.benchmark, split), ("", {}))
    summary = {"benchmark": args.benchmark, "split": split, "task": task, "model": policy.name,
               "convention": policy.convention, "n": len(records), "limit": args.limit, "seed": args.seed,
               "data": args.data, "max_new_tokens": max_new, "batch_size": args.batch_size,
               "seconds": round(time.time() - t0, 2),
               "paper": {"base_model": base, **{k: {"base": v[0], "perception_r1": v[1]} for k, v in paper.items()}}}
    preds_path, metrics_path = write_outputs(args.out, result, summary)
    print(paper_table(args.benchmark, split, task, result.metrics, model=policy.name))
    print(f"wrote {preds_path} and {metrics_path}")
    return {**summary, "metrics": result.metrics}


if __name__ == "__main__":
    main()
