"""The ``autosteer`` command: search, best, plot, generate, demo.

Every subcommand takes ``--json`` for machine-readable output on stdout.
Exit status: 0 on success, 2 for bad input (a bad argument, a missing or
malformed file, an AutoSteer error that is a ValueError, IndexError or
TypeError), 1 for a run that failed for another reason, 130 on Ctrl-C.

Heavy imports (torch, transformers, the runner) happen inside the commands,
so ``autosteer --help`` and ``autosteer best`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Sequence

__all__ = ["main", "build_parser", "read_prompts", "EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

METRICS = ("task_accuracy", "perplexity")
ORGANISM = "organism"


class UsageError(Exception):
    """Bad input found by the command line itself; exit status 2."""

    def __init__(self, message: str, usage: str | None = None) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise, so main() reports them like any other."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}", usage=self.format_usage())


def _pair(kind: type, name: str):
    """argparse type for ``A:B`` ranges (``3`` alone means ``3:3``)."""

    def parse(text: str):
        parts = text.split(":")
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise argparse.ArgumentTypeError(f"{name} must look like LOW:HIGH, got {text!r}")
        try:
            lo, hi = (kind(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must hold {'integers' if kind is int else 'numbers'}, got {text!r}"
            ) from None
        if kind is float and not (math.isfinite(lo) and math.isfinite(hi)):
            raise argparse.ArgumentTypeError(f"{name} must hold finite numbers, got {text!r}")
        if lo > hi:
            raise argparse.ArgumentTypeError(f"{name} {text!r} is empty: LOW must be <= HIGH")
        return (lo, hi)

    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number >= 1, got 0")
    return value


# --------------------------------------------------------------------------- parser

_SEARCH_EXAMPLE = """\
examples:
  autosteer search --model organism --prompts prompts.jsonl --metric task_accuracy \\
      --layers 0:3 --coeffs 0.1:1 --texts "a logical answer :" --iterations 20 --log results.tsv
  autosteer search --model Qwen/Qwen2.5-0.5B --prompts texts.txt --metric perplexity --json

prompts: a text file with one prompt per line, or JSONL with {"prompt": ..., "expected": ...}
per line. task_accuracy needs expected answers (JSONL "expected", or --expected FILE with one
answer per line). The last lines printed are "baseline_score: X" and "best_score: Y".
"""

_BEST_EXAMPLE = """\
examples:
  autosteer best results.tsv                # summary and the code that reproduces the best
  autosteer best results.tsv --json > best.json
  autosteer best results.tsv --code >> steer_setup.py
"""

_PLOT_EXAMPLE = """\
example:
  autosteer plot results.tsv -o progress.png     (needs matplotlib: pip install matplotlib)
"""

_GENERATE_EXAMPLE = """\
examples:
  autosteer generate --model organism --config best.json --compare "3 plus 4 ="
  autosteer generate --model ./my-model --config best.json --max-new-tokens 64 --json "Hello"

