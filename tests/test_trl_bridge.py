"""The TRL path: our functions equal GRPOTrainer's own scoring and loss code on the same batch, and training through
TRL runs real steps on CPU with the tiny model (full fine-tuning and LoRA)."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.data import synthetic
from workbench.grpo import LOSS_TYPES, Rollouts, group_advantages, grpo_loss, token_logprobs
from workbench.train_config import TrainConfig
from workbench.trl_bridge import grpo_config, to_trl_dataset

trl = pytest.importorskip("trl")

G = 4


@pytest.fixture(scope="module")
def policy():
    from workbench.models import load_policy

    return load_policy(device="cpu")


def _fixed_rewards():
    """Two reward functions with fixed outputs: row 1 unscorable (both None), row 5 scored only by the second, a
    group (rows 8..11) with equal rewards, so every branch of TRL's NaN-aware statistics is exercised."""
    a = [0.5, None, 1.5, -1.0, 2.0, None, 0.25, 1.0, 0.7, 0.7, 0.7, 0.7]
    b = [None, None, None, None, None, 3.0, None, None, None, None, None, None]

    def first_reward(prompts, completions, **kw):
        return a[: len(completions)]

    def second_reward(prompts, completions, **kw):
        return b[: len(completions)]

    return [first_reward, second_reward], a, b


@pytest.fixture(scope="module")
def trl_batch(policy, tmp_path_factory):
    """A real GRPOTrainer on the tiny model, and one batch through its `_generate_and_score_completions`."""
    records = synthetic.generate("counting", 3, seed=11)
    cfg = TrainConfig.tiny("counting", output_dir=str(tmp_path_factory.mktemp("trl")), report_to="none",
                           per_device_batch=3, num_generations=G, max_completion_length=24, beta=0.04,
                           checkpoint_every=0, progress=False, save_final=False, max_steps=1)
    funcs, a, b = _fixed_rewards()
    trainer = trl.GRPOTrainer(model=policy.model, reward_funcs=funcs, args=grpo_config(cfg),
                              train_dataset=to_trl_dataset(records), processing_class=policy.processor)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    ds = trainer.train_dataset
    inputs = [ds[i] for i in range(len(records)) for _ in range(G)]  # TRL's sampler repeats each prompt G times
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(inputs)
    return trainer, out, records, a, b


def _rollouts_from_trl(out, records, temperature) -> Rollouts:
    P = out["prompt_ids"].size(1)
    image_inputs = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
    if "mm_token_type_ids" in out:
        image_inputs["mm_token_type_ids"] = out["mm_token_type_ids"][:, :P]
    n = out["completion_ids"].size(0)
    return Rollouts(records=records, num_generations=G, prompt_ids=out["prompt_ids"], prompt_mask=out["prompt_mask"],
                    completion_ids=out["completion_ids"], completion_mask=out["completion_mask"], texts=[""] * n,
                    logprobs=torch.zeros_like(out["completion_ids"], dtype=torch.float32), image_inputs=image_inputs,
                    temperature=temperature)


@pytest.mark.slow
def test_advantages_equal_trl_scoring_path(trl_batch):
    trainer, out, _, a, b = trl_batch
    # TRL sums the reward functions (NaN-aware) and marks rows where every function returned None as unscorable.
    totals = []
    for x, y in zip(a, b):
        vals = [v for v in (x, y) if v is not None]
        totals.append(sum(vals) if vals else None)
    ours, metrics = group_advantages(totals, G, scale="group")
    torch.testing.assert_close(ours, out["advantages"].cpu(), atol=1e-5, rtol=1e-5)
    assert ours[1] == 0.0 and metrics["unscorable"] == 1
    assert ours[8:].abs().max() == 0.0  # equal rewards: no signal
    # batch and none scaling through the same code path
    for scale in ("batch", "none"):
        trainer.scale_rewards = scale
        torch.manual_seed(0)
        again = trainer._generate_and_score_completions([trainer.train_dataset[i] for i in range(3) for _ in range(G)])
        ours, _ = group_advantages(totals, G, scale=scale)
        torch.testing.assert_close(ours, again["advantages"].cpu(), atol=1e-5, rtol=1e-5)
    trainer.scale_rewards = "group"


