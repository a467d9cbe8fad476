"""What the rollout debugger (``app.py``) does; ``app.py`` only lays it out and wires the events.

A :class:`Workbench` holds the live policy (loaded once), a CPU copy of its initial trainable weights (for
reset), the optimizer and the frozen reference model of the one-step GRPO button. A :class:`Group` is one
user's current state: the record, its G rollouts, and their latest scoring. Every number shown comes from
``workbench.grpo`` (``rollout``, ``score``, ``group_advantages``, ``token_logprobs``, ``grpo_step``) and every
picture from ``workbench.viz``; this module only arranges them into gallery items, tables and messages.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # the app draws off-screen; pictures go to the browser as PNG

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from workbench import grpo, viz  # noqa: E402
from workbench import app_inputs as inputs  # noqa: E402
from workbench.rewards import PRESETS  # noqa: E402
from workbench.rewards.format import FORMAT_MODES  # noqa: E402

LOSS_TYPES = grpo.LOSS_TYPES
ADVANTAGE_SCALES = ("group", "batch", "none")


@dataclass
class Group:
    """One group of G rollouts on one record and its current scoring (what the reward panel shows)."""

    record: dict
    rollouts: grpo.Rollouts
    table: grpo.RewardTable
    advantages: torch.Tensor  # [G]
    settings: dict  # preset, weights, format_mode, scale
    notes: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)


class Workbench:
    """The live policy plus what the GRPO-step and reset buttons need."""

    def __init__(self, policy):
        self.policy = policy
        self.lock = threading.Lock()  # one model, many browser tabs: model calls take turns
        # Only trainable tensors can change in a step (all of them, or the LoRA adapters): copy those.
        self.initial = {n: p.detach().to("cpu", copy=True) for n, p in self._trainable()}
        self.optimizer = None
        self._optimizer_lr = None
        self.ref_model = None
        self.steps = 0

    @classmethod
    def load(cls, model: str | None = None, *, lora: str | None = None, device: str = "auto") -> "Workbench":
        from workbench.models import load_policy

        lora_arg = {} if lora == "new" else lora
        return cls(load_policy(model, device=device, lora=lora_arg))

    # -- model facts ----------------------------------------------------------------------------------------
    def _trainable(self):
        return [(n, p) for n, p in self.policy.model.named_parameters() if p.requires_grad]

    @property
    def min_side(self) -> int:
        ip = self.policy.processor.image_processor
        return int(getattr(ip, "patch_size", 14)) * int(getattr(ip, "merge_size", 2))

    @property
    def is_tiny(self) -> bool:
        return self.policy.name == "tiny-qwen2-vl"

    def weight_delta(self) -> float:
        """‖θ − θ₀‖₂ over the trainable weights."""
        total = None
        with torch.no_grad():
            for n, p in self._trainable():  # on the weights' device: a 2B model stays on its GPU
                sq = (p.detach().float() - self.initial[n].to(p.device).float()).pow(2).sum()
                total = sq if total is None else total + sq.to(total.device)
        return math.sqrt(float(total)) if total is not None else 0.0

    def info(self) -> dict:
        model = self.policy.model
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for _, p in self._trainable())
        dtype = next(model.parameters()).dtype
        return {"model": self.policy.name, "convention": self.policy.convention,
                "device": str(self.policy.device), "dtype": str(dtype).replace("torch.", ""),
                "parameters": params, "trainable": trainable, "grpo_steps": self.steps,
                "weight_delta": self.weight_delta()}

    def info_markdown(self) -> str:
        i = self.info()
        device = i["device"].upper() if i["device"].startswith("cpu") else f"GPU ({i['device']})"
        state = ("initial weights" if i["grpo_steps"] == 0 else
                 f"after {i['grpo_steps']} GRPO step(s), ‖θ − θ₀‖ = {i['weight_delta']:.3g}")
        return (f"**Model** `{i['model']}` · **convention** `{i['convention']}` · **device** {device} "
                f"({i['dtype']}) · {i['parameters'] / 1e6:.2f} M parameters ({i['trainable'] / 1e6:.2f} M "
                f"trainable) · {state}")

    # -- 1-2. sample and score -----------------------------------------------------------------------------
    def sample(self, record: dict, *, num_generations: int, temperature: float, top_p: float,
               max_new_tokens: int, seed: int | None) -> grpo.Rollouts:
        with self.lock:
            self.policy.model.eval()
            return grpo.rollout(self.policy, [record], num_generations=num_generations, temperature=temperature,
                                top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)

    # -- 6. one GRPO step on the group, and reset -----------------------------------------------------------
    def step(self, group: Group, *, lr: float, beta: float, epsilon: float, loss_type: str,
             max_grad_norm: float = 1.0) -> dict:
        """Apply one ``grpo_step`` on the group's rollouts; report the per-rollout change in sequence log-prob."""
        with self.lock:
            model = self.policy.model
            rollouts = group.rollouts
            model.eval()
            with torch.no_grad():
                before = grpo.token_logprobs(self.policy, rollouts).sum(1)  # [G]
            if self.optimizer is None or self._optimizer_lr != lr:
                params = [p for _, p in self._trainable()]
                self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
                self._optimizer_lr = lr
            ref = self._reference() if beta != 0.0 else None
            s = group.settings
            result, metrics = grpo.grpo_step(
                self.policy, [group.record], self.optimizer, ref_model=ref, rollouts=rollouts,
                num_generations=rollouts.num_generations, preset=s["preset"], weights=s["weights"],
                format_mode=s["format_mode"], scale_rewards=s["scale"], beta=beta, epsilon_low=epsilon,
                loss_type=loss_type, max_grad_norm=max_grad_norm)
            model.eval()
            with torch.no_grad():
                after = grpo.token_logprobs(self.policy, rollouts).sum(1)
            if not result.skipped:
                self.steps += 1
        return {"before": before, "after": after, "advantages": result.advantages, "metrics": metrics,
                "skipped": result.skipped, "skip_reason": result.skip_reason,
                "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}

    def _reference(self):
        """The frozen starting policy for the KL term (LoRA policies use their disabled adapters instead)."""
        if hasattr(self.policy.model, "disable_adapter"):
            return None
        if self.ref_model is None:
            ref = copy.deepcopy(self.policy.model)
            with torch.no_grad():
                for n, p in ref.named_parameters():
                    if n in self.initial:
                        p.copy_(self.initial[n].to(p.device, p.dtype))
            self.ref_model = ref.eval().requires_grad_(False)
        return self.ref_model

    def reset(self) -> float:
        """Restore the initial weights and forget the optimizer state; returns ‖θ − θ₀‖ (0)."""
        with self.lock:
            with torch.no_grad():
                for n, p in self._trainable():
                    p.copy_(self.initial[n].to(p.device, p.dtype))
            self.optimizer, self._optimizer_lr, self.steps = None, None, 0
            self.policy.model.eval()
        return self.weight_delta()


# --------------------------------------------------------------------------------------------------------------
# scoring a group and showing it
# --------------------------------------------------------------------------------------------------------------


def reward_settings(preset: str, w_format: float, w_answer: float, format_mode: str, scale: str) -> dict:
    """The reward and advantage settings of the reward panel, checked (an unknown name would make every row
    unscorable instead of saying what is wrong)."""
    for name, value in (("format weight", w_format), ("answer weight", w_answer)):
        if value is None or not math.isfinite(float(value)):
            raise inputs.InputError(f"the {name} must be a finite number, got {value!r}")
    if preset not in PRESETS:
        raise inputs.InputError(f"unknown reward preset {preset!r}; expected one of {list(PRESETS)}")
    if format_mode not in FORMAT_MODES:
        raise inputs.InputError(f"unknown format mode {format_mode!r}; expected one of {list(FORMAT_MODES)}")
    if scale not in ADVANTAGE_SCALES:
        raise inputs.InputError(f"unknown advantage scale {scale!r}; expected one of {list(ADVANTAGE_SCALES)}")
    return {"preset": preset, "weights": {"format": float(w_format), "answer": float(w_answer)},
            "format_mode": format_mode, "scale": scale}


def score_group(rollouts: grpo.Rollouts, settings: dict) -> tuple[grpo.RewardTable, torch.Tensor]:
    """Steps 2-3 for one group: the reward table and the advantages ``[G]``."""
    table = grpo.score(rollouts, preset=settings["preset"], weights=settings["weights"],
                       format_mode=settings["format_mode"])
    advantages, _ = grpo.group_advantages(table.rewards, rollouts.num_generations, scale=settings["scale"])
    return table, advantages


def _fmt_box(b) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in b) + "]"


