"""docs/api.md documents every public name of `autosteer` (its __all__): a new public class
gets its reference entry, generated from its docstring, when it is exported."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import autosteer

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")


def _resolve(path: str):
    """The object a `::: dotted.path` names (a module, or an attribute of one)."""
    try:
        return importlib.import_module(path)
    except ImportError:
        module, _, name = path.rpartition(".")
        return getattr(_resolve(module), name)


def documented() -> set[int]:
    """ids of the objects the page renders: each `::: path` entry, the `members:` it lists, or,
    for a module rendered whole, its public names."""
    found: set[int] = set()
    for m in re.finditer(r"^::: (\S+)\n((?:    .*\n)*)", PAGE, flags=re.M):
        obj = _resolve(m.group(1))
        members = re.search(r"members: \[([^\]]*)\]", m.group(2))
        if members:
            found |= {id(getattr(obj, n.strip())) for n in members.group(1).split(",")}
        elif isinstance(obj, type(autosteer)):
            names = getattr(obj, "__all__", [n for n in vars(obj) if not n.startswith("_")])
            found |= {id(getattr(obj, n)) for n in names}
        else:
            found.add(id(obj))
    return found


def test_every_public_name_has_a_reference_entry():
    have = documented()
    missing = [n for n in autosteer.__all__ if id(getattr(autosteer, n)) not in have]
    assert not missing, f"docs/api.md has no `::: module.Name` entry for {missing}"
