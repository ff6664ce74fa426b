"""notebooks/autosteer_demo.ipynb: saved with its outputs, and executes end to end
offline (in a scratch folder, so the committed results stay untouched)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "autosteer_demo.ipynb"


def test_notebook_is_saved_with_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the schedules and the two searches


def test_notebook_matches_its_builder():
    sys.path.insert(0, str(ROOT / "notebooks"))
    try:
        import build_notebook
    finally:
        sys.path.pop(0)
    built = [c.source for c in build_notebook.build().cells]
    saved = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells]
    assert built == saved, "regenerate with: python notebooks/build_notebook.py"


def test_notebook_executes_without_errors(tmp_path):
    from nbclient import NotebookClient

    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    nb = nbformat.read(work / NOTEBOOK.name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    assert sorted(p.name for p in work.iterdir()) == [NOTEBOOK.name]  # nothing written beside it
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "Baseline: " in text and "held-out accuracy" in text


def _texts(nb):
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            yield out.get("name", out.output_type), out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))


def test_saved_outputs_are_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for stream, text in _texts(nb):
        assert stream != "stderr", text[:200]
        for bad in ("Warning", "/tmp/", "/work/", "/home/", "Loading weights", "%|", "it/s]"):
            assert bad not in text, (bad, text[:200])


def test_the_notebook_writes_nothing_into_the_repository():
    source = NOTEBOOK.read_text(encoding="utf-8")
    assert "results/" not in source and "tempfile.mkdtemp" in source
    assert not (ROOT / "notebooks" / "results").exists()
