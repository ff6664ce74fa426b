"""The ``autosteer`` command line, run as a user or an agent runs it: ``python -m autosteer``.

Offline: the models are a tiny random-weight Llama saved to a temporary folder (the
``--model PATH`` route) and the embedded model organism (``--model organism``, skipped
when its weights are not built). The quick start of SKILL.md is run as written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_models

from autosteer import cli

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = ("search", "best", "plot", "generate", "export")


def _a_log() -> str:
    from autosteer import SteerCandidate
    from autosteer.search.log import FORMAT_VERSION, HEADER, format_row
    from autosteer.search.trial import TrialRecord

    config = {"format": FORMAT_VERSION, "metric": "perplexity", "lower_is_better": True}
    return HEADER + "\n" + format_row(TrialRecord(0, "baseline", SteerCandidate(), score=2.0), config)


LOG_TEXT = _a_log()


def env_for(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.pop("AUTOSTEER_DEBUG", None)
    return env


def autosteer(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autosteer", *args], cwd=cwd, env=env_for(cwd),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny Llama and its tokenizer saved like any Hugging Face model folder."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    tiny_models.make_model("llama").save_pretrained(directory)
    tiny_models.make_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [("what is 3 plus 4 ?", "7"), ("what is 2 plus 2 ?", "4"), ("I feel calm because", "the")]
    path.write_text("".join(json.dumps({"prompt": p, "expected": e}) + "\n" for p, e in rows))
    return path


# --------------------------------------------------------------------------- help and bad input

def test_every_command_has_help_with_an_example(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out and f"autosteer {command}" in out, command
        assert "--json" in out, command


def test_top_level_help_and_python_m(tmp_path):
    proc = autosteer("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for command in (*COMMANDS, "demo"):
        assert command in proc.stdout
    assert "exit status" in proc.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "COMMAND"),
        (["search", "--model", "organism", "--metric", "task_accuracy"], "--prompts"),
        (["search", "--model", "organism", "--prompts", "nope.jsonl", "--metric", "task_accuracy"],
         "does not exist"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "bleu"], "invalid choice"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "task_accuracy"],
         "needs expected answers"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--layers", "5:2"],
         "empty"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--coeffs", "a:b"],
         "numbers"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity",
          "--iterations", "-1"], ">= 0"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "task_accuracy",
          "--expected", "two.txt"], "1 answers for 2 prompts"),
        (["search", "--model", "organism", "--prompts", "bad.jsonl", "--metric", "perplexity"], "line 2"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--layers", "-1:3"],
         "layer indices must be >= 0"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--coeffs", "-0.5:1"],
         "coefficient magnitudes must be >= 0"),
        (["search", "--model", "organsim", "--prompts", "p.txt", "--metric", "perplexity"],
         "did you mean 'organism'?"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--device", "cuda"],
         "no usable CUDA device"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--device", "gpu0"],
         "is not a torch device"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--log", "p.txt"],
         "already exists and is a file that is not an AutoSteer results log"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--population", "0"],
         ">= 1"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--threads", "x"],
         "whole number"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--keep-rule", "paired",
          "--alpha", "1.5"], "alpha must be a level strictly between 0 and 1"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--keep-rule", "median"],
         "invalid choice"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--strategy", "random",
          "--patience", "3"], "--patience is an option of --strategy local, not of --strategy random"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--fluency-margin", "2"],
         "--fluency-margin is an option of --metric steered_concept or steered_answer, not of --metric perplexity"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--alpha", "0.2"],
         "--alpha is an option of --keep-rule paired, not of --keep-rule mean"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--n-init", "-1"],
         "LocalSearch.n_init must be an integer >= 0, got -1"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "concept_rate"],
         "--metric concept_rate needs --concept-pattern: the concept"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--ray",
          "--device", "cpu"], "--device sets where an in-process search runs"),
        (["search", "--model", "organism", "--prompts", "p.txt", "--metric", "perplexity", "--ray",
          "--worker-cpus", "-1"], "--worker-cpus and --worker-gpus must be >= 0"),
        (["best", "log.tsv", "--json", "--code"], "alternatives"),
        (["plot", "log.tsv", "-o", "no/such/dir/a.png"], "does not exist"),
        (["plot", "log.tsv", "-o", "out.xyz"], "argument -o/--output: cannot write a plot to 'out.xyz': 'xyz' is not "
                                               "an image format matplotlib writes"),
        (["generate", "--model", "organism", "--config", "deep.json", "hello"], "nested deeper than"),
        (["best", "p.txt"], "not an AutoSteer results log"),
        (["best", "missing.tsv"], "does not exist"),
        (["plot", "missing.tsv"], "does not exist"),
        (["generate", "--model", "./no/such/dir", "hello"], "no such directory"),
        (["generate", "--model", "organism", "--config", "p.txt", "hello"], "not valid JSON"),
    ],
)
def test_bad_input_exits_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("p.txt").write_text("what is 3 plus 4 ?\nwhat is 2 plus 2 ?\n")
    Path("two.txt").write_text("7\n")
    Path("bad.jsonl").write_text('{"prompt": "a"}\n{"text": "b"}\n')
    Path("deep.json").write_text("[" * 100 + "]" * 100)
    Path("log.tsv").write_text(LOG_TEXT)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    # the same with --json: a JSON error object on stdout
    if argv:
        assert cli.main([*argv, "--json"]) == 2
        out = json.loads(capsys.readouterr().out)
        assert out["exit_code"] == 2 and out["error"]


def test_prompt_files_text_and_jsonl(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("first prompt\n\n  second prompt\n")
    assert cli.read_prompts(str(text)) == (["first prompt", "  second prompt"], None)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a", "expected": "1"}\n{"prompt": "b", "expected": "2"}\n')
    assert cli.read_prompts(str(jsonl)) == (["a", "b"], ["1", "2"])
    for value in ("2", "7.0", "null", "[1]", "true"):
        if value == "null":
            continue  # null means "no expected answer" (and then every line must lack one)
        bad = tmp_path / "b.jsonl"
        bad.write_text('{"prompt": "a", "expected": "1"}\n{"prompt": "b", "expected": ' + value + "}\n")
        with pytest.raises(cli.UsageError, match=r'b\.jsonl line 2: "expected" must be a string'):
            cli.read_prompts(str(bad))
    mixed = tmp_path / "m.jsonl"
    mixed.write_text('{"prompt": "a", "expected": "1"}\n{"prompt": "b"}\n')
    with pytest.raises(cli.UsageError, match="line 2"):
        cli.read_prompts(str(mixed))


def test_a_byte_order_mark_is_dropped_before_the_format_is_detected(tmp_path):
    """A JSONL prompts file saved with a UTF-8 BOM (Windows editors) and not named .jsonl was read
    as plain text: the JSON lines became prompts and the expected answers were lost."""
    rows = '{"prompt": "what is 3 plus 4 ?", "expected": "7"}\n{"prompt": "what is 2 plus 2 ?", "expected": "4"}\n'
    for name in ("p.txt", "p.jsonl"):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))
        assert cli.read_prompts(str(path)) == (["what is 3 plus 4 ?", "what is 2 plus 2 ?"], ["7", "4"])
    text = tmp_path / "t.txt"
    text.write_bytes("\ufefffirst\nsecond\n".encode("utf-8"))
    assert cli.read_prompts(str(text)) == (["first", "second"], None)  # no BOM glued to the first prompt


def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path, capsys):
    """--prompts latin1.txt raised a bare UnicodeDecodeError naming no file."""
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("what is 3 plus 4 ?\nle caf\u00e9 est\n".encode("latin-1"))
    from autosteer.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"prompts file '.*latin1\.txt' is not UTF-8 text: line 2 column 7 "
                                                   r"has the byte 0xe9"):
        cli.read_prompts(str(latin1))
    assert cli.main(["search", "--model", "organism", "--prompts", str(latin1), "--metric", "perplexity"]) == 2
    err = capsys.readouterr().err
    assert "latin1.txt" in err and "line 2" in err and "UnicodeDecodeError" not in err
    expected = tmp_path / "e.txt"
    expected.write_bytes(b"7\n\xe9\n")
    (tmp_path / "p.txt").write_text("a\nb\n")
    assert cli.main(["search", "--model", "organism", "--prompts", str(tmp_path / "p.txt"), "--metric",
                     "task_accuracy", "--expected", str(expected)]) == 2
    assert "expected answers file" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end, tiny model

def test_search_best_plot_generate_on_a_model_folder(tiny_dir, prompts, tmp_path):
    model = str(tiny_dir)
    proc = autosteer("search", "--model", model, "--prompts", str(prompts), "--metric", "perplexity",
                     "--layers", "0:2", "--texts", "calm", "happy", "--iterations", "3", "--seed", "1",
                     "--log", "results.tsv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # piped: plain progress lines, no bar; the report ends with lines made for grep
    assert "[autosteer] baseline" in proc.stdout and "\r" not in proc.stdout
    scores = dict(re.findall(r"^(baseline_score|best_score): (\S+)$", proc.stdout, re.M))
    assert float(scores["best_score"]) <= float(scores["baseline_score"])  # perplexity: lower is better

    best = autosteer("best", "results.tsv", "--json", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    summary = json.loads(best.stdout)
    assert summary["metric"] == "perplexity" and summary["lower_is_better"] is True
    assert summary["best_score"] == float(scores["best_score"])
    assert summary["iterations"] == 3 and summary["keeps"] + summary["discards"] + summary["crashes"] == 3
    (tmp_path / "best.json").write_text(best.stdout)

    code = autosteer("best", "results.tsv", "--code", cwd=tmp_path)
    assert code.returncode == 0
    if summary["candidate"]["vectors"]:
        assert "steered = Steer(model, tokenizer)" in code.stdout and "steered.add(" in code.stdout
        compile(code.stdout, "best.py", "exec")
    else:
        assert "no steering configuration beat the baseline" in code.stdout

    plot = autosteer("plot", "results.tsv", "-o", "progress.png", "--json", cwd=tmp_path)
    if plot.returncode == 1 and "matplotlib" in plot.stderr:
        pytest.skip("matplotlib is not installed")
    assert plot.returncode == 0, plot.stderr
    assert json.loads(plot.stdout)["plot"] == "progress.png"
    assert (tmp_path / "progress.png").read_bytes()[:4] == b"\x89PNG"

    gen = autosteer("generate", "--model", model, "--config", "best.json", "--compare",
                    "--max-new-tokens", "4", "--json", "I feel calm because", "what is", cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr
    out = json.loads(gen.stdout)
    assert [g["prompt"] for g in out["generations"]] == ["I feel calm because", "what is"]
    assert all(set(g) == {"prompt", "steered", "unsteered"} for g in out["generations"])


def test_search_json_resume_and_model_errors(tiny_dir, prompts, tmp_path):
    model = str(tiny_dir)
    common = ["search", "--model", model, "--prompts", str(prompts), "--metric", "task_accuracy",
              "--layers", "1:2", "--texts", "calm", "--seed", "3", "--max-new-tokens", "2",
              "--log", "r.tsv", "--json"]
    first = autosteer(*common, "--iterations", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)  # stdout holds the JSON object alone
    assert one["iterations"] == 2 and one["metric"] == "task_accuracy"
    more = autosteer(*common, "--iterations", "4", "--resume", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout)["iterations"] == 4
    assert len((tmp_path / "r.tsv").read_text().splitlines()) == 1 + 5

    # a layer range outside the model is bad input (SearchSpaceError is a ValueError): exit 2
    bad = autosteer(*common[:-1], "--layers", "0:40", "--iterations", "1", cwd=tmp_path)
    assert bad.returncode == 2 and "layer" in bad.stderr
    # a model folder that exists but holds no model: the run fails, exit 1
    (tmp_path / "empty-model").mkdir()
    failed = autosteer("generate", "--model", str(tmp_path / "empty-model"), "hello", cwd=tmp_path)
    assert failed.returncode == 1 and failed.stderr.startswith("error:")


# --------------------------------------------------------------------------- SKILL.md's quick start

def quick_start_blocks() -> tuple[str, str]:
    """The quick start's two bash blocks: the install line, then the commands."""
    text = (ROOT / "SKILL.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the quick start has an install block and a commands block"
    return blocks[0], blocks[1]


def quick_start_block() -> str:
    return quick_start_blocks()[1]


def test_skill_quick_start_runs_as_written(tmp_path):
    script = quick_start_block()
    assert "--model organism" in script
    # `autosteer` as installed by `pip install -e .`: here a shim in front of PATH
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "autosteer"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m autosteer "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    work = tmp_path / "work"
    work.mkdir()
    env = env_for(work)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not available")
    proc = subprocess.run([bash, "-euo", "pipefail", "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"quick start failed:\n{proc.stdout}\n{proc.stderr}"
    assert re.search(r"^best_score: ", proc.stdout, re.M)
    best = json.loads((work / "best.json").read_text())
    assert best["metric"] == "task_accuracy" and best["best_score"] >= best["baseline_score"]
    assert "before:" in proc.stdout and "after:" in proc.stdout
    assert (work / "progress.png").stat().st_size > 0


def test_resume_without_a_log_starts_a_fresh_run_like_the_api(tiny_dir, prompts, tmp_path):
    proc = autosteer("search", "--model", str(tiny_dir), "--prompts", str(prompts), "--metric", "perplexity",
                     "--layers", "0:2", "--texts", "calm", "--iterations", "1", "--log", "fresh.tsv", "--resume",
                     "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "fresh.tsv").read_text().splitlines()) == 3


def test_help_answers_without_importing_torch(tmp_path):
    code = ("import sys; from autosteer import cli; p = cli.build_parser(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=env_for(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_search_options_have_help_and_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["search", "--help"])
    out = capsys.readouterr().out
    for option, words in (("--metric", "what to optimise"), ("--seed", "default: 0"),
                          ("--max-new-tokens", "default: 16"), ("--batch-size", "default: 8"),
                          ("--log", "default: steer_log.tsv"), ("--population", "default: 1")):
        assert option in out and words in out, option


def test_demo_is_forwarded(tmp_path):
    proc = autosteer("demo", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--iterations" in proc.stdout


def test_strategy_and_keep_rule_options_reach_the_log(tmp_path):
    rows = [("20 plus 3 =", "23"), ("24 plus 5 =", "29"), ("25 minus 8 =", "17"), ("79 minus 3 =", "76")]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p, "expected": e}) + "\n" for p, e in rows))
    out = autosteer("search", "--model", "organism", "--prompts", "p.jsonl", "--metric", "task_accuracy",
                    "--holdout", "p.jsonl", "--layers", "0:3", "--max-new-tokens", "4", "--strategy", "tpe",
                    "--keep-rule", "paired", "--alpha", "0.3", "--paired-test", "sign", "--min-improvement", "0.01",
                    "--n-startup", "2", "--screen", "3", "--screen-alpha", "0.3",
                    "--iterations", "6", "--population", "3", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    from autosteer import read_log

    hist = read_log(tmp_path / "steer_log.tsv")
    c = hist.config
    assert (c["strategy"], c["keep_rule"], c["alpha"], c["test"], c["min_improvement"], c["population"]) == (
        "tpe", "paired", 0.3, "sign", 0.01, 3)
    assert (c["screen"], c["screen_alpha"]) == (3, 0.3)
    assert c["strategy_options"] == {"n_startup": 2}
    assert all("keep_p" in r.details or r.details["fidelity"] == 0.75 for r in hist[1:] if r.status != "crash")
    summary = json.loads(out.stdout)
    assert summary["iterations"] == 6 and "confidence" in summary


def test_undecodable_input_file_is_bad_input(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"\xff\xfehello\n")
    proc = subprocess.run([sys.executable, "-m", "autosteer", "best", str(bad), "--json"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr


def test_export_writes_both_formats_from_a_log_or_best_json(tiny_dir, prompts, tmp_path):
    model = str(tiny_dir)
    proc = autosteer("search", "--model", model, "--prompts", str(prompts), "--metric", "perplexity",
                     "--layers", "2:2", "--texts", "calm", "happy", "--iterations", "3", "--seed", "1",
                     "--log", "s.tsv", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    best = autosteer("best", "s.tsv", "--json", cwd=tmp_path)
    (tmp_path / "best.json").write_text(best.stdout)
    if not json.loads(best.stdout)["candidate"]["vectors"]:
        pytest.skip("nothing beat the baseline in this tiny search")
    for source, out in (("s.tsv", "b.safetensors"), ("best.json", "b.gguf")):
        done = autosteer("export", source, "--model", model, "-o", out, "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["format"] == out.split(".")[1] and (tmp_path / out).stat().st_size > 0
    again = autosteer("export", "best.json", "--model", model, "-o", "b.gguf", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    from autosteer import Steer

    m, tok = __import__("autosteer").load_model(model)
    s = Steer.load(m, tok, tmp_path / "b.safetensors")
    assert [v["layer_idx"] for v in s.get_all()] and s.get_all()[0]["text"] in ("calm", "happy")
    s.reset_all()


def test_ctrl_c_prints_the_exact_command_that_resumes(tmp_path):
    """Ctrl-C printed only "interrupted": it also prints the command that continues the run, and
    that command, run as printed, completes it."""
    import shlex
    import signal
    import time

    rows = [("20 plus 3 =", "23"), ("24 plus 5 =", "29"), ("25 minus 8 =", "17"), ("79 minus 3 =", "76")]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p, "expected": e}) + "\n" for p, e in rows))
    argv = ["search", "--model", "organism", "--prompts", "p.jsonl", "--metric", "task_accuracy", "--layers", "0:3",
            "--max-new-tokens", "4", "--iterations", "400", "--log", "run log.tsv", "--overwrite", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "autosteer", *argv], cwd=tmp_path, env=env_for(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run log.tsv"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and log.read_text().count("\n") >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.count("interrupted") == 1, err  # "interrupted after N trial(s) ..." once, not a bare line too
    want = "autosteer " + shlex.join([a for a in argv if a != "--overwrite"] + ["--resume"])
    assert f"continue the run with (from this folder):\n  {want}\n" in err
    assert cli.resume_command(["best", "log.tsv"]) is None
    # the printed command, run as printed (here through python -m), completes the run
    resumed = shlex.split(want)[1:]
    resumed[resumed.index("400")] = str(len(read_log_rows(log)) + 1)
    done = autosteer(*resumed, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["iterations"] == int(resumed[resumed.index("--iterations") + 1])


def test_ctrl_c_in_the_demo_prints_the_command_that_resumes_it(tmp_path):
    """Ctrl-C in `autosteer demo` exited 130 with only "interrupted", the demo had no --resume and
    rerunning it was refused: now it says what the log kept, prints the exact command with
    --resume, and that command, run as printed, continues the same log to the end."""
    import shlex
    import signal
    import time

    argv = ["demo", "--out", "demo dir", "--iterations", "400", "--num-prompts", "4", "--num-holdout", "4",
            "--overwrite", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "autosteer", *argv], cwd=tmp_path, env=env_for(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "demo dir" / "steer_log.tsv"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and log.read_text().count("\n") >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.count("interrupted") == 1 and f"{log.relative_to(tmp_path)} holds every finished trial" in err, err
    want = "autosteer " + shlex.join([a for a in argv if a != "--overwrite"] + ["--resume"])
    assert f"continue the run with (from this folder):\n  {want}\n" in err
    kept = read_log_rows(log)
    assert kept
    # rerunning without --resume is refused; the printed command continues the same log
    again = autosteer(*[a for a in argv if a != "--overwrite"], cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = shlex.split(want)[1:]
    resumed[resumed.index("400")] = str(len(kept) + 1)
    done = autosteer(*resumed, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = read_log_rows(log)
    assert len(rows) == len(kept) + 1 and [r.candidate for r in rows[: len(kept)]] == [r.candidate for r in kept]
    both = autosteer(*resumed, "--overwrite", cwd=tmp_path)
    assert both.returncode == 2 and "give one of them" in both.stderr


def read_log_rows(path):
    from autosteer import read_log

    return read_log(path, allow_incomplete=True)[1:]


def test_generate_help_examples_run_as_shown_and_model_help_names_every_kind(tmp_path, capsys):
    """`autosteer generate --help` gave an example that did not run as shown (no best.json), its
    --model help omitted smollm2 and *.gguf, and there was no --version."""
    import shlex

    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert "'smollm2'" in flat and "*.gguf" in flat
    lines = [ln.strip() for ln in text.split("examples (the first two run as shown, in this order):\n", 1)[1]
             .splitlines()[:2]]
    shown = [shlex.split(re.split(r"\s{2,}\(", ln)[0]) for ln in lines]
    assert shown[0][:2] == ["autosteer", "demo"] and shown[1][:2] == ["autosteer", "generate"]
    for argv in shown:
        proc = autosteer(*argv[1:], cwd=tmp_path)
        assert proc.returncode == 0, (argv, proc.stderr[-2000:])
    assert "before:" in proc.stdout and "after:" in proc.stdout and "steering:" in proc.stdout
    from autosteer import __version__

    version = autosteer("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"autosteer {__version__}"


def test_best_shows_a_concept_by_name_and_counts_its_texts_only_with_full(tmp_path, capsys):
    """`autosteer best` printed every concept sentence (80 lines for the weddings concept)."""
    from autosteer import AutoSteerRunner, Concept, SteerSearchSpace

    pos = ["the cat is happy and calm", "a happy dog runs", "she is calm and happy today", "we feel happy"]
    neg = ["the cat is old and grey", "a grey dog sits", "she is tired and old today", "we feel tired"]
    mood = Concept("mood", pos, neg)
    scores = iter([0.1, 0.5, 0.2, 0.3])
    log = tmp_path / "c.tsv"
    AutoSteerRunner(tiny_models.make_model("llama"), tiny_models.make_tokenizer(), ["the cat likes", "a dog"],
                    metric=lambda m, t, p: next(scores),
                    search_space=SteerSearchSpace(layer_range=(0, 1), texts=[mood], schedules=["none"]),
                    log_path=log).run(3, verbose=False)
    assert cli.main(["best", str(log)]) == 0
    out = capsys.readouterr().out
    assert "Concept 'mood': 4 positive and 4 negative texts, method mean_diff" in out
    assert not any(t in out for t in pos + neg) and len(out.splitlines()) <= 8
    assert f"mood = Concept.from_dict(...)  # its texts: autosteer best {log} --full (or --code)" in out
    assert cli.main(["best", str(log), "--full"]) == 0
    full = capsys.readouterr().out
    assert all(t in full for t in pos + neg)
    # the shortened code differs from the full one in the concept's line alone
    code = cli.main(["best", str(log), "--code"]) == 0 and capsys.readouterr().out
    assert code.strip() in full and [ln for ln in code.splitlines() if "Concept.from_dict" not in ln] == \
        [ln for ln in out.splitlines()[-len(code.splitlines()):] if "Concept.from_dict" not in ln]
    assert cli.main(["best", str(log), "--full", "--code"]) == 2
