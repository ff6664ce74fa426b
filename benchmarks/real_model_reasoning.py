#!/usr/bin/env python
"""The classic autonomous-steering example (three reasoning prompts), run as written on SmolLM2-135M-Instruct.

    python benchmarks/real_model_reasoning.py [--iterations 30] [--json PATH]

Three reasoning prompts with expected answers, the texts "logical" / "precise" /
"analytical" and the negative texts "confused" / "irrational" / "imprecise", task
accuracy, layers 15-25 (they fit the model's 30), coefficients 0.05-1, seed 42, 30
iterations; the prompts go through the chat template.  Prints what it finds,
whatever it is, and writes benchmarks/results/real_model_reasoning.json.
"""

from __future__ import annotations

import argparse
import io
import time

from _common import machine, write

PROMPTS = [
    "I have 3 apples and buy 5 more. How many apples do I have now? Answer with a number.",
    "Tom is taller than Ann, and Ann is taller than Bob. Who is the shortest of the three?",
    "What number comes next in the sequence 2, 4, 8, 16?",
]
EXPECTED = ["8", "Bob", "32"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from autosteer import AutoSteerRunner, SteerSearchSpace, load_model

    model, tokenizer = load_model("smollm2", progress=False)
    space = SteerSearchSpace(layer_range=(15, 25), coeff_range=(0.05, 1.0),
                             texts=["logical", "precise", "analytical"],
                             negative_texts=["confused", "irrational", "imprecise"])
    t = time.perf_counter()
    runner = AutoSteerRunner(model=model, tokenizer=tokenizer, prompts=PROMPTS, metric="task_accuracy",
                             expected_outputs=EXPECTED, lower_is_better=False, search_space=space,
                             log_path=None, seed=42, chat=True)
    results = runner.run(max_iterations=a.iterations, verbose=False)
    elapsed = time.perf_counter() - t
    print(results)
    base_out = runner.evaluator.generate(PROMPTS)
    best = results["best_candidate"]
    if best is not None:
        with runner.steer.applied(best):
            best_out = runner.evaluator.generate(PROMPTS)
    else:
        best_out = base_out
    buf = io.StringIO()
    for q, e, b, s in zip(PROMPTS, EXPECTED, base_out, best_out):
        print(f"{q}\n  expected {e!r} | unsteered {' '.join(b.split())[:90]!r}\n  steered {' '.join(s.split())[:90]!r}",
              file=buf)
    print(buf.getvalue())
    print(f"{elapsed:.0f} s")
    print("wrote", write("real_model_reasoning", {
        "machine": machine(), "elapsed_s": elapsed, "baseline_score": results["baseline_score"],
        "best_score": results["best_score"], "best_iteration": results["best_iteration"],
        "best": None if best is None else best.describe(), "keeps": results["keeps"],
        "iterations": results["iterations"], "unsteered": base_out, "steered": best_out,
    }, a.json))


if __name__ == "__main__":
    main()
