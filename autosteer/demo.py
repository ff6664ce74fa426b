"""``autosteer demo``: the autonomous search end to end, on the embedded model or on a real one.

``--model organism`` (default): the arithmetic task of the embedded model
organism.  :class:`~autosteer.search.runner.AutoSteerRunner` searches on 16 unframed
prompts of its world (task accuracy, or the perplexity of the right answer),
scores the baseline and each new best on held-out prompts that neither
training nor the search ever saw, and prints baseline -> best, held-out
before/after, the best configuration as code, and before/after generations.

``--model smollm2`` (or any other causal LM): a concept search on a real
chat model.  The shipped concept *weddings* (40 contrastive sentence pairs,
``autosteer/data/weddings_concept.json``) over the upper layers, the
``steered_answer`` metric (on-concept AND on-request AND fluent, per answer) on 24
ordinary requests rendered with the chat template, and 40 disjoint held-out
requests (``autosteer/data/smollm2_demo.json``); it prints the concept rate,
relevance, fluency and stuck share before and after.

Either writes ``steer_log.tsv``, ``progress.png``, ``best.json``,
``best.safetensors`` and ``best.gguf`` into ``--out`` (default: ``demo_out``
for the organism, ``demo_out_smollm2`` for SmolLM2, ``demo_out_<name>`` for
another model, so that the demos never share a folder).  A folder that already
holds one of these files is refused before the model loads, unless
``--overwrite`` (``overwrite=True``) replaces them, or ``--resume``
(``resume=True``) continues the interrupted demo whose log is there (Ctrl-C
prints that exact command).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONCEPT_DEMO",
    "DEMO_SPACE",
    "LOG_NAME",
    "OUTPUT_FILES",
    "default_out",
    "load_concept_demo",
    "main",
    "run_demo",
]

LOG_NAME = "steer_log.tsv"
#: What a demo writes into its folder (a folder holding any of them is refused without overwrite).
OUTPUT_FILES = (LOG_NAME, "progress.png", "best.json", "best.safetensors", "best.gguf")
DATA = Path(__file__).resolve().parent / "data"

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

# The concept demo on a real model.  The space comes from the model and the
# concept alone (autosteer.search.calibrate.concept_space: per-layer coefficients
# calibrated to a next-token KL, layers pre-screened teacher-forced); the budget
# is sized for about two minutes of CPU on two cores (one batched round of eight
# candidates drawn from the calibrated space on 8 requests, 16 held-out requests,
# 40-token answers; measured: baseline + one round + held-out of two keeps took
# 178 s of CPU on a machine at load 3).  --layers or
# --coeffs replace the calibrated space with a hand-set one.
CONCEPT_DEMO: dict[str, Any] = {
    "layer_fraction": (0.4, 1.0),  # the hand-set space: layers 12..29 of 30
    "coeff_range": (0.05, 0.5),
    "max_vectors": 2,
    "schedules": ("none",),
    "max_new_tokens": 40,
    "fluency_margin": 1.0,
    "iterations": 8,
    "population": 8,
    "num_prompts": 8,
    "num_holdout": 16,
    # the keep rule screens each round on the first 4 prompts and prunes a candidate that a
    # Wilcoxon test says is worse than the best there (in practice: over the fluency budget)
    "screen": 4,
    # prompting is the baseline to beat, and prompt + steering did best of all: the demo searches
    # this prompt as one more dimension (alone, with steering, or not at all)
    "system_prompt": "Whatever the question, work a mention of weddings into your answer.",
    # where the prompt goes and which positions are steered.  In the benchmark (16 candidates, 6
    # runs) the prompt after the request ("user") with answer-only steering did best, but the
    # demo's one round of 8 candidates with them picked the prompt alone, which scored 0% on the
    # held-out requests (one run, 2026-12-03); with these settings the demo's held-out result was
    # 0% -> 25% on all three axes.  docs/search-real.md has both.
    "prompt_role": "system",
    "positions": "all",
}

#: Before/after generations printed on held-out prompts (organism, real model).
EXAMPLES = 3
CONCEPT_EXAMPLES = 6


def default_out(model: str) -> str:
    """The demo's default output folder for ``model``: ``demo_out`` for the organism,
    ``demo_out_smollm2``, ``demo_out_<file or folder name>`` for another model."""
    if model == "organism":
        return "demo_out"
    name = os.path.basename(os.path.normpath(os.path.expanduser(model))) or "model"
    if name.lower().endswith(".gguf"):
        name = name[:-5]
    return "demo_out_" + (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model")


def check_out(out: str | os.PathLike, overwrite: bool, resume: bool = False) -> str | None:
    """Why the demo may not write into ``out`` (None when it may): an existing file that is not a
    folder, a folder that already holds the demo's files and neither ``overwrite`` nor ``resume``
    is set, or both set."""
    path = Path(out)
    if overwrite and resume:
        return "--resume continues the demo's log and --overwrite starts it over: give one of them"
    if path.exists() and not path.is_dir():
        return f"--out {str(out)!r} is an existing file, not a folder; give a folder (created if missing)"
    there = [name for name in OUTPUT_FILES if (path / name).exists()] if path.is_dir() else []
    if there and not (overwrite or resume):
        return (
            f"--out {str(out)!r} already holds {', '.join(there)} from an earlier demo; give another "
            "folder, --resume (resume=True) to continue that demo's run, or --overwrite (overwrite=True) "
            "to replace them"
        )
    return None


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
        description="Run the autonomous steering search on the embedded model organism (arithmetic task), or a "
        "concept search on a real model (--model smollm2), and report what it found.",
        epilog="examples:\n  autosteer demo                                   (writes demo_out/)\n"
        "  autosteer demo --metric perplexity --iterations 20 --out demo_ppl\n"
        "  autosteer demo --model smollm2                   (writes demo_out_smollm2/)\n"
        "  autosteer demo --overwrite                       (run again over demo_out/)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--metric",
        choices=["task_accuracy", "perplexity"],
        default="task_accuracy",
        help="what the organism's search optimises (default: %(default)s; a real model's concept "
        "search always optimises steered_answer)",
    )
    p.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="candidates to evaluate after the baseline (default: 30 on the organism, "
        f"{CONCEPT_DEMO['iterations']} on a real model)",
    )
    p.add_argument(
        "--population",
        type=int,
        default=None,
        help=f"candidates per batched round (default: 1 on the organism, {CONCEPT_DEMO['population']} on a real model)",
    )
    p.add_argument("--seed", type=int, default=0, help="search seed (default: %(default)s)")
    p.add_argument(
        "--out",
        default=None,
        help="output folder, created if missing (default: demo_out for the organism, "
        "demo_out_smollm2 for smollm2, demo_out_NAME for another model)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an earlier demo in --out (without it, such a folder is refused)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted demo whose log is in --out (same options; a fresh run if "
        "there is no log); Ctrl-C prints this exact command",
    )
    p.add_argument(
        "--model",
        default="organism",
        help="'organism' (default: the embedded model), 'smollm2', a model folder or a hub id",
    )
    p.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        metavar="N",
        help="how many of the search prompts to use (default: 16 on the organism, "
        f"{CONCEPT_DEMO['num_prompts']} of 24 otherwise)",
    )
    p.add_argument(
        "--num-holdout",
        type=int,
        default=None,
        metavar="N",
        help="how many held-out prompts to score (default: 200 on the organism, "
        f"{CONCEPT_DEMO['num_holdout']} of 40 otherwise)",
    )
    p.add_argument(
        "--layers",
        help="layer range A:B (inclusive); default: layers 0-3 on the organism, calibrated "
        "from the model and the concept on a real model",
    )
    p.add_argument("--coeffs", help="coefficient magnitudes LO:HI")
    p.add_argument("--threads", default=None, help="CPU threads for torch (default: auto)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (no progress)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


@dataclass
class _Setup:
    """What a demo searches: prompts, held-out prompts, the space, the runner's options and the
    batch size its run uses."""

    label: str
    prompts: list
    holdout: list
    expected: list | None
    holdout_expected: list | None
    space: Any
    runner: dict[str, Any] = field(default_factory=dict)
    concept: Any = None
    batch_size: int = 16

    @property
    def runner_kwargs(self) -> dict[str, Any]:
        """The runner's keyword arguments besides model, tokenizer and prompts."""
        return dict(
            expected_outputs=self.expected,
            search_space=self.space,
            holdout=(self.holdout, self.holdout_expected),
            **self.runner,
        )


