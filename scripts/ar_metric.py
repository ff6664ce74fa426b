#!/usr/bin/env python3
"""Read the metric from a run's log: the number on the last line that matches a regex.

usage: python3 scripts/ar_metric.py <regex> [run.log]

With a capture group the group is the number (``'val_bpb:\\s*([0-9.eE+-]+)'``);
without one, the first number after the match is taken (``'^val_bpb:'``).
It prints only the number and exits 0, or prints nothing (the reason goes to
stderr) and exits 1 when no line matches: treat that run as a crash.
"""

from __future__ import annotations

import argparse
import re
import sys

NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)", re.IGNORECASE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ar_metric.py",
        description="Print the metric from the last log line that matches REGEX.",
        epilog="example: python3 scripts/ar_metric.py '^val_bpb:' run.log",
    )
    parser.add_argument("regex", help="Python regular expression, searched in each line")
    parser.add_argument("log", nargs="?", default="run.log", help="log file (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        pattern = re.compile(args.regex)
    except re.error as exc:
        print(f"error: bad regex {args.regex!r}: {exc}", file=sys.stderr)
        return 2
    try:
        with open(args.log, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        print(f"error: cannot read {args.log}: {exc}", file=sys.stderr)
        return 1
    for line in reversed(lines):
        match = pattern.search(line)
        if not match:
            continue
        if pattern.groups:
            number = NUMBER.search(match.group(1) or "")
        else:
            number = NUMBER.search(line[match.end():]) or NUMBER.search(match.group(0))
        if number:
            print(number.group(0))
            return 0
    print(f"no line of {args.log} matches {args.regex!r} with a number: count this run as a crash",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