def parsed_summary(task: str, breakdown) -> str:
    """A one-line reading of the parsed prediction (original pixels)."""
    if breakdown is None:
        return "(unscorable)"
    p = breakdown.prediction
    if task == "ocr":
        return repr(p.text)
    if task == "grounding":
        return _fmt_box(p.boxes[0]) if len(p.boxes) else "no box"
    if task == "counting":
        n_items = len(p.boxes) + len(p.points)
        if p.count is None:
            return "no count"
        return f"count {p.count}" + (f" ({n_items} items)" if n_items else " (bare number)")
    items = [f"{lab or '?'} {_fmt_box(b)}" for lab, b in zip(p.labels or [None] * len(p.boxes), p.boxes)]
    text = "; ".join(items) or "no boxes"
    return text if len(text) <= 160 else text[:157] + "..."


def match_summary(task: str, breakdown, solution: dict) -> str:
    """IoU for grounding; TP/FP/FN for the multi-instance tasks (from the reward's own matching)."""
    if breakdown is None or task == "ocr":
        return ""
    p = breakdown.prediction
    if task == "grounding":
        return f"IoU {breakdown.matches[0].iou:.3f}" if breakdown.matches else "no match"
    if task == "counting":
        n_pred = len(p.boxes) + len(p.points)
        n_gt = len(solution.get("points", []))
        tp = len(breakdown.matches)
    else:
        n_pred, n_gt = len(p.boxes), len(solution.get("boxes", []))
        # A matched pair is a true positive only above the IoU threshold: precision = TP / N_pred says how many.
        precision = breakdown.parts.get("precision")
        tp = round(precision * n_pred) if precision is not None and n_pred else 0
    return f"TP {tp} / FP {max(n_pred - tp, 0)} / FN {max(n_gt - tp, 0)}"