def load_concept_demo():
    """The concept demo's data: (the weddings Concept, its regex, search prompts, held-out prompts)."""
    from autosteer.steering.concept import load_concepts

    (concept,) = load_concepts(DATA / "weddings_concept.json")
    data = json.loads((DATA / "smollm2_demo.json").read_text(encoding="utf-8"))
    return concept, data["concept_pattern"], data["search"], data["holdout"]


def _organism_setup(metric, n_prompts, n_holdout, layers, coeffs) -> _Setup:
    from autosteer.organism import world
    from autosteer.search.space import SteerSearchSpace

    kw = dict(DEMO_SPACE)
    if layers:
        kw["layer_range"] = _parse_range(layers, int, "--layers")
    if coeffs:
        kw["coeff_range"] = _parse_range(coeffs, float, "--coeffs")
    prompts, expected = world.search_prompts(n_prompts or 16)
    held, held_expected = world.heldout_prompts(n_holdout or 200)
    # both metrics use the questions and their correct answers: task accuracy
    # generates and checks the answer, perplexity scores the answer given the
    # question (the operands are random digits no steering can predict)
    runner = {"max_new_tokens": 4} if metric == "task_accuracy" else {}
    return _Setup(
        f"metric {metric}", prompts, held, expected, held_expected, SteerSearchSpace(**kw), {"metric": metric, **runner}
    )


