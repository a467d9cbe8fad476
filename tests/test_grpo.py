"""GRPO math: group_advantages and grpo_loss against hand computations and against TRL's own GRPOTrainer code."""

from __future__ import annotations

import math
import types
from collections import defaultdict

import pytest
import torch

from workbench.grpo import LOSS_TYPES, group_advantages, grpo_loss

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")


# --------------------------------------------------------------------------------------------------------------------
# advantages by hand
# --------------------------------------------------------------------------------------------------------------------


def test_group_advantages_hand_computed():
    # group 1: rewards 1, 2, 3 -> mean 2, sample std 1 -> (−1, 0, 1) / (1 + 1e-4)
    # group 2: rewards 5, 5, 5 -> std 0 -> all 0
    adv, m = group_advantages([1.0, 2.0, 3.0, 5.0, 5.0, 5.0], 3)
    d = 1 + 1e-4
    assert adv.tolist() == pytest.approx([-1 / d, 0.0, 1 / d, 0.0, 0.0, 0.0], abs=1e-7)
    assert m["frac_reward_zero_std"] == 0.5
    assert m["unscorable"] == 0


def test_group_advantages_unscorable_left_out():
    # group: 1, None, 3 -> mean over scorable = 2, std of (1, 3) = sqrt(2) -> (−1/√2, 0, 1/√2)
    adv, m = group_advantages([1.0, None, 3.0, float("nan"), 4.0, float("nan")], 3)
    s = math.sqrt(2) + 1e-4
    assert adv[:3].tolist() == pytest.approx([-1 / s, 0.0, 1 / s], abs=1e-6)
    # second group has one scorable completion: no std, everyone 0
    assert adv[3:].tolist() == [0.0, 0.0, 0.0]
    assert m["unscorable"] == 3


def test_group_advantages_scales():
    r = torch.tensor([0.0, 1.0, 2.0, 10.0])
    adv, _ = group_advantages(r, 2, scale="none")
    assert adv.tolist() == pytest.approx([-0.5, 0.5, -4.0, 4.0])
    adv, _ = group_advantages(r, 2, scale="batch")
    std = r.std().item()  # sample std over the batch
    assert adv.tolist() == pytest.approx([-0.5 / (std + 1e-4), 0.5 / (std + 1e-4), -4 / (std + 1e-4), 4 / (std + 1e-4)],
                                         rel=1e-6)
    with pytest.raises(ValueError, match="B\\*G"):
        group_advantages([1.0, 2.0, 3.0], 2)


# --------------------------------------------------------------------------------------------------------------------
# loss by hand
# --------------------------------------------------------------------------------------------------------------------


def test_grpo_loss_hand_computed():
    # two sequences; first has 2 tokens, second 1 token (+1 padding)
    logp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    old = torch.tensor([[-1.0, -2.5], [-0.5, 0.0]])  # ratio: [1, e^0.5=1.6487], [1, -]
    ref = torch.tensor([[-1.0, -2.0], [-1.5, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    # seq 1: token 1: ratio 1 -> -1·1 = -1; token 2: ratio 1.6487 clipped to 1.2 -> -min(1.6487, 1.2) = -1.2
    # seq 2: token 1: ratio 1, A=-2 -> -min(-2, -2) = 2
    # KL: seq 1 zero; seq 2 token 1: d = ref - logp = -1 -> e^-1 + 1 - 1 = 0.367879
    kl = math.exp(-1.0)
    beta = 0.1
    tok = [[-1.0, -1.2], [2.0 + beta * kl, 0.0]]
    loss, st = grpo_loss(logp, old, ref, adv, mask, beta=beta, loss_type="grpo")
    assert loss.item() == pytest.approx(((tok[0][0] + tok[0][1]) / 2 + tok[1][0]) / 2, rel=1e-6)
    loss, _ = grpo_loss(logp, old, ref, adv, mask, beta=beta, loss_type="bnpo")
    assert loss.item() == pytest.approx((tok[0][0] + tok[0][1] + tok[1][0]) / 3, rel=1e-6)
    loss, _ = grpo_loss(logp, old, ref, adv, mask, beta=beta, loss_type="dr_grpo", max_completion_length=4)
    assert loss.item() == pytest.approx((tok[0][0] + tok[0][1] + tok[1][0]) / (2 * 4), rel=1e-6)
    loss, _ = grpo_loss(logp, old, ref, adv, mask, beta=beta, loss_type="dapo", num_items_in_batch=6)
    assert loss.item() == pytest.approx((tok[0][0] + tok[0][1] + tok[1][0]) / 6, rel=1e-6)
    # stats: one of three tokens clipped high (ratio 1.65 > 1.2 with A > 0); KL averaged over the 3 tokens
    assert st["clip_ratio/high_mean"] == pytest.approx(1 / 3)
    assert st["clip_ratio/low_mean"] == 0.0
    assert st["kl"] == pytest.approx(kl / 3, rel=1e-6)
    assert st["ratio_max"] == pytest.approx(math.exp(0.5), rel=1e-6)


def test_grpo_loss_on_policy_gradient_is_policy_gradient():
    # With old = logp.detach() and beta = 0 the gradient is -A · ∇logp / |o| (REINFORCE with group baseline).
    logp = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    loss, _ = grpo_loss(logp, None, None, torch.tensor([2.0]), torch.tensor([[1, 1, 0]]), beta=0.0)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-1.0, -1.0, 0.0])
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logp, None, None, torch.tensor([2.0]), torch.tensor([[1, 1, 0]]), loss_type="ppo")


