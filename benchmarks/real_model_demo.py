#!/usr/bin/env python
"""The real-model demo's targets, measured: `autosteer demo --model smollm2` end to end.

    python benchmarks/real_model_demo.py [--out DIR] [--json PATH] [--iterations N] [--population K]

Runs the demo (SmolLM2-135M-Instruct, the weddings concept, steered_concept on 24
search prompts, 40 held-out prompts), then scores, on the held-out prompts, the
unsteered model and the configuration it found: concept rate and fluency (NLL of
the continuations under the unsteered model).  Targets: concept rate <= 10%
unsteered, >= 60% steered, fluency at most +1 nat/token, the whole demo within
10 minutes on a 2-core machine.  Also the llm_steer recipe (the mean hidden
state of the single word "wedding", all positions) on a grid of layers and
coefficients, for the README's table.  Writes benchmarks/results/real_model_demo.json.
"""

from __future__ import annotations

import argparse
import io
import time

from _common import machine, table, write


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/autosteer-real-demo")
    p.add_argument("--json", default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--population", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-recipe", action="store_true", help="skip the single-word llm_steer recipe grid")
    a = p.parse_args(argv)

    from autosteer import Steer, SteeredConcept, SteerEvaluator, load_model
    from autosteer.demo import CONCEPT_DEMO, load_concept_demo, run_demo

    t0 = time.perf_counter()
    log = io.StringIO()
    report = run_demo(model="smollm2", out=a.out, overwrite=True, seed=a.seed, iterations=a.iterations, population=a.population,
                      verbose=False, stream=log)
    demo_s = time.perf_counter() - t0
    print(log.getvalue())
    model, tok = load_model("smollm2", progress=False)
    concept, pattern, _, held = load_concept_demo()
    ev = SteerEvaluator(model, tok, SteeredConcept(pattern=pattern), chat=True,
                        max_new_tokens=CONCEPT_DEMO["max_new_tokens"], batch_size=20)
    base = ev.evaluate_result(held)
    best = report["best_candidate"]
    steer = Steer(model, tok)
    found = ev.evaluate_candidates(steer, [best], held)[0] if best is not None else base
    rows = [("unsteered", f"{100 * base.details['concept_rate']:.0f}%", f"{base.details['fluency']:.3f}", "+0.00"),
            (f"demo's best: {best.describe() if best else 'none'}", f"{100 * found.details['concept_rate']:.0f}%",
             f"{found.details['fluency']:.3f}", f"{found.details['fluency'] - base.details['fluency']:+.2f}")]
    recipe = []
    if not a.no_recipe:
        for layer in (4, 12, 20, 28):
            for coeff in (0.5, 1.0, 2.0):
                with steer.applied(_OneText(layer, coeff, "wedding")):
                    r = ev.evaluate_result(held)
                recipe.append({"layer": layer, "coeff": coeff, "concept_rate": r.details["concept_rate"],
                               "fluency": r.details["fluency"]})
        top = max(recipe, key=lambda r: (r["concept_rate"], -r["fluency"]))
        rows.append((f'llm_steer recipe, text "wedding" (best of {len(recipe)}: L{top["layer"]} c{top["coeff"]})',
                     f"{100 * top['concept_rate']:.0f}%", f"{top['fluency']:.3f}",
                     f"{top['fluency'] - base.details['fluency']:+.2f}"))
    print(table(rows, ("held-out, 40 prompts", "concept rate", "fluency (nat/token)", "vs unsteered")))
    print(f"demo wall time {demo_s:.0f} s (target: 10 minutes)")
    out = {
        "machine": machine(),
        "demo_s": demo_s,
        "demo_output": log.getvalue().strip("\n"),
        "iterations": report["results"]["iterations"],
        "population": a.population or CONCEPT_DEMO["population"],
        "seed": a.seed,
        "best_candidate": None if best is None else best.to_dict(full=True),
        "best": None if best is None else best.describe(),
        "heldout_unsteered": {"concept_rate": base.details["concept_rate"], "fluency": base.details["fluency"]},
        "heldout_best": {"concept_rate": found.details["concept_rate"], "fluency": found.details["fluency"]},
        "targets_met": {
            "unsteered_rate_at_most_10pct": base.details["concept_rate"] <= 0.10,
            "steered_rate_at_least_60pct": found.details["concept_rate"] >= 0.60,
            "fluency_within_1_nat": found.details["fluency"] - base.details["fluency"] <= 1.0,
            "demo_within_10_min": demo_s <= 600,
        },
        "llm_steer_recipe": recipe,
    }
    print("wrote", write("real_model_demo", out, a.json))


class _OneText:
    """A single text vector (llm_steer's recipe) for Steer.applied."""

    def __init__(self, layer, coeff, text):
        self.layer, self.coeff, self.text = layer, coeff, text

    def apply(self, steer, group=None):
        steer.add(self.layer, self.coeff, text=self.text)


if __name__ == "__main__":
    main()
