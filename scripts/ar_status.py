#!/usr/bin/env python3
"""Where an autoresearch run stands, from its results log alone: resume from here.

usage: python3 scripts/ar_status.py [--log results.tsv] [--json]

Prints the goal, the baseline, the best metric and its commit, the counts of keeps,
discards and crashes, the measured noise, the next iteration number, and whether the
git tree is where the log says it should be (HEAD at the base commit, no changes).
When it is not, it says which command puts it back. Exit status 0, or 2 when there
is no readable log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arlog  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ar_status.py",
        description="Summarise the results log and check the git state, to resume a loop.",
        epilog="example: python3 scripts/ar_status.py --json",
    )
    parser.add_argument("--log", default=arlog.DEFAULT_LOG, help="results log (default: %(default)s)")
    parser.add_argument("--last", type=int, default=5, help="recent rows to show (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    args = parser.parse_args(argv)
    return arlog.main_guard(lambda: status(args))


def status(args: argparse.Namespace) -> int:
    rows = arlog.read_log(args.log)
    summary = arlog.summarize(rows)
    branch = arlog.current_branch()
    head = arlog.head()
    dirty = arlog.dirty_paths()
    base = summary["base_commit"]
    if not rows:
        state, advice = "new", "run the unchanged code and record it with --baseline --goal min|max"
    elif base is None:
        state, advice = "no-baseline", "the baseline crashed: fix the set-up, re-run, record with --baseline"
    elif arlog.git("rev-parse", "--verify", base + "^{commit}") != arlog.head(short=False):
        state = "unrecorded-trial"
        advice = (f"HEAD {head} is past the base {base}: run it and record the result with ar_record.py, "
                  f"or drop it with `git reset --hard {base}`")
    elif dirty:
        state = "uncommitted-changes"
        advice = (f"tracked files have uncommitted changes ({', '.join(dirty[:5])}): commit them as the next "
                  "trial, or `git checkout -- .`")
    else:
        state, advice = "ready", f"start iteration {summary['next_iteration']}: one idea, edit, commit, run, record"
    if not branch.startswith(arlog.BRANCH_PREFIX):
        advice = f"check out the loop's branch ({arlog.BRANCH_PREFIX}<tag>) first; then: " + advice
    summary.update(branch=branch, head=head, dirty=dirty, state=state, advice=advice, log=args.log,
                   recent=[{k: r[k] for k in arlog.HEADER} for r in rows[-args.last:]] if args.last > 0 else [])

    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    counts = summary["counts"]
    fmt = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
    print(f"log {args.log}: {summary['runs']} runs, goal {summary['goal'] or '-'} "
          f"(baseline {counts['baseline']}, keep {counts['keep']}, discard {counts['discard']}, crash {counts['crash']})")
    print(f"baseline {fmt(summary['baseline'])} -> best {fmt(summary['best'])} "
          f"(iteration {summary['best_iteration'] if summary['best_iteration'] is not None else '-'}), "
          f"base commit {base or '-'}, noise {fmt(summary['noise'])}")
    print(f"branch {branch} at {head}; next iteration {summary['next_iteration']}; state {state}")
    for row in summary["recent"]:
        print(f"  {row['iteration']:>4}  {row['commit']:<9} {fmt(row['metric']):>12}  {row['status']:<8} "
              f"{row['description']}")
    print(f"next: {advice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
