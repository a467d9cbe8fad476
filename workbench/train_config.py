"""One configuration for both training engines (``GRPOLoop`` and TRL's ``GRPOTrainer``), and the records it names.

``TrainConfig()`` is the paper's recipe (Perception-R1 §4: G = 8, temperature 1.0, β = 0.04 with the k3 KL,
lr 1e-6, ε = 0.2, per-sequence token-mean loss, one epoch). ``TrainConfig.tiny(task)`` is the recipe measured to
teach the shipped tiny model on ShapesWorld within minutes on a CPU. ``TrainConfig.from_yaml("configs/X.yaml")``
reads a recipe file; fields are documented where they are declared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ShapesWorld seeds: the held-out records are the model card's (workbench.pretrain.EVAL_SEED); GRPO trains on
# scenes no other stage has seen.
GRPO_TRAIN_SEED = 5_000_000
EVAL_SEED = 7

# Longest useful answer per task on ShapesWorld, with room to over-count (5 counting boxes take ~106 tokens).
TASK_MAX_TOKENS = {"grounding": 40, "counting": 128, "ocr": 12, "detection": 128}
# GRPO learning rates for the tiny model (bench/learning.py): counting's answer is a long list whose length swings
# with the update size, so it takes a smaller step.
TINY_LR = {"counting": 5e-5}


@dataclass
class TrainConfig:
    # --- model ------------------------------------------------------------------------------------------------
    model: str | None = None  # hub id or path; None = the shipped tiny Qwen2-VL
    lora: dict | str | None = None  # peft.LoraConfig kwargs (fresh adapter) or a saved adapter's path
    device: str = "auto"  # "auto": CUDA if available, else CPU
    dtype: str | None = None  # None: bf16 on CUDA, fp32 on CPU
    convention: str | None = None  # coordinate convention; None = from the model family
    # --- data -------------------------------------------------------------------------------------------------
    task: str = "counting"  # grounding | counting | ocr | detection | mixed
    dataset: dict = field(default_factory=lambda: {"benchmark": "shapesworld", "path": None, "split": "train",
                                                   "limit": 1000})
    eval_dataset: dict | None = None  # default: ShapesWorld held-out records, or dataset with split "val"
    eval_limit: int = 64  # held-out records per task for periodic evaluation
    # --- GRPO (the paper's values) -----------------------------------------------------------------------------
    num_generations: int = 8  # G, completions per record
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.04  # KL coefficient (k3 estimator); 0 drops the reference model
    learning_rate: float = 1e-6
    epsilon: float = 0.2  # clip range, lower (and upper unless epsilon_high)
    epsilon_high: float | None = None
    loss_type: str = "grpo"  # grpo | bnpo | dr_grpo | dapo (TRL's default is dapo; the paper's is grpo)
    scale_rewards: str = "group"  # group | batch | none
    num_iterations: int = 1  # μ, updates per generated batch
    max_completion_length: int = 1024
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    max_minutes: float | None = None  # wall-clock budget for the training steps (GRPOLoop); None = no limit
    per_device_batch: int = 1  # records (prompts) per micro-batch; each brings G completions
    grad_accum: int = 1  # micro-batches per optimizer step
    preset: str = "paper"  # reward preset: paper | pr1_released
    reward_weights: dict | None = None  # e.g. {"format": 1.0, "answer": 1.0}
    format_mode: str = "additive"  # additive | gate
    generation_kwargs: dict | None = None  # extra generate() arguments, e.g. {"repetition_penalty": 1.05}
    # --- optimisation --------------------------------------------------------------------------------------------
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant"  # constant | linear | cosine
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None
    # --- bookkeeping ---------------------------------------------------------------------------------------------
    seed: int = 0
    output_dir: str = "runs/grpo"
    eval_every: int = 0  # steps; 0 = never during training
    eval_at_start: bool = True
    eval_batch_size: int = 64
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    save_final: bool = True
    tensorboard: bool = True
    progress: bool = True
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    # --- TRL engine only -----------------------------------------------------------------------------------------
    use_vllm: bool = False  # generation with vLLM when it is installed (colocate mode)
    vllm_mode: str = "colocate"
    gradient_checkpointing: bool = False
    log_completions: bool = True
    report_to: str = "tensorboard"  # "none", "tensorboard", "wandb", ...
    logging_steps: int = 1
    trl: dict = field(default_factory=dict)  # any further trl.GRPOConfig fields, passed through

    def __post_init__(self):
        # YAML 1.1 reads "1e-6" (no dot) as a string; numbers given as text are converted here.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and str(f.type).startswith(("float", "int")):
                try:
                    setattr(self, f.name, int(value) if str(f.type).startswith("int") else float(value))
                except ValueError as err:
                    raise ValueError(f"config field {f.name} expects a number, got {value!r}") from err
        if self.loss_type not in ("grpo", "bnpo", "dr_grpo", "dapo"):
            raise ValueError(f"loss_type must be grpo, bnpo, dr_grpo or dapo, got {self.loss_type!r}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards must be group, batch or none, got {self.scale_rewards!r}")
        if self.num_generations < 2:
            raise ValueError(f"GRPO needs num_generations >= 2 to compare answers, got {self.num_generations}")
        if isinstance(self.dataset, str):
            self.dataset = {"benchmark": self.dataset}

    # --- constructors ---------------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, task: str = "counting", **overrides) -> "TrainConfig":
        """The tested recipe for the shipped tiny model on ShapesWorld (CPU): the paper's G = 8, temperature 1.0,
        β = 0.04, ε = 0.2 and loss, with a learning rate for a model of a few million parameters (1e-4, counting 5e-5;
        3e-4 and above made the count prior swing from step to step), 8 records × 8 completions per step, answers capped
        per task. Measured in bench/learning.py."""
        base = dict(
            task=task, learning_rate=TINY_LR.get(task, 1e-4), beta=0.04, num_generations=8, per_device_batch=8, grad_accum=1,
            max_completion_length=TASK_MAX_TOKENS.get(task, 128), max_steps=60, eval_every=0, checkpoint_every=20,
            dataset={"benchmark": "shapesworld", "path": None, "split": "train", "limit": 2000}, eval_limit=64,
            output_dir=f"runs/tiny-{task}",
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; expected some of {sorted(names)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "TrainConfig":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {str(path)!r}; expected a YAML recipe such as configs/*.yaml")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of config fields, got {type(data).__name__}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------------------------------


def _tasks_of(cfg: TrainConfig) -> list[str]:
    from workbench.data.synthetic import TASK_NAMES

    if cfg.task in ("mixed", "all"):
        return list(TASK_NAMES)
    return [t.strip() for t in cfg.task.split(",")]


def _shapesworld(tasks: list[str], n: int, seed: int, options: dict) -> list[dict]:
    from workbench.data import synthetic

    per = [synthetic.generate(t, -(-n // len(tasks)), seed=seed, **options) for t in tasks]
    return [per[i % len(tasks)][i // len(tasks)] for i in range(n)]


def benchmark_dataset(spec: dict, seed: int = 0):
    """A public benchmark named by a ``dataset`` spec ({benchmark, path, split, limit, ...}) as the
    ``datasets.Dataset`` of canonical rows that ``workbench.data.loaders`` reads (images stay lazily decoded)."""
    from workbench.data import loaders  # reads the public formats from local files or hub ids

    options = {k: v for k, v in spec.items() if k not in ("benchmark", "path", "split", "limit")}
    return loaders.load(spec["benchmark"], spec.get("path"), split=spec.get("split", "train"),
                        limit=spec.get("limit"), seed=seed, **options)


def _benchmark(spec: dict, tasks: list[str], seed: int) -> list[dict]:
    ds = benchmark_dataset(spec, seed)
    if isinstance(ds, list):
        return ds
    from workbench.data.synthetic import from_dataset

    return from_dataset(ds)


def is_shapesworld(spec: dict | None) -> bool:
    return str((spec or {}).get("benchmark", "shapesworld")).lower() == "shapesworld"


def load_records(cfg: TrainConfig) -> tuple[list[dict], list[dict]]:
    """Training and held-out records named by ``cfg.dataset`` / ``cfg.eval_dataset``.

    ShapesWorld (``benchmark: shapesworld``, extra keys are ShapesWorld options such as ``image_size``): training
    scenes from seed ``GRPO_TRAIN_SEED + cfg.seed`` and ``eval_limit`` held-out scenes per task from the model card's
    evaluation seed. Other benchmarks go through ``workbench.data.loaders``.
    """
    tasks = _tasks_of(cfg)
    spec = dict(cfg.dataset)
    bench = str(spec.get("benchmark", "shapesworld")).lower()
    if bench == "shapesworld":
        opts = {k: v for k, v in spec.items() if k not in ("benchmark", "path", "split", "limit")}
        train = _shapesworld(tasks, int(spec.get("limit") or 1000), GRPO_TRAIN_SEED + cfg.seed, opts)
        ev_spec = cfg.eval_dataset or {}
        ev_opts = {k: v for k, v in ev_spec.items() if k not in ("benchmark", "path", "split", "limit")} or opts
        n_eval = int(ev_spec.get("limit") or cfg.eval_limit)
        from workbench.data import synthetic

        evals = [r for t in tasks for r in synthetic.generate(t, n_eval, seed=EVAL_SEED, **ev_opts)]
        return train, evals
    train = _benchmark(spec, tasks, cfg.seed)
    ev_spec = cfg.eval_dataset or {**spec, "split": "val", "limit": cfg.eval_limit}
    ev_spec = {**ev_spec, "limit": min(ev_spec.get("limit") or cfg.eval_limit, cfg.eval_limit)}
    try:
        evals = _benchmark(ev_spec, tasks, cfg.seed) if cfg.eval_limit else []
    except (FileNotFoundError, ValueError):
        evals = []
    return train, evals


def config_summary(cfg: TrainConfig) -> dict[str, Any]:
    """The fields that define the algorithm, for printing next to results."""
    keys = ("model", "task", "num_generations", "temperature", "beta", "learning_rate", "epsilon", "loss_type",
            "scale_rewards", "num_iterations", "max_completion_length", "per_device_batch", "grad_accum", "preset")
    return {k: getattr(cfg, k) for k in keys}
