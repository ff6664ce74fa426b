"""The agent skill: SKILL.md's format and the helper scripts of the code-editing loop.

The loop tests drive ``scripts/ar_*.py`` exactly as SKILL.md tells an agent to, on a small
target program in a temporary git repository. They need git and nothing else (no torch).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
SKILL = ROOT / "SKILL.md"
SCRIPTS = ROOT / "scripts"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def split_skill() -> tuple[dict, str]:
    text = SKILL.read_text(encoding="utf-8")
    match = re.match(r"\A---\n(.*?)\n---\n(.*)\Z", text, re.S)
    assert match, "SKILL.md must start with YAML front matter between two '---' lines"
    return yaml.safe_load(match.group(1)), match.group(2)


# --------------------------------------------------------------------------- the format

def test_front_matter_obeys_the_agent_skills_limits():
    meta, body = split_skill()
    assert isinstance(meta, dict)
    name = meta["name"]
    assert name == "autoresearch"  # the folder name it is cloned into
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) and len(name) <= 64
    description = meta["description"]
    assert isinstance(description, str) and description.strip()
    assert len(description) <= 1024
    for phrase in ("optimize val_bpb in a loop", "autoresearch", "find the best steering config"):
        assert phrase in description
    if "compatibility" in meta:
        assert 0 < len(meta["compatibility"]) <= 500
    assert set(meta) <= {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}
    assert len(body.splitlines()) < 500


def referenced_paths(text: str) -> set[str]:
    """Relative paths SKILL.md points at: markdown link targets and scripts/, references/ paths."""
    paths = set()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            paths.add(target.split("#", 1)[0])
    paths.update(re.findall(r"(?<![\w/.-])((?:scripts|references)/[\w.-]+)", text))
    return paths


def test_install_block_stops_clearly_without_s_and_names_the_python_the_package_needs(tmp_path):
    """With $S unset the install line ran `pip install -e "[plot]"` (pip: "Invalid requirement");
    the compatibility line said Python 3.9+ where pyproject.toml requires 3.10. The block runs
    here with a stand-in `python` on PATH that records its arguments (no pip is run)."""
    import tomllib

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not available")
    text = SKILL.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    install = re.findall(r"```bash\n(.*?)```", section, re.S)[0]
    shim = tmp_path / "bin"
    shim.mkdir()
    calls = tmp_path / "calls.txt"
    (shim / "python").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (shim / "python").chmod(0o755)
    env = {"PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    unset = subprocess.run([bash, "-c", install], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert unset.returncode != 0 and "set S to the folder that holds SKILL.md" in unset.stderr
    assert not calls.exists()  # stopped before pip
    # pasted line by line into an interactive shell, where a failed ${S:?} does not exit the
    # shell: the old two-line block printed the message and then ran pip anyway
    pasted = subprocess.run([bash, "--norc", "--noprofile", "-i"], input=install, env=env, capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert "set S to the folder that holds SKILL.md" in pasted.stderr, pasted.stderr
    assert not calls.exists()  # stopped before pip
    pasted = subprocess.run([bash, "--norc", "--noprofile", "-i"], input=f"S={ROOT}\n{install}", env=env,
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert calls.read_text().splitlines() == ["-m pip install torch==2.13.0", f"-m pip install -e {ROOT}[plot]"]
    calls.unlink()
    done = subprocess.run([bash, "-c", install], env={**env, "S": str(ROOT)}, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == ["-m pip install torch==2.13.0", f"-m pip install -e {ROOT}[plot]"]
    meta, _ = split_skill()
    needs = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert needs == ">=3.10" and "Python 3.10+" in meta["compatibility"] and "3.9" not in text


def test_every_path_skill_md_references_exists():
    _, body = split_skill()
    paths = referenced_paths(body)
    assert "scripts/ar_record.py" in paths and "references/loop.md" in paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"SKILL.md references missing files: {missing}"
    for ref in ROOT.glob("references/*.md"):
        missing = sorted(p for p in referenced_paths(ref.read_text(encoding="utf-8"))
                         if p.startswith("scripts/") and not (ROOT / p).exists())
        assert not missing, f"{ref.name} references missing files: {missing}"


def test_scripts_use_only_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"arlog", "__future__"}
    for script in SCRIPTS.glob("ar*.py"):
        tree = ast.parse(script.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] in allowed, f"{script.name} imports {module}"


# --------------------------------------------------------------------------- the loop

TARGET = """\
import sys
VALUE = 3
if VALUE < 0:
    raise SystemExit("negative")
