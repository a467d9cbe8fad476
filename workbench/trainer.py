"""``GRPOLoop``: a small, readable training loop over ``workbench.grpo`` for CPU and single-GPU runs.

    loop = GRPOLoop(TrainConfig.tiny("counting", max_steps=20))
    history = loop.train()            # list of dict rows; history.to_pandas(), history.plot()

Each step samples records, calls ``grpo.grpo_step`` (rollout → score → advantages → loss → update), logs one row
(JSONL, TensorBoard, progress bar), evaluates on held-out records every ``eval_every`` steps and checkpoints every
``checkpoint_every`` steps. A checkpoint holds everything a resumed run needs to continue exactly where the last one
stopped: trainable weights, optimizer, scheduler, step, data order and the RNG states (Python, NumPy, torch).
``GRPOLoop(cfg, resume=True)`` picks up the newest complete checkpoint in ``cfg.output_dir``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from workbench import grpo
from workbench.train_config import TrainConfig, load_records

log = logging.getLogger("workbench.trainer")

__all__ = ["GRPOLoop", "TrainConfig", "History", "evaluate_policy", "latest_checkpoint"]


# --------------------------------------------------------------------------------------------------------------------
# held-out evaluation
# --------------------------------------------------------------------------------------------------------------------


def evaluate_policy(
    policy: Any,
    records: Sequence[dict],
    *,
    max_new_tokens: int = 128,
    preset: str = "paper",
    batch_size: int = 64,
) -> dict[str, float]:
    """Greedy answers on ``records`` scored with each task's benchmark metric (``workbench.metrics``) and reward.

    Per task present: ``<task>/format_ok`` (share of well-formed answers), ``<task>/reward`` (mean total reward)
    and the task metric — grounding ``acc@0.5`` and ``miou``; counting ``accuracy`` (exact count); OCR
    ``edit_similarity`` (1 − normalised edit distance); detection ``f1@0.5`` (the reward's F1 part).
    """
    from workbench import metrics as M

    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    out: dict[str, float] = {}
    was_training = policy.model.training
    policy.model.eval()
    try:
        for task, recs in by_task.items():
            texts, rows = [], []
            for i in range(0, len(recs), batch_size):
                ro = grpo.rollout(policy, recs[i : i + batch_size], num_generations=1, temperature=0,
                                  max_new_tokens=max_new_tokens)
                table = grpo.score(ro, preset=preset)
                texts += ro.texts
                rows += list(zip(table.breakdowns, table.total))
            preds = [b.prediction if b is not None else None for b, _ in rows]
            out[f"{task}/format_ok"] = float(np.mean([bool(p is not None and p.format_ok) for p in preds]))
            out[f"{task}/reward"] = float(np.nanmean([t for _, t in rows]))
            if task == "grounding":
                boxes = [p.boxes[0].tolist() if p is not None and len(p.boxes) else None for p in preds]
                m = M.grounding_metrics(boxes, [r["solution"]["box"] for r in recs])
                out["grounding/acc@0.5"], out["grounding/miou"] = m["acc@0.5"], m["miou"]
            elif task == "counting":
                counts = [p.count if p is not None else None for p in preds]
                m = M.counting_metrics(counts, [len(r["solution"]["points"]) for r in recs])
                out["counting/accuracy"] = m["accuracy"]
            elif task == "ocr":
                sims = [1 - M.normalized_edit_distance(p.text if p is not None else "", r["solution"]["text"])
                        for p, r in zip(preds, recs)]
                out["ocr/edit_similarity"] = float(np.mean(sims))
            elif task == "detection":
                f1 = [b.parts.get("f1", float("nan")) if b is not None else 0.0 for b, _ in rows]
                out["detection/f1@0.5"] = float(np.nanmean(f1))
    finally:
        policy.model.train(was_training)
    return out


class History(list):
    """Rows logged by ``GRPOLoop`` (one dict per step; eval rows carry ``eval/...`` keys)."""

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(list(self))

    def plot(self, keys: Sequence[str] = ("reward_mean", "loss", "kl", "grad_norm"), ax=None):
        """Curves of ``keys`` against the step (matplotlib); eval metrics plot as markers."""
        import matplotlib.pyplot as plt

        df = self.to_pandas()
        keys = [k for k in keys if k in df]
        if ax is None:
            _, ax = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
            ax = ax[0]
        for a, k in zip(np.atleast_1d(ax), keys):
            sub = df[["step", k]].dropna()
            a.plot(sub["step"], sub[k], marker="o" if k.startswith("eval/") else None)
            a.set_title(k)
            a.set_xlabel("step")
        return ax


class _EpochSampler:
    """Records in a fresh seeded permutation each epoch; its state is (epoch, position) — resumable."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            take = min(k - len(out), self.n - self.pos)
            out += self._perm[self.pos : self.pos + take].tolist()
            self.pos += take
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation(self.epoch)


def _make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    warmup = int(cfg.warmup_ratio * total_steps) if cfg.warmup_steps is None else cfg.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.lr_scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.lr_scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        raise ValueError(f"lr_scheduler must be constant, linear or cosine, got {cfg.lr_scheduler!r}")

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete ``checkpoint-*`` directory in ``output_dir`` (half-written ones are never visible:
    a checkpoint is written under a temporary name and renamed when complete)."""
    d = Path(output_dir)
    if not d.is_dir():
        return None
    ckpts = [p for p in d.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").is_file()]
    ckpts = [p for p in ckpts if p.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _digest(texts: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha1("\x1e".join(texts).encode()).hexdigest()[:12]


class GRPOLoop:
    """GRPO training of one policy on a list of records (see the module docstring).

    Args:
        cfg: the run's ``TrainConfig`` (defaults = the paper's recipe; ``TrainConfig.tiny()`` for the tiny model).
        policy: an already loaded ``Policy``; default ``load_policy(cfg.model, ...)``.
        train_records / eval_records: default from ``cfg.dataset`` (ShapesWorld: fresh seeds, and the held-out
            records of the model card).
        resume: continue from the newest checkpoint in ``cfg.output_dir`` if there is one.
    """

    def __init__(
        self,
        cfg: TrainConfig | None = None,
        *,
        policy: Any = None,
        train_records: Sequence[dict] | None = None,
        eval_records: Sequence[dict] | None = None,
        resume: bool = False,
    ):
        self.cfg = cfg = cfg or TrainConfig()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if policy is None:
            from workbench.models import load_policy

            policy = load_policy(cfg.model, device=cfg.device, dtype=cfg.dtype, lora=cfg.lora)
        if cfg.convention:
            policy.convention = cfg.convention
        self.policy = policy
        if train_records is None or eval_records is None:
            tr, ev = load_records(cfg)
            train_records = tr if train_records is None else train_records
            eval_records = ev if eval_records is None else eval_records
        self.train_records, self.eval_records = list(train_records), list(eval_records)
        if not self.train_records:
            raise ValueError("GRPOLoop needs at least one training record")

        model = policy.model
        self.ref_model = None
        if cfg.beta != 0.0 and not hasattr(model, "disable_adapter"):
            # Frozen copy of the starting policy (a LoRA policy uses its base model: adapters disabled).
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2),
        )
        self.records_per_step = cfg.per_device_batch * cfg.grad_accum
        self.total_steps = cfg.max_steps or max(
            1, math.ceil(cfg.epochs * len(self.train_records) / self.records_per_step)
        )
        self.scheduler = _make_scheduler(self.optimizer, cfg, self.total_steps * cfg.num_iterations)
        self.sampler = _EpochSampler(len(self.train_records), cfg.seed)
        self.step = 0
        self.history = History()
        self.skipped_steps: list[dict] = []
        self.output_dir = Path(cfg.output_dir)
        self._writer = None
        self.last_result: grpo.StepResult | None = None
        if resume:
            ckpt = latest_checkpoint(self.output_dir)
            if ckpt is not None:
                self.load_checkpoint(ckpt)

    # --- one step -------------------------------------------------------------------------------------------
    def train_step(self) -> dict:
        """Sample ``per_device_batch × grad_accum`` records and apply one GRPO update; returns the logged row."""
        cfg = self.cfg
        t0 = time.perf_counter()
        idx = self.sampler.take(self.records_per_step)
        records = [self.train_records[i] for i in idx]
        result, metrics = grpo.grpo_step(
            self.policy, records, self.optimizer, ref_model=self.ref_model, scheduler=self.scheduler,
            num_generations=cfg.num_generations, temperature=cfg.temperature, top_p=cfg.top_p,
            max_new_tokens=cfg.max_completion_length, preset=cfg.preset, weights=cfg.reward_weights,
            format_mode=cfg.format_mode, scale_rewards=cfg.scale_rewards, beta=cfg.beta,
            epsilon_low=cfg.epsilon, epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
            num_iterations=cfg.num_iterations, micro_batches=cfg.grad_accum, max_grad_norm=cfg.max_grad_norm,
            generation_kwargs=cfg.generation_kwargs,
        )
        self.step += 1
        self.last_result = result
        row = {"step": self.step, "epoch": self.sampler.epoch, **metrics, "step_time": time.perf_counter() - t0,
               "rollout_digest": _digest(result.rollouts.texts), "sample": result.rollouts.texts[0]}
        if result.skipped:
            row["skip_reason"] = result.skip_reason
            self.skipped_steps.append({"step": self.step, "reason": result.skip_reason})
            log.warning("step %d skipped: %s", self.step, result.skip_reason)
        if metrics.get("unscorable"):
            errs = [e for e in result.table.errors if e]
            log.warning("step %d: %d unscorable completion(s) got advantage 0%s", self.step,
                        metrics["unscorable"], f" ({errs[0]})" if errs else "")
        return row

    # --- the loop -------------------------------------------------------------------------------------------
    def train(self, max_steps: int | None = None) -> History:
        """Run until ``max_steps`` (default: the config's total) and return the history."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        end = min(self.total_steps, max_steps) if max_steps else self.total_steps
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
        if cfg.eval_every and self.step == 0 and self.eval_records and cfg.eval_at_start:
            self._log(self.evaluate())
        bar = tqdm(total=end, initial=self.step, desc="GRPO", disable=not cfg.progress, dynamic_ncols=True)
        started = time.perf_counter()
        try:
            while self.step < end:
                if cfg.max_minutes is not None and time.perf_counter() - started > 60 * cfg.max_minutes:
                    log.info("time budget of %.1f minutes reached at step %d", cfg.max_minutes, self.step)
                    break
                row = self.train_step()
                self._log(row)
                bar.update(1)
                bar.set_postfix(reward=f"{row.get('reward_mean', float('nan')):.3f}",
                                kl=f"{row.get('kl', 0.0):.4f}", skipped=len(self.skipped_steps))
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.eval_records:
                    self._log(self.evaluate())
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.flush()
        if cfg.save_final:
            self.save_model(self.output_dir / "final")
        return self.history

    def evaluate(self, records: Sequence[dict] | None = None) -> dict:
        """Greedy answers on held-out records, scored with the benchmark metrics; returns an ``eval/...`` row."""
        records = self.eval_records if records is None else records
        metrics = evaluate_policy(
            self.policy, records, max_new_tokens=self.cfg.max_completion_length, preset=self.cfg.preset,
            batch_size=self.cfg.eval_batch_size,
        )
        return {"step": self.step, **{f"eval/{k}": v for k, v in metrics.items()}}

    # --- logging --------------------------------------------------------------------------------------------
    def _log(self, row: dict) -> None:
        self.history.append(row)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        if self.cfg.tensorboard:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.output_dir / "tensorboard"))
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._writer.add_scalar(k if "/" in k else f"train/{k}", v, row["step"])

    # --- checkpoints ----------------------------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.policy.model.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` atomically (temporary directory, then rename); keep the newest
        ``keep_checkpoints``."""
        final = self.output_dir / f"checkpoint-{self.step:06d}"
        tmp = self.output_dir / f".tmp-checkpoint-{self.step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(self._trainable_state(), tmp / "trainable.pt")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        state = {"step": self.step, "sampler": self.sampler.state_dict(), "skipped_steps": self.skipped_steps,
                 "config": self.cfg.to_dict()}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2, default=str))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        ckpts = sorted((p for p in self.output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                       key=lambda p: int(p.name.split("-")[-1]))
        for old in ckpts[: max(0, len(ckpts) - self.cfg.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore weights, optimizer, scheduler, step, data position and RNG states from ``path``; the JSONL log
        is cut back to that step (rows a killed run wrote after its last checkpoint are dropped)."""
        path = Path(path)
        state = json.loads((path / "trainer_state.json").read_text())
        missing = self.policy.model.load_state_dict(torch.load(path / "trainable.pt"), strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"checkpoint {path} has weights this model does not: {missing.unexpected_keys[:5]}")
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt"))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt"))
        self.step = int(state["step"])
        self.sampler.load_state_dict(state["sampler"])
        self.skipped_steps = list(state.get("skipped_steps", []))
        _set_rng_state(torch.load(path / "rng.pt", weights_only=False))
        log_file = self.output_dir / "metrics.jsonl"
        if log_file.is_file():
            rows = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
            rows = [r for r in rows if r["step"] <= self.step]
            log_file.write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))
            self.history = History(rows)
        log.info("resumed from %s at step %d", path, self.step)

    def save_model(self, path: str | os.PathLike) -> Path:
        """``save_pretrained`` of the policy (the adapter only for LoRA) and its processor."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.policy.model.save_pretrained(path)
        self.policy.processor.save_pretrained(path)
        return path