--config takes the output of `autosteer best --json`, a candidate {"vectors": [...]}, or a list
of {"layer_idx", "coeff", "text"} dicts (what Steer.get_all() returns).
"""

_DEMO_EXAMPLE = """\
example:
  autosteer demo --iterations 30 --out demo_out
  autosteer demo --help                          (the demo's own options)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autosteer",
        description="Steer LLMs with activation vectors and search for the best steering configuration.",
        epilog=(
            "example:\n"
            "  autosteer search --model organism --prompts prompts.jsonl --metric task_accuracy --iterations 10\n"
            "  autosteer best results.tsv --code\n\n"
            "exit status: 0 ok, 1 failed run, 2 bad input. `autosteer COMMAND --help` shows each command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, help_: str, epilog: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        return p

    s = add("search", "Search steering configurations that improve a metric (the autonomous loop).",
            _SEARCH_EXAMPLE)
    s.add_argument("--model", required=True,
                   help="Hugging Face model path or hub id, or 'organism' for the embedded model")
    s.add_argument("--prompts", required=True, metavar="FILE", help="prompts: text lines or JSONL")
    s.add_argument("--metric", required=True, choices=METRICS, help="what to optimise")
    s.add_argument("--expected", metavar="FILE", help="expected answers, one per line (task_accuracy)")
    s.add_argument("--holdout", metavar="FILE",
                   help="held-out prompts (same formats), scored for the baseline and each new best, never to decide")
    s.add_argument("--layers", type=_pair(int, "--layers"), metavar="A:B",
                   help="decoder layers to try, inclusive (default: the middle half of the model)")
    s.add_argument("--coeffs", type=_pair(float, "--coeffs"), metavar="LO:HI",
                   help="coefficient magnitudes to try (default: 0.05:1)")
    s.add_argument("--texts", nargs="+", metavar="TEXT",
                   help="concept texts to steer towards (default: logical precise analytical)")
    s.add_argument("--negative-texts", nargs="+", metavar="TEXT", default=(),
                   help="concept texts to steer away from")
    s.add_argument("--max-vectors", type=_positive_int, metavar="N", help="most vectors per candidate (default 2)")
    s.add_argument("--schedules", nargs="+", metavar="NAME", choices=("none", "decay", "cosine", "warmup"),
                   help="coefficient schedules to try (default: none decay cosine warmup)")
    s.add_argument("--iterations", type=_non_negative_int, default=30, metavar="N",
                   help="trials after the baseline (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="search seed (default: %(default)s)")
    s.add_argument("--log", default="results.tsv", metavar="FILE", help="results log (default: %(default)s)")
    s.add_argument("--resume", action="store_true", help="continue the run recorded in --log")
    s.add_argument("--max-new-tokens", type=_positive_int, metavar="N",
                   help="tokens generated per prompt for task_accuracy")
    s.add_argument("--batch-size", type=_positive_int, metavar="N", help="prompts per forward pass")
    s.add_argument("--device", help="torch device for a Hugging Face model, e.g. cuda or cpu (default: cuda if available)")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=cmd_search)

    b = add("best", "Show the best configuration recorded in a results log.", _BEST_EXAMPLE)
    b.add_argument("log", metavar="results.tsv", help="a log written by `autosteer search`")
    b.add_argument("--code", action="store_true", help="print only the Python code that reproduces it")
    b.set_defaults(func=cmd_best)

    p = add("plot", "Plot the score of every trial of a results log.", _PLOT_EXAMPLE)
    p.add_argument("log", metavar="results.tsv", help="a log written by `autosteer search`")
    p.add_argument("-o", "--output", default="progress.png", metavar="PNG", help="image file (default: %(default)s)")
    p.set_defaults(func=cmd_plot)

    g = add("generate", "Generate text with a steering configuration applied.", _GENERATE_EXAMPLE)
    g.add_argument("prompts", nargs="+", metavar="PROMPT", help="one or more prompts")
    g.add_argument("--model", required=True, help="Hugging Face model path or hub id, or 'organism'")
    g.add_argument("--config", metavar="FILE", help="steering configuration (JSON); none means unsteered")
    g.add_argument("--compare", action="store_true", help="also generate without steering, before/after")
    g.add_argument("--max-new-tokens", type=_positive_int, default=32, metavar="N",
                   help="tokens to generate (default: %(default)s)")
    g.add_argument("--device", help="torch device for a Hugging Face model (default: cuda if available)")
    g.set_defaults(func=cmd_generate)

    d = sub.add_parser("demo", help="Run the end-to-end demo on the embedded model (autosteer demo --help).",
                       epilog=_DEMO_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                       add_help=False)
    d.add_argument("args", nargs=argparse.REMAINDER, help="options passed to the demo")
    d.set_defaults(func=cmd_demo)
    return parser


# --------------------------------------------------------------------------- input files

def _require_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a directory, not a file")


def read_prompts(path: str) -> tuple[list[str], list[str] | None]:
    """Prompts (and expected answers when given) from a text or JSONL file.

    Text: one prompt per non-empty line. JSONL (a ``.jsonl`` name, or a first
    line that starts with ``{``): one object per line with a ``prompt`` string
    and optionally an ``expected`` answer; either every line has ``expected``
    or none does.
    """
    _require_file(path, "prompts file")
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise UsageError(f"prompts file {path!r} has no prompts")
    is_jsonl = path.endswith((".jsonl", ".ndjson")) or numbered[0][1].lstrip().startswith("{")
    if not is_jsonl:
        return [line for _, line in numbered], None
    prompts: list[str] = []
    expected: list[str | None] = []
    for number, line in numbered:
        where = f"{path} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise UsageError(f'{where}: expected an object with a non-empty "prompt" string, got {line[:80]!r}')
        prompts.append(obj["prompt"])
        answer = obj.get("expected")
        if answer is not None and not isinstance(answer, (str, int, float)):
            raise UsageError(f'{where}: "expected" must be a string, got {type(answer).__name__}')
        expected.append(None if answer is None else str(answer))
    given = [e is not None for e in expected]
    if any(given) and not all(given):
        first = numbered[given.index(False)][0]
        raise UsageError(f'{path} line {first}: no "expected" field, but other lines have one (give all or none)')
    return prompts, (expected if all(given) else None)  # type: ignore[return-value]


def _read_expected(path: str, n_prompts: int) -> list[str]:
    _require_file(path, "expected answers file")
    with open(path, encoding="utf-8") as fh:
        answers = [line for line in fh.read().splitlines() if line.strip()]
    if len(answers) != n_prompts:
        raise UsageError(f"--expected {path!r} has {len(answers)} answers for {n_prompts} prompts (one per line)")
    return answers


def _read_config(path: str):
    """A SteerCandidate from `best --json` output, a candidate dict, or a list of vector dicts."""
    from autosteer.search import SteerCandidate

    _require_file(path, "config file")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise UsageError(f"config file {path!r} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "candidate" in data:
        data = data["candidate"]
    return SteerCandidate.from_dict(data)


# --------------------------------------------------------------------------- models

def _load_model(name: str, device: str | None = None):
    """(model, tokenizer): the embedded organism, or any Hugging Face causal LM."""
    if not sys.stderr.isatty():  # no "Loading weights" bars in logs and pipes
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
    if name == ORGANISM:
        from autosteer.organism import load_organism

        model, tokenizer = load_organism()
    else:
        path = os.path.expanduser(name)
        if _looks_local(name) and not os.path.isdir(path):
            raise UsageError(f"--model {name!r}: no such directory (give a model folder, a hub id, or 'organism')")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    import torch

    model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return model, tokenizer


def _looks_local(name: str) -> bool:
    """A path rather than a hub id ("org/name" or "name")."""
    if name.startswith((".", "/", "~")) or (os.altsep and os.altsep in name) or os.path.isabs(name):
        return True
    return name.count("/") > 1


# --------------------------------------------------------------------------- commands

def cmd_search(args: argparse.Namespace) -> int:
    prompts, expected = read_prompts(args.prompts)
    if args.expected:
        expected = _read_expected(args.expected, len(prompts))
    if args.metric == "task_accuracy" and expected is None:
        raise UsageError(
            "--metric task_accuracy needs expected answers: JSONL lines with an \"expected\" field, "
            "or --expected FILE"
        )
    if args.resume and not os.path.exists(args.log):
        raise UsageError(f"--resume: no log at {args.log!r} to resume")
    from autosteer.runner import AutoSteerRunner
    from autosteer.search import SteerSearchSpace

    space_kwargs: dict[str, Any] = {"negative_texts": tuple(args.negative_texts or ())}
    if args.layers is not None:
        space_kwargs["layer_range"] = args.layers
    if args.coeffs is not None:
        space_kwargs["coeff_range"] = args.coeffs
    if args.texts is not None:
        space_kwargs["texts"] = tuple(args.texts)
    elif args.negative_texts:
        space_kwargs["texts"] = ()
    if args.max_vectors is not None:
        space_kwargs["max_vectors"] = args.max_vectors
    if args.schedules is not None:
        space_kwargs["schedules"] = tuple(args.schedules)
    space = SteerSearchSpace(**space_kwargs)

    if args.holdout:
        holdout, holdout_expected = read_prompts(args.holdout)
        if args.metric == "task_accuracy" and holdout_expected is None:
            raise UsageError(f'--holdout {args.holdout!r} needs an "expected" field on every line for task_accuracy')
        runner_kwargs_holdout = {"holdout_prompts": holdout, "holdout_expected": holdout_expected}
    else:
        runner_kwargs_holdout = {}
    model, tokenizer = _load_model(args.model, args.device)
    runner_kwargs: dict[str, Any] = dict(runner_kwargs_holdout)
    if args.max_new_tokens is not None:
        runner_kwargs["max_new_tokens"] = args.max_new_tokens
    if args.batch_size is not None:
        runner_kwargs["batch_size"] = args.batch_size
    # The runner draws a tqdm bar when stdout is a terminal and prints one plain line per
    # trial when it is a pipe; --json keeps stdout for the JSON object alone.
    verbose = not args.quiet and not args.json
    runner = AutoSteerRunner(
        model=model, tokenizer=tokenizer, prompts=prompts, metric=args.metric,
        expected_outputs=expected,
        search_space=space, log_path=args.log, seed=args.seed,
        verbose=verbose, **runner_kwargs,
    )
    results = runner.run(max_iterations=args.iterations, resume=args.resume)
    summary = _results_summary(results, args)
    if args.json:
        _print_json(summary)
    else:
        print(str(results))
        print(f"log: {args.log}")
        print(f"baseline_score: {summary['baseline_score']!r}")
        print(f"best_score: {summary['best_score']!r}")
    return EXIT_OK


def _results_summary(results, args: argparse.Namespace) -> dict[str, Any]:
    best = results["best_candidate"]
    out = {
        "metric": args.metric,
        "model": args.model,
        "log": args.log,
        "baseline_score": results["baseline_score"],
        "best_score": results["best_score"],
        "best_iteration": results["best_iteration"],
        "candidate": {"vectors": []} if best is None else best.to_dict(),
        "description": "no steering" if best is None else best.describe(),
        "code": results["best_steer_code"],
    }
    for key in ("iterations", "keeps", "discards", "crashes", "elapsed_s", "lower_is_better",
                "baseline_holdout", "best_holdout", "stopped_early"):
        if key in results:
            out[key] = results[key]
    return out


def _best_of_log(path: str) -> dict[str, Any]:
    """The best row of a runner log: the last ``keep`` (each keep beat every earlier row)."""
    from autosteer.log import read_log

    _require_file(path, "results log")
    history = read_log(path, allow_incomplete=True)
    if not history:
        raise UsageError(f"{path} has no rows yet (not even the baseline)")
    baseline = history[0]
    best = baseline
    for row in history[1:]:
        if row["status"] == "keep":
            best = row
    candidate = best["candidate"]
    config = history.config or {}
    counts = {s: sum(1 for r in history if r["status"] == s) for s in ("keep", "discard", "crash")}
    return {
        "log": path,
        "metric": config.get("metric"),
        "lower_is_better": config.get("lower_is_better"),
        "baseline_score": baseline["score"],
        "best_score": best["score"],
        "best_iteration": best["iteration"],
        "iterations": len(history) - 1,
        "keeps": counts["keep"],
        "discards": counts["discard"],
        "crashes": counts["crash"],
        "candidate": candidate.to_dict(),
        "description": candidate.describe(),
        "baseline_holdout": baseline.get("holdout_score"),
        "best_holdout": best.get("holdout_score"),
        "code": candidate.to_code() if len(candidate) else "# no steering configuration beat the baseline",
    }


def cmd_best(args: argparse.Namespace) -> int:
    best = _best_of_log(args.log)
    if args.json:
        _print_json(best)
    elif args.code:
        print(best["code"])
    else:
        metric = f" {best['metric']}" if best["metric"] else ""
        found = (f"found at iteration {best['best_iteration']}" if best["best_iteration"]
                 else "no candidate beat the baseline")
        print(f"Baseline: {best['baseline_score']:.4f} -> Best: {best['best_score']:.4f}{metric} ({found}) | "
              f"{best['iterations']} trials: keeps {best['keeps']}, discards {best['discards']}, "
              f"crashes {best['crashes']}")
        if best["baseline_holdout"] is not None and best["best_holdout"] is not None:
            print(f"Held-out: {best['baseline_holdout']:.4f} -> {best['best_holdout']:.4f}")
        print(f"Best configuration: {best['description']}")
        print(best["code"])
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    _require_file(args.log, "results log")
    from autosteer.log import read_log

    read_log(args.log, allow_incomplete=True)  # a clear error for a file that is not a log
    from autosteer.plot import plot_history

    plot_history(args.log, args.output)
    if args.json:
        _print_json({"log": args.log, "plot": args.output})
    else:
        print(f"wrote {args.output}")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    candidate = _read_config(args.config) if args.config else None
    model, tokenizer = _load_model(args.model, args.device)
    from autosteer.steer import Steer

    before = _generate(model, tokenizer, args.prompts, args.max_new_tokens) if args.compare else None
    with Steer(model, tokenizer) as steer:
        if candidate is not None:
            candidate.apply(steer)
        after = _generate(model, tokenizer, args.prompts, args.max_new_tokens)
    rows = []
    for i, prompt in enumerate(args.prompts):
        row = {"prompt": prompt, "steered": after[i]}
        if before is not None:
            row["unsteered"] = before[i]
        rows.append(row)
    if args.json:
        _print_json({"model": args.model, "config": None if candidate is None else candidate.to_dict(),
                     "generations": rows})
        return EXIT_OK
    if candidate is not None:
        print(f"steering: {candidate.describe()}")
    for row in rows:
        print(f"prompt:    {row['prompt']}")
        if "unsteered" in row:
            print(f"before:    {row['unsteered']}")
            print(f"after:     {row['steered']}")
        else:
            print(f"output:    {row['steered']}")
    return EXIT_OK


def _generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations, one prompt at a time (no padding questions), new tokens only."""
    import torch

    device = next(model.parameters()).device
    outputs = []
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt").to(device)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
        new = out[0, enc["input_ids"].shape[1]:]
        outputs.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return outputs


def cmd_demo(args: argparse.Namespace) -> int:
    return _run_demo(list(args.args))


def _run_demo(argv: list[str]) -> int:
    import importlib

    try:
        demo = importlib.import_module("autosteer.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "autosteer.demo":
            raise
        print("error: the demo is not available in this build (autosteer.demo is missing)", file=sys.stderr)
        return EXIT_FAILED
    status = demo.main(argv)
    return EXIT_OK if status is None else int(status)


# --------------------------------------------------------------------------- main

def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    return value


def _print_json(obj: Any) -> None:
    print(json.dumps(_jsonable(obj), sort_keys=True))


def _is_bad_input(exc: BaseException) -> bool:
    from autosteer.errors import AutoSteerError

    if isinstance(exc, UnicodeDecodeError):  # an input file that is not UTF-8 text
        return True
    return isinstance(exc, AutoSteerError) and isinstance(exc, (ValueError, IndexError, TypeError))


def _fail(message: str, code: int, want_json: bool) -> int:
    print(f"error: {message}", file=sys.stderr)
    if want_json:
        _print_json({"error": message, "exit_code": code})
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autosteer`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    try:
        if argv[:1] == ["demo"]:  # the demo parses its own options, --help included
            return _run_demo(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as exc:
        if exc.usage and not want_json:
            sys.stderr.write(exc.usage)
        return _fail(str(exc), EXIT_BAD_INPUT, want_json)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the command line reports every failure as an exit status
        if os.environ.get("AUTOSTEER_DEBUG"):
            raise
        code = EXIT_BAD_INPUT if _is_bad_input(exc) else EXIT_FAILED
        return _fail(f"{type(exc).__name__}: {exc}", code, want_json)


if __name__ == "__main__":
    sys.exit(main())
