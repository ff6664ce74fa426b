"""The README's two commands stay true: CI runs exactly the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bash_blocks(text):
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = bash_blocks(readme)
    test_cmd = next(b for b in blocks if "tests/run_all.sh" in b)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, f"{test_cmd!r} is not a line of .ci/run"


def test_main_job_command_is_the_demo():
    blocks = bash_blocks((ROOT / "README.md").read_text())
    assert any(b.startswith("python -m pip install torch==2.13.0") and "autosteer demo" in b for b in blocks)


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_manual_steering_example_runs_as_written(capsys):
    block = python_blocks((ROOT / "README.md").read_text())[0]
    assert "load_organism()" in block
    namespace = {}
    exec(compile(block, "README.md (manual steering)", "exec"), namespace)  # noqa: S102 - the README's own code
    printed = capsys.readouterr().out
    assert "['73', '36']" in printed  # the answers the README's comment promises
    assert namespace["steered"].get_all() == [] and namespace["s"].get_all() == []
