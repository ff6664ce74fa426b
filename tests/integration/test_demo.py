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


def test_demo_prints_as_many_examples_as_the_docs_show(tmp_path):
    from pathlib import Path

    from autosteer.demo import EXAMPLES

    out, text = run_demo(tmp_path, "--iterations", "1", "--num-holdout", "10")
    block = text.split("Before / after on held-out prompts (greedy):\n", 1)[1].split("\n\n", 1)[0]
    assert len(block.splitlines()) == EXAMPLES
    page = (Path(__file__).resolve().parents[2] / "docs" / "getting-started.md").read_text(encoding="utf-8")
    shown = page.split("Before / after on held-out prompts (greedy):\n", 1)[1].split("```", 1)[0]
    assert len(shown.strip().splitlines()) == EXAMPLES


def demo_proc(cwd, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "autosteer", "demo", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_demo_refuses_to_overwrite_an_earlier_demo_unless_overwrite(tmp_path):
    """`autosteer demo --out DIR` overwrote steer_log.tsv, best.json, best.safetensors already there:
    a second demo into the same folder is refused before the model loads (exit 2, naming the folder,
    the files and --overwrite), and --overwrite replaces them."""
    out, _ = run_demo(tmp_path, "--iterations", "1", "--num-holdout", "10")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "steer_log.tsv" in before
    proc = demo_proc(tmp_path, "--out", str(out), "--iterations", "1", "--num-holdout", "10", timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--out {str(out)!r} already holds steer_log.tsv" in proc.stderr and "--overwrite" in proc.stderr
    assert "AutoSteer demo:" not in proc.stdout  # refused before the model loaded
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    proc = demo_proc(tmp_path, "--out", str(out), "--iterations", "2", "--num-holdout", "10", "--overwrite")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(read_log(out / "steer_log.tsv")) == 3  # the new run's baseline and 2 trials


def test_demo_out_naming_a_file_exits_2_and_each_model_has_its_own_default_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    proc = demo_proc(tmp_path, "--out", "notes.txt", timeout=120)
    assert proc.returncode == 2 and "--out 'notes.txt' is an existing file, not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr and (tmp_path / "notes.txt").read_text() == "mine\n"
    # the organism and SmolLM2 demos do not share a default folder (refused before either model loads)
    for model, folder in (("organism", "demo_out"), ("smollm2", "demo_out_smollm2")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "best.json").write_text("{}\n")
        proc = demo_proc(tmp_path, "--model", model, timeout=120)
        assert proc.returncode == 2 and f"--out {folder!r} already holds best.json" in proc.stderr, proc.stderr
    from autosteer.demo import default_out

    assert default_out("./models/My Model.gguf") == "demo_out_My_Model"