@pytest.mark.slow
def test_token_logprobs_and_loss_equal_trl_compute_loss(trl_batch, policy):
    trainer, out, records, _, _ = trl_batch
    ro = _rollouts_from_trl(out, records, trainer.temperature)
    mask = out["completion_mask"]
    with torch.no_grad():
        ref = token_logprobs(policy, ro, model=trainer.ref_model)
    # the reference log-probs TRL computed with its fused LM head equal ours
    torch.testing.assert_close(ref * mask, out["ref_per_token_logps"] * mask, atol=1e-5, rtol=1e-5)

    clipped_old = out["ref_per_token_logps"].detach() + 0.3 * torch.randn_like(out["ref_per_token_logps"])
    logp = token_logprobs(policy, ro)
    for loss_type in LOSS_TYPES:
        for beta in (0.0, 0.04):
            for old in (None, clipped_old):
                trainer.loss_type, trainer.beta = loss_type, beta
                batch = dict(out)
                if old is not None:
                    batch["old_per_token_logps"] = old
                theirs = trainer._compute_loss(trainer.model, batch)
                ours, stats = grpo_loss(
                    logp, old, out["ref_per_token_logps"], out["advantages"], mask, beta=beta,
                    epsilon_low=trainer.epsilon_low, epsilon_high=trainer.epsilon_high, loss_type=loss_type,
                    max_completion_length=trainer.max_completion_length,
                    num_items_in_batch=out["num_items_in_batch"],
                )
                assert ours.item() == pytest.approx(theirs.item(), abs=1e-5), (loss_type, beta, old is not None)
                if old is not None:
                    assert stats["clip_ratio/region_mean"] > 0
    trainer.loss_type, trainer.beta = "grpo", 0.04


def _short_cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), report_to="none", per_device_batch=2, num_generations=4,
                max_completion_length=40, max_steps=2, checkpoint_every=0, progress=False, save_final=False,
                dataset={"benchmark": "shapesworld", "limit": 16}, learning_rate=1e-4, log_completions=False)
    base.update(kw)
    return TrainConfig.tiny("grounding", **base)


@pytest.mark.slow
def test_trl_trains_on_cpu_with_rewards_per_function(tmp_path, policy):
    from workbench.trl_bridge import build_trainer

    import copy

    own = copy.deepcopy(policy)  # the module's policy stays untouched for the other tests
    trainer = build_trainer(_short_cfg(tmp_path), policy=own)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [r for r in trainer.state.log_history if "reward" in r]
    assert len(logs) == 2
    assert all("rewards/grounding_reward/mean" in r and math.isfinite(r["rewards/grounding_reward/mean"]) for r in logs)
    assert all(r["kl"] >= 0 for r in logs)
    changed = any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert changed


@pytest.mark.slow
def test_trl_lora_variant(tmp_path):
    from workbench.trl_bridge import build_trainer

    cfg = _short_cfg(tmp_path, lora={"r": 4}, max_steps=1)
    trainer = build_trainer(cfg)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert trainer.ref_model is None  # the reference is the base model with adapters disabled
    trainer.train()
    assert any("rewards/grounding_reward/mean" in r for r in trainer.state.log_history)


def test_grpo_config_maps_the_paper_recipe(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), report_to="none", per_device_batch=2, grad_accum=3)
    args = grpo_config(cfg)
    assert (args.beta, args.loss_type, args.num_generations, args.temperature) == (0.04, "grpo", 8, 1.0)
    assert args.learning_rate == 1e-6 and args.epsilon == 0.2 and args.scale_rewards == "group"
    assert args.per_device_train_batch_size == 16  # 2 records × G completions
    assert args.gradient_accumulation_steps == 3
    assert args.gradient_checkpointing is False
    if not torch.cuda.is_available():
        assert args.bf16 is False and args.use_cpu is True


def test_trl_dataset_columns():
    records = synthetic.generate("grounding", 2, seed=3)
    ds = to_trl_dataset(records)
    assert set(ds.column_names) >= {"prompt", "image", "task", "solution"}
    row = ds[0]
    assert row["prompt"][-1] == {"role": "user", "content": records[0]["question"]}
    assert row["image"].size == records[0]["image"].size


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trl_bf16_on_gpu(tmp_path):
    from workbench.trl_bridge import build_trainer

    trainer = build_trainer(_short_cfg(tmp_path, device="cuda", max_steps=1))
    assert trainer.args.bf16 and next(trainer.model.parameters()).dtype == torch.bfloat16
    trainer.train()
    assert any("reward" in r for r in trainer.state.log_history)


@pytest.mark.parametrize("name,kind,stage", [("ddp", "MULTI_GPU", None), ("zero2", "DEEPSPEED", 2),
                                             ("zero3", "DEEPSPEED", 3)])
def test_accelerate_configs_load(name, kind, stage):
    from pathlib import Path

    from accelerate.commands.config.config_args import ClusterConfig

    path = Path(__file__).resolve().parent.parent / "configs" / "accelerate" / f"{name}.yaml"
    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.distributed_type.name == kind and cfg.mixed_precision == "bf16"
    if stage:
        assert cfg.deepspeed_config["zero_stage"] == stage
