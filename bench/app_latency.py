"""Latency of the rollout debugger's Generate button: click -> G scored and drawn rollouts, as a browser gets them.

Starts app.py's Blocks in this process on a free local port and drives ``/generate`` with ``gradio_client``
(request, sampling, scoring, drawing, PNG encoding, the reward table, and the client downloading all G pictures),
``--runs`` times per task after one warm-up call, each run with its own sampling seed. Prints p50 / p90 of that round
trip, of the server-side parts the app reports (sample, score, draw), and of the group plot, which the page asks for
right after the rollouts are shown (its own round trip). Goal: round-trip p50 <= 1.5 s on the tiny model on 2 CPU
cores.

    python bench/app_latency.py                    # grounding, 20 runs, the shipped tiny model
    python bench/app_latency.py --tasks all --runs 20
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parent.parent
TASKS = ("grounding", "counting", "ocr", "detection")
GOAL_P50_S = 1.5


def _server_timings(summary: str) -> dict[str, float]:
    line = next((ln for ln in summary.splitlines() if ln.startswith("timings:")), "")
    return {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+) s", line)}


def measure(client, task: str, runs: int, num_generations: int, max_new_tokens: int) -> dict[str, list[float]]:
    _, gt_json, prompt, _ = client.predict(task, "example", f"{task}-0", 0, None, api_name="/load_input")
    out: dict[str, list[float]] = {"round trip": []}
    for i in range(runs + 1):  # the first call warms caches and is not counted
        t0 = time.perf_counter()
        gallery, table, _, summary, *_ = client.predict(
            task, "example", f"{task}-0", 0, None, gt_json, prompt, num_generations, 1.0, 1.0, max_new_tokens,
            1000 + i, "paper", 1.0, 1.0, "additive", "group", api_name="/generate")
        elapsed = time.perf_counter() - t0
        assert len(gallery) == num_generations and len(table["data"]) == num_generations
        t1 = time.perf_counter()
        client.predict(api_name="/group_plot")  # the browser asks for the group's plot right after
        plot_s = time.perf_counter() - t1
        if i == 0:
            continue
        out["round trip"].append(elapsed)
        out["plot"] = out.get("plot", []) + [plot_s]
        for name, value in _server_timings(summary).items():
            out.setdefault(name, []).append(value)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint id or path (default: the shipped tiny model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tasks", default="grounding", help="comma-separated tasks, or 'all'")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    tasks = TASKS if args.tasks == "all" else tuple(t.strip() for t in args.tasks.split(","))

    import torch
    from gradio_client import Client

    sys.path.insert(0, str(ROOT))  # app.py lives at the top level
    import app

    demo, url, bench = app.serve(args.model, device=args.device)
    try:
        client = Client(url, verbose=False)
        results = {t: measure(client, t, args.runs, args.num_generations, args.max_new_tokens) for t in tasks}
    finally:
        demo.close()

    info = bench.info()
    print(f"\nGenerate -> {args.num_generations} scored + drawn rollouts, {args.runs} runs per task "
          f"(max_new_tokens {args.max_new_tokens}); model {info['model']} on {info['device']}, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    parts = ["round trip", "sample", "score", "draw", "plot"]
    header = f"{'task':<10} " + " ".join(f"{p + ' p50':>15} {p + ' p90':>15}" for p in parts)
    print(header)
    print("-" * len(header))
    ok = True
    for task, res in results.items():
        cells = []
        for p in parts:
            vals = np.asarray(res.get(p, [np.nan]))
            cells.append(f"{np.percentile(vals, 50):>13.3f} s {np.percentile(vals, 90):>13.3f} s")
        print(f"{task:<10} " + " ".join(cells))
        ok &= float(np.percentile(res["round trip"], 50)) <= GOAL_P50_S
    print(f"\ngoal: round-trip p50 <= {GOAL_P50_S} s -> {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
