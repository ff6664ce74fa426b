"""SKILL.md's quick start, install line included, in a fresh virtual environment: nothing the
test environment happens to have installed (matplotlib, say) can make it pass."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import quick_start_blocks

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_quick_start_in_a_clean_venv(tmp_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not available")
    install, commands = quick_start_blocks()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", S=str(ROOT), HF_HUB_OFFLINE="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", VIRTUAL_ENV=str(venv))
    work = tmp_path / "work"
    work.mkdir()
    script = install + "\n" + commands
    proc = subprocess.run([bash, "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, f"quick start failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    # the installed package is the one from this checkout, in the new environment
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import autosteer, sys; print(autosteer.__file__)"],
                           capture_output=True, text=True, env=env, cwd=work, timeout=120)
    assert where.stdout.strip().startswith(str(ROOT)), where.stdout + where.stderr
    assert re.search(r"^best_score: ", proc.stdout, re.M)
    assert json.loads((work / "best.json").read_text())["metric"] == "task_accuracy"
    assert (work / "progress.png").read_bytes()[:4] == b"\x89PNG"
