"""``autosteer demo``: the autonomous search end to end on the embedded model.

Loads the model organism (or any causal LM with ``--model``), runs
:class:`~autosteer.runner.AutoSteerRunner` on 16 unframed arithmetic prompts of
the organism's world, scores the baseline and each new best on held-out prompts
that neither training nor the search ever saw, and prints baseline -> best,
held-out before/after, the best configuration as code, and before/after
generations. Writes ``steer_log.tsv``, ``progress.png`` and ``best.json`` into
``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "run_demo", "DEMO_SPACE", "LOG_NAME"]

LOG_NAME = "steer_log.tsv"

# The search space of the demo on the embedded model: the concept words of the
# organism's world (README example), the layers where steering acts,
# coefficient magnitudes below the collapse at ~1.
DEMO_SPACE: dict[str, Any] = {
    "layer_range": (0, 3),
    "coeff_range": (0.1, 0.4),
    "texts": ["logical", "precise", "analytical"],
    "negative_texts": ["confused", "irrational", "imprecise"],
    "max_vectors": 2,
    "schedules": ("none", "decay"),
}

#: Before/after generations printed on held-out prompts.
EXAMPLES = 3


def _parse_range(text: str, kind, flag: str):
    try:
        lo, hi = text.split(":")
        lo, hi = kind(lo), kind(hi)
    except ValueError:
        raise ValueError(f"{flag} expects LO:HI, got {text!r}") from None
    if lo < 0 or lo > hi:
        raise ValueError(f"{flag} {text!r}: expected 0 <= LO <= HI")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autosteer demo",
        description="Run the autonomous steering search on the embedded model organism "
                    "(or any Hugging Face causal LM) and report what it found.",
        epilog="example:\n  autosteer demo --out demo_out\n"
               "  autosteer demo --metric perplexity --iterations 20 --out demo_ppl\n"
               "  autosteer demo --model path/to/llama --layers 8:20 --out demo_llama",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--metric", choices=["task_accuracy", "perplexity"], default="task_accuracy",
                   help="what the search optimises (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=30, help="candidates to evaluate after the baseline (default: 30)")
    p.add_argument("--seed", type=int, default=0, help="search seed (default: %(default)s)")
    p.add_argument("--out", default="demo_out", help="output folder, created if missing (default: %(default)s)")
    p.add_argument("--model", default="organism",
                   help="'organism' (default: the embedded model), a model folder, or a Hugging Face hub id")
    p.add_argument("--num-prompts", type=int, default=16, metavar="N",
                   help="number of the world's search prompts (default: %(default)s)")
    p.add_argument("--num-holdout", type=int, default=200, metavar="N",
                   help="number of the world's held-out prompts (default: %(default)s)")
    p.add_argument("--layers", help="layer range A:B (inclusive); default: the demo's space on the organism, "
                                    "the middle layers elsewhere")
    p.add_argument("--coeffs", help="coefficient magnitudes LO:HI")
    p.add_argument("--threads", default=None, help="CPU threads for torch (default: auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (no progress)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _space(model_name: str, layers: str | None, coeffs: str | None):
    from autosteer.space import SteerSearchSpace

    kw = dict(DEMO_SPACE)
    if model_name != "organism":
        kw["layer_range"] = None  # the model's middle layers
    if layers:
        kw["layer_range"] = _parse_range(layers, int, "--layers")
    if coeffs:
        kw["coeff_range"] = _parse_range(coeffs, float, "--coeffs")
    return SteerSearchSpace(**kw)


def _generations(runner, prompts: list[str], candidate) -> list[str]:
    """Greedy continuations of ``prompts``, steered by ``candidate`` (None: unsteered)."""
    if candidate is None:
        return runner.evaluator.generate(prompts)
    with runner.steer.applied(candidate):
        return runner.evaluator.generate(prompts)


def run_demo(metric: str = "task_accuracy", iterations: int = 30, seed: int = 0, out: str | Path = "demo_out",
             model: str = "organism", n_prompts: int = 16, n_holdout: int = 200, layers: str | None = None,
             coeffs: str | None = None, verbose: bool = True, stream=None, threads: int | None = None
             ) -> dict[str, Any]:
    """Run the demo; returns a dict of what it printed (scores, held-out, paths)."""
    from autosteer.models import load_model
    from autosteer.organism import world
    from autosteer.runner import AutoSteerRunner

    stream = stream or sys.stdout
    say = lambda *a: print(*a, file=stream, flush=True)  # noqa: E731
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lm, tokenizer = load_model(model, progress=None if verbose else False)
    space = _space(model, layers, coeffs)

    # both metrics use the questions and their correct answers: task accuracy
    # generates and checks the answer, perplexity scores the answer given the
    # question (the operands are random digits no steering can predict)
    prompts, expected = world.search_prompts(n_prompts)
    hold_prompts, hold_expected = world.heldout_prompts(n_holdout)
    extra = dict(expected_outputs=expected, holdout_prompts=hold_prompts, holdout_expected=hold_expected,
                 batch_size=16)
    if metric == "task_accuracy":
        extra["max_new_tokens"] = 4

    say(f"AutoSteer demo: {type(lm).__name__} ({model}) | metric {metric} | {len(prompts)} search prompts, "
        f"{len(hold_prompts)} held-out prompts never seen by training or search | seed {seed}, "
        f"{iterations} iterations")
    runner = AutoSteerRunner(lm, tokenizer, prompts, metric=metric, search_space=space,
                             log_path=out / LOG_NAME, seed=seed, verbose=verbose, overwrite=True,
                             threads=threads, **extra)
    results = runner.run(max_iterations=iterations)
    say("")
    say(results.summary())
    before, after = results["baseline_holdout"], results["best_holdout"]
    if results["best_candidate"] is None:
        after = before  # nothing beat the baseline: the model is unchanged
    if before is not None and after is None:
        say(f"Held-out {metric}: {before:.4f} -> not measured (the held-out evaluation of the best failed)")
    elif before is not None:
        change = ""
        if metric == "perplexity" and before:
            change = f" ({100 * (after - before) / before:+.1f}%)"
        what = " of the correct answers" if metric == "perplexity" else ""
        say(f"Held-out {metric}{what}: {before:.4f} -> {after:.4f}{change} on {len(hold_prompts)} prompts")
    best = results["best_candidate"]
    say("")
    if best is None:
        say("No configuration beat the baseline.")
        (out / "best.json").unlink(missing_ok=True)  # no stale result from an earlier run
    else:
        say("Best configuration (paste to reproduce):")
        for line in best.to_code().splitlines():
            say("    " + line)
        (out / "best.json").write_text(json.dumps(best.to_dict(), indent=2) + "\n")

    examples = hold_prompts[:EXAMPLES]
    from autosteer._threads import using_threads

    with using_threads(runner.threads, lm):
        plain = _generations(runner, examples, None)
        steered = _generations(runner, examples, best)
    say("")
    say("Before / after on held-out prompts (greedy):")
    label = "expected" if metric == "task_accuracy" else "correct"
    pairs = []
    for p, e, a, b in zip(examples, hold_expected[:EXAMPLES], plain, steered):
        say(f"    {p!r:32s} {label} {e!r:5s} | before {a.strip()!r:10s} | after {b.strip()!r}")
        pairs.append({"prompt": p, label: e, "before": a.strip(), "after": b.strip()})

    png = out / "progress.png"
    try:
        from autosteer.plot import plot_history

        plot_history(results, png)
    except ImportError:
        png = None
        say("(matplotlib is not installed: no plot; pip install 'autosteer[plot]')")
    elapsed = time.perf_counter() - t0
    say("")
    say(f"Wrote {out / LOG_NAME}" + (f", {png}" if png else "") + (f", {out / 'best.json'}" if best else "")
        + f" in {elapsed:.0f} s")
    return {
        "metric": metric,
        "model": model,
        "baseline_score": results["baseline_score"],
        "best_score": results["best_score"],
        "baseline_holdout": before,
        "best_holdout": after,
        "best_candidate": best,
        "best_code": results["best_steer_code"],
        "examples": pairs,
        "results": results,
        "elapsed_s": elapsed,
        "log": out / LOG_NAME,
        "plot": png,
        "out": out,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # every check before the model loads; parser.error exits with status 2
    if args.iterations < 0:
        parser.error("--iterations must be >= 0")
    from autosteer.organism import world

    pools = world.question_pools()
    if not 1 <= args.num_prompts <= len(pools["search"]):
        parser.error(f"--num-prompts must be in 1..{len(pools['search'])}, got {args.num_prompts}")
    if not 1 <= args.num_holdout <= len(pools["holdout"]):
        parser.error(f"--num-holdout must be in 1..{len(pools['holdout'])}, got {args.num_holdout}")
    for flag, value, kind in (("--layers", args.layers, int), ("--coeffs", args.coeffs, float)):
        if value is not None:
            try:
                _parse_range(value, kind, flag)
            except ValueError as exc:
                parser.error(str(exc))
    threads = None
    if args.threads not in (None, "auto"):
        try:
            threads = int(args.threads)
        except ValueError:
            threads = 0
        if threads < 1:
            parser.error(f"--threads must be 'auto' or a whole number >= 1, got {args.threads!r}")
    import io

    stream = io.StringIO() if args.json else None
    report = run_demo(metric=args.metric, iterations=args.iterations, seed=args.seed, out=args.out,
                      model=args.model, n_prompts=args.num_prompts, n_holdout=args.num_holdout,
                      layers=args.layers, coeffs=args.coeffs, verbose=not (args.quiet or args.json),
                      stream=stream, threads=threads)
    if args.json:
        best = report["best_candidate"]
        print(json.dumps({
            "metric": report["metric"], "model": report["model"],
            "baseline_score": report["baseline_score"], "best_score": report["best_score"],
            "baseline_holdout": report["baseline_holdout"], "best_holdout": report["best_holdout"],
            "candidate": None if best is None else best.to_dict(),
            "description": "no steering" if best is None else best.describe(),
            "code": report["best_code"], "examples": report["examples"],
            "log": str(report["log"]), "plot": None if report["plot"] is None else str(report["plot"]),
            "elapsed_s": report["elapsed_s"],
        }, sort_keys=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
