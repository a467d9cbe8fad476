"""GRPO steps 1 and 2: sample G completions per record (``rollout``) and score them (``score``).

The results are the two dataclasses the rest of the workbench passes around: ``Rollouts`` (token ids, masks,
sampling log-probs, the records with their images and solutions) and ``RewardTable`` (one row per completion, one
column per reward part, each row's ``RewardBreakdown`` with the parsed prediction for drawing). Both show themselves
as tables with ``.to_pandas()``. ``workbench.grpo`` re-exports everything here; import from there.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from workbench import tasks as _tasks

# --------------------------------------------------------------------------------------------------------------------
# 1. rollouts
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Rollouts:
    """G sampled completions for each of B records, record-major (row ``k`` = record ``k // G``, sample ``k % G``).

    Shapes: N = B*G rows, P = prompt length (left-padded), C = longest completion (right-padded).
    """

    records: list[dict]  # B canonical records {image, task, question, solution}
    num_generations: int  # G
    prompt_ids: torch.Tensor  # [N, P] long, left-padded with the pad id
    prompt_mask: torch.Tensor  # [N, P] 1 on prompt tokens
    completion_ids: torch.Tensor  # [N, C] long; after the first EOS: pad id
    completion_mask: torch.Tensor  # [N, C] 1 up to and including the first EOS
    texts: list[str]  # N decoded completions (special tokens kept, EOS and padding dropped)
    logprobs: torch.Tensor  # [N, C] log π_old(token) at the sampling temperature, 0 on padding
    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # pixel_values [Σpatches, D], image_grid_thw [N, 3], mm_token_type_ids [N, P]
    convention: str = "qwen2_vl"
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)  # the ids that ended completions

    # --- views --------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """B, the number of records."""
        return len(self.records)

    def __len__(self) -> int:
        return self.completion_ids.size(0)

    @property
    def record_index(self) -> torch.Tensor:
        """``[N]`` index of each row's record."""
        return torch.arange(len(self)) // self.num_generations

    @property
    def sample_index(self) -> torch.Tensor:
        """``[N]`` index of each row within its group."""
        return torch.arange(len(self)) % self.num_generations

    @property
    def tasks(self) -> list[str]:
        """``N`` task names, one per row."""
        return [self.records[k // self.num_generations]["task"] for k in range(len(self))]

    @property
    def lengths(self) -> torch.Tensor:
        """``[N]`` completion length in tokens (EOS included)."""
        return self.completion_mask.sum(1)

    @property
    def is_truncated(self) -> torch.Tensor:
        """``[N]`` bool: the completion hit ``max_new_tokens`` without an EOS."""
        full = self.completion_mask.sum(1) == self.completion_mask.size(1)
        if self.completion_ids.size(1) == 0:
            return torch.zeros(len(self), dtype=torch.bool)
        last = self.completion_ids.gather(1, (self.lengths.clamp(min=1) - 1).unsqueeze(1)).squeeze(1)
        return full & ~torch.isin(last, torch.tensor(self.eos_token_ids or [-1]))

    def sequence_logprob(self) -> torch.Tensor:
        """``[N]`` log π_old of each whole completion (sum over its tokens)."""
        return (self.logprobs * self.completion_mask).sum(1)

    def model_inputs(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Forward-pass inputs for ``[prompt ; completion]``: input_ids ``[N, P+C]``, attention_mask, image tensors
        (``mm_token_type_ids`` extended with zeros over the completion, as M-RoPE needs)."""
        out = {
            "input_ids": torch.cat([self.prompt_ids, self.completion_ids], dim=1),
            "attention_mask": torch.cat([self.prompt_mask, self.completion_mask], dim=1),
        }
        for k, v in self.image_inputs.items():
            if k in ("mm_token_type_ids", "token_type_ids"):
                v = torch.cat([v, v.new_zeros(self.completion_ids.shape)], dim=1)
            out[k] = v
        if device is not None:
            out = {k: v.to(device) for k, v in out.items()}
        return out

    def to_pandas(self):
        """One row per completion: record, sample, task, question, text, length, truncated, sequence log-prob."""
        import pandas as pd

        G = self.num_generations
        return pd.DataFrame(
            {
                "record": self.record_index.tolist(),
                "sample": self.sample_index.tolist(),
                "task": self.tasks,
                "question": [self.records[k // G]["question"] for k in range(len(self))],
                "text": self.texts,
                "length": self.lengths.tolist(),
                "truncated": self.is_truncated.tolist(),
                "logprob": self.sequence_logprob().tolist(),
            }
        )


def select_rows(rollouts: Rollouts, rows: Sequence[int]) -> Rollouts:
    """The sub-``Rollouts`` of the given rows (image tensors sliced to match). When ``rows`` covers whole groups,
    ``records`` and ``num_generations`` stay meaningful; otherwise each row becomes its own one-sample group."""
    rows = list(rows)
    G = rollouts.num_generations
    whole_groups = len(rows) % G == 0 and all(
        rows[i + j] == rows[i] + j and rows[i] % G == 0 for i in range(0, len(rows), G) for j in range(G)
    )
    if whole_groups:
        records = [rollouts.records[rows[i] // G] for i in range(0, len(rows), G)]
        g = G
    else:
        records = [rollouts.records[r // G] for r in rows]
        g = 1
    idx = torch.tensor(rows, dtype=torch.long)
    image_inputs = {}
    grid = rollouts.image_inputs.get("image_grid_thw")
    for k, v in rollouts.image_inputs.items():
        if k == "pixel_values" and grid is not None:
            # Qwen-VL packs every image's patches into one [Σ patches, D] tensor; one image per row here.
            counts = grid.prod(-1).tolist()
            starts = [0]
            for c in counts:
                starts.append(starts[-1] + int(c))
            image_inputs[k] = torch.cat([v[starts[r] : starts[r + 1]] for r in rows], dim=0)
        else:
            image_inputs[k] = v[idx]
    return replace(
        rollouts,
        records=records,
        num_generations=g,
        prompt_ids=rollouts.prompt_ids[idx],
        prompt_mask=rollouts.prompt_mask[idx],
        completion_ids=rollouts.completion_ids[idx],
        completion_mask=rollouts.completion_mask[idx],
        texts=[rollouts.texts[r] for r in rows],
        logprobs=rollouts.logprobs[idx],
        image_inputs=image_inputs,
    )


def _images_of(messages: list[dict]) -> list:
    return [part["image"] for m in messages if isinstance(m["content"], list) for part in m["content"]
            if part.get("type") == "image"]


def eos_token_ids(policy: Any) -> list[int]:
    """Every token id that ends a completion: the tokenizer's EOS and the generation config's (TRL's rule)."""
    ids = getattr(policy.model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    eos = policy.processor.tokenizer.eos_token_id
    if eos is not None and eos not in ids:
        ids = [eos, *ids]
    return ids


def encode_prompts(policy: Any, records: Sequence[dict], repeat: int = 1) -> dict[str, torch.Tensor]:
    """Render each record's chat messages and run the processor: input_ids ``[B*repeat, P]`` (left-padded),
    attention_mask, pixel_values, image_grid_thw, mm_token_type_ids — each record repeated ``repeat`` times."""
    proc = policy.processor
    texts, images = [], []
    for rec in records:
        msgs = _tasks.messages(rec, policy.convention)
        text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        imgs = _images_of(msgs)
        texts += [text] * repeat
        images += [imgs] * repeat
    tok = proc.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = proc(text=texts, images=images if any(images) else None, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = side
    return dict(enc)


def _suppressed_tokens(policy: Any) -> list[int]:
    # A sampled vision placeholder would not match any image features in the next forward pass (TRL suppresses the
    # image token for the same reason; the vision-start token would make M-RoPE look for a missing video grid).
    cfg = policy.model.config
    ids = []
    for name in ("image_token_id", "video_token_id", "vision_start_token_id"):
        v = getattr(cfg, name, None)
        if v is not None:
            ids.append(int(v))
    return ids


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def rollout(
    policy: Any,
    records: Sequence[dict],
    *,
    num_generations: int = 8,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    seed: int | None = None,
    generation_kwargs: dict | None = None,
) -> Rollouts:
    """Sample G completions per record: o_{i,1..G} ~ π_θ(· | prompt_i, image_i) at ``temperature``.

    One batched ``generate`` over the B*G repeated prompts (left-padded). A completion ends at its first EOS (kept,
    masked 1); later positions are padding (masked 0). The sampling log-probs come from the same generation pass:
    ``log_softmax(logits / temperature)`` at the sampled token — what TRL calls the old policy's log-probs.
    ``temperature=0`` decodes greedily (G identical rows; log-probs at temperature 1).

    Args:
        policy: a ``workbench.models.Policy`` (model, processor, convention).
        records: B canonical records.
        seed: seeds this call only (the global RNG stream is left as it was); ``None`` draws from the global stream.
        generation_kwargs: extra ``generate`` arguments (e.g. ``min_new_tokens``, ``repetition_penalty``).
    Returns:
        ``Rollouts`` with N = B*G rows.
    """
    if not records:
        raise ValueError("rollout needs at least one record")
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    model = policy.model
    device = next(model.parameters()).device
    enc = encode_prompts(policy, records, repeat=num_generations)
    enc = {k: v.to(device) for k, v in enc.items()}
    tok = policy.processor.tokenizer
    eos = eos_token_ids(policy)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    greedy = temperature == 0
    gen_kwargs = dict(
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        eos_token_id=eos,
        pad_token_id=pad,
        suppress_tokens=_suppressed_tokens(policy) or None,
        output_logits=True,
        return_dict_in_generate=True,
    )
    if not greedy:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    gen_kwargs.update(generation_kwargs or {})
    with _seeded(seed, device):
        out = model.generate(**enc, **gen_kwargs)
    P = enc["input_ids"].size(1)
    completion_ids = out.sequences[:, P:]  # [N, C]
    N, C = completion_ids.shape
    if C:
        logits = torch.stack(out.logits, dim=1).float()  # [N, C, V] raw (before warpers/suppression)
        logits = logits / (temperature if not greedy else 1.0)
        logprobs = F.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    else:
        logprobs = torch.zeros(N, 0, device=device)

    is_eos = torch.isin(completion_ids, torch.tensor(eos, device=device))
    eos_idx = torch.full((N,), C, dtype=torch.long, device=device)
    any_eos = is_eos.any(1)
    eos_idx[any_eos] = is_eos.int().argmax(1)[any_eos]
    mask = (torch.arange(C, device=device).expand(N, -1) <= eos_idx.unsqueeze(1)).long()
    completion_ids = completion_ids.masked_fill(mask == 0, pad)
    logprobs = logprobs * mask

    texts = []
    for row, m in zip(completion_ids.tolist(), mask.tolist()):
        ids = [t for t, keep in zip(row, m) if keep and t not in eos]
        texts.append(tok.decode(ids, skip_special_tokens=False))

    image_inputs = {k: v.cpu() for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    return Rollouts(
        records=list(records),
        num_generations=num_generations,
        prompt_ids=enc["input_ids"].cpu(),
        prompt_mask=enc["attention_mask"].cpu(),
        completion_ids=completion_ids.cpu(),
        completion_mask=mask.cpu(),
        texts=texts,
        logprobs=logprobs.cpu(),
        image_inputs=image_inputs,
        convention=policy.convention,
        temperature=float(temperature),
        top_p=float(top_p),
        max_new_tokens=int(max_new_tokens),
        seed=seed,
        eos_token_ids=eos,
    )


# --------------------------------------------------------------------------------------------------------------------
# 2. rewards
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RewardTable:
    """One row per completion: record index, sample index, task, text, every reward part, total.

    ``breakdowns[k]`` is the reward's full breakdown for row ``k`` (``.prediction`` in original pixels,
    ``.matches``), or ``None`` where scoring failed (``errors[k]`` says why; its total is NaN = unscorable).
    Parts a task does not have are NaN in ``parts``.
    """

    record_index: list[int]
    sample_index: list[int]
    tasks: list[str]
    texts: list[str]
    parts: dict[str, list[float]]
    total: list[float]
    breakdowns: list[Any]
    num_generations: int
    preset: str = "paper"
    errors: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.total)

    @property
    def rewards(self) -> torch.Tensor:
        """``[N]`` float32 totals (NaN = unscorable) — the input of ``group_advantages``."""
        return torch.tensor(self.total, dtype=torch.float32)

    def tensor(self, columns: Sequence[str] | None = None) -> torch.Tensor:
        """``[N, K]`` float32: the reward parts named in ``columns`` (default every part, then ``total``)."""
        cols = list(columns) if columns is not None else [*self.parts, "total"]
        data = [self.total if c == "total" else self.parts[c] for c in cols]
        return torch.tensor(data, dtype=torch.float32).T.reshape(len(self), len(cols))

    def grouped(self) -> torch.Tensor:
        """``[B, G]`` totals."""
        return self.rewards.view(-1, self.num_generations)

    def part_means(self) -> dict[str, float]:
        """Mean of each part and of the total over scorable rows (NaN-aware)."""
        out = {}
        for name, vals in [*self.parts.items(), ("total", self.total)]:
            finite = [v for v in vals if v is not None and math.isfinite(v)]
            out[name] = sum(finite) / len(finite) if finite else float("nan")
        return out

    def to_pandas(self):
        """One row per completion: record, sample, task, text, each part, total."""
        import pandas as pd

        df = pd.DataFrame(
            {"record": self.record_index, "sample": self.sample_index, "task": self.tasks, "text": self.texts}
        )
        for name, vals in self.parts.items():
            df[name] = vals
        df["total"] = self.total
        return df


def score(
    rollouts: Rollouts,
    *,
    preset: str = "paper",
    weights: dict[str, float] | None = None,
    format_mode: str = "additive",
) -> RewardTable:
    """Score every completion with the task's rule-based reward (``workbench.rewards.score``) in original pixels.

    r_{i,j} = R_task(o_{i,j}, solution_i) = format + answer (REWARDS.md). A reward that raises marks the row
    unscorable (total NaN; the error is kept in ``errors``) instead of stopping the run.

    Returns:
        ``RewardTable`` with N = B*G rows.
    """
    from workbench.rewards import score as reward_score

    G = rollouts.num_generations
    breakdowns, totals, errors = [], [], []
    part_rows: list[dict[str, float]] = []
    for k, text in enumerate(rollouts.texts):
        rec = rollouts.records[k // G]
        try:
            b = reward_score(
                rec["task"], text, rec["solution"], image_size=rec["image"].size, convention=rollouts.convention,
                preset=preset, weights=weights, format_mode=format_mode,
            )
            total = float(b.total)
            parts = {name: float(v) for name, v in b.parts.items()}
            err = ""
        except Exception as exc:  # noqa: BLE001 - one bad completion must not stop training
            b, total, parts, err = None, float("nan"), {}, f"{type(exc).__name__}: {exc}"
        breakdowns.append(b)
        totals.append(total)
        part_rows.append(parts)
        errors.append(err)
    names: list[str] = []
    for p in part_rows:
        names += [n for n in p if n not in names]
    parts = {n: [p.get(n, float("nan")) for p in part_rows] for n in names}
    return RewardTable(
        record_index=rollouts.record_index.tolist(),
        sample_index=rollouts.sample_index.tolist(),
        tasks=rollouts.tasks,
        texts=list(rollouts.texts),
        parts=parts,
        total=totals,
        breakdowns=breakdowns,
        num_generations=G,
        preset=preset,
        errors=errors,
    )