print("warming up")
print(f"score: {VALUE}")
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository holding a target program that prints `score: <VALUE>`."""
    env = {
        "GIT_AUTHOR_NAME": "loop", "GIT_AUTHOR_EMAIL": "loop@example.com",
        "GIT_COMMITTER_NAME": "loop", "GIT_COMMITTER_EMAIL": "loop@example.com",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    git("init", "-q", "-b", "main")
    (tmp_path / "target.py").write_text(TARGET)
    git("add", "target.py")
    git("commit", "-q", "-m", "initial")
    return tmp_path


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def script(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def set_value(expr: str) -> None:
    text = Path("target.py").read_text()
    Path("target.py").write_text(re.sub(r"^VALUE = .*$", f"VALUE = {expr}", text, flags=re.M))


def run_and_record(description: str, *extra: str) -> dict:
    """One iteration's run, grep and record, as SKILL.md writes them."""
    run = script("ar_run.py", "30", sys.executable, "target.py", check=False)
    metric = script("ar_metric.py", "^score:", "run.log", check=False).stdout.strip()
    rec = script("ar_record.py", "--metric", metric, "--exit", str(run.returncode),
                 "-d", description, "--json", *extra)
    return json.loads(rec.stdout)


def log_rows() -> list[list[str]]:
    lines = Path("results.tsv").read_text().splitlines()
    return [line.split("\t") for line in lines[1:]]


def test_setup_creates_branch_and_a_header_only_untracked_log(repo):
    out = script("ar_setup.py", "t1").stdout
    assert "autoresearch/t1" in out
    assert git("rev-parse", "--abbrev-ref", "HEAD") == "autoresearch/t1"
    assert Path("results.tsv").read_text() == (
        "iteration\tcommit\tmetric\tbest\tstatus\tgoal\tdescription\n"
    )
    assert Path("trials").is_dir()
    assert git("status", "--porcelain", "--untracked-files=all") == ""  # log and trials/ ignored
    # a second set-up with the same tag is refused, and names the way to resume
    git("checkout", "-q", "main")
    again = script("ar_setup.py", "t1", check=False)
    assert again.returncode == 2 and "ar_status.py" in again.stderr


def test_one_iteration_keep_discard_crash(repo):
    script("ar_setup.py", "t1")
    base = run_and_record("baseline", "--baseline", "--goal", "max")
    assert base["status"] == "baseline" and base["metric"] == 3.0
    start = git("rev-parse", "HEAD")

    # keep: a strictly better score leaves the commit and advances the branch
    set_value("5")
    git("commit", "-q", "-am", "five")
    keep_sha = git("rev-parse", "HEAD")
    Path("output.bin").write_text("written by the run")  # run outputs are never committed
    rec = run_and_record("value 5")
    assert rec["status"] == "keep" and rec["best"] == 5.0
    assert git("rev-parse", "HEAD") == keep_sha != start
    assert git("rev-parse", "autoresearch/t1") == keep_sha
    assert "output.bin" not in git("ls-files")
    os.remove("output.bin")

    # discard: a worse score restores the tree and leaves the patch under trials/
    set_value("4")
    git("commit", "-q", "-am", "four")
    trial_sha = git("rev-parse", "--short", "HEAD")
    rec = run_and_record("value 4")
    assert rec["status"] == "discard"
    assert git("rev-parse", "HEAD") == keep_sha
    assert "VALUE = 5" in Path("target.py").read_text()
    assert git("status", "--porcelain", "--untracked-files=all") == ""
    patch = Path("trials") / f"2-{trial_sha}.patch"
    assert rec["patch"] == str(patch) and patch.exists()
    assert "-VALUE = 5" in patch.read_text() and "+VALUE = 4" in patch.read_text()
    subprocess.run(["git", "apply", "--check", str(patch)], check=True)  # the idea can be re-applied

    # crash: a broken edit (uncommitted: the recorder commits it) is logged and reset
    set_value("5 +")
    rec = run_and_record("syntax error")
    assert rec["status"] == "crash" and rec["metric"] is None
    assert git("rev-parse", "HEAD") == keep_sha
    assert "VALUE = 5\n" in Path("target.py").read_text()
    assert list(Path("trials").glob("3-*.patch"))

    rows = log_rows()
    assert [r[4] for r in rows] == ["baseline", "keep", "discard", "crash"]
    assert [r[0] for r in rows] == ["0", "1", "2", "3"]
    assert rows[3][2] == "" and rows[3][3] == "5.0"

    status = json.loads(script("ar_status.py", "--json").stdout)
    assert status["next_iteration"] == 4 and status["best"] == 5.0 and status["state"] == "ready"
    assert status["counts"] == {"baseline": 1, "keep": 1, "discard": 1, "crash": 1}


