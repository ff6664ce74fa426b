"""Every `autosteer ...` command shown in a bash block of the README, the docs pages, SKILL.md
and the skill's reference pages parses with the real command-line parser: no documented option is a typo or
an option that no longer exists (the quick starts and examples that run are tested elsewhere)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from autosteer import demo
from autosteer.cli import UsageError, build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "SKILL.md", "references/steering.md",
        *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))]


def commands():
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for m in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
            block = m.group(1).replace("\\\n", " ")
            line0 = text[: m.start()].count("\n") + 2
            for i, line in enumerate(block.splitlines()):
                for part in re.split(r"\s(?:&&|\|\||;|\|)\s", line):
                    part = part.strip()
                    if part.startswith("autosteer "):
                        found.append(pytest.param(part, id=f"{doc}:{line0 + i}"))
    return found


@pytest.mark.parametrize("command", commands())
def test_documented_command_parses(command):
    command = re.sub(r"\$\([^)]*\)", "x", command)  # $(git rev-parse ...) and the like
    command = command.split(">")[0]  # a redirection is the shell's, not the command's
    command = re.sub(r"\s&\s*$", "", command)  # so is running it in the background
    args = shlex.split(command, comments=True)[1:]
    parser = build_parser()
    if args and args[0] == "demo":  # the demo has its own parser
        parser, args = demo.build_parser(), args[1:]
    try:
        parser.parse_args(args)
    except (SystemExit, UsageError) as e:
        pytest.fail(f"`{command}` does not parse: {e}")


def test_the_documents_show_commands():
    assert len(commands()) >= 12
