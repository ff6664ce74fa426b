"""docs/architecture.md stays true: it names every file of the package and of csrc/, and no
module imports against the arrows it draws (steering/ never imports search/, neither imports
the command line, the demo or the server, the shared helpers import no room)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
PKG = ROOT / "autosteer"
ROOMS = ("steering", "search")  # their modules are named one by one; other folders by name


def package_files():
    return sorted(PKG.rglob("*.py")) + sorted((ROOT / "csrc").glob("*.[ch]"))


@pytest.mark.parametrize("path", package_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_page_names_every_file(path):
    rel = path.relative_to(PKG if path.suffix == ".py" else ROOT)
    if path.parent in (PKG, ROOT / "csrc") or (len(rel.parts) == 2 and rel.parts[0] in ROOMS):
        assert f"`{path.name}`" in PAGE, f"docs/architecture.md does not name {path.name} ({rel})"
    else:  # a folder (strategies/, organism/, data/, serve/, ...) by its name
        assert f"`{rel.parts[0] if rel.parts[0] not in ROOMS else rel.parts[1]}/`" in PAGE, \
            f"docs/architecture.md does not name the folder of {rel}"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    """The autosteer modules a source imports (absolute or relative), at any depth in the file."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}  # `from autosteer import cli`
    return {m for m in found if m == "autosteer" or m.startswith("autosteer.")}


def imports_of(path: Path) -> set[str]:
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")


FORBIDDEN = {
    "autosteer.steering": ("autosteer.search", "autosteer.cli", "autosteer.demo", "autosteer.serve",
                           "autosteer.models"),
    "autosteer.search": ("autosteer.cli", "autosteer.demo", "autosteer.serve"),
    "autosteer.errors": ("autosteer.steering", "autosteer.search", "autosteer.serve"),
    "autosteer._checks": ("autosteer.steering", "autosteer.search", "autosteer.serve"),
    "autosteer._canonical": ("autosteer.steering", "autosteer.search", "autosteer.serve"),
}


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_follow_the_arrows(path):
    here = module_name(path)
    for room, banned in FORBIDDEN.items():
        if here == room or here.startswith(room + "."):
            bad = sorted(m for m in imports_of(path) for b in banned if m == b or m.startswith(b + "."))
            assert not bad, f"{here} imports {bad}: docs/architecture.md says {room} may not"


def test_the_import_scanner_sees_relative_and_late_imports():
    source = "from ..steering import steer\nfrom . import log\n\ndef f():\n    from autosteer.cli import main\n"
    assert imports_in(source, "autosteer.search.runner") == {
        "autosteer.steering", "autosteer.steering.steer", "autosteer.search", "autosteer.search.log",
        "autosteer.cli", "autosteer.cli.main"}
    assert "autosteer.steering.layers" in imports_in("from .layers import x\n", "autosteer.steering", True)
