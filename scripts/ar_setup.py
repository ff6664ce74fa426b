#!/usr/bin/env python3
"""Start an autoresearch run: branch autoresearch/<tag>, an untracked results log, trials/.

usage: python3 scripts/ar_setup.py <tag> [--log results.tsv]

Run it at the root of the git repository whose code the loop will edit, with the
tracked files committed. It creates and checks out the branch ``autoresearch/<tag>``
from HEAD, writes the results log with only its header, creates ``trials/`` for the
patches of discarded ideas, and lists the log, ``trials/`` and ``run.log`` in
``.git/info/exclude`` so that they stay untracked and survive ``git reset --hard``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arlog  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ar_setup.py",
        description="Create the autoresearch/<tag> branch, the results log and trials/.",
        epilog="example: python3 scripts/ar_setup.py mar5",
    )
    parser.add_argument("tag", help="run tag, e.g. the date: mar5 (letters, digits, . _ -)")
    parser.add_argument("--log", default=arlog.DEFAULT_LOG, help="results log path (default: %(default)s)")
    args = parser.parse_args(argv)
    return arlog.main_guard(lambda: setup(args.tag, args.log))


def setup(tag: str, log: str) -> int:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", tag):
        arlog.fail(f"tag {tag!r} must start with a letter or digit and use only letters, digits, '.', '_', '-'")
    root = arlog.repo_root()
    if os.path.realpath(os.getcwd()) != os.path.realpath(root):
        arlog.fail(f"run this at the repository root {root}, not in {os.getcwd()}")
    branch = arlog.BRANCH_PREFIX + tag
    if arlog.git("rev-parse", "--verify", "--quiet", "refs/heads/" + branch, check=False):
        arlog.fail(
            f"branch {branch} already exists: pick a new tag, or resume it with "
            f"`git checkout {branch}` and `python3 scripts/ar_status.py`"
        )
    if os.path.exists(log):
        arlog.fail(f"{log} already exists: resume with `python3 scripts/ar_status.py`, or move it away")
    changed = [line for line in arlog.git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    if changed:
        arlog.fail(
            "the tracked files have uncommitted changes; the baseline must be a commit "
            f"(commit or stash them first): {', '.join(line[3:] for line in changed[:5])}"
        )

    exclude = arlog.git("rev-parse", "--git-path", "info/exclude")
    os.makedirs(os.path.dirname(exclude) or ".", exist_ok=True)
    existing = open(exclude, encoding="utf-8").read().splitlines() if os.path.exists(exclude) else []
    wanted = ["/" + log.lstrip("./"), "/" + arlog.TRIALS_DIR + "/", "/" + arlog.DEFAULT_RUN_LOG]
    missing = [entry for entry in wanted if entry not in existing]
    if missing:
        with open(exclude, "a", encoding="utf-8") as fh:
            if existing and existing[-1] != "":
                fh.write("\n")
            fh.write("# autoresearch loop files (untracked on purpose)\n" + "\n".join(missing) + "\n")

    arlog.git("checkout", "-q", "-b", branch)
    with open(log, "w", encoding="utf-8") as fh:
        fh.write("\t".join(arlog.HEADER) + "\n")
    os.makedirs(arlog.TRIALS_DIR, exist_ok=True)
    print(f"branch {branch} at {arlog.head()}; log {log} (header only); patches go to {arlog.TRIALS_DIR}/")
    print("next: run the unchanged code once and record it with --baseline --goal min|max")
    return 0


if __name__ == "__main__":
    sys.exit(main())
