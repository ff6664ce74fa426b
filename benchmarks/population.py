#!/usr/bin/env python
"""Population: K candidates x P prompts in one batched pass, K = 1, 2, 4, 8, 16.

    python benchmarks/population.py [--models organism,smollm2] [--ks 1,2,4,8,16] [--repeats 3] [--json PATH]

For each model, the time of one evaluation round of K candidates (interleaved over
K, medians of ``--repeats``) and candidates per minute.  The organism: task accuracy
on 16 search prompts, 4 new tokens.  SmolLM2: the demo's concept search
(``steered_concept``, 16 prompts, 48 tokens, chat template) and the same with
``concept_rate`` (generation only, no fluency scoring pass).  Targets on the CPU:
K = 8 costs at most 3x the time of K = 1 on the organism; on SmolLM2 candidates per
minute at K = 8 are at least 3x those at K = 1.  Writes benchmarks/results/population_<models>.json.
"""

from __future__ import annotations

import argparse
import sys

from _common import interleaved, machine, median, table, write


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="organism,smollm2")
    p.add_argument("--ks", default="1,2,4,8,16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    import torch

    from autosteer import Steer, SteerEvaluator, SteerSearchSpace, load_model
    from autosteer.search._threads import auto_threads
    from autosteer.search.strategies import make_strategy

    ks = [int(k) for k in a.ks.split(",")]
    out = {"machine": machine(), "repeats": a.repeats, "runs": []}
    rows = []
    for name in a.models.split(","):
        model, tok = load_model(name, progress=False)
        torch.set_num_threads(auto_threads(model))
        if name == "organism":
            from autosteer.demo import DEMO_SPACE
            from autosteer.organism import world

            prompts, expected = world.search_prompts(16)
            space = SteerSearchSpace(**DEMO_SPACE)
            setups = {"task_accuracy": dict(metric="task_accuracy", max_new_tokens=4)}
        else:
            from autosteer.demo import CONCEPT_DEMO, load_concept_demo

            concept, pattern, prompts, _ = load_concept_demo()
            prompts, expected = prompts[:16], None
            n = model.config.num_hidden_layers
            space = SteerSearchSpace(layer_range=(int(0.4 * n), n - 1), coeff_range=CONCEPT_DEMO["coeff_range"],
                                     texts=[concept], max_vectors=3, schedules=["none"])
            from autosteer.search.metrics import ConceptRate, SteeredConcept

            common = dict(chat=True, max_new_tokens=CONCEPT_DEMO["max_new_tokens"])
            setups = {"steered_concept": dict(metric=SteeredConcept(pattern=pattern), **common),
                      "concept_rate": dict(metric=ConceptRate(pattern=pattern), **common)}
        space = space.resolve(model.config.num_hidden_layers)
        cands = make_strategy("random", space, seed=0).propose_round([], max(ks))
        steer = Steer(model, tok)
        for label, kw in setups.items():
            metric = kw.pop("metric")
            ev = SteerEvaluator(model, tok, metric, batch_size=len(prompts), early_stop=True, **kw)
            ev.evaluate_candidates(steer, cands[:1], prompts, expected)  # directions and reference, once
            cases = {k: (lambda k=k: ev.evaluate_candidates(steer, cands[:k], prompts, expected)) for k in ks}
            times = interleaved(cases, a.repeats, warmup=0)
            t1 = median(times[ks[0]])
            run = {"model": name, "metric": label, "prompts": len(prompts),
                   "round_s": {str(k): median(v) for k, v in times.items()},
                   "candidates_per_min": {str(k): 60 * k / median(v) for k, v in times.items()},
                   "time_vs_k1": {str(k): median(v) / t1 for k, v in times.items()}}
            run["speedup_vs_k1"] = {str(k): run["candidates_per_min"][str(k)] / run["candidates_per_min"][str(ks[0])]
                                    for k in ks}
            out["runs"].append(run)
            for k in ks:
                rows.append((name, label, k, f"{run['round_s'][str(k)]:.2f}", f"{run['time_vs_k1'][str(k)]:.2f}",
                             f"{run['candidates_per_min'][str(k)]:.1f}", f"{run['speedup_vs_k1'][str(k)]:.2f}"))
    print(table(rows, ("model", "metric", "K", "round (s)", "time vs K=1", "candidates/min", "speedup vs K=1")))
    print("wrote", write("population_" + a.models.replace(",", "_"), out, a.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
