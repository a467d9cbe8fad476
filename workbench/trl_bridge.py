"""Full-scale training on TRL's ``GRPOTrainer`` with the workbench's records and rewards.

The same ``TrainConfig`` that drives ``GRPOLoop`` maps onto ``trl.GRPOConfig`` (``grpo_config``); the same records
become a ``datasets.Dataset`` with a conversational ``prompt`` and an ``image`` column (``to_trl_dataset``); the same
rule-based rewards run through the TRL adapter of ``workbench.rewards`` (``reward_functions``), one function per task
so TRL logs ``rewards/<task>/mean``. One device: ``train_trl(cfg)`` in-process (a notebook cell is fine). Several:
``accelerate launch --config_file configs/accelerate/ddp.yaml -m workbench.train --engine trl --config ...``
(or ``zero2.yaml`` / ``zero3.yaml`` for DeepSpeed), or ``launch(cfg, num_processes=N)`` from a notebook.

TRL's defaults differ from the paper (β = 0, ``loss_type="dapo"``, bf16 and gradient checkpointing on); every
value here comes from ``TrainConfig`` so the paper's recipe is what runs unless a config says otherwise.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any, Callable, Sequence

import torch

from workbench import tasks as _tasks
from workbench.train_config import TrainConfig, benchmark_dataset, is_shapesworld, load_records
from workbench.trainer import History

__all__ = ["to_trl_dataset", "grpo_config", "peft_config", "reward_functions", "build_trainer", "train_trl",
           "launch", "vllm_available"]

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _prompt(question: str) -> list[dict]:
    return [{"role": "system", "content": _tasks.SYSTEM_PROMPT}, {"role": "user", "content": question}]


def to_trl_dataset(records):
    """Records (or a ``datasets.Dataset`` of canonical rows, as ``workbench.data`` writes them) -> the
    ``datasets.Dataset`` ``GRPOTrainer`` takes: ``prompt`` (system + user question, conversational; TRL puts the
    ``image`` column in front of the question, as ``tasks.messages`` does), ``image``, ``task``, ``question`` and
    ``solution`` (JSON text: the four tasks' solutions differ in shape)."""
    import datasets

    if isinstance(records, datasets.Dataset):
        return records.map(lambda q: {"prompt": _prompt(q)}, input_columns=["question"])
    rows = {
        "prompt": [_prompt(r["question"]) for r in records],
        "image": [r["image"] for r in records],
        "task": [r["task"] for r in records],
        "question": [r["question"] for r in records],
        "solution": [json.dumps(r["solution"]) for r in records],
    }
    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    features = datasets.Features({
        "prompt": datasets.List(message), "image": datasets.Image(), "task": datasets.Value("string"),
        "question": datasets.Value("string"), "solution": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict(rows, features=features)


def _on_cuda(cfg: TrainConfig) -> bool:
    return torch.cuda.is_available() and cfg.device in ("auto", "cuda") or str(cfg.device).startswith("cuda:")


def _scheduler_name(cfg: TrainConfig) -> str:
    warm = bool(cfg.warmup_steps) or cfg.warmup_ratio > 0
    if cfg.lr_scheduler == "constant":
        return "constant_with_warmup" if warm else "constant"
    return cfg.lr_scheduler


def grpo_config(cfg: TrainConfig, **overrides):
    """``trl.GRPOConfig`` for ``cfg``. ``per_device_batch`` counts records; TRL's ``per_device_train_batch_size``
    counts completions, so it is ``per_device_batch × G``. bf16 only on CUDA (unless ``dtype`` says otherwise)."""
    from trl import GRPOConfig

    cuda = _on_cuda(cfg)
    bf16 = cuda and (cfg.dtype in (None, "bfloat16", "bf16"))
    use_vllm = bool(cfg.use_vllm and vllm_available() and cuda)
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.per_device_batch * cfg.num_generations,
        gradient_accumulation_steps=cfg.grad_accum,
        num_generations=cfg.num_generations,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=0,
        beta=cfg.beta,
        learning_rate=cfg.learning_rate,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        num_iterations=cfg.num_iterations,
        max_completion_length=cfg.max_completion_length,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm,
        lr_scheduler_type=_scheduler_name(cfg),
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps is not None else float(cfg.warmup_ratio),
        seed=cfg.seed,
        bf16=bf16,
        fp16=False,
        use_cpu=not cuda,
        gradient_checkpointing=cfg.gradient_checkpointing,
        report_to=[] if cfg.report_to in (None, "none") else cfg.report_to,
        logging_steps=cfg.logging_steps,
        log_completions=cfg.log_completions,
        save_strategy="steps" if cfg.checkpoint_every else "no",
        save_steps=cfg.checkpoint_every or 500,
        save_total_limit=cfg.keep_checkpoints,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_vllm=use_vllm,
        disable_tqdm=not cfg.progress,
        generation_kwargs=cfg.generation_kwargs,
    )
    if use_vllm:
        kwargs["vllm_mode"] = cfg.vllm_mode
    if cfg.eval_every:
        kwargs.update(eval_strategy="steps", eval_steps=cfg.eval_every,
                      per_device_eval_batch_size=cfg.per_device_batch * cfg.num_generations)
    kwargs.update(cfg.trl)
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)


def peft_config(lora: dict | None):
    """``peft.LoraConfig`` from the config's ``lora`` dict (r = 8 on the language model's projections by default;
    the vision blocks name theirs qkv/proj/fc1/fc2 and stay frozen)."""
    if not lora:
        return None
    from peft import LoraConfig

    return LoraConfig(**{"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": LORA_TARGETS,
                         "task_type": "CAUSAL_LM", **lora})


def reward_functions(tasks: Sequence[str], *, tokenizer, preset: str = "paper", convention: str = "qwen2_vl",
                     weights: dict | None = None, format_mode: str = "additive") -> list[Callable]:
    """One TRL reward function per task (``workbench.rewards.trl_reward_funcs``), each returning None for other
    tasks' rows. TRL decodes completions with ``skip_special_tokens=True``, which would drop Qwen2-VL's box tokens;
    the wrapper re-decodes ``completion_ids`` keeping them (EOS and padding removed), exactly as ``rollout`` does."""
    from workbench.rewards import trl_reward_funcs

    funcs = trl_reward_funcs(list(tasks), preset=preset, convention=convention, weights=weights,
                             format_mode=format_mode)
    drop = {tokenizer.eos_token_id, tokenizer.pad_token_id}

    def wrap(fn, task):
        def reward(prompts, completions, completion_ids=None, **kwargs):
            if completion_ids is not None:
                completions = [tokenizer.decode([t for t in ids if t not in drop], skip_special_tokens=False)
                               for ids in completion_ids]
            return fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)

        reward.__name__ = f"{task}_reward"
        return reward

    return [wrap(f, t) for f, t in zip(funcs, tasks)]