def reward_frame(group: Group) -> pd.DataFrame:
    """The reward table: one row per rollout — total, advantage, raw text, parsed prediction, matches, every reward
    part, and notes on what was malformed."""
    table, task = group.table, group.record["task"]
    solution = group.record["solution"]
    rows = []
    for k, text in enumerate(table.texts):
        b = table.breakdowns[k]
        notes = (b.malformed if b is not None else []) + ([table.errors[k]] if table.errors[k] else [])
        if bool(group.rollouts.is_truncated[k]):
            notes.append(f"hit max_new_tokens ({group.rollouts.max_new_tokens})")
        # Fixed columns first (their widths are set once in the layout), then the preset's parts.
        row = {"#": k, "total": _round(table.total[k]), "advantage": _round(float(group.advantages[k])),
               "completion": text, "parsed": parsed_summary(task, b), "matches": match_summary(task, b, solution)}
        for name, values in table.parts.items():
            row[name] = _round(values[k])
        row["notes"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows)


EMPTY_COLUMNS = {
    "diff": ["#", "total before", "total after", "Δ total", "advantage before", "advantage after", "Δ advantage",
             "parts changed (+ new, − gone)"],
    "step": ["#", "advantage", "log π before", "log π after", "Δ log π"],
}


def empty_frame(kind: str) -> pd.DataFrame:
    """The headers of the rescoring ("diff") or GRPO-step ("step") table, before there is anything to show."""
    return pd.DataFrame(columns=EMPTY_COLUMNS[kind])


