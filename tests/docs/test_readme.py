"""The README stays true and short: CI runs exactly its test command, the main job is the
demo, it has at most 300 lines, and the measured sections of every page are what
benchmarks/report.py generates from benchmarks/results/*.json. (Its Python examples run in
tests/docs/test_examples.py, with those of docs/.)"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def bash_blocks(text):
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command():
    test_cmd = next(b for b in bash_blocks(README) if "tests/run_all.sh" in b)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, f"{test_cmd!r} is not a line of .ci/run"


def test_main_job_command_is_the_demo():
    assert any(b.startswith("python -m pip install torch==2.13.0") and "autosteer demo" in b
               for b in bash_blocks(README))


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 300


def test_the_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


def test_the_measured_sections_are_generated_from_the_benchmark_results():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
