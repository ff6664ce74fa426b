"""The usage lines of every `autosteer` command, as the parser prints them, for the top of
docs/cli.md (between <!-- cli-usage:begin --> and <!-- cli-usage:end -->).

    python tests/docs/cli_usage.py            # rewrite that section of docs/cli.md
    python tests/docs/cli_usage.py --check    # exit 1 if the page differs from the parser

tests/docs/test_cli_page.py runs the check, so the synopsis cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "cli.md"
SECTION = re.compile(r"(<!-- cli-usage:begin -->\n)(?:.*?\n)?(<!-- cli-usage:end -->)", re.S)


def usage() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: fix it
    sys.path.insert(0, str(ROOT))
    from autosteer import demo
    from autosteer.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    blocks = []
    for name, p in sub.choices.items():
        if name == "demo":  # `autosteer demo` hands its arguments to the demo's own parser
            p = demo.build_parser()
            p.prog = "autosteer demo"
        first, *rest = p.format_usage().rstrip().splitlines()
        blocks += [first.removeprefix("usage: "), *(line.removeprefix(" " * len("usage: ")) for line in rest)]
    return "```text\n" + "\n".join(blocks) + "\n```"


def render(text: str) -> str:
    if not SECTION.search(text):
        raise SystemExit("docs/cli.md has no <!-- cli-usage:begin --> ... <!-- cli-usage:end --> section")
    return SECTION.sub(lambda m: m.group(1) + usage() + "\n" + m.group(2), text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    old = PAGE.read_text(encoding="utf-8")
    new = render(old)
    if a.check:
        if new != old:
            print("docs/cli.md's usage lines differ from the parser: run python tests/docs/cli_usage.py")
            return 1
        return 0
    PAGE.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