# Widths of the reward table's columns: the fixed ones of ``reward_frame``, then the parts and the notes.
REWARD_COLUMN_WIDTHS = ["40px", "72px", "84px", "300px", "150px", "130px"] + ["84px"] * 14


def _round(value: float, digits: int = 4) -> float:
    return round(float(value), digits) if value is not None and math.isfinite(float(value)) else float("nan")


def gallery(group: Group, *, size: int = 336) -> list[tuple]:
    """G annotated pictures (GT green, prediction red, matches linked) with total and advantage captions."""
    task, rec = group.record["task"], group.record
    items = []
    for k, b in enumerate(group.table.breakdowns):
        caption = f"#{k}  R = {group.table.total[k]:.3f}  A = {float(group.advantages[k]):+.2f}"
        image = viz.draw(rec["image"], task, rec["solution"], b.prediction if b else None,
                         b.matches if b else (), caption=caption, size=size)
        items.append((image, caption))
    return items


def group_plot(group: Group):
    import matplotlib.pyplot as plt

    s = group.settings
    fig = viz.plot_group(group.table.total, group.advantages.tolist(),
                         title=f"{group.record['task']} · preset {s['preset']} · format {s['format_mode']}")
    plt.close(fig)  # drawn later by the app; keep pyplot from holding every figure
    return fig


def warnings_for(group: Group) -> list[str]:
    """Reasons this group teaches the policy little: no reward variance, constant parts, unscorable rows."""
    out = []
    G = group.rollouts.num_generations
    totals = np.asarray(group.table.total, dtype=float)
    finite = totals[np.isfinite(totals)]
    if G < 2:
        out.append("G = 1: a group of one has no baseline, every advantage is 0. Sample at least 2 rollouts.")
    elif len(finite) >= 2 and np.ptp(finite) < 1e-9:
        out.append(f"**No learning signal**: all {len(finite)} scorable rollouts have the same total reward "
                   f"({finite[0]:.4g}), so every advantage is 0 and a GRPO step on this group changes nothing "
                   f"(except through the KL term). Try a higher temperature, another image, or another preset.")
    for name, values in group.table.parts.items():
        vals = np.asarray(values, dtype=float)
        vals = vals[np.isfinite(vals)]
        if G >= 2 and len(vals) >= 2 and np.ptp(vals) < 1e-9:
            out.append(f"Reward part `{name}` is constant ({vals[0]:.4g}) across the group: it shifts every "
                       f"reward equally and contributes nothing to the advantages.")
    bad = [k for k, e in enumerate(group.table.errors) if e]
    if bad:
        out.append(f"{len(bad)} rollout(s) could not be scored ({group.table.errors[bad[0]]}); they get "
                   f"advantage 0.")
    truncated = int(group.rollouts.is_truncated.sum())
    if truncated:
        out.append(f"{truncated} of {G} completions hit max new tokens ({group.rollouts.max_new_tokens}) "
                   f"without an end token; raise it if answers are cut off.")
    return out


def summary_markdown(group: Group) -> str:
    totals = np.asarray(group.table.total, dtype=float)
    finite = totals[np.isfinite(totals)]
    G, r = group.rollouts.num_generations, group.rollouts
    s = group.settings
    lines = [f"**{group.record['task']}** · {G} rollouts · temperature {r.temperature:g} · top-p {r.top_p:g} · "
             f"seed {r.seed if r.seed is not None else 'random'} · preset `{s['preset']}` · weights "
             f"format {s['weights']['format']:g} / answer {s['weights']['answer']:g} · format {s['format_mode']} "
             f"· advantages scaled by {s['scale']} std",
             f"reward mean {finite.mean():.4f} · std {finite.std(ddof=1) if len(finite) > 1 else 0:.4f} · "
             f"min {finite.min():.4f} · max {finite.max():.4f}" if len(finite) else "no scorable rollout"]
    if group.timings:
        lines.append("timings: " + " · ".join(f"{k} {v:.2f} s" for k, v in group.timings.items()))
    if group.notes:
        lines.append("input: " + "; ".join(group.notes))
    return "\n\n".join(lines)


