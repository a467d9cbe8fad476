"""GRPO, one function per step (Perception-R1, arXiv 2504.07954, section 3; DeepSeekMath's GRPO).

For each record (an image with a question) the policy samples G answers; rule-based rewards score them; each answer's
advantage is its reward relative to its own group; the policy is pushed toward the better answers with a clipped
surrogate and kept near a frozen reference with a k3 KL penalty:

1. ``rollout``          o_{i,1..G} ~ π_θold(· | q_i, image_i)                         -> Rollouts    [B*G, C]
2. ``score``            r_{i,j} = R(o_{i,j}, solution_i)                               -> RewardTable [B*G]
3. ``group_advantages`` A_{i,j} = (r_{i,j} − mean_j r_{i,·}) / (std_j r_{i,·} + ε)      -> [B*G]
4. ``token_logprobs``   log π(o_{i,j,t} | q_i, o_{i,j,<t}) for π_θ, π_θold, π_ref      -> [B*G, C]
5. ``grpo_loss``        −min(ρ A, clip(ρ, 1−ε_low, 1+ε_high) A) + β (π_ref/π_θ − log(π_ref/π_θ) − 1)
6. ``grpo_step``        1–5 plus backward, gradient clipping and the optimizer step.

Rows are ordered record-major: completion ``k`` belongs to record ``k // G`` and is its sample ``k % G``
(TRL's order too). Every number here equals TRL's ``GRPOTrainer`` on the same inputs (tests/test_grpo.py).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from workbench.rollouts import RewardTable, Rollouts, rollout, score, select_rows

__all__ = [
    "Rollouts",
    "RewardTable",
    "StepResult",
    "rollout",
    "score",
    "group_advantages",
    "token_logprobs",
    "grpo_loss",
    "grpo_step",
    "LOSS_TYPES",
    "select_rows",
]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALES = ("group", "batch", "none")


# --------------------------------------------------------------------------------------------------------------------
# 3. advantages
# --------------------------------------------------------------------------------------------------------------------


def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sample standard deviation (Bessel-corrected) ignoring NaNs; NaN where fewer than two values remain."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)
    correction = torch.where(count > 1, count / (count - 1), torch.full_like(count, float("nan"), dtype=x.dtype))
    std = torch.sqrt(var * correction)
    return std.squeeze(dim) if dim is not None else std.reshape(())


def group_advantages(
    rewards: torch.Tensor | Sequence[float | None] | RewardTable,
    num_generations: int | None = None,
    *,
    scale: str = "group",
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Group-relative advantages, TRL's definition.

        A_{i,j} = (r_{i,j} − mean_j r_{i,·}) / (std_j r_{i,·} + eps)      scale="group"  (the paper, GRPO)
        A_{i,j} = (r_{i,j} − mean_j r_{i,·}) / (std(r) + eps)              scale="batch"  (std over the whole batch)
        A_{i,j} =  r_{i,j} − mean_j r_{i,·}                                scale="none"   (Dr. GRPO)

    ``std`` is the sample standard deviation (Bessel-corrected, like ``torch.std``). Unscorable completions (reward
    ``None`` or NaN) are left out of the mean and std of their group and get advantage 0; so does every member of a
    group with fewer than two scorable completions.

    Args:
        rewards: ``[B*G]`` total reward per completion, record-major (or a ``RewardTable``).
        num_generations: G; taken from the table when ``rewards`` is a ``RewardTable``.
    Returns:
        ``(advantages [B*G] float32, metrics)`` — metrics: reward mean/std over scorable completions, the share of
        groups whose rewards are all equal (no learning signal), the number of unscorable completions.
    """
    if isinstance(rewards, RewardTable):
        num_generations = num_generations or rewards.num_generations
        rewards = rewards.rewards
    if num_generations is None:
        raise ValueError("group_advantages needs num_generations (G) unless given a RewardTable")
    if not isinstance(rewards, torch.Tensor):
        rewards = torch.tensor([float("nan") if r is None else float(r) for r in rewards], dtype=torch.float32)
    rewards = rewards.to(torch.float32).reshape(-1)
    rewards = torch.where(torch.isinf(rewards), torch.full_like(rewards, float("nan")), rewards)
    if rewards.numel() % num_generations:
        raise ValueError(f"expected B*G rewards with G={num_generations}, got {rewards.numel()} rewards")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")

    grouped = rewards.view(-1, num_generations)  # [B, G]
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)  # [B*G]
    if scale in ("group", "none"):
        std = (
            _nanstd(grouped, dim=1).repeat_interleave(num_generations)
            if num_generations > 1
            else torch.zeros_like(rewards)
        )
    else:
        std = _nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    advantages = rewards - mean
    if scale != "none":
        advantages = advantages / (std + eps)
    advantages = torch.nan_to_num(advantages, nan=0.0)

    unscorable = torch.isnan(rewards)
    finite = rewards[~unscorable]
    zero_std = torch.isclose(std, torch.zeros_like(std)).view(-1, num_generations)[:, 0]
    metrics = {
        "reward_mean": finite.mean().item() if finite.numel() else float("nan"),
        "reward_std": _nanstd(rewards).item() if finite.numel() > 1 else float("nan"),
        "frac_reward_zero_std": zero_std.float().mean().item(),
        "unscorable": int(unscorable.sum().item()),
        "advantage_abs_mean": advantages.abs().mean().item(),
    }
    return advantages, metrics


