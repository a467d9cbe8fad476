"""Command line for GRPO training: ``python -m workbench.train`` (``make train``).

    python -m workbench.train                                    # the tiny model on ShapesWorld counting, GRPOLoop
    python -m workbench.train --config configs/counting.yaml --engine loop --max-steps 100
    accelerate launch --config_file configs/accelerate/ddp.yaml -m workbench.train --engine trl \\
        --config configs/grounding.yaml

``--engine loop`` runs ``workbench.trainer.GRPOLoop`` (CPU or one GPU); ``--engine trl`` runs TRL's ``GRPOTrainer``
through ``workbench.trl_bridge`` (one device in-process, several under ``accelerate launch``). ``--set key=value``
overrides any config field (YAML syntax for the value). ``--resume`` continues from the newest checkpoint in the
output directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from workbench.train_config import TrainConfig


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workbench.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML recipe (configs/*.yaml); default: the tiny model's recipe")
    p.add_argument("--engine", choices=("loop", "trl"), default="loop")
    p.add_argument("--task", help="task for the default tiny recipe (grounding, counting, ocr, detection, mixed)")
    p.add_argument("--model", help="hub id or local checkpoint (default: the shipped tiny model)")
    p.add_argument("--output-dir")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> TrainConfig:
    import yaml

    overrides = {"model": args.model, "output_dir": args.output_dir, "max_steps": args.max_steps,
                 "seed": args.seed, "threads": args.threads}
    for item in args.set:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    if args.no_progress:
        overrides["progress"] = False
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.config:
        return TrainConfig.from_yaml(args.config, **overrides)
    return TrainConfig.tiny(args.task or "counting", **overrides)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    cfg = build_config(args)
    if args.engine == "loop":
        from workbench.trainer import GRPOLoop

        loop = GRPOLoop(cfg, resume=args.resume)
        history = loop.train()
        last = [r for r in history if "reward_mean" in r]
        summary = {"steps": loop.step, "skipped": len(loop.skipped_steps), "output_dir": str(loop.output_dir),
                   "last_reward_mean": last[-1]["reward_mean"] if last else None}
    else:
        from workbench.trl_bridge import train_trl

        history = train_trl(cfg, resume=args.resume)
        summary = {"log_rows": len(history), "output_dir": cfg.output_dir}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
