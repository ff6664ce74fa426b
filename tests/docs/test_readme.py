"""The README stays true: CI runs exactly its test command, the main job is the demo, and every
Python example runs as written and prints what the README shows after it."""

import contextlib
import io
import re
from pathlib import Path

import pytest

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


def examples():
    """Every ```python block, with the ```text block that follows it (after a line such as
    "prints"), if any."""
    found = []
    for m in re.finditer(r"```python\n(.*?)```", README, flags=re.S):
        rest = README[m.end():]
        out = re.match(r"\s*\n(?:[^\n`]*\n)?\s*```text\n(.*?)```", rest, flags=re.S)
        line = README[: m.start()].count("\n") + 1
        found.append(pytest.param(m.group(1), out.group(1) if out else None, id=f"README.md:{line}"))
    return found


@pytest.mark.parametrize("code, expected", examples())
def test_every_python_example_runs_as_written(code, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.StringIO()
    namespace: dict = {"__name__": "__readme__"}
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    if expected is not None:
        assert buf.getvalue().rstrip() == expected.rstrip()
    for value in namespace.values():  # the examples leave no steering behind
        if type(value).__name__ == "Steer":
            assert value.get_all() == []


def test_the_readme_lists_every_file_of_the_package():
    listed = README.split("## How the code is organised", 1)[1]
    top = {ROOT / "autosteer", ROOT / "csrc"}
    for path in sorted((ROOT / "autosteer").rglob("*.py")) + sorted((ROOT / "csrc").glob("*.[ch]")):
        if path.parent in top:  # every module of the package and every C file by name
            assert f"`{path.name}`" in listed, path
        else:  # a subpackage by its folder
            assert f"`{path.parent.name}/`" in listed, path


def test_the_measured_sections_are_generated_from_the_benchmark_results():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
