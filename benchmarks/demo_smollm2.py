#!/usr/bin/env python
"""`autosteer demo --model smollm2` as a user runs it today, timed, and its answers judged.

    python benchmarks/demo_smollm2.py [--threads N] [--json PATH]

Runs the demo with its default settings (``run_demo(model="smollm2")``: the calibrated space,
the system prompt as a search dimension, ``steered_answer``, one round of 8 candidates, 8 search
requests, 16 held-out requests, 40-token answers) and records what it printed, its time by its
own clock, the CPU time and peak memory of this process, and the load average when it started
(the default thread count depends on it: ``autosteer/search/_threads.py``).  The model must be
converted already and the calibration is used as remembered when it is (the output's first
line says which); neither is what a demo on a fresh machine pays the first time.

Then, outside the timed part, the demo's choice, prompting alone and the unsteered model answer
the 16 held-out requests again, and each answer is judged as ``benchmarks/search_real.py``
judges a method's choice: the concept pattern, not stuck, and the independent judge
(``benchmarks/_judge.py``, both readings).  "success" = all three.

Targets (issue 18): the demo within 120 s on this 2-core machine with default settings, and
before/after answers that still answer their requests (the full answers are in the JSON and on
docs/search-real.md, for reading).  Writes benchmarks/results/demo_smollm2.json.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tempfile
import time
from types import SimpleNamespace

from _common import machine, table, write

TARGET_S = 120.0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads for the demo (default: the demo's own choice)")
    p.add_argument("--json", default=None)
    for flag in ("--iterations", "--population", "--num-prompts", "--num-holdout"):
        p.add_argument(flag, type=int, default=None, help="a smaller run to try the script (not the target's settings)")
    a = p.parse_args(argv)
    smaller = {k: v for k, v in (("iterations", a.iterations), ("population", a.population),
                                 ("n_prompts", a.num_prompts), ("n_holdout", a.num_holdout)) if v is not None}

    import torch

    from autosteer.demo import CONCEPT_DEMO, run_demo

    load_at_start = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    log = io.StringIO()
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        report = run_demo(model="smollm2", out=out, overwrite=True, verbose=False, stream=log, threads=a.threads,
                          **smaller)
        wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    peak_gb = cpu1.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    text = log.getvalue().strip("\n")
    print(text)

    # --- judged, outside the timed part: the demo's 16 held-out requests -----------------------
    from search_real import Bench

    from autosteer.demo import load_concept_demo

    torch.set_num_threads(2)
    bench = Bench(SimpleNamespace(max_new_tokens=CONCEPT_DEMO["max_new_tokens"]))
    held = load_concept_demo()[3][: a.num_holdout or CONCEPT_DEMO["num_holdout"]]
    best = report["best_candidate"]
    alone = report["prompt_alone"]
    judged = {"unsteered": bench.judge_held("weddings", held, {"candidate": None})}
    if alone is not None:
        judged["prompt alone"] = bench.judge_held("weddings", held, {"candidate": alone.candidate.to_dict(full=True)})
    if best is not None:
        judged["demo's choice"] = bench.judge_held("weddings", held, {"candidate": best.to_dict(full=True)})
    rows = [(k, f"{100 * v['concept_rate']:.0f}%", f"{v['relevance']:.2f}", f"{100 * v['judge_on_request']:.0f}%",
             f"{100 * v['judge_on_request_strict']:.0f}%", f"{v['fluency_excess']:+.2f}", f"{100 * v['stuck']:.0f}%",
             f"{100 * v['judged_success']:.0f}%", f"{100 * v['judged_success_strict']:.0f}%")
            for k, v in judged.items()]
    print(table(rows, (f"{len(held)} held-out requests", "concept", "relevance", "judge on-request", "strict on-request",
                       "fluency", "stuck", "success", "success (strict)")))
    print(f"demo {report['elapsed_s']:.0f} s by its clock ({wall:.0f} s in this process), {cpu_s:.0f} s of CPU, "
          f"{peak_gb:.2f} GB peak; load average {load_at_start:.2f} at the start; target {TARGET_S:.0f} s: "
          + ("not checked (smaller settings)" if smaller else "met" if report["elapsed_s"] <= TARGET_S else "MISSED"))
    res = {
        "machine": machine(),
        "threads_asked": a.threads,
        "smaller_settings": smaller,
        "load_average_at_start": round(load_at_start, 2),
        "demo_s": report["elapsed_s"],
        "wall_s": wall,
        "cpu_s": cpu_s,
        "peak_gb": peak_gb,
        "target_s": TARGET_S,
        "demo_output": text,
        "best": None if best is None else best.describe(),
        "best_candidate": None if best is None else best.to_dict(full=True),
        "held_requests": held,
        "judged": judged,
        "examples": report["examples"],
    }
    print("wrote", write("demo_smollm2", res, a.json))


if __name__ == "__main__":
    main()
