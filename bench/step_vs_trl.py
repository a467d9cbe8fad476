"""Time of one GRPO update: ``GRPOLoop`` vs ``trl.GRPOTrainer`` on the same tiny model, records, G and lengths.

    python bench/step_vs_trl.py [--steps 6] [--warmup 2] [--records 4] [--G 8] [--length 48] [--threads 2]

Both engines run the paper's recipe (β = 0.04 with a frozen reference, loss ``grpo``, one update per batch) on the
same ShapesWorld counting records. Every completion is forced to exactly ``--length`` tokens
(``min_new_tokens``), so both engines generate, score and back-propagate the same amount of work. One update =
sampling, rewards, reference log-probs, forward, backward and the optimizer step; the median over ``--steps`` timed
steps after ``--warmup`` untimed ones, measured in alternating blocks so both engines see the same background load.
Prints a table with the ratio GRPOLoop / TRL (goal ≤ 1.0).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def _loop_times(policy, cfg, records, n):
    from workbench.trainer import GRPOLoop

    loop = GRPOLoop(cfg, policy=copy.deepcopy(policy), train_records=records, eval_records=[])
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        row = loop.train_step()
        times.append(time.perf_counter() - t0)
    return times, row


def _trl_times(policy, cfg, records, n):
    from transformers import TrainerCallback

    from workbench.trl_bridge import build_trainer

    stamps = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            stamps.append(("begin", time.perf_counter()))

        def on_step_end(self, args, state, control, **kw):
            stamps.append(("end", time.perf_counter()))

    trainer = build_trainer(cfg.replace(max_steps=n, logging_steps=n), policy=copy.deepcopy(policy), train_records=records,
                            eval_records=[], callbacks=[Clock()])
    trainer.train()
    ends = [t for k, t in stamps if k == "end"]
    # step k spans from the end of step k-1 (first: its own begin) to its end: dataloader, generation, update.
    begins = [stamps[0][1]] + ends[:-1]
    logs = [r for r in trainer.state.log_history if "completions/mean_length" in r]
    return [e - b for b, e in zip(begins, ends)], logs[-1] if logs else {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--records", type=int, default=4)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="alternating measurement blocks per engine")
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped tiny model)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from workbench.data import synthetic
    from workbench.models import load_policy
    from workbench.train_config import TrainConfig

    policy = load_policy(args.model, device="cpu")
    records = synthetic.generate("counting", 64, seed=99)
    out = tempfile.mkdtemp(prefix="step_vs_trl-")
    cfg = TrainConfig.tiny(
        "counting", per_device_batch=args.records, num_generations=args.G, max_completion_length=args.length,
        generation_kwargs={"min_new_tokens": args.length}, beta=0.04, loss_type="grpo", learning_rate=1e-5,
        checkpoint_every=0, save_final=False, tensorboard=False, progress=False, report_to="none",
        log_completions=False, output_dir=out, eval_every=0,
    )
    n = args.warmup + args.steps
    loop_t, trl_t = [], []
    for _ in range(args.rounds):
        t, row = _loop_times(policy, cfg, records, n)
        loop_t += t[args.warmup:]
        t, log = _trl_times(policy, cfg, records, n)
        trl_t += t[args.warmup:]
    lm, tm = statistics.median(loop_t), statistics.median(trl_t)
    print(f"one GRPO update, tiny Qwen2-VL on CPU ({torch.get_num_threads()} threads): {args.records} records × "
          f"G={args.G} = {args.records * args.G} completions of {args.length} tokens, β=0.04, loss grpo")
    print(f"{'engine':<22}{'median s/update':>16}{'min':>9}{'max':>9}{'completion len':>16}")
    print(f"{'GRPOLoop':<22}{lm:>16.3f}{min(loop_t):>9.3f}{max(loop_t):>9.3f}"
          f"{row.get('completion_length', float('nan')):>16.1f}")
    print(f"{'trl.GRPOTrainer':<22}{tm:>16.3f}{min(trl_t):>9.3f}{max(trl_t):>9.3f}"
          f"{float(log.get('completions/mean_length', 'nan')):>16.1f}")
    print(f"ratio GRPOLoop / TRL = {lm / tm:.2f}  (goal ≤ 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
