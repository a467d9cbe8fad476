"""Rollouts, log-probs and the training loop on the tiny model: it learns, it resumes after SIGKILL on the same RNG
stream, it survives NaN rewards and losses, and the GPU path (CUDA, bf16) runs where a GPU is present."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workbench import grpo
from workbench.data import synthetic
from workbench.trainer import GRPOLoop, TrainConfig, latest_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base_policy():
    from workbench.models import load_policy

    return load_policy(device="cpu")


@pytest.fixture
def policy(base_policy):
    return copy.deepcopy(base_policy)  # each test may train its own copy


# --------------------------------------------------------------------------------------------------------------------
# rollouts, scores, log-probs
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rollouts(base_policy):
    records = synthetic.generate("counting", 2, seed=5) + synthetic.generate("grounding", 1, seed=5)
    return grpo.rollout(base_policy, records, num_generations=4, max_new_tokens=48, seed=123)


def test_rollout_shapes_masks_and_texts(rollouts, base_policy):
    ro = rollouts
    N, C = ro.completion_ids.shape
    assert N == 12 and ro.batch_size == 3 and ro.prompt_ids.shape[0] == 12 and C <= 48
    assert ro.record_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    eos = base_policy.processor.tokenizer.eos_token_id
    for row, m, text in zip(ro.completion_ids, ro.completion_mask, ro.texts):
        n = int(m.sum())
        hits = (row == eos).nonzero()
        if len(hits):  # the mask runs up to and including the first EOS
            assert n == int(hits[0]) + 1
        else:
            assert n == C
        assert m[:n].all() and not m[n:].any()
        assert "<|im_end|>" not in text
    # left-padded prompts: the last prompt position is a real token in every row
    assert ro.prompt_mask[:, -1].all()
    df = ro.to_pandas()
    assert list(df.columns[:3]) == ["record", "sample", "task"] and len(df) == 12


def test_rollout_seed_reproducible_and_leaves_global_rng(base_policy):
    records = synthetic.generate("counting", 2, seed=8)
    state = torch.get_rng_state()
    a = grpo.rollout(base_policy, records, num_generations=3, max_new_tokens=24, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    b = grpo.rollout(base_policy, records, num_generations=3, max_new_tokens=24, seed=7)
    assert a.texts == b.texts and torch.equal(a.completion_ids, b.completion_ids)


def test_rollout_logprobs_equal_rescoring(rollouts, base_policy):
    with torch.no_grad():
        rescored = grpo.token_logprobs(base_policy, rollouts)
        chunked = grpo.token_logprobs(base_policy, rollouts, micro_batch_size=5)
    torch.testing.assert_close(rescored, rollouts.logprobs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(chunked, rescored, atol=1e-5, rtol=1e-5)


def test_token_logprobs_equal_manual_forward(rollouts, base_policy):
    """log_softmax(logits / T) of a plain full-sequence forward, read off at each completion token by hand."""
    ro = rollouts
    T = 0.7
    with torch.no_grad():
        ours = grpo.token_logprobs(base_policy, ro, temperature=T)
        inputs = ro.model_inputs()
        logits = base_policy.model(**inputs).logits  # [N, P+C, V], every position
    P = ro.prompt_ids.size(1)
    for k in range(len(ro)):
        for t in range(int(ro.completion_mask[k].sum())):
            lp = F.log_softmax(logits[k, P + t - 1] / T, dim=-1)[ro.completion_ids[k, t]]
            assert ours[k, t].item() == pytest.approx(lp.item(), abs=1e-5)
    assert (ours[ro.completion_mask == 0] == 0).all()


def test_score_table_and_tensor_view(rollouts):
    table = grpo.score(rollouts)
    assert len(table) == 12 and table.num_generations == 4
    df = table.to_pandas()
    for col in ("record", "sample", "task", "text", "format", "answer", "total"):
        assert col in df.columns
    assert table.tensor(["format", "answer", "total"]).shape == (12, 3)
    assert table.grouped().shape == (3, 4)
    ok = [b for b in table.breakdowns if b is not None]
    assert len(ok) == 12 and all(hasattr(b, "prediction") for b in ok)
    # total = format + answer under the paper preset
    t = table.tensor(["format", "answer", "total"])
    torch.testing.assert_close(t[:, 0] + t[:, 1], t[:, 2])


# --------------------------------------------------------------------------------------------------------------------
# it learns
# --------------------------------------------------------------------------------------------------------------------


def _mean_reward(policy, records, seed=0):
    ro = grpo.rollout(policy, records, num_generations=8, max_new_tokens=40, seed=seed)
    return float(torch.nanmean(grpo.score(ro).rewards))


def test_mean_reward_rises_on_fixed_records(policy):
    """A few GRPO steps on four fixed grounding records raise their mean reward (8 samples each, fixed seeds)."""
    torch.manual_seed(0)
    records = synthetic.generate("grounding", 4, seed=21)
    before = sum(_mean_reward(policy, records, seed=s) for s in (1, 2)) / 2
    opt = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=5e-4)
    ref = copy.deepcopy(policy.model).eval().requires_grad_(False)
    rewards = []
    for _ in range(8):
        _, m = grpo.grpo_step(policy, records, opt, ref_model=ref, num_generations=8, max_new_tokens=40, beta=0.04)
        assert not m["skipped"]
        rewards.append(m["reward_mean"])
    after = sum(_mean_reward(policy, records, seed=s) for s in (1, 2)) / 2
    assert after > before + 0.05, (before, after, rewards)


# --------------------------------------------------------------------------------------------------------------------
# robustness: NaN rewards and losses
# --------------------------------------------------------------------------------------------------------------------


def _cfg(tmp_path, **kw):
    base = dict(max_steps=3, per_device_batch=2, num_generations=4, max_completion_length=24, checkpoint_every=0,
                tensorboard=False, progress=False, save_final=False, output_dir=str(tmp_path), learning_rate=1e-4,
                dataset={"benchmark": "shapesworld", "limit": 16}, eval_limit=4)
    base.update(kw)
    return TrainConfig.tiny("counting", **base)


def test_nan_reward_and_nan_loss_are_skipped_and_reported(tmp_path, policy, monkeypatch, caplog):
    import workbench.rewards as rewards_mod

    real_score = rewards_mod.score
    calls = {"n": 0}

    def flaky_score(*args, **kwargs):  # every 3rd completion: NaN total; every 7th: the reward raises
        calls["n"] += 1
        if calls["n"] % 7 == 0:
            raise RuntimeError("reward exploded")
        b = real_score(*args, **kwargs)
        if calls["n"] % 3 == 0:
            b.total = float("nan")
        return b

    monkeypatch.setattr(rewards_mod, "score", flaky_score)
    real_loss = grpo.grpo_loss
    losses = {"n": 0}

    def nan_on_second_step(*args, **kwargs):
        loss, stats = real_loss(*args, **kwargs)
        losses["n"] += 1
        if losses["n"] == 2:
            loss = loss * float("nan")
        return loss, stats

    monkeypatch.setattr(grpo, "grpo_loss", nan_on_second_step)
    loop = GRPOLoop(_cfg(tmp_path), policy=policy)
    with caplog.at_level("WARNING", logger="workbench.trainer"):
        history = loop.train()
    steps = [r for r in history if "reward_mean" in r]
    assert [r["skipped"] for r in steps] == [0.0, 1.0, 0.0]
    assert "non-finite loss" in steps[1]["skip_reason"]
    assert all(r["unscorable"] > 0 for r in steps)
    assert all(math.isfinite(r["reward_mean"]) for r in steps)
    assert math.isfinite(steps[2]["loss"])
    assert loop.skipped_steps == [{"step": 2, "reason": steps[1]["skip_reason"]}]
    assert "skipped" in caplog.text and "unscorable" in caplog.text
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in logged if "skipped" in r] == [0.0, 1.0, 0.0]


def test_skipped_step_leaves_parameters_unchanged(policy, monkeypatch):
    records = synthetic.generate("counting", 2, seed=4)
    opt = torch.optim.AdamW(policy.model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in policy.model.parameters()]
    monkeypatch.setattr(grpo, "grpo_loss", lambda *a, **k: (torch.tensor(float("inf"), requires_grad=True), {}))
    res, m = grpo.grpo_step(policy, records, opt, num_generations=4, max_new_tokens=16, beta=0.0)
    assert res.skipped and m["skipped"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.model.parameters()))
    assert not opt.state  # the optimizer never stepped


# --------------------------------------------------------------------------------------------------------------------
# checkpoint, SIGKILL, resume on the same RNG stream
# --------------------------------------------------------------------------------------------------------------------


def _cli(out_dir, steps, *extra):
    return [sys.executable, "-m", "workbench.train", "--task", "counting", "--output-dir", str(out_dir),
            "--max-steps", str(steps), "--threads", "1", "--no-progress",
            "--set", "checkpoint_every=2", "--set", "per_device_batch=2", "--set", "num_generations=4",
            "--set", "max_completion_length=16", "--set", "tensorboard=false", "--set", "save_final=false",
            "--set", "learning_rate=1e-4", "--set", "dataset={benchmark: shapesworld, limit: 16}", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_same_run(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    # the reference (4 uninterrupted steps) and the same run killed with SIGKILL once step 3 is logged
    # (checkpoint-2 exists, step 3 is lost) run side by side, one thread each
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    reference_proc = subprocess.Popen(_cli(ref_dir, 4), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
    proc = subprocess.Popen(_cli(run_dir, 4), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = run_dir / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and any(json.loads(x).get("step") == 3 for x in log.read_text().splitlines() if x.strip()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    _, err = reference_proc.communicate(timeout=600)
    assert reference_proc.returncode == 0, err.decode()[-2000:]
    reference = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(run_dir).name == "checkpoint-000002"

    subprocess.run(_cli(run_dir, 4, "--resume"), check=True, env=env, cwd=ROOT, capture_output=True, timeout=600)
    resumed = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(reference, resumed):  # the same completions, rewards and losses, step for step
        assert a["rollout_digest"] == b["rollout_digest"], a["step"]
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)


def test_checkpoint_round_trip_in_process(tmp_path, base_policy):
    cfg = _cfg(tmp_path, max_steps=2, checkpoint_every=1)
    a = GRPOLoop(cfg, policy=copy.deepcopy(base_policy))
    a.train(max_steps=1)
    b = GRPOLoop(cfg, policy=copy.deepcopy(base_policy), resume=True)
    assert b.step == 1 and b.sampler.state_dict() == a.sampler.state_dict()
    for (n, p), (_, q) in zip(a.policy.model.named_parameters(), b.policy.model.named_parameters()):
        assert torch.equal(p, q), n
    assert len(b.history) == len(a.history)


# --------------------------------------------------------------------------------------------------------------------
# loop features
# --------------------------------------------------------------------------------------------------------------------


def test_loop_eval_history_and_num_iterations(tmp_path, policy):
    cfg = _cfg(tmp_path, max_steps=2, eval_every=2, num_iterations=2, tensorboard=True)
    loop = GRPOLoop(cfg, policy=policy)
    history = loop.train()
    df = history.to_pandas()
    assert {"reward_mean", "kl", "grad_norm", "eval/counting/accuracy"} <= set(df.columns)
    assert df["eval/counting/accuracy"].notna().sum() == 2  # at the start and after step 2
    assert list((tmp_path / "tensorboard").iterdir())
    steps = df[df["reward_mean"].notna()]
    assert (steps["ratio_max"] >= 1.0).all()  # the second iteration sees the first one's update
    import matplotlib

    matplotlib.use("Agg")
    assert len(history.plot(("reward_mean", "eval/counting/accuracy"))) == 2


def test_loop_with_lora_uses_the_base_model_as_reference(tmp_path):
    cfg = _cfg(tmp_path, max_steps=1, lora={"r": 4}, checkpoint_every=1, learning_rate=1e-2)
    loop = GRPOLoop(cfg)
    assert loop.ref_model is None  # adapters disabled = the starting policy
    base = {n: p.detach().clone() for n, p in loop.policy.model.named_parameters() if "lora_" not in n}
    loop.train()
    assert all(torch.equal(base[n], p) for n, p in loop.policy.model.named_parameters() if "lora_" not in n)
    saved = torch.load(latest_checkpoint(tmp_path) / "trainable.pt")
    assert saved and all("lora_" in n for n in saved)


def test_config_from_yaml_and_cli_overrides(tmp_path):
    from workbench.train import build_config, parse_args

    path = tmp_path / "r.yaml"
    path.write_text("model: null\ntask: grounding\nnum_generations: 8\nbeta: 0.04\nlearning_rate: 1.0e-6\n"
                    "dataset: {benchmark: shapesworld, path: null, split: train, limit: 10}\n")
    cfg = build_config(parse_args(["--config", str(path), "--max-steps", "3", "--set", "loss_type=dapo"]))
    assert (cfg.task, cfg.max_steps, cfg.loss_type, cfg.dataset["limit"]) == ("grounding", 3, "dapo", 10)
    path.write_text("num_generationz: 8\n")
    with pytest.raises(ValueError, match="num_generationz"):
        TrainConfig.from_yaml(path)


# --------------------------------------------------------------------------------------------------------------------
# GPU paths
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grpo_step_cuda_bf16():
    from workbench.models import load_policy

    pol = load_policy(device="cuda")
    assert next(pol.model.parameters()).dtype == torch.bfloat16
    records = synthetic.generate("counting", 2, seed=1)
    opt = torch.optim.AdamW(pol.model.parameters(), lr=1e-5)
    ref = copy.deepcopy(pol.model).eval().requires_grad_(False)
    res, m = grpo.grpo_step(pol, records, opt, ref_model=ref, num_generations=4, max_new_tokens=24)
    assert not res.skipped and math.isfinite(m["loss"])
    with torch.no_grad():
        lp = grpo.token_logprobs(pol, res.rollouts)
    assert lp.device.type == "cuda"
    torch.testing.assert_close(lp.cpu(), res.rollouts.logprobs, atol=0.1, rtol=0.1)  # bf16 forward vs cached decode


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loop_on_cuda(tmp_path):
    cfg = _cfg(tmp_path, device="cuda", max_steps=2, checkpoint_every=1)
    loop = GRPOLoop(cfg)
    loop.train()
    assert loop.step == 2 and latest_checkpoint(tmp_path) is not None


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_paper_recipes_load_for_both_engines(path):
    from workbench.trl_bridge import grpo_config

    cfg = TrainConfig.from_yaml(path, output_dir="/tmp/unused", report_to="none")
    assert (cfg.num_generations, cfg.beta, cfg.learning_rate, cfg.loss_type) == (8, 0.04, 1e-6, "grpo")
    args = grpo_config(cfg)
    assert args.per_device_train_batch_size == cfg.per_device_batch * cfg.num_generations
