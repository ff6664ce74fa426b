#!/usr/bin/env python
"""Measure the model organism's targets (issue 4) with the library itself.

    python benchmarks/organism_targets.py [--model DIR] [--json OUT.json] [--no-sweep]

On held-out prompts that neither training nor the search ever saw (200, seed 1):
1. baseline greedy task accuracy;
2. the configuration the demo's search finds (AutoSteerRunner, the demo's search
   space, seed 0, 30 iterations, task_accuracy on 16 search prompts) and its
   held-out accuracy;
3. perplexity searches with the same space: (a) the perplexity of the correct
   answer given the question, (b) the perplexity of whole correctly-answered
   texts; held-out perplexity before and after for each;
4. a layer sweep (texts x coefficients per layer): the accuracy gain at the best
   layer over the gain at the worst.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from autosteer import AutoSteerRunner, Steer, SteerEvaluator, SteerSearchSpace  # noqa: E402
from autosteer.demo import DEMO_SPACE  # noqa: E402
from autosteer.organism import world  # noqa: E402


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path is None:
        from autosteer.organism import load_organism

        return load_organism()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def held_out_score(runner, evaluator, candidate, prompts, expected=None):
    if candidate is None:
        return evaluator.evaluate(prompts, expected)
    with runner.steer.applied(candidate):
        return evaluator.evaluate(prompts, expected)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the shipped organism)")
    p.add_argument("--json", default=None)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-holdout", type=int, default=200)
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model, tok = load(a.model)
    space = SteerSearchSpace(**DEMO_SPACE)
    out: dict = {"model": a.model or "shipped organism", "space": space.to_dict()}

    hp, he = world.heldout_prompts(a.n_holdout)
    sp, se = world.search_prompts(16)
    acc = SteerEvaluator(model, tok, "task_accuracy", max_new_tokens=4, batch_size=100)
    runner = AutoSteerRunner(model, tok, sp, metric="task_accuracy", expected_outputs=se, search_space=space,
                             log_path=None, seed=a.seed, max_new_tokens=4)
    res = runner.run(a.iterations, verbose=False, batch_size=16)
    base = held_out_score(runner, acc, None, hp, he)
    best = held_out_score(runner, acc, res["best_candidate"], hp, he)
    out["accuracy"] = {"baseline_heldout": base, "search_best": res["best_score"], "search_baseline": res["baseline_score"],
                       "best_heldout": best, "best": res["best_candidate"] and res["best_candidate"].describe()}
    print(f"held-out accuracy ({len(hp)} prompts): baseline {base:.3f}; demo search best "
          f"{res['best_candidate'] and res['best_candidate'].describe()} -> {best:.3f} "
          f"(search prompts {res['baseline_score']:.4f} -> {res['best_score']:.4f})", flush=True)

    # perplexity: (a) answer given question, (b) whole texts
    answer = SteerEvaluator(model, tok, "perplexity", batch_size=100)
    for name, prompts, expected, hold_p, hold_e in (
        ("answer_given_question", sp, se, hp, he),
        ("whole_text", world.correct_texts(16, seed=world.SEARCH_SEED, pool="search"), None,
         world.correct_texts(a.n_holdout), None),
    ):
        r = AutoSteerRunner(model, tok, prompts, metric="perplexity", expected_outputs=expected, search_space=space,
                            log_path=None, seed=a.seed)
        rr = r.run(a.iterations, verbose=False, batch_size=16)
        b = held_out_score(r, answer, None, hold_p, hold_e)
        s = held_out_score(r, answer, rr["best_candidate"], hold_p, hold_e)
        out[f"perplexity_{name}"] = {"baseline_heldout": b, "best_heldout": s, "change": (s - b) / b,
                                     "best": rr["best_candidate"] and rr["best_candidate"].describe()}
        print(f"held-out perplexity, {name.replace('_', ' ')}: {b:.4f} -> {s:.4f} ({100 * (s - b) / b:+.1f}%) "
              f"with {rr['best_candidate'] and rr['best_candidate'].describe()}", flush=True)

    if not a.no_sweep:
        layers = range(runner.steer.num_layers)
        coeffs = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
        texts = ("logical", "precise", "analytical")
        best_per_layer = []
        with acc.eval_mode():
            for layer in layers:
                top = (0.0, None)
                for text in texts:
                    for c in coeffs:
                        with Steer(model, tok) as s:
                            s.add(layer, c, text)
                            v = acc.evaluate(hp, he)
                        top = max(top, (v, (text, c)), key=lambda x: x[0])
                best_per_layer.append(top)
                print(f"layer {layer}: best held-out accuracy {top[0]:.3f} ({top[1][0]}, coeff {top[1][1]})", flush=True)
        gains = [v - base for v, _ in best_per_layer]
        worst = min(gains)
        ratio = max(gains) / worst if worst > 0 else float("inf")
        out["layer_sweep"] = {"best_per_layer": best_per_layer, "gains": gains, "ratio": ratio}
        print(f"layer gain: best {max(gains):+.3f}, worst {worst:+.3f}, ratio {ratio:.2f}x")
    out["elapsed_s"] = time.perf_counter() - t0
    print(f"({out['elapsed_s']:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} thread(s))")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
