"""Build and pre-train the embedded tiny Qwen2-VL on ShapesWorld: ``python -m workbench.pretrain``.

Steps: (1) a byte-level BPE tokenizer with Qwen2-VL's special tokens and chat template; (2) a small
``Qwen2VLConfig`` (stock architecture); (3) the Qwen2-VL processor (image-only when torchvision is missing);
(4) SFT in plain PyTorch on a mix of the four ShapesWorld tasks, loss on answer tokens only (averaged per
sample), plus a throwaway auxiliary head on the vision tokens (see ``_pretrain_aux``); a size/distractor
curriculum over the first part of the run; (5) evaluation on held-out records and a model card; (6) the
checkpoint (safetensors) in ``assets/tiny-qwen2-vl``.

The run is deterministic for a seed and a thread count: it trains for a fixed number of steps
(``--steps``); ``--minutes`` is only a safety cap that stops early (and says so in the card).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from workbench import _pretrain_aux as aux
from workbench import _pretrain_build as build
from workbench.data import synthetic
from workbench.models import TINY_MODEL

EVAL_SEED = 7            # held-out records; training draws seeds from 1_000_000 up
TRAIN_SEED_BASE = 1_000_000


@dataclass
class Recipe:
    """Everything that determines the checkpoint (the defaults reproduce the shipped one)."""

    seed: int = 0
    steps: int = 2100
    horizon: int = 3500              # schedule length (lr decay, curriculum); 0 = steps. A run stopped at
                                     # step k of horizon H is reproduced exactly by steps=k, horizon=H.
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    curriculum: float = 0.3          # share of the run over which difficulty ramps from 0 to 1
    aux_weight: float = 1.0          # 0 disables the auxiliary vision head
    image_size: int = 112
    background: str = "plain"
    task_weights: dict = field(default_factory=lambda: {"grounding": 1.0, "counting": 1.0, "ocr": 1.0,
                                                        "detection": 1.0})
    text_layers: int = 3
    text_hidden: int = 128
    rope_theta: float = 1e6
    mrope_section: tuple = (8, 12, 12)
    vision_depth: int = 4
    vocab_size: int = 400


def build_model(recipe: Recipe):
    """Fresh (random) tiny model and its processor for ``recipe``."""
    from transformers import GenerationConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(recipe.seed)
    tokenizer = build.build_tokenizer(recipe.vocab_size)
    config = build.build_config(tokenizer, text_hidden=recipe.text_hidden, text_layers=recipe.text_layers,
                                intermediate=2 * recipe.text_hidden, rope_theta=recipe.rope_theta,
                                mrope_section=tuple(recipe.mrope_section), vision_depth=recipe.vision_depth)
    model = Qwen2VLForConditionalGeneration(config)
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                                               bos_token_id=tokenizer.pad_token_id, do_sample=False,
                                               max_new_tokens=128)
    processor = build.build_processor(tokenizer, recipe.image_size)
    return model, processor


def _horizon(recipe: Recipe) -> int:
    return recipe.horizon or recipe.steps


def _lr_at(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = min(1.0, (step - recipe.warmup) / max(1, _horizon(recipe) - recipe.warmup))
    return recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def training_records(step: int, recipe: Recipe) -> list[dict]:
    """The batch of step ``step``: tasks drawn by weight, scenes at the curriculum's difficulty."""
    rng = np.random.default_rng([recipe.seed, step])
    names = list(recipe.task_weights)
    p = np.array([recipe.task_weights[n] for n in names], dtype=float)
    counts = rng.multinomial(recipe.batch_size, p / p.sum())
    ramp = recipe.curriculum * _horizon(recipe)
    difficulty = 1.0 if ramp <= 0 else min(1.0, step / ramp)
    out = []
    for name, k in zip(names, counts):
        if k:
            out += synthetic.generate(name, int(k), seed=TRAIN_SEED_BASE + recipe.seed * 100_000 + step,
                                      image_size=recipe.image_size, background=recipe.background,
                                      difficulty=difficulty, with_mask=True)
    return out


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on answer tokens, averaged within each sample, then over samples.

    logits [B, T, V], labels [B, T] (-100 = not an answer token). Per-sample averaging keeps long detection
    answers from drowning short OCR answers.
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != -100
    tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.clamp(min=0).reshape(-1),
                          reduction="none").view(labels.shape)
    per_sample = (tok * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_sample.mean()


def train(recipe: Recipe, *, minutes: float | None = None, log=print, eval_every_s: float = 300.0,
          eval_records: int = 24, progress: bool = True, snapshots=(), snapshot_dir=None):
    """SFT the tiny model; returns (model, processor, history dict).

    ``snapshots``: steps after which to save the model to ``snapshot_dir/step_<k>``; a snapshot at step k is
    the checkpoint of the same recipe with ``steps=k`` and ``horizon`` = this run's horizon.
    """
    from tqdm.auto import tqdm

    from workbench import _pretrain_eval as ev

    model, processor = build_model(recipe)
    model.train()
    head = aux.AuxHead(model.config.text_config.hidden_size) if recipe.aux_weight > 0 else None
    tap = aux.MergerTap(model) if head is not None else None
    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.98))
    held_out = ev.held_out(eval_records, image_size=recipe.image_size, background=recipe.background)
    history = {"steps": [], "evals": [], "stopped_early": False}
    start = last_eval = time.time()
    bar = tqdm(range(recipe.steps), disable=not progress, mininterval=5, desc="pretrain")
    ema = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe)
        batch = build.sft_batch(processor, records := training_records(step, recipe))
        labels = batch.pop("labels")
        out = model(**batch)
        loss_answer = answer_loss(out.logits, labels)
        loss, parts = loss_answer, {}
        if head is not None:
            loss_aux, parts = aux.aux_loss(head(tap.output), aux.cell_targets(records))
            loss = loss + recipe.aux_weight * loss_aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        la = float(loss_answer.detach())
        ema = la if ema is None else 0.98 * ema + 0.02 * la
        if step % 50 == 0:
            history["steps"].append({"step": step, "answer_loss": la, "aux": parts,
                                     "elapsed_s": round(time.time() - start, 1)})
            bar.set_postfix(loss=f"{ema:.3f}")
            log(f"step {step} loss {la:.3f} ema {ema:.3f} aux "
                f"{ {k: round(v, 3) for k, v in parts.items()} } t {time.time() - start:.0f}s")
        if eval_every_s and time.time() - last_eval > eval_every_s:
            model.eval()
            res = ev.evaluate(model, processor, held_out, samples=0)
            model.train()
            history["evals"].append({"step": step, "elapsed_s": round(time.time() - start, 1), **res})
            log(f"eval step {step}: {ev.summary(res)}")
            last_eval = time.time()
        if step + 1 in snapshots:
            snap = Path(snapshot_dir) / f"step_{step + 1}"
            model.save_pretrained(snap)
            processor.save_pretrained(snap)
            log(f"snapshot {snap}")
        if minutes is not None and time.time() - start > minutes * 60:
            history["stopped_early"] = True
            log(f"time cap of {minutes} min reached at step {step + 1} of {recipe.steps}")
            break
    history["train_steps"] = step + 1
    history["train_seconds"] = round(time.time() - start, 1)
    if tap is not None:
        tap.remove()
    model.eval()
    return model, processor, history