# --------------------------------------------------------------------------------------------------------------------
# equality with TRL's GRPOTrainer._compute_loss (its real code, with a stub `self` that supplies the log-probs)
# --------------------------------------------------------------------------------------------------------------------


class _StubAccelerator:
    num_processes = 1

    def gather(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x

    def gather_for_metrics(self, x):
        return x


def _trl_self(logp, *, loss_type, beta, eps_low, eps_high, max_completion_length):
    """The attributes GRPOTrainer._compute_loss reads, for one process, no accumulation, token-level ratios."""
    args = types.SimpleNamespace(
        use_bias_correction_kl=False, delta=None, steps_per_generation=1, sapo_temperature_pos=1.0,
        sapo_temperature_neg=1.05,
    )

    def per_token_logps(model, input_ids, attention_mask, logits_to_keep, **kw):
        return logp, torch.zeros_like(logp), None

    return types.SimpleNamespace(
        _get_per_token_logps_and_entropies=per_token_logps,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=args,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=max_completion_length,
        accelerator=_StubAccelerator(),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )


def _random_case(seed, n=6, c=7, drift=0.3):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(n, c, generator=g) * 3
    old = logp + drift * torch.randn(n, c, generator=g)  # ratios far from 1: clipping active
    ref = logp + 0.5 * torch.randn(n, c, generator=g)
    lengths = torch.randint(1, c + 1, (n,), generator=g)
    mask = (torch.arange(c).expand(n, -1) < lengths.unsqueeze(1)).long()
    adv = torch.randn(n, generator=g)
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("drift", [0.0, 0.4])  # 0: ratio ≡ 1 (no clipping); 0.4: clipping active
@pytest.mark.parametrize("old_given", [True, False])
def test_grpo_loss_equals_trl(loss_type, beta, drift, old_given):
    logp, old, ref, adv, mask = _random_case(10 * LOSS_TYPES.index(loss_type) + int(100 * beta) + int(10 * drift), drift=drift)
    if drift == 0:
        old = logp.clone()
    eps_low, eps_high = 0.2, 0.28
    num_items = int(mask.sum()) + 5  # dapo: the token count of a larger generation batch
    n, c = logp.shape

    ours_logp = logp.clone().requires_grad_(True)
    ours, stats = grpo_loss(
        ours_logp, old if old_given else None, ref, adv, mask, beta=beta, epsilon_low=eps_low,
        epsilon_high=eps_high, loss_type=loss_type, max_completion_length=c + 3, num_items_in_batch=num_items,
    )
    ours.backward()

    trl_logp = logp.clone().requires_grad_(True)
    stub = _trl_self(trl_logp, loss_type=loss_type, beta=beta, eps_low=eps_low, eps_high=eps_high,
                     max_completion_length=c + 3)
    inputs = {
        "prompt_ids": torch.zeros(n, 2, dtype=torch.long), "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.zeros(n, c, dtype=torch.long), "completion_mask": mask,
        "advantages": adv, "num_items_in_batch": torch.tensor(num_items), "ref_per_token_logps": ref,
    }
    if old_given:
        inputs["old_per_token_logps"] = old
    theirs = trl_grpo.GRPOTrainer._compute_loss(stub, None, inputs)
    theirs.backward()

    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    torch.testing.assert_close(ours_logp.grad, trl_logp.grad, atol=1e-6, rtol=1e-5)
    m = stub._metrics["train"]
    for key in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
        assert stats[key] == pytest.approx(m[key][0], abs=1e-6)
    if beta:
        assert stats["kl"] == pytest.approx(m["kl"][0], abs=1e-6)
    if drift and old_given:
        assert stats["clip_ratio/region_mean"] > 0  # the case really exercises clipping


# --------------------------------------------------------------------------------------------------------------------
# equality with TRL's advantage code (nanstd, NaN handling): its helper on the same numbers
# (the full scoring path through GRPOTrainer._generate_and_score_completions is in test_trl_bridge.py)
# --------------------------------------------------------------------------------------------------------------------


def test_nanstd_matches_trl_helper():
    from trl.trainer.utils import nanstd

    from workbench.grpo import _nanstd

    x = torch.tensor([[1.0, float("nan"), 3.0, 4.0], [2.0, 2.0, float("nan"), float("nan")]])
    torch.testing.assert_close(_nanstd(x, dim=1), nanstd(x, dim=1))
    torch.testing.assert_close(_nanstd(x.flatten()), nanstd(x.flatten()))