def _concept_setup(num_layers, tokenizer, n_prompts, n_holdout, layers, coeffs, model=None, threads=None) -> _Setup:
    from autosteer.search.metrics import SteeredAnswer
    from autosteer.search.space import SteerSearchSpace

    concept, pattern, prompts, held = load_concept_demo()
    calibrated = ""
    if model is not None and not layers and not coeffs:
        from autosteer.search.calibrate import concept_space

        t = time.perf_counter()
        space, cal = concept_space(model, tokenizer, concept, threads=threads, positions=CONCEPT_DEMO["positions"])
        how = f"{cal.passes} forward passes" if cal.passes else "remembered from an earlier run"
        calibrated = (
            f" | calibrated space (KL {cal.target_kl:g} on neutral prompts, {how}, "
            f"{time.perf_counter() - t:.0f} s): layers {space.layer_range[0]}-{space.layer_range[1]}, "
            f"coefficients {space.coeff_range[0]:g}-{space.coeff_range[1]:g}"
        )
    else:
        lo_f, hi_f = CONCEPT_DEMO["layer_fraction"]
        first = int(lo_f * num_layers)
        layer_range = (first, max(first, min(num_layers - 1, math.ceil(hi_f * num_layers) - 1)))
        if layers:
            layer_range = _parse_range(layers, int, "--layers")
        coeff_range = _parse_range(coeffs, float, "--coeffs") if coeffs else CONCEPT_DEMO["coeff_range"]
        space = SteerSearchSpace(
            layer_range=layer_range,
            coeff_range=coeff_range,
            texts=(concept,),
            max_vectors=CONCEPT_DEMO["max_vectors"],
            schedules=CONCEPT_DEMO["schedules"],
        )
    chat = bool(getattr(tokenizer, "chat_template", None))
    if chat and CONCEPT_DEMO.get("system_prompt"):
        space = space.replace(system_prompts=[CONCEPT_DEMO["system_prompt"]], prompt_role=CONCEPT_DEMO["prompt_role"])
    prompts = prompts[: n_prompts or CONCEPT_DEMO["num_prompts"]]
    held = held[: n_holdout or CONCEPT_DEMO["num_holdout"]]
    metric = SteeredAnswer(pattern=pattern, fluency_margin=CONCEPT_DEMO["fluency_margin"])
    runner: dict[str, Any] = {"metric": metric, "chat": chat, "max_new_tokens": CONCEPT_DEMO["max_new_tokens"]}
    if CONCEPT_DEMO.get("screen") and CONCEPT_DEMO["screen"] < len(prompts):
        from autosteer.search.keep import MeanRule

        runner["keep_rule"] = MeanRule(screen=CONCEPT_DEMO["screen"])
    label = (
        f"concept {concept.name!r} ({len(concept.positive)} contrastive pairs) | metric steered_answer "
        f"(on-concept AND on-request AND fluent per answer; fluency budget +{CONCEPT_DEMO['fluency_margin']} "
        "nat/token, a hard limit)"
        + calibrated
        + (
            f" | prompt searched too ({'after the request' if space.prompt_role == 'user' else 'system message'}): "
            f"{space.system_prompts[0]!r}"
            if space.system_prompts
            else ""
        )
    )
    return _Setup(label, prompts, held, None, None, space, runner, concept, batch_size=len(prompts))