def test_a_timeout_is_a_crash(repo):
    script("ar_setup.py", "t2")
    run_and_record("baseline", "--baseline", "--goal", "max")
    Path("target.py").write_text("import time\ntime.sleep(30)\nprint('score: 9')\n")
    git("commit", "-q", "-am", "slow")
    run = script("ar_run.py", "1", sys.executable, "target.py", check=False)
    assert run.returncode == 124 and "timed out" in run.stdout
    metric = script("ar_metric.py", "^score:", check=False)
    assert metric.returncode == 1 and metric.stdout == ""
    rec = json.loads(script("ar_record.py", "--metric", "", "--exit", "124", "-d", "slow", "--json").stdout)
    assert rec["status"] == "crash"


def test_noise_margin_and_simplicity_rule(repo):
    script("ar_setup.py", "t3")
    script("ar_record.py", "--baseline", "--goal", "min", "--metric", "1.00", "-d", "baseline")
    script("ar_record.py", "--baseline", "--metric", "1.04", "-d", "baseline again")  # noise 0.04
    # a gain inside the noise is a discard
    set_value("2")
    rec = json.loads(script("ar_record.py", "--metric", "0.98", "-d", "small gain", "--json").stdout)
    assert rec["status"] == "discard"
    # a gain beyond the noise is a keep
    set_value("1")
    rec = json.loads(script("ar_record.py", "--metric", "0.90", "-d", "real gain", "--json").stdout)
    assert rec["status"] == "keep"
    # an equal score with less code is a keep (simplicity rule) and the bar does not drop
    text = Path("target.py").read_text().replace('print("warming up")\n', "")
    Path("target.py").write_text(text)
    rec = json.loads(script("ar_record.py", "--metric", "0.92", "-d", "delete a line", "--json").stdout)
    assert rec["status"] == "keep" and rec["best"] == 0.90
    assert "warming up" not in Path("target.py").read_text()
    # --discard throws away a gain not worth its complexity
    Path("target.py").write_text(Path("target.py").read_text() + "# a lot of new code\n" * 5)
    rec = json.loads(script("ar_record.py", "--metric", "0.5", "--discard", "-d", "hack", "--json").stdout)
    assert rec["status"] == "discard" and "# a lot" not in Path("target.py").read_text()


def test_status_resumes_from_the_log_and_spots_an_unrecorded_trial(repo):
    script("ar_setup.py", "t4")
    run_and_record("baseline", "--baseline", "--goal", "max")
    set_value("7")
    git("commit", "-q", "-am", "seven")
    status = json.loads(script("ar_status.py", "--json").stdout)
    assert status["state"] == "unrecorded-trial" and "git reset --hard" in status["advice"]
    rec = run_and_record("value 7")
    assert rec["status"] == "keep"
    text = script("ar_status.py").stdout
    assert "next iteration 2" in text and "state ready" in text


def test_record_refuses_what_it_cannot_decide(repo):
    # not on a loop branch: the recorder resets commits, so it refuses
    Path("results.tsv").write_text("iteration\tcommit\tmetric\tbest\tstatus\tgoal\tdescription\n")
    off = script("ar_record.py", "--baseline", "--goal", "max", "--metric", "1", "-d", "b", check=False)
    assert off.returncode == 2 and "autoresearch/" in off.stderr
    os.remove("results.tsv")
    script("ar_setup.py", "t5")
    no_base = script("ar_record.py", "--metric", "1", "-d", "x", check=False)
    assert no_base.returncode == 2 and "baseline" in no_base.stderr
    no_goal = script("ar_record.py", "--baseline", "--metric", "1", "-d", "b", check=False)
    assert no_goal.returncode == 2 and "--goal" in no_goal.stderr
    script("ar_record.py", "--baseline", "--goal", "max", "--metric", "1", "-d", "b")
    nothing = script("ar_record.py", "--metric", "2", "-d", "no change", check=False)
    assert nothing.returncode == 2 and "nothing to record" in nothing.stderr
    garbage = script("ar_record.py", "--metric", "score: 2", "-d", "x", check=False)
    assert garbage.returncode == 2
    Path("results.tsv").write_text(Path("results.tsv").read_text() + "1\tabc\tx\n")
    bad = script("ar_status.py", check=False)
    assert bad.returncode == 2 and "line 3" in bad.stderr


def test_metric_reads_the_last_matching_line(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("step 1 loss_l2: 5.0\nval_bpb: 1.25\nnoise\nval_bpb:   0.9979 (final)\n")
    read = lambda *a: script("ar_metric.py", *a, str(log), check=False)  # noqa: E731
    assert read("^val_bpb:").stdout.strip() == "0.9979"
    assert read(r"val_bpb:\s*([0-9.]+)").stdout.strip() == "0.9979"
    assert read("loss_l2:").stdout.strip() == "5.0"  # the number after the match, not the "2" in its name
    missing = read("^accuracy:")
    assert missing.returncode == 1 and missing.stdout == ""