def warnings_markdown(group: Group) -> str:
    found = warnings_for(group)
    if not found:
        return "✅ The group has reward variance: advantages are non-zero and a GRPO step has signal."
    return "\n".join(f"- ⚠️ {w}" for w in found)


def rescore_diff(old: Group, new: Group) -> tuple[str, pd.DataFrame]:
    """What changed between two scorings of the same completions: totals, advantages, ranks, parts."""
    o, n = np.asarray(old.table.total, float), np.asarray(new.table.total, float)
    oa, na = old.advantages.numpy(), new.advantages.numpy()
    rows = []
    for k in range(len(o)):
        changed = [("+" if name not in old.table.parts else "−" if name not in new.table.parts else "") + name
                   for name in sorted(set(old.table.parts) | set(new.table.parts))
                   if not _same(old.table.parts.get(name, [math.nan] * len(o))[k],
                                new.table.parts.get(name, [math.nan] * len(o))[k])]
        rows.append({"#": k, "total before": _round(o[k]), "total after": _round(n[k]),
                     "Δ total": _round(n[k] - o[k]), "advantage before": _round(oa[k]),
                     "advantage after": _round(na[k]), "Δ advantage": _round(na[k] - oa[k]),
                     "parts changed (+ new, − gone)": ", ".join(changed)})
    frame = pd.DataFrame(rows)
    so, sn = old.settings, new.settings
    what = [f"{key} {_setting(so[key])} → {_setting(sn[key])}" for key in so if so[key] != sn[key]]
    n_changed = int(sum(not _same(a, b) for a, b in zip(o, n)))
    rank_o, rank_n = _ranks(o), _ranks(n)
    lines = [f"**Rescored the same {len(o)} completions without sampling** "
             f"({', '.join(what) if what else 'same settings'}).",
             f"{n_changed} of {len(o)} totals changed; mean {np.nanmean(o):.4f} → {np.nanmean(n):.4f}, "
             f"std {np.nanstd(o, ddof=1):.4f} → {np.nanstd(n, ddof=1):.4f}; "
             f"{'the ranking of the rollouts changed' if rank_o != rank_n else 'the ranking is unchanged'}; "
             f"advantage signs flipped for {int(np.sum(np.sign(np.round(oa, 6)) != np.sign(np.round(na, 6))))} "
             f"rollout(s)."]
    return "\n\n".join(lines), frame


def export_group(group: Group) -> dict:
    """The group as plain JSON: record (without the image), sampling, settings, and per rollout the raw text,
    every part at full precision, total, advantage, parsed prediction (original pixels), matches, notes."""
    r, table = group.rollouts, group.table
    rows = []
    for k, text in enumerate(table.texts):
        b = table.breakdowns[k]
        p = b.prediction if b is not None else None
        rows.append({
            "index": k, "completion": text, "total": table.total[k], "advantage": float(group.advantages[k]),
            "parts": {name: values[k] for name, values in table.parts.items()},
            "prediction": None if p is None else {
                "boxes": np.asarray(p.boxes).tolist(), "labels": list(p.labels),
                "points": np.asarray(p.points).tolist(), "count": p.count, "text": p.text,
                "format_ok": bool(p.format_ok)},
            "matches": [m._asdict() for m in (b.matches if b is not None else [])],
            "malformed": list(b.malformed) if b is not None else [],
            "error": table.errors[k] if table.errors else "",
            "length": int(r.lengths[k]), "truncated": bool(r.is_truncated[k]),
            "logprob": float(r.sequence_logprob()[k]),
        })
    rec = group.record
    return {"task": rec["task"], "question": rec["question"], "solution": rec["solution"],
            "image_size": list(rec["image"].size), "convention": r.convention,
            "sampling": {"num_generations": r.num_generations, "temperature": r.temperature, "top_p": r.top_p,
                         "max_new_tokens": r.max_new_tokens, "seed": r.seed},
            "reward": group.settings, "rollouts": rows}


