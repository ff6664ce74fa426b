#!/usr/bin/env python
"""Memory: the resident set size over a 1,000-trial search stays flat after the first trials.

    python benchmarks/memory.py [--trials 1000] [--json PATH]

A search on the organism (the demo's space, task accuracy on 16 prompts) whose metric
also records the process's current RSS (from /proc/self/statm) at every trial.  Reports
the RSS after the first 50 trials and at the end, and the growth per trial over trials
50..N (a least-squares slope).  Writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from _common import machine, write


def rss_kib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from autosteer import AutoSteerRunner, SteerEvaluator, SteerSearchSpace, load_model
    from autosteer.demo import DEMO_SPACE
    from autosteer.organism import world

    model, tok = load_model("organism", progress=False)
    prompts, expected = world.search_prompts(16)
    inner = SteerEvaluator(model, tok, "task_accuracy", max_new_tokens=4, batch_size=16)
    samples = []

    def metric(m, t, ps):
        value = inner.evaluate(ps, expected)
        samples.append(rss_kib())
        return value

    space = SteerSearchSpace(**{**DEMO_SPACE, "coeff_range": (0.05, 0.6), "layer_range": (0, 7),
                                "schedules": ("none", "decay", "cosine", "warmup")})
    runner = AutoSteerRunner(model, tok, prompts, metric=metric, search_space=space, log_path="/tmp/autosteer-memory.tsv",
                             seed=0)
    t = time.perf_counter()
    res = runner.run(a.trials, verbose=False, overwrite=True)
    elapsed = time.perf_counter() - t
    trials = res["iterations"]
    warm = 50
    xs = list(range(warm, len(samples)))
    ys = samples[warm:]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    print(f"{trials} trials in {elapsed:.0f} s: RSS {samples[0] / 1024:.1f} MiB after the baseline, "
          f"{samples[warm] / 1024:.1f} MiB after {warm} trials, {samples[-1] / 1024:.1f} MiB at the end, "
          f"peak {max(samples) / 1024:.1f} MiB; growth {slope:.2f} KiB per trial over trials {warm}..{trials}")
    print("wrote", write("memory", {
        "machine": machine(), "trials": trials, "elapsed_s": elapsed, "rss_kib_baseline": samples[0],
        "rss_kib_after_warmup": samples[warm], "rss_kib_end": samples[-1], "rss_kib_peak": max(samples),
        "growth_kib_per_trial": slope, "rss_kib_every_50": samples[::50],
    }, a.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