def _export(runner, best, out: Path, say) -> list[Path]:
    """best.safetensors (the exact steering) and best.gguf (a llama.cpp control vector) next to best.json."""
    stale = [out / "best.safetensors", out / "best.gguf"]
    for path in stale:
        path.unlink(missing_ok=True)
    if best is None:
        return []
    if best.prompt_only:
        say("(the best is a prompt alone: no vectors to write to best.safetensors / best.gguf)")
        return []
    written = []
    from autosteer.errors import InvalidArgumentError

    with runner.steer.applied(best):
        written.append(runner.steer.save(out / "best.safetensors"))
        try:
            written.append(runner.steer.save(out / "best.gguf"))
        except InvalidArgumentError as exc:
            say(f"(no best.gguf: {exc})")
    return written


def _generations(runner, prompts: list, candidate) -> list[str]:
    """Greedy continuations of ``prompts``, steered by ``candidate`` (None: unsteered), with
    the candidate's prompt where its ``prompt_role`` puts it, when it has one."""
    if candidate is None:
        return runner.evaluator.generate(prompts)
    prompts = [candidate.messages(p) for p in prompts]
    with runner.steer.applied(candidate):
        return runner.evaluator.generate(prompts)


def _alone_json(rec) -> dict[str, Any] | None:
    """Prompting alone's record as JSON: its system prompt, scores and held-out axes."""
    if rec is None:
        return None
    d = rec.details or {}
    return {
        "system": rec.candidate.system,
        "prompt_role": rec.candidate.prompt_role,
        "iteration": rec.iteration,
        "score": rec.score,
        "holdout_score": rec.holdout_score,
        "holdout": {k[len("holdout_") :]: v for k, v in d.items() if k.startswith("holdout_")},
    }


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def run_demo(
    metric: str = "task_accuracy",
    iterations: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    model: str = "organism",
    n_prompts: int | None = None,
    n_holdout: int | None = None,
    layers: str | None = None,
    coeffs: str | None = None,
    verbose: bool = True,
    stream=None,
    threads: int | None = None,
    population: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the demo; returns a dict of what it printed (scores, held-out, paths).

    ``out`` (None: :func:`default_out` of ``model``) must not hold the files of
    an earlier demo (:data:`OUTPUT_FILES`) unless ``overwrite=True`` (start over)
    or ``resume=True`` (continue the run its log records, as
    ``AutoSteerRunner.run(resume=True)``: the same options give the log of an
    uninterrupted demo); that is checked before the model loads
    (:class:`~autosteer.errors.InvalidArgumentError`).  On Ctrl-C the log keeps
    every finished trial and the KeyboardInterrupt propagates.
    """
    from autosteer._checks import check_bool
    from autosteer.errors import InvalidArgumentError
    from autosteer.models import load_model
    from autosteer.search._threads import using_threads
    from autosteer.search.runner import AutoSteerRunner

    overwrite = check_bool("overwrite", overwrite)
    resume = check_bool("resume", resume)
    verbose = check_bool("verbose", verbose)
    out = Path(default_out(model) if out is None else out)
    problem = check_out(out, overwrite, resume)
    if problem:
        raise InvalidArgumentError(problem)
    stream = stream or sys.stdout
    say = lambda *a: print(*a, file=stream, flush=True)  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lm, tokenizer = load_model(model, progress=None if verbose else False)
    loaded = time.perf_counter() - t0
    organism = model == "organism"
    if organism:
        setup = _organism_setup(metric, n_prompts, n_holdout, layers, coeffs)
    else:
        setup = _concept_setup(
            lm.config.get_text_config().num_hidden_layers,
            tokenizer,
            n_prompts,
            n_holdout,
            layers,
            coeffs,
            model=lm,
            threads=threads,
        )
    if iterations is None:
        iterations = 30 if organism else CONCEPT_DEMO["iterations"]
    if population is None:
        population = 1 if organism else CONCEPT_DEMO["population"]

    say(
        f"AutoSteer demo: {type(lm).__name__} ({model}, loaded in {loaded:.1f} s) | {setup.label} | "
        f"{len(setup.prompts)} search prompts, {len(setup.holdout)} held-out prompts never seen by "
        f"{'training or ' if organism else ''}the search | seed {seed}, {iterations} iterations"
        + (f", population {population}" if population > 1 else "")
    )
    runner = AutoSteerRunner(
        lm, tokenizer, setup.prompts, log_path=out / LOG_NAME, seed=seed, population=population, **setup.runner_kwargs
    )
    from autosteer.search.progress import reporting_interrupt

    with reporting_interrupt(runner, out / LOG_NAME):
        results = runner.run(
            max_iterations=iterations,
            resume=resume,
            verbose=verbose,
            overwrite=overwrite,
            threads=threads,
            batch_size=setup.batch_size,
        )
    name = runner.metric
    say("")
    say(results.summary())
    before, after = results["baseline_holdout"], results["best_holdout"]
    best = results["best_candidate"]
    if best is None:
        after = before  # nothing beat the baseline: the model is unchanged
    held_report: dict[str, Any] = {}
    if before is not None and after is None:
        say(f"Held-out {name}: {before:.4f} -> not measured (the held-out evaluation of the best failed)")
    elif before is not None and organism:
        change = ""
        if name == "perplexity" and before:
            change = f" ({100 * (after - before) / before:+.1f}%)"
        what = " of the correct answers" if name == "perplexity" else ""
        say(f"Held-out {name}{what}: {before:.4f} -> {after:.4f}{change} on {len(setup.holdout)} prompts")
    elif before is not None:
        from autosteer.search.results import answer_axes, describe_axes

        axes = answer_axes(results) or {}
        held_report = axes.get("holdout", {})
        for line in describe_axes(results):
            say(line)
        say(
            f"Held-out {name} ({len(setup.holdout)} prompts): {before:.4f} -> {after:.4f} "
            f"(fluency budget +{runner.metric_object.fluency_margin:g} "  # type: ignore[attr-defined]  # steered_answer
            "nat/token)"
        )
    alone = results.get("prompt_alone")
    if alone is not None:
        from autosteer.search.results import describe_prompt_alone

        say(describe_prompt_alone(alone))
    if results["confidence"] is not None:
        from autosteer.search.results import describe_confidence

        say(describe_confidence(results["confidence"]))
    say("")
    if best is None:
        say("No configuration beat the baseline.")
        (out / "best.json").unlink(missing_ok=True)  # no stale result from an earlier run
    else:
        say("Best configuration (paste to reproduce):")
        for line in best.to_code().splitlines():
            say("    " + (line if len(line) < 400 else line[:200] + " ...)  # full text in best.json"))
        (out / "best.json").write_text(json.dumps(best.to_dict(full=True), indent=2, ensure_ascii=False) + "\n")
    files = _export(runner, best, out, say)

    examples = setup.holdout[: EXAMPLES if organism else CONCEPT_EXAMPLES]
    with using_threads(runner.threads, lm):
        plain = _generations(runner, examples, None)
        steered = _generations(runner, examples, best)
        prompted = None
        if alone is not None and (best is None or best.key() != alone.candidate.key()):
            prompted = _generations(runner, examples, alone.candidate)
    say("")
    say("Before / after on held-out prompts (greedy):")
    pairs = []
    for i, (p, a, b) in enumerate(zip(examples, plain, steered)):
        if organism:
            e = setup.holdout_expected[i]  # type: ignore[index]  # the organism's prompts have answers
            say(f"    {p!r:32s} expected {e!r:5s} | before {a.strip()!r:10s} | after {b.strip()!r}")
            pairs.append({"prompt": p, "expected": e, "before": a.strip(), "after": b.strip()})
        else:
            say(f"    {p}")
            say(f"      before: {_short(a)}")
            if prompted is not None:
                say(f"      prompt: {_short(prompted[i])}")
            say(f"      after:  {_short(b)}")
            pair = {"prompt": p, "before": a.strip(), "after": b.strip()}
            if prompted is not None:
                pair["prompt_alone"] = prompted[i].strip()
            pairs.append(pair)

    png: Path | None = out / "progress.png"
    try:
        from autosteer.search.plot import plot_history

        plot_history(results, png)
    except ImportError:
        png = None
        say("(matplotlib is not installed: no plot; pip install 'autosteer[plot]')")
    elapsed = time.perf_counter() - t0
    say("")
    written = [out / LOG_NAME] + ([png] if png else []) + ([out / "best.json"] if best else []) + files
    say(f"Wrote {', '.join(map(str, written))} in {elapsed:.0f} s")
    return {
        "metric": name,
        "model": model,
        "baseline_score": results["baseline_score"],
        "best_score": results["best_score"],
        "baseline_holdout": before,
        "best_holdout": after,
        "holdout": held_report,
        "confidence": results["confidence"],
        "prompt_alone": alone,
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
    if args.iterations is not None and args.iterations < 0:
        parser.error("--iterations must be >= 0")
    if args.population is not None and args.population < 1:
        parser.error("--population must be >= 1")
    if args.model == "organism":
        from autosteer.organism import world

        pools = world.question_pools()
        limits = {
            "--num-prompts": (args.num_prompts, len(pools["search"])),
            "--num-holdout": (args.num_holdout, len(pools["holdout"])),
        }
    else:
        _, _, prompts, held = load_concept_demo()
        limits = {"--num-prompts": (args.num_prompts, len(prompts)), "--num-holdout": (args.num_holdout, len(held))}
    for flag, (value, most) in limits.items():
        if value is not None and not 1 <= value <= most:
            parser.error(f"{flag} must be in 1..{most}, got {value}")
    for flag, value, kind in (("--layers", args.layers, int), ("--coeffs", args.coeffs, float)):
        if value is not None:
            try:
                _parse_range(value, kind, flag)
            except ValueError as exc:
                parser.error(str(exc))
    if args.out is None:
        args.out = default_out(args.model)
    problem = check_out(args.out, args.overwrite, args.resume)
    if problem:
        parser.error(problem)
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
    report = run_demo(
        metric=args.metric,
        iterations=args.iterations,
        seed=args.seed,
        out=args.out,
        model=args.model,
        n_prompts=args.num_prompts,
        n_holdout=args.num_holdout,
        layers=args.layers,
        coeffs=args.coeffs,
        verbose=not (args.quiet or args.json),
        stream=stream,
        threads=threads,
        population=args.population,
        overwrite=args.overwrite,
        resume=args.resume,
    )
    if args.json:
        best = report["best_candidate"]
        print(
            json.dumps(
                {
                    "metric": report["metric"],
                    "model": report["model"],
                    "baseline_score": report["baseline_score"],
                    "best_score": report["best_score"],
                    "baseline_holdout": report["baseline_holdout"],
                    "best_holdout": report["best_holdout"],
                    "holdout": report["holdout"],
                    "confidence": report["confidence"],
                    "candidate": None if best is None else best.to_dict(full=True),
                    "prompt_alone": _alone_json(report["prompt_alone"]),
                    "description": "no steering" if best is None else best.describe(),
                    "code": report["best_code"],
                    "examples": report["examples"],
                    "log": str(report["log"]),
                    "plot": None if report["plot"] is None else str(report["plot"]),
                    "elapsed_s": report["elapsed_s"],
                },
                sort_keys=True,
                ensure_ascii=False,
            )
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
