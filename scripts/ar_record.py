#!/usr/bin/env python3
"""Log one run and decide it: keep the commit, or save its diff under trials/ and reset.

usage: python3 scripts/ar_record.py --metric VALUE -d "what was tried"
       python3 scripts/ar_record.py --baseline --goal min|max --metric VALUE -d "baseline"
       python3 scripts/ar_record.py --crash -d "what was tried (why it crashed)"

The commit the branch should sit on (the base) is the commit of the last baseline or
keep row of the log. A trial is everything between the base and HEAD; uncommitted changes
to tracked files are committed first with the description as message (untracked files
never are: they may be the run's outputs; ``git add`` new source files yourself). Then:

- crash (``--crash``, an empty or non-finite ``--metric``, or a nonzero ``--exit``):
  the row says crash, the diff goes to ``trials/<iteration>-<sha>.patch``, the branch
  is reset to the base;
- keep, when the metric beats the best so far by more than the noise margin (the
  larger of ``--min-delta`` and the widest spread of repeated baseline runs), or when
  it is equal within that margin and the trial deletes more lines than it adds
  (simplicity rule): the commit stays, the branch has advanced;
- discard otherwise, or with ``--discard`` (a gain not worth its complexity): the
  diff goes to ``trials/``, the branch is reset to the base.

``--baseline`` records a run of the unchanged base commit (the first one sets the goal
and the best; later ones only measure noise). It prints one line, or JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arlog  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ar_record.py",
        description="Append a run to the results log and keep or revert its commit.",
        epilog=(
            "examples:\n"
            "  python3 scripts/ar_record.py --baseline --goal min --metric 0.9979 -d baseline\n"
            "  python3 scripts/ar_record.py --metric \"$(python3 scripts/ar_metric.py '^val_bpb:')\" "
            "-d 'lr 0.04 -> 0.03'"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--metric", help="the run's metric; empty or missing counts as a crash")
    parser.add_argument("-d", "--description", required=True, help="one line: the idea that was tried")
    parser.add_argument("--baseline", action="store_true", help="a run of the unchanged base commit")
    parser.add_argument("--goal", choices=arlog.GOALS, help="min or max; required on the first baseline")
    parser.add_argument("--crash", action="store_true", help="the run crashed or timed out")
    parser.add_argument("--discard", action="store_true",
                        help="discard even if better (a gain too small for the complexity it adds)")
    parser.add_argument("--exit", type=int, default=0, help="the run's exit status; nonzero means crash")
    parser.add_argument("--min-delta", type=float, default=0.0,
                        help="smallest gain that counts (default 0; the baseline spread is used when larger)")
    parser.add_argument("--log", default=arlog.DEFAULT_LOG, help="results log (default: %(default)s)")
    parser.add_argument("--any-branch", action="store_true", help="allow a branch not named autoresearch/*")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    args = parser.parse_args(argv)
    if args.min_delta < 0:
        parser.error("--min-delta must be >= 0")
    return arlog.main_guard(lambda: record(args))


def record(args: argparse.Namespace) -> int:
    arlog.require_loop_branch(args.any_branch)
    rows = arlog.read_log(args.log)
    summary = arlog.summarize(rows)
    if not args.baseline and summary["best"] is None:
        arlog.fail("no successful baseline in the log yet: run the unchanged code and record it with "
                   "--baseline --goal min|max")
    goal = summary["goal"] or args.goal
    if goal is None:
        arlog.fail("the first row needs --goal min (lower is better) or --goal max (higher is better)")
    if args.goal and summary["goal"] and args.goal != summary["goal"]:
        arlog.fail(f"--goal {args.goal} contradicts the log, whose goal is {summary['goal']}")
    metric = None if args.crash or args.exit != 0 else arlog.parse_metric(args.metric)
    iteration = summary["next_iteration"]
    result = {"iteration": iteration, "goal": goal, "metric": metric, "previous_best": summary["best"]}

    if args.baseline:
        if arlog.dirty_paths():
            arlog.fail("a baseline run is a run of the committed code, but the tree has changes: "
                       + ", ".join(arlog.dirty_paths()[:5]))
        commit = arlog.head()
        if summary["base_commit"] and summary["base_commit"] != commit:
            arlog.fail(f"HEAD {commit} is not the base commit {summary['base_commit']}: "
                       "record the trial first, or `git reset --hard` to the base")
        status = "crash" if metric is None else "baseline"
        best = summary["best"] if summary["best"] is not None else metric
        reason = "baseline crashed: fix the set-up before any trial" if metric is None else "baseline run"
        result.update(status=status, commit=commit, best=best, reason=reason, patch=None)
        _write(args, result, summary, goal)
        return 0

    base = summary["base_commit"]
    base_full = arlog.git("rev-parse", "--verify", base + "^{commit}")
    note = ""
    if arlog.dirty_paths():
        # the run measured the working tree: commit its edits of tracked files (never untracked
        # files, which may be the run's outputs)
        arlog.git("commit", "-q", "-a", "-m", arlog.clean_text(args.description) or "autoresearch trial")
        note = "committed the uncommitted edits of tracked files first"
        left = arlog.dirty_paths(untracked=True)
        if left:
            note += f"; untracked files not committed: {', '.join(left[:5])}"
    commit = arlog.head()
    if arlog.head(short=False) == base_full:
        arlog.fail(f"nothing to record: HEAD is still the base commit {base} (edit and commit the idea first)")
    if not _is_ancestor(base_full):
        arlog.fail(f"the base commit {base} is not an ancestor of HEAD {commit}; check out the loop's branch")

    best, margin = summary["best"], max(args.min_delta, summary["noise"])
    if metric is None:
        status, reason = "crash", "no metric (crash, timeout or nonzero exit)"
    elif args.discard:
        status, reason = "discard", "discarded on purpose (not worth its complexity)"
    elif arlog.is_better(metric, best, goal, margin):
        status, reason = "keep", f"{metric:g} beats {best:g} by more than {margin:g}"
    elif abs(metric - best) <= margin and _net_lines(base_full) < 0:
        status, reason = "keep", f"{metric:g} equals {best:g} within {margin:g} with less code (simplicity rule)"
    else:
        status, reason = "discard", f"{metric:g} does not beat {best:g} by more than {margin:g}"

    patch = None
    if status == "keep":
        new_best = metric if arlog.is_better(metric, best, goal) else best
    else:
        new_best = best
        os.makedirs(arlog.TRIALS_DIR, exist_ok=True)
        patch = os.path.join(arlog.TRIALS_DIR, f"{iteration}-{commit}.patch")
        diff = arlog.git("diff", "--binary", base_full, "HEAD")
        with open(patch, "w", encoding="utf-8") as fh:
            fh.write(diff + "\n")
        arlog.git("reset", "-q", "--hard", base_full)
    result.update(status=status, commit=commit, best=new_best, reason=reason, patch=patch)
    if note:
        result["note"] = note
    _write(args, result, summary, goal)
    return 0


def _is_ancestor(base_full: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", base_full, "HEAD"]).returncode == 0


def _net_lines(base_full: str) -> int:
    """Lines added minus lines deleted between the base and HEAD (binary files count 0)."""
    net = 0
    for line in arlog.git("diff", "--numstat", base_full, "HEAD").splitlines():
        added, deleted, _ = line.split("\t", 2)
        if added != "-":
            net += int(added) - int(deleted)
    return net


def _write(args: argparse.Namespace, result: dict, summary: dict, goal: str) -> None:
    arlog.append_row(args.log, {
        "iteration": result["iteration"], "commit": result["commit"], "metric": result["metric"],
        "best": result["best"], "status": result["status"], "goal": goal, "description": args.description,
    })
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    metric = "-" if result["metric"] is None else f"{result['metric']:g}"
    best = "-" if result["best"] is None else f"{result['best']:g}"
    line = f"iteration {result['iteration']}: {result['status']} (metric {metric}, best {best}; {result['reason']})"
    if result.get("patch"):
        line += f"; diff saved to {result['patch']}, branch reset to {summary['base_commit']}"
    elif result["status"] == "keep":
        line += f"; branch advanced to {result['commit']}"
    print(line)
    if result.get("note"):
        print(f"note: {result['note']}")


if __name__ == "__main__":
    sys.exit(main())