def _setting(value) -> str:
    if isinstance(value, dict):
        return "/".join(f"{v:g}" for v in value.values())
    return str(value)


def _same(a: float, b: float) -> bool:
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9


def _ranks(values: np.ndarray) -> list[int]:
    return np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable").tolist()


# --------------------------------------------------------------------------------------------------------------
# the GRPO step's report
# --------------------------------------------------------------------------------------------------------------


def step_report(report: dict) -> tuple[str, pd.DataFrame, object]:
    """Markdown, per-rollout table and plot of Δ log π(completion) against advantage after one step."""
    before, after = report["before"].float().cpu().numpy(), report["after"].float().cpu().numpy()
    adv = report["advantages"].float().cpu().numpy()
    delta = after - before
    frame = pd.DataFrame({"#": range(len(adv)), "advantage": [_round(a) for a in adv],
                          "log π before": [_round(v) for v in before], "log π after": [_round(v) for v in after],
                          "Δ log π": [_round(v, 6) for v in delta]})
    m = report["metrics"]
    if report["skipped"]:
        head = f"**Step skipped**: {report['skip_reason']}; the weights did not change."
    else:
        corr = _correlation(adv, delta)
        pos, neg = adv > 1e-6, adv < -1e-6
        verdict = []
        if pos.any():
            verdict.append(f"{int((delta[pos] > 0).sum())} of {int(pos.sum())} positive-advantage answers became "
                           f"more likely")
        if neg.any():
            verdict.append(f"{int((delta[neg] < 0).sum())} of {int(neg.sum())} negative-advantage answers became "
                           f"less likely")
        if not (pos.any() or neg.any()):
            verdict.append("every advantage is 0: only the KL term can move the weights" +
                           (", and it is 0 while the policy equals the reference, so nothing moved"
                            if np.all(delta == 0) else ""))
        if np.all(delta == 0) and (pos.any() or neg.any()):
            verdict.append(f"no log-probability moved at all: the update was probably below the precision of the "
                           f"{report.get('dtype', '')} weights; raise the learning rate or load the model in float32")
        corr_text = "n/a" if math.isnan(corr) else f"{corr:+.2f}"
        head = (f"**One GRPO step applied**: loss {m.get('loss', float('nan')):.4g} · KL {m.get('kl', 0):.3g} · "
                f"grad norm {m.get('grad_norm', float('nan')):.3g} · lr {m.get('lr', float('nan')):.3g} · "
                f"corr(A, Δ log π) = {corr_text}\n\n" + "; ".join(verdict) + ". Resample to see the new answers.")
    return head, frame, _delta_plot(adv, delta)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.std(x) < 1e-12 or np.std(y) < 1e-12:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _delta_plot(adv: np.ndarray, delta: np.ndarray):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    colours = np.where(adv > 0, "#1e88e5", np.where(adv < 0, "#e53935", "#9e9e9e"))
    ax.scatter(adv, delta, c=colours, s=40, zorder=3)
    for k, (a, d) in enumerate(zip(adv, delta)):
        ax.annotate(str(k), (a, d), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(0, color="k", lw=0.7)
    ax.axvline(0, color="k", lw=0.7)
    ax.set_xlabel("advantage A")
    ax.set_ylabel("Δ log π(completion)")
    ax.set_title("one GRPO step: did the high-advantage answers become more likely?")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)
    return fig


def timed(timings: dict, name: str):
    """Context manager adding the wall time of a block to ``timings[name]``."""
    class _Timer:
        def __enter__(self):
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - self.t0
            return False

    return _Timer()
