#!/usr/bin/env python
"""Search wall time to a target: sequential vs population 8, the same budget of candidates.

    python benchmarks/search_walltime.py [--models organism,smollm2] [--budget N] [--json PATH]

The demo's search on each model (the organism: 32 candidates of the demo's space, task
accuracy, 200 held-out prompts; SmolLM2: 40 candidates of the concept demo, steered_concept,
40 held-out prompts), once with population 1 and once with population 8: wall seconds, the
best held-out score reached, and when it was first reached.  Writes
benchmarks/results/search_walltime.json.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

from _common import machine, table, write


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="organism,smollm2")
    p.add_argument("--budget", type=int, default=None, help="candidates per search (default: 32 / 40)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from autosteer.demo import run_demo

    out = {"machine": machine(), "runs": []}
    rows = []
    for name in a.models.split(","):
        budget = a.budget or (32 if name == "organism" else 40)
        for population in (1, 8):
            t = time.perf_counter()
            rep = run_demo(model=name, iterations=budget, population=population, out=f"/tmp/autosteer-walltime-{name}-{population}", overwrite=True,
                           verbose=False, stream=io.StringIO())
            wall = time.perf_counter() - t
            res = rep["results"]
            keeps = [r for r in res["history"] if r.status == "keep"]
            best_held = rep["best_holdout"]
            first = next((r for r in keeps if r.holdout_score == best_held), None)
            run = {"model": name, "population": population, "candidates": res["iterations"], "wall_s": wall,
                   "search_s": res["elapsed_s"], "best_score": res["best_score"], "best_holdout": best_held,
                   "baseline_holdout": rep["baseline_holdout"],
                   "best_reached_at_s": None if first is None else first.elapsed_s,
                   "best": None if res["best_candidate"] is None else res["best_candidate"].describe()}
            out["runs"].append(run)
            rows.append((name, population, run["candidates"], f"{run['search_s']:.0f}",
                         f"{run['baseline_holdout']:.3f} -> {best_held:.3f}",
                         "-" if first is None else f"{first.elapsed_s:.0f}"))
    print(table(rows, ("model", "population", "candidates", "search (s)", "held-out", "best reached at (s)")))
    print("wrote", write("search_walltime", out, a.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