def _column(rows, name: str) -> list:
    return list(rows[name]) if hasattr(rows, "column_names") else [r[name] for r in rows]


def build_trainer(cfg: TrainConfig, *, policy: Any = None, train_records: Sequence[dict] | None = None,
                  eval_records: Sequence[dict] | None = None, callbacks: list | None = None, **overrides):
    """A ready ``trl.GRPOTrainer`` for ``cfg``: the policy from ``load_policy`` (LoRA through ``peft_config``),
    the records as a TRL dataset, one reward function per task."""
    from trl import GRPOTrainer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if policy is None:
        from workbench.models import load_policy

        lora_path = cfg.lora if isinstance(cfg.lora, str) else None
        policy = load_policy(cfg.model, device=cfg.device, dtype=cfg.dtype, lora=lora_path)
    if cfg.convention:
        policy.convention = cfg.convention
    if train_records is None and not is_shapesworld(cfg.dataset):
        # a public benchmark stays a lazily decoded Dataset (COCO is ~110k images)
        train_records = benchmark_dataset(cfg.dataset, cfg.seed)
        if cfg.eval_every and eval_records is None and cfg.eval_dataset:
            eval_records = benchmark_dataset({**cfg.eval_dataset, "limit": cfg.eval_limit}, cfg.seed)
    if train_records is None or (eval_records is None and cfg.eval_every):
        tr, ev = load_records(cfg)
        train_records = tr if train_records is None else train_records
        eval_records = ev if eval_records is None else eval_records
    tasks = sorted(set(_column(train_records, "task")) | set(_column(eval_records or [], "task")))
    policy.processor.tokenizer.padding_side = "left"
    args = grpo_config(cfg, **overrides)
    trainer = GRPOTrainer(
        model=policy.model,
        reward_funcs=reward_functions(tasks, tokenizer=policy.processor.tokenizer, preset=cfg.preset,
                                      convention=policy.convention, weights=cfg.reward_weights,
                                      format_mode=cfg.format_mode),
        args=args,
        train_dataset=to_trl_dataset(train_records),
        eval_dataset=to_trl_dataset(eval_records) if cfg.eval_every and len(eval_records or []) else None,
        processing_class=policy.processor,
        peft_config=peft_config(cfg.lora) if isinstance(cfg.lora, dict) else None,
        callbacks=callbacks,
    )
    trainer.workbench_policy = policy
    return trainer


def train_trl(cfg: TrainConfig, *, resume: bool = False, **kwargs) -> History:
    """Train with ``GRPOTrainer`` (in-process) and return TRL's log history as a ``History``."""
    from transformers.trainer_utils import get_last_checkpoint
    import os

    trainer = build_trainer(cfg, **kwargs)
    last = get_last_checkpoint(cfg.output_dir) if resume and os.path.isdir(cfg.output_dir) else None
    trainer.train(resume_from_checkpoint=last)
    if cfg.save_final:
        trainer.save_model(os.path.join(cfg.output_dir, "final"))
        if trainer.accelerator.is_main_process:
            trainer.processing_class.save_pretrained(os.path.join(cfg.output_dir, "final"))
    return History({"step": r.get("step"), **r} for r in trainer.state.log_history)


def launch(cfg: TrainConfig, num_processes: int = 1, **kwargs):
    """From a notebook: one process runs in-process; several go through ``accelerate.notebook_launcher`` (DDP on
    the visible GPUs). For DeepSpeed use the command line with ``configs/accelerate/zero2.yaml``/``zero3.yaml``."""
    if num_processes <= 1:
        return train_trl(cfg, **kwargs)
    from accelerate import notebook_launcher

    notebook_launcher(train_trl, args=(cfg,), num_processes=num_processes)
    return None
