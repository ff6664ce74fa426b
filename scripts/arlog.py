"""Shared code of the autoresearch loop scripts: the results log and git calls.

Standard library only. The scripts next to this file import it; nothing else should.

The results log is a tab-separated file with one header line and one row per run:

    iteration  commit  metric  best  status  goal  description

``status`` is one of baseline, keep, discard, crash; ``goal`` is ``min`` or ``max``;
``best`` is the best metric after the row was decided. The log is the loop's memory:
everything a resumed session needs is computed from it by :func:`summarize`.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import NoReturn

HEADER = ("iteration", "commit", "metric", "best", "status", "goal", "description")
STATUSES = ("baseline", "keep", "discard", "crash")
GOALS = ("min", "max")
DEFAULT_LOG = "results.tsv"
DEFAULT_RUN_LOG = "run.log"
TRIALS_DIR = "trials"
BRANCH_PREFIX = "autoresearch/"


class LoopError(Exception):
    """A problem the caller can fix; the scripts print it and exit with status 2."""


def fail(message: str) -> NoReturn:
    raise LoopError(message)


def main_guard(fn) -> int:
    """Run ``fn()`` and turn a LoopError into a one-line message and exit status 2."""
    try:
        return fn() or 0
    except LoopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------- git

def git(*args: str, check: bool = True) -> str:
    """Run git and return its stdout without the trailing newline."""
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        fail(f"`git {' '.join(args)}` failed: {detail}")
    return proc.stdout.rstrip("\n")


def repo_root() -> str:
    proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{os.getcwd()} is not inside a git repository (run `git init` and commit first)")
    return proc.stdout.strip()


def current_branch() -> str:
    return git("rev-parse", "--abbrev-ref", "HEAD")


def head(short: bool = True) -> str:
    return git("rev-parse", "--short" if short else "--verify", "HEAD")


def dirty_paths(untracked: bool = False) -> list[str]:
    """Tracked files with uncommitted changes (and, if asked, untracked files that are not ignored).

    Untracked files are left out by default: a run may write outputs into the tree, and
    those must never be committed by the loop's scripts.
    """
    out = git("status", "--porcelain", "--untracked-files=" + ("all" if untracked else "no"))
    return [line[3:] for line in out.splitlines() if line.strip()]


def require_loop_branch(allow_any: bool) -> str:
    branch = current_branch()
    if not allow_any and not branch.startswith(BRANCH_PREFIX):
        fail(
            f"the current branch is {branch!r}, not an {BRANCH_PREFIX}<tag> branch; "
            f"the loop resets commits, so it only runs on its own branch "
            f"(run scripts/ar_setup.py <tag>, or `git checkout {BRANCH_PREFIX}<tag>`)"
        )
    return branch


# ----------------------------------------------------------------------- the log

def parse_metric(text: str | None) -> float | None:
    """A finite float, or None when the text is empty or names no finite number."""
    if text is None or not str(text).strip():
        return None
    try:
        value = float(str(text).strip())
    except ValueError:
        fail(f"--metric expects a number (the output of ar_metric.py), got {text!r}")
    return value if math.isfinite(value) else None


def format_metric(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def clean_text(text: str) -> str:
    return " ".join(str(text).split())


def read_log(path: str) -> list[dict]:
    """The rows of a results log as dicts; a missing file or bad row is a LoopError."""
    if not os.path.exists(path):
        fail(f"no results log at {path} (run scripts/ar_setup.py <tag> first)")
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        fail(f"{path} line 1: expected the header {chr(9).join(HEADER)!r}, got {lines[0] if lines else ''!r}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(HEADER):
            fail(f"{path} line {number}: expected {len(HEADER)} tab-separated fields, got {len(cells)}")
        row = dict(zip(HEADER, cells))
        if row["status"] not in STATUSES:
            fail(f"{path} line {number}: unknown status {row['status']!r} (expected one of {', '.join(STATUSES)})")
        if row["goal"] not in GOALS:
            fail(f"{path} line {number}: unknown goal {row['goal']!r} (expected min or max)")
        try:
            row["iteration"] = int(row["iteration"])
            row["metric"] = float(row["metric"]) if row["metric"] else None
            row["best"] = float(row["best"]) if row["best"] else None
        except ValueError as exc:
            fail(f"{path} line {number}: {exc}")
        row["line"] = number
        rows.append(row)
    return rows


def append_row(path: str, row: dict) -> None:
    cells = [
        str(row["iteration"]),
        row["commit"],
        format_metric(row["metric"]),
        format_metric(row["best"]),
        row["status"],
        row["goal"],
        clean_text(row["description"]),
    ]
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\t".join(cells) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def is_better(a: float, b: float, goal: str, margin: float = 0.0) -> bool:
    """True when ``a`` beats ``b`` by strictly more than ``margin``."""
    return a < b - margin if goal == "min" else a > b + margin


def summarize(rows: list[dict]) -> dict:
    """Replay the log: goal, best, the commit the branch should sit on, counts, noise."""
    summary = {
        "runs": len(rows),
        "goal": rows[0]["goal"] if rows else None,
        "baseline": None,
        "best": None,
        "best_iteration": None,
        "best_commit": None,
        "base_commit": None,
        "counts": {status: 0 for status in STATUSES},
        "noise": 0.0,
        "next_iteration": (max(r["iteration"] for r in rows) + 1) if rows else 0,
    }
    by_commit: dict[str, list[float]] = {}
    for row in rows:
        summary["counts"][row["status"]] += 1
        metric = row["metric"]
        if row["status"] == "baseline":
            summary["base_commit"] = row["commit"]
            if metric is not None:
                by_commit.setdefault(row["commit"], []).append(metric)
                if summary["baseline"] is None:
                    summary["baseline"] = metric
                if summary["best"] is None:
                    summary.update(best=metric, best_iteration=row["iteration"], best_commit=row["commit"])
        elif row["status"] == "keep":
            summary["base_commit"] = row["commit"]
            if summary["best"] is None or is_better(metric, summary["best"], row["goal"]):
                summary.update(best=metric, best_iteration=row["iteration"])
            summary["best_commit"] = row["commit"]
    spreads = [max(v) - min(v) for v in by_commit.values() if len(v) > 1]
    summary["noise"] = max(spreads) if spreads else 0.0
    return summary