# --------------------------------------------------------------------------------------------------------------------
# 4. per-token log-probabilities
# --------------------------------------------------------------------------------------------------------------------


def token_logprobs(
    policy: Any,
    rollouts: Rollouts,
    *,
    model: torch.nn.Module | None = None,
    temperature: float | None = None,
    micro_batch_size: int | None = None,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of the completions given prompt + image, log π(o_t | q, image, o_<t).

    One forward pass over ``[prompt ; completion]`` (``[B*G, P+C]``); the logits at positions ``P−1 … P+C−2`` predict
    the completion tokens. Logits are divided by the sampling temperature first, as TRL does, so the result is the
    log-probability under the distribution the tokens were sampled from. Gradients flow unless the caller wraps the
    call in ``torch.no_grad()`` (as for the old and reference policies).

    Args:
        policy: a ``Policy`` (``.model``); ``model`` overrides the network (e.g. the frozen reference model).
        rollouts: from ``rollout``; uses its prompt/completion ids and masks and image tensors.
        temperature: defaults to ``rollouts.temperature`` (1.0 for greedy rollouts).
        micro_batch_size: rows per forward pass (memory); default all at once.
    Returns:
        ``logp [B*G, C]`` float32, 0 at padding positions; with ``return_entropy`` also the entropy ``[B*G, C]`` of
        each position's distribution.
    """
    net = model if model is not None else policy.model
    temp = temperature if temperature is not None else (rollouts.temperature or 1.0)
    n = rollouts.completion_ids.size(0)
    step = micro_batch_size or n
    out_logp, out_ent = [], []
    for start in range(0, n, step):
        rows = list(range(start, min(n, start + step)))
        part = rollouts if (start == 0 and step >= n) else select_rows(rollouts, rows)
        inputs = part.model_inputs(device=_device_of(net))
        c = part.completion_ids.size(1)
        logits = net(**inputs, use_cache=False, logits_to_keep=c + 1).logits[:, :-1, :]  # [n, C, V]
        logits = logits.float() / temp
        logp_all = F.log_softmax(logits, dim=-1)
        ids = part.completion_ids.to(logits.device)
        logp = logp_all.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [n, C]
        mask = part.completion_mask.to(logp.device)
        out_logp.append(logp * mask)
        if return_entropy:
            ent = -(logp_all.exp() * logp_all).sum(-1)
            out_ent.append(ent * mask)
    logp = torch.cat(out_logp, dim=0)
    if return_entropy:
        return logp, torch.cat(out_ent, dim=0)
    return logp


def _device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - parameterless stub
        return torch.device("cpu")


# --------------------------------------------------------------------------------------------------------------------
# 5. the loss
# --------------------------------------------------------------------------------------------------------------------


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 0.04,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: int | float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate plus k3 KL, aggregated the way TRL's ``loss_type`` says.

        ρ_t   = exp(logp_t − old_logp_t)
        L_t   = −min(ρ_t A, clip(ρ_t, 1 − ε_low, 1 + ε_high) A) + β · KL_t
        KL_t  = exp(ref_t − logp_t) − (ref_t − logp_t) − 1                      (k3 estimator, ≥ 0)

    Aggregation over the ``[B*G, C]`` token losses with completion mask m:
        grpo     mean_i( Σ_t m L / Σ_t m )            per-sequence token mean, then batch mean (the paper)
        bnpo     Σ m L / Σ m                          token mean over the (micro-)batch
        dr_grpo  Σ m L / (B*G · max_completion_length)
        dapo     Σ m L / num_items_in_batch           tokens of the whole generation batch (default: Σ m)

    This is one micro-batch of TRL's ``_compute_loss`` with no gradient accumulation; under accumulation divide
    grpo/bnpo/dr_grpo by the number of micro-batches and give dapo the token count of the whole batch
    (``grpo_step`` does both).

    Args:
        logp: ``[B*G, C]`` log-probs under the policy being trained (with gradient).
        old_logp: ``[B*G, C]`` under the policy that sampled; ``None`` = ``logp.detach()`` (one update per batch,
            ρ ≡ 1, TRL's shortcut).
        ref_logp: ``[B*G, C]`` under the reference policy; ignored (may be None) when ``beta == 0``.
        advantages: ``[B*G]`` (or ``[B*G, C]``).
        mask: ``[B*G, C]`` 1 for completion tokens up to and including EOS.
        epsilon_high: defaults to ``epsilon_low``.
        max_completion_length: for dr_grpo; defaults to ``C``.
    Returns:
        ``(loss, stats)`` — stats: kl (masked token mean), clip fractions (low, high, region), ratio mean/min/max
        over valid tokens, policy_loss, the token count.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if logp.shape != mask.shape:
        raise ValueError(f"logp and mask must have the same [B*G, C] shape, got {tuple(logp.shape)} and {tuple(mask.shape)}")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.device, logp.dtype)
    if adv.dim() == 1:
        adv = adv.unsqueeze(1)  # [B*G, 1]
    old = logp.detach() if old_logp is None else old_logp.to(logp.device, logp.dtype)

    ratio = torch.exp(logp - old)  # ρ [B*G, C]
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if beta != 0.0:
        if ref_logp is None:
            raise ValueError("beta != 0 needs ref_logp (log-probs under the reference policy)")
        diff = ref_logp.to(logp.device, logp.dtype) - logp
        kl = torch.exp(diff) - diff - 1  # k3, [B*G, C]
        per_token = per_token + beta * kl

    tokens = mask.sum()
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / tokens.clamp(min=1.0)
    elif loss_type == "dr_grpo":
        length = max_completion_length if max_completion_length is not None else per_token.size(1)
        loss = (per_token * mask).sum() / (per_token.size(0) * length)
    else:  # dapo
        norm = tokens if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=logp.dtype)
        loss = (per_token * mask).sum() / norm.to(logp.device).clamp(min=1.0)

    with torch.no_grad():
        denom = tokens.clamp(min=1.0)
        low = ((ratio < 1 - epsilon_low) & (adv < 0)).to(logp.dtype)
        high = ((ratio > 1 + epsilon_high) & (adv > 0)).to(logp.dtype)
        valid = mask.bool()
        r_valid = ratio[valid]
        stats = {
            "loss": loss.item(),
            "kl": ((kl * mask).sum() / denom).item() if beta != 0.0 else 0.0,
            "clip_ratio/low_mean": ((low * mask).sum() / denom).item(),
            "clip_ratio/high_mean": ((high * mask).sum() / denom).item(),
            "clip_ratio/region_mean": ((torch.maximum(low, high) * mask).sum() / denom).item(),
            "ratio_mean": r_valid.mean().item() if r_valid.numel() else float("nan"),
            "ratio_min": r_valid.min().item() if r_valid.numel() else float("nan"),
            "ratio_max": r_valid.max().item() if r_valid.numel() else float("nan"),
            "tokens": int(tokens.item()),
        }
    return loss, stats


# --------------------------------------------------------------------------------------------------------------------
# 6. one optimisation step
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    """What one ``grpo_step`` produced: the rollouts, their rewards and advantages, and whether it was applied."""

    rollouts: Rollouts
    table: RewardTable
    advantages: torch.Tensor  # [B*G]
    skipped: bool = False
    skip_reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def reference_model(policy: Any, ref_model: torch.nn.Module | None):
    """Yield the network to score the reference policy with: ``ref_model``, or, for a LoRA policy without one, the
    policy with its adapters disabled (the base model), as TRL does."""
    if ref_model is not None:
        yield ref_model
        return
    net = policy.model
    if hasattr(net, "disable_adapter"):
        with net.disable_adapter():
            yield net
        return
    raise ValueError(
        "beta != 0 needs a reference: pass ref_model (a frozen copy of the starting policy) or use a LoRA policy "
        "whose disabled adapters give the base model"
    )


def _finite(x: torch.Tensor | float) -> bool:
    return bool(torch.isfinite(torch.as_tensor(x)).all())


def grpo_step(
    policy: Any,
    records: Sequence[dict],
    optimizer: torch.optim.Optimizer,
    *,
    ref_model: torch.nn.Module | None = None,
    scheduler: Any = None,
    num_generations: int = 8,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    preset: str = "paper",
    weights: dict[str, float] | None = None,
    format_mode: str = "additive",
    scale_rewards: str = "group",
    beta: float = 0.04,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    num_iterations: int = 1,
    micro_batches: int = 1,
    max_grad_norm: float | None = 1.0,
    seed: int | None = None,
    generation_kwargs: dict | None = None,
    rollouts: Rollouts | None = None,
) -> tuple[StepResult, dict[str, float]]:
    """One GRPO update on ``records``: rollout → score → advantages → reference log-probs → ``num_iterations`` ×
    (per micro-batch: log-probs, loss, backward; then clip and step).

    The B records are sampled together (one batched ``generate``) and split into ``micro_batches`` groups of whole
    records for the backward passes (gradient accumulation; TRL's ``steps_per_generation``). With
    ``num_iterations`` μ > 1 the same rollouts are reused for μ optimizer steps, the importance ratio measured against
    the policy that sampled them (TRL recomputes those log-probs before the first update; so do we).

    A non-finite loss or gradient norm skips the optimizer step (gradients are zeroed, nothing changes) and is
    reported in ``metrics["skipped"]``; unscorable rewards (NaN/None) get advantage 0 and are counted in
    ``metrics["unscorable"]``. Pass ``rollouts`` to train on completions sampled elsewhere.

    Returns:
        ``(StepResult, metrics)``.
    """
    model = policy.model
    if rollouts is None:
        was_training = model.training
        model.eval()
        rollouts = rollout(
            policy, records, num_generations=num_generations, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, seed=seed, generation_kwargs=generation_kwargs,
        )
        model.train(was_training)
    table = score(rollouts, preset=preset, weights=weights, format_mode=format_mode)
    advantages, metrics = group_advantages(table.rewards, rollouts.num_generations, scale=scale_rewards)
    metrics = dict(metrics)
    for name, values in table.part_means().items():
        metrics[f"rewards/{name}"] = values

    n_rec = len(rollouts.records)
    micro_batches = max(1, min(micro_batches, n_rec))
    bounds = [round(i * n_rec / micro_batches) for i in range(micro_batches + 1)]
    G = rollouts.num_generations
    parts = [list(range(bounds[i] * G, bounds[i + 1] * G)) for i in range(micro_batches)]
    parts = [p for p in parts if p]
    chunks = [select_rows(rollouts, p) for p in parts]
    chunk_adv = [advantages[p] for p in parts]
    num_items = int(rollouts.completion_mask.sum().item())

    with torch.no_grad():
        ref_logps = [None] * len(chunks)
        if beta != 0.0:
            with reference_model(policy, ref_model) as ref_net:
                ref_logps = [token_logprobs(policy, c, model=ref_net) for c in chunks]
        old_logps = [None] * len(chunks)
        if num_iterations > 1:
            old_logps = [token_logprobs(policy, c) for c in chunks]

    skipped, reason = False, ""
    loss_stats: list[dict[str, float]] = []  # the last iteration's, one per micro-batch
    step_loss = float("nan")
    grad_norm = float("nan")
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training  # restored below, so callers that sample in eval mode stay in eval mode
    model.train()
    for _ in range(num_iterations):
        optimizer.zero_grad(set_to_none=True)
        loss_stats, step_loss = [], 0.0
        for chunk, adv, old, ref in zip(chunks, chunk_adv, old_logps, ref_logps):
            logp = token_logprobs(policy, chunk)
            loss, stats = grpo_loss(
                logp, old, ref, adv, chunk.completion_mask.to(logp.device), beta=beta, epsilon_low=epsilon_low,
                epsilon_high=epsilon_high, loss_type=loss_type, max_completion_length=rollouts.max_new_tokens,
                num_items_in_batch=num_items,
            )
            # dapo already divides by the tokens of the whole batch; the others average over micro-batches
            scaled = loss if loss_type == "dapo" else loss / len(chunks)
            loss_stats.append(stats)
            step_loss += float(scaled.detach())
            if not _finite(loss):
                skipped, reason = True, f"non-finite loss ({float(loss.detach())})"
                break
            scaled.backward()
        if not skipped:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(
                params, max_grad_norm if max_grad_norm and max_grad_norm > 0 else float("inf")))
            if not math.isfinite(grad_norm):
                skipped, reason = True, f"non-finite gradient norm ({grad_norm})"
        if skipped:
            optimizer.zero_grad(set_to_none=True)
            break
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    model.train(was_training)

    keys = {k for s in loss_stats for k in s if k not in ("loss", "tokens")}
    for key in sorted(keys):
        vals = [s[key] for s in loss_stats if key in s]
        agg = min if key.endswith("_min") else max if key.endswith("_max") else (lambda v: sum(v) / len(v))
        metrics[key] = agg(vals)
    metrics["loss"] = step_loss
    metrics["grad_norm"] = grad_norm
    metrics["skipped"] = float(skipped)
    metrics["completion_length"] = rollouts.completion_mask.sum(1).float().mean().item()
    metrics["clipped_completions"] = rollouts.is_truncated.float().mean().item()
    if scheduler is not None:
        metrics["lr"] = float(scheduler.get_last_lr()[0])
    else:
        metrics["lr"] = float(optimizer.param_groups[0]["lr"])
    result = StepResult(rollouts, table, advantages, skipped, reason, metrics)
    return result, metrics
