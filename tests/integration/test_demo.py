"""`autosteer demo`, the main job, end to end on the embedded model (few iterations)."""

from __future__ import annotations

import json
import subprocess
import sys

from autosteer.search.log import read_log


def run_demo(tmp_path, *args):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "autosteer", "demo", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


def test_demo_task_accuracy_end_to_end(tmp_path):
    out, text = run_demo(tmp_path, "--iterations", "4", "--num-holdout", "100")
    assert "Baseline: " in text and "-> Best: " in text
    assert "Held-out task_accuracy: " in text
    assert "Before / after on held-out prompts" in text
    history = read_log(out / "steer_log.tsv")
    assert [row["status"] for row in history][0] == "baseline" and len(history) == 5
    assert (out / "progress.png").stat().st_size > 1000
    if (out / "best.json").exists():
        best = json.loads((out / "best.json").read_text())
        assert best["vectors"]
        assert "steered.add(" in text


def test_demo_perplexity_end_to_end(tmp_path):
    out, text = run_demo(tmp_path, "--metric", "perplexity", "--iterations", "3", "--num-holdout", "100")
    assert "Held-out perplexity of the correct answers: " in text
    assert len(read_log(out / "steer_log.tsv")) == 4


def test_demo_bad_input_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autosteer", "demo", "--metric", "bogus"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_demo_refuses_bad_ranges_before_loading(tmp_path):
    for args in (["--layers", "3"], ["--coeffs", "x:y"], ["--num-prompts", "0"], ["--num-holdout", "100000"],
                 ["--threads", "0"], ["--layers", "2:1"]):
        proc = subprocess.run([sys.executable, "-m", "autosteer", "demo", *args],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "error:" in proc.stderr


def test_demo_json_prints_one_object(tmp_path):
    out, text = run_demo(tmp_path, "--iterations", "2", "--num-holdout", "20", "--json")
    report = json.loads(text)  # stdout holds the JSON object alone
    assert report["metric"] == "task_accuracy" and report["model"] == "organism"
    assert 0 <= report["baseline_holdout"] <= 1 and len(report["examples"]) == 3
    assert report["log"].endswith("steer_log.tsv") and len(read_log(report["log"])) == 3


def test_demo_prints_as_many_examples_as_the_readme_shows(tmp_path):
    from pathlib import Path

    from autosteer.demo import EXAMPLES

    out, text = run_demo(tmp_path, "--iterations", "1", "--num-holdout", "10")
    block = text.split("Before / after on held-out prompts (greedy):\n", 1)[1].split("\n\n", 1)[0]
    assert len(block.splitlines()) == EXAMPLES
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    shown = readme.split("Before / after on held-out prompts (greedy):\n", 1)[1].split("```", 1)[0]
    assert len(shown.strip().splitlines()) == EXAMPLES
