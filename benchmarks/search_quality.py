#!/usr/bin/env python
"""Search strategies side by side at equal budgets, and how often a keep is a false improvement.

    python benchmarks/search_quality.py [--tasks organism,smollm2] [--strategies local,random,tpe]
                                        [--seeds 20] [--budgets 10,30,100] [--real-seeds 10]
                                        [--real-budgets 8,24] [--rules mean,paired] [--jobs 2] [--json PATH]

For every strategy, keep rule and seed, one search of the largest budget (population 1 on
the organism, so the best after n candidates is exactly what a search of budget n finds;
population 4 on SmolLM2, whose budgets are whole rounds).  Reported per budget, over seeds:

* the held-out score of the best candidate found (median and interquartile range);
* the candidates needed to reach 90% of the way from the baseline to the best held-out score
  any run of that task reached (median and IQR over the runs that reached it, and how many did);
* for each keep rule: how many keeps a run makes, and the share of keeps whose held-out score is
  *below* the previous best's (a false improvement: the search prompts said better, fresh
  prompts say worse).

Tasks: ``organism`` (the demo's space, task accuracy, 16 search prompts, 200 held-out);
``smollm2`` (the concept demo, reduced to fit a CPU: 12 search prompts, 20 held-out, 32 new
tokens, steered_concept).  Writes benchmarks/results/search_quality_<tasks>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from _common import machine, table, write

_MODELS: dict = {}


def _task(name):
    """(model, tokenizer, setup, population) of a task, loaded once per process."""
    if name not in _MODELS:
        import torch

        from autosteer import load_model
        from autosteer.demo import _concept_setup, _organism_setup

        model, tok = load_model(name, progress=False)
        if name == "organism":
            setup, population = _organism_setup("task_accuracy", 16, 200, None, None), 1
            torch.set_num_threads(1)
        else:
            from autosteer.steering.steer import Steer

            setup = _concept_setup(Steer(model, tok).num_layers, tok, 12, 20, None, None)
            setup.runner.update(max_new_tokens=32)
            setup.batch_size = 12
            population = 4
        _MODELS[name] = (model, tok, setup, population)
    return _MODELS[name]


def run_one(job):
    """One search; returns its records as plain tuples (iteration, status, score, holdout)."""
    task, strategy, rule, seed, budget = job
    from autosteer import AutoSteerRunner

    model, tok, setup, population = _task(task)
    t = time.perf_counter()
    runner = AutoSteerRunner(model, tok, setup.prompts, log_path=None, seed=seed, strategy=strategy, keep_rule=rule,
                             population=population, **setup.runner_kwargs)
    res = runner.run(budget, verbose=False, batch_size=setup.batch_size, threads=1 if task == "organism" else None)
    rows = [(r.iteration, r.status, r.score, r.holdout_score) for r in res["history"]]
    return {"task": task, "strategy": strategy, "rule": rule, "seed": seed, "rows": rows,
            "seconds": time.perf_counter() - t}


def best_holdout_at(rows, n):
    """Held-out score of the best candidate after the first n candidates (the baseline's if none kept)."""
    best = rows[0][3]
    for it, status, _, held in rows[1:n + 1]:
        if status == "keep" and held is not None:
            best = held
    return best


def reached_at(rows, target, n):
    """The first iteration (<= n) whose current best reaches the held-out target, or None."""
    best = rows[0][3]
    for it, status, _, held in rows[1:n + 1]:
        if status == "keep" and held is not None:
            best = held
        if best >= target:
            return it
    return None


def false_keeps(rows):
    """(keeps, keeps whose held-out score is below the previous best's)."""
    prev = rows[0][3]
    keeps = worse = 0
    for _, status, _, held in rows[1:]:
        if status == "keep" and held is not None:
            keeps += 1
            worse += held < prev - 1e-12
            prev = held
    return keeps, worse


def quartiles(xs):
    xs = sorted(xs)
    if not xs:
        return None, None, None
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def fmt(q, digits=3):
    lo, med, hi = q
    if med is None:
        return "-"
    return f"{med:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def summarise(runs, task, budgets):
    task_runs = [r for r in runs if r["task"] == task]
    baseline = task_runs[0]["rows"][0][3]
    best_seen = max(best_holdout_at(r["rows"], budgets[-1]) for r in task_runs)
    target = baseline + 0.9 * (best_seen - baseline)
    out = {"baseline_holdout": baseline, "best_seen": best_seen, "target_90": target, "cells": []}
    for strategy in dict.fromkeys(r["strategy"] for r in task_runs):
        for rule in dict.fromkeys(r["rule"] for r in task_runs):
            rs = [r for r in task_runs if r["strategy"] == strategy and r["rule"] == rule]
            if not rs:
                continue
            for n in budgets:
                best = [best_holdout_at(r["rows"], n) for r in rs]
                hits = [reached_at(r["rows"], target, n) for r in rs]
                reached = [h for h in hits if h is not None]
                fk = [false_keeps([row for row in r["rows"] if row[0] <= n]) for r in rs]
                keeps = sum(k for k, _ in fk)
                worse = sum(w for _, w in fk)
                out["cells"].append({
                    "strategy": strategy, "rule": rule, "budget": n, "seeds": len(rs),
                    "best_holdout": quartiles(best), "reached_90": len(reached),
                    "candidates_to_90": quartiles(reached), "keeps_per_run": keeps / len(rs),
                    "false_keep_share": worse / keeps if keeps else None,
                    "seconds_median": statistics.median(r["seconds"] for r in rs),
                })
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="organism,smollm2")
    p.add_argument("--strategies", default="local,random,tpe")
    p.add_argument("--rules", default="mean,paired")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--budgets", default="10,30,100")
    p.add_argument("--real-seeds", type=int, default=10)
    p.add_argument("--real-budgets", default="8,24")
    p.add_argument("--jobs", type=int, default=2, help="parallel processes for the organism (1 thread each)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    strategies = a.strategies.split(",")
    rules = a.rules.split(",")
    out = {"machine": machine(), "tasks": {}, "settings": vars(a)}
    for task in a.tasks.split(","):
        budgets = [int(b) for b in (a.budgets if task == "organism" else a.real_budgets).split(",")]
        seeds = a.seeds if task == "organism" else a.real_seeds
        jobs = [(task, s, rule, seed, budgets[-1]) for seed in range(seeds) for rule in rules for s in strategies]
        t = time.perf_counter()
        if task == "organism" and a.jobs > 1:
            with ProcessPoolExecutor(a.jobs) as pool:
                runs = list(pool.map(run_one, jobs))
        else:
            runs = [run_one(j) for j in jobs]
        summary = summarise(runs, task, budgets)
        summary["wall_s"] = time.perf_counter() - t
        summary["runs"] = runs
        out["tasks"][task] = summary
        print(f"\n{task}: baseline held-out {summary['baseline_holdout']:.3f}, best any run reached "
              f"{summary['best_seen']:.3f}, 90% target {summary['target_90']:.3f}; {seeds} seeds, "
              f"{summary['wall_s']:.0f} s")
        rows = []
        for c in summary["cells"]:
            rows.append((c["strategy"], c["rule"], c["budget"], fmt(c["best_holdout"]),
                         f"{fmt(c['candidates_to_90'], 0)} ({c['reached_90']}/{c['seeds']})",
                         f"{c['keeps_per_run']:.1f}",
                         "-" if c["false_keep_share"] is None else f"{c['false_keep_share']:.0%}"))
        print(table(rows, ("strategy", "keep rule", "budget", "best held-out: median [IQR]",
                           "candidates to 90% (reached)", "keeps/run", "keeps worse on held-out")))
    print("wrote", write("search_quality_" + "_".join(a.tasks.split(",")), out, a.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
