#!/usr/bin/env python
"""One round of the concept search's scoring on SmolLM2, with and without a shared prefix cache.

    python benchmarks/shared_prefix_scoring.py [--repeats 3] [--candidates 8] [--prompts 8]
                                               [--max-new-tokens 40] [--json PATH]

The answer objective (``steered_answer``) scores every answer under the unsteered model three
times: given its own request, and given two other requests.  Each prompt is therefore the
prefix of 3 x K rows in a round of K candidates.  ``SteerEvaluator.unsteered_nll`` runs each
distinct prefix once and the rows' own tokens on a copy of its key/value cache; this
benchmark times one whole round (generation + scoring) both ways, interleaved, on the same
candidates (the weddings demo concept, a seeded draw from the calibrated space), and checks
that both ways give the same scores.  "off" forces the full passes (``_prefix_ok = False``).
"""

from __future__ import annotations

import argparse
import random
import sys

from _common import ROOT, interleaved, machine, median, table, write


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from autosteer import SteerEvaluator, load_model
    from autosteer.demo import load_concept_demo
    from autosteer.search.calibrate import concept_space
    from autosteer.search.metrics import SteeredAnswer
    from autosteer.search.strategies._sampling import random_candidate
    from autosteer.steering.steer import Steer

    model, tok = load_model("smollm2", progress=False)
    concept, pattern, search, _held = load_concept_demo()
    space, _cal = concept_space(model, tok, concept)
    rng = random.Random(0)
    cands = [random_candidate(rng, space) for _ in range(args.candidates)]
    prompts = search[: args.prompts]
    steer = Steer(model, tok)

    def evaluator(shared):
        ev = SteerEvaluator(model, tok, SteeredAnswer(pattern=pattern), chat=True,
                            max_new_tokens=args.max_new_tokens, batch_size=len(prompts))
        if not shared:
            ev._prefix_ok = False
        ev.evaluate_candidates(steer, cands[:1], prompts)  # the unsteered references, computed once per evaluator
        return ev

    evs = {"shared prefix": evaluator(True), "full passes": evaluator(False)}
    results = {}

    def round_of(name):
        def run():
            results[name] = evs[name].evaluate_candidates(steer, cands, prompts)
        return run

    times = interleaved({name: round_of(name) for name in evs}, args.repeats, warmup=0)
    on, off = results["shared prefix"], results["full passes"]
    diff = max(abs(a.details[k] - b.details[k]) for a, b in zip(on, off) for k in ("fluency", "relevance"))
    same = all(a.per_prompt == b.per_prompt or max(abs(x - y) for x, y in zip(a.per_prompt, b.per_prompt)) < 1e-6
               for a, b in zip(on, off))
    med = {name: median(ts) for name, ts in times.items()}
    ratio = med["full passes"] / med["shared prefix"]
    print(table([(name, f"{med[name]:.1f}", " ".join(f"{t:.1f}" for t in times[name])) for name in evs],
                ("scoring", "round s (median)", "runs")))
    print(f"shared prefix: {ratio:.2f}x faster per round ({args.candidates} candidates x {len(prompts)} prompts, "
          f"{args.max_new_tokens} tokens, medians of {args.repeats} interleaved runs); prefix sharing used: "
          f"{evs['shared prefix']._prefix_ok}; largest difference in fluency/relevance {diff:.2e} nat/token; "
          f"per-prompt scores {'the same' if same else 'DIFFERENT'}")
    write("shared_prefix_scoring", {
        "machine": machine(), "model": "SmolLM2-135M-Instruct", "candidates": args.candidates,
        "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
        "round_s": times, "median_s": med, "ratio": ratio, "max_abs_diff": diff, "same_scores": same,
        "prefix_used": bool(evs["shared prefix"]._prefix_ok)}, args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