def save(model, processor, out_dir, *, recipe: Recipe, history: dict, scores: dict | None) -> Path:
    """Write the checkpoint (safetensors), processor files, recipe/history JSON and the model card."""
    from workbench import _pretrain_eval as ev

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.safetensors"):
        old.unlink()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "training.json").write_text(json.dumps({"recipe": asdict(recipe), "history": history,
                                                    "scores": scores}, indent=1, default=str))
    (out / "README.md").write_text(ev.model_card(recipe=asdict(recipe), history=history, scores=scores))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m workbench.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(TINY_MODEL), help="checkpoint directory (default: the shipped one)")
    p.add_argument("--steps", type=int, default=Recipe.steps, help="training steps (defines the checkpoint)")
    p.add_argument("--horizon", type=int, default=Recipe.horizon, help="schedule length (0 = --steps)")
    p.add_argument("--minutes", type=float, default=None, help="stop early after this many minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (results are reproducible for a given thread count)")
    p.add_argument("--eval-records", type=int, default=200, help="held-out records per task for the card")
    p.add_argument("--eval-every", type=float, default=300.0, help="seconds between progress evaluations")
    p.add_argument("--recipe", default=None, help="JSON of Recipe fields to override (experiments)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--snapshots", default="", help="comma-separated steps to snapshot into --out/step_<k>")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = json.loads(args.recipe) if args.recipe else {}
    recipe = Recipe(**{"horizon": args.horizon, **overrides, "seed": args.seed, "steps": args.steps})

    def log(msg):
        print(msg, flush=True)

    log(f"recipe: {asdict(recipe)}")
    model, processor, history = train(recipe, minutes=args.minutes, log=log, eval_every_s=args.eval_every,
                                      progress=not args.no_progress,
                                      snapshots={int(k) for k in args.snapshots.split(",") if k},
                                      snapshot_dir=args.out)
    scores = None
    if args.eval_records:
        from workbench import _pretrain_eval as ev

        t = time.time()
        records = ev.held_out(args.eval_records, image_size=recipe.image_size, background=recipe.background)
        scores = ev.evaluate(model, processor, records, samples=8)
        scores["eval_seconds"] = round(time.time() - t, 1)
        log(f"final: {ev.summary(scores)}")
    out = save(model, processor, args.out, recipe=recipe, history=history, scores=scores)
    log(f"saved {out} after {history['train_seconds']} s of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
