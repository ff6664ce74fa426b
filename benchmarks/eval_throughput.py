#!/usr/bin/env python
"""Evaluation throughput: candidates per minute, AutoSteer's evaluator vs a naive loop, same scores.

    python benchmarks/eval_throughput.py [--model organism] [--candidates 24] [--prompts 16] [--json PATH]

The naive loop is what a hand-written search does: for each candidate a fresh
``Steer`` (so every ``add`` captures its direction again), then one prompt at a
time through ``generate`` with no batching.  AutoSteer: one ``Steer`` whose
directions are cached, the candidates evaluated ``--population`` at a time in one
batched pass, rows stopping once their answer has appeared.  Both score the same
candidates (drawn by the default strategy from the demo's space) with task accuracy
on the organism's search prompts, and must give the same scores.  Target: >= 5x on
the CPU with 16 prompts.  Writes benchmarks/results/eval_throughput.json.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import machine, write


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="organism")
    p.add_argument("--candidates", type=int, default=24)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    import torch

    from autosteer import Steer, SteerEvaluator, SteerSearchSpace, load_model
    from autosteer.demo import DEMO_SPACE
    from autosteer.organism import world
    from autosteer.search._threads import auto_threads
    from autosteer.search.metrics import normalize_answer
    from autosteer.search.strategies import make_strategy

    model, tok = load_model(a.model, progress=False)
    torch.set_num_threads(auto_threads(model))
    prompts, expected = world.search_prompts(a.prompts)
    space = SteerSearchSpace(**DEMO_SPACE).resolve(model.config.num_hidden_layers)
    cands = make_strategy("random", space, seed=0).propose_round([], a.candidates)
    max_new = 4

    def naive():
        scores = []
        for cand in cands:
            steer = Steer(model, tok)  # a fresh instance: every add captures its direction again
            for v in cand:
                from autosteer.search.candidate import schedule_object

                steer.add(v.layer_idx, v.coeff, text=v.text, coeff_schedule=schedule_object(v.schedule))
            hits = 0
            for prompt, want in zip(prompts, expected):
                enc = tok(prompt, return_tensors="pt")
                with torch.inference_mode():
                    out = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
                text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                hits += normalize_answer(want) in normalize_answer(text)
            steer.reset_all()
            scores.append(hits / len(prompts))
        return scores

    ev = SteerEvaluator(model, tok, "task_accuracy", max_new_tokens=max_new, batch_size=a.prompts, early_stop=True)
    steer = Steer(model, tok)

    def autosteer():
        scores = []
        for i in range(0, len(cands), a.population):
            scores.extend(r.value for r in ev.evaluate_candidates(steer, cands[i:i + a.population], prompts, expected))
        return scores

    times = {"naive": [], "autosteer": []}
    got = {}
    for _ in range(a.repeats):  # interleaved
        for name, fn in (("naive", naive), ("autosteer", autosteer)):
            t = time.perf_counter()
            got[name] = fn()
            times[name].append(time.perf_counter() - t)
    same = got["naive"] == got["autosteer"]
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    per_min = {k: 60 * len(cands) / v for k, v in med.items()}
    ratio = per_min["autosteer"] / per_min["naive"]
    print(f"{len(cands)} candidates x {len(prompts)} prompts, {a.repeats} interleaved runs, medians "
          f"({torch.get_num_threads()} thread(s)):")
    print(f"  naive loop: {per_min['naive']:.0f} candidates/min | AutoSteer (population {a.population}): "
          f"{per_min['autosteer']:.0f} candidates/min | ratio {ratio:.1f}x | same scores: {same}")
    print("wrote", write("eval_throughput", {
        "machine": machine(), "model": a.model, "candidates": len(cands), "prompts": len(prompts),
        "population": a.population, "repeats": a.repeats, "median_s": med, "candidates_per_min": per_min,
        "ratio": ratio, "same_scores": same, "scores": got["autosteer"],
    }, a.json))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
