"""RayExecutor on a real local Ray instance (started in this test process, 2 CPUs): the log of a
run on 2 workers equals the in-process run's, a worker killed mid-round is replaced by a retry,
workers that keep dying turn their candidates into crashes and then stop the run (which resumes),
and Ctrl-C stops the workers without losing a logged trial."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[test]'")

from ray_cluster import EXIT_S, RAY_ENV, Killer, calls_of, pid_alive, short_temp_dir, watched_metric  # noqa: E402

from autosteer import AutoSteerRunner, MeanRule, RayExecutor, SteerSearchSpace  # noqa: E402
from autosteer.errors import InvalidArgumentError  # noqa: E402
from autosteer.models import load_model  # noqa: E402
from autosteer.organism import world  # noqa: E402
from autosteer.search.executor import WorkersLostError  # noqa: E402
from autosteer.search.log import COLUMNS, read_log  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPACE = SteerSearchSpace(layer_range=(0, 3), coeff_range=(0.05, 1.0), texts=["analytical", "logical"],
                         negative_texts=["confused"], max_vectors=2, schedules=("none", "decay"))


@pytest.fixture(scope="module")
def local_ray():
    """One private Ray instance for the module (2 CPUs, a small object store)."""
    # RAY_ENV is set for the whole session (conftest.py): Ray keeps what it read at its first init
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # a single node: bind to 127.0.0.1
    os.environ.pop("RAY_ADDRESS", None)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 ** 2,
             _temp_dir=short_temp_dir("ray"), log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def organism():
    return load_model("organism")


def _task():
    prompts, expected = world.search_prompts(16)
    held, held_expected = world.heldout_prompts(40)
    return dict(prompts=prompts, expected_outputs=expected, holdout=(held, held_expected),
                search_space=SPACE, max_new_tokens=4)


#: How the tests run a search: silently, 16 prompts per pass.
RUN = dict(verbose=False, batch_size=16)


def _rows(path):
    """The log's rows without the timing columns."""
    drop = {COLUMNS.index("timestamp"), COLUMNS.index("elapsed_s")}
    with open(path, encoding="utf-8") as f:
        return [[x for i, x in enumerate(line.rstrip("\n").split("\t")) if i not in drop] for line in f]


@pytest.mark.parametrize("screen", [0, 6])
def test_two_workers_write_the_in_process_log(local_ray, organism, tmp_path, screen):
    """Also with screening (keep_rule screen=6, some candidates pruned): both stages of a round run
    on the workers."""
    model, tok = organism
    kw = _task()
    if screen:
        kw["keep_rule"] = MeanRule(screen=screen, screen_alpha=0.2)
    AutoSteerRunner(model, tok, log_path=tmp_path / "in.tsv", population=4, **kw).run(12, **RUN)
    if screen:
        assert any("fidelity" in (r.details or {}) for r in read_log(tmp_path / "in.tsv"))
    ex = RayExecutor("organism", num_workers=2)
    runner = AutoSteerRunner(None, None, log_path=tmp_path / "ray.tsv", population=4, executor=ex, **kw)
    pids = ex.worker_pids()
    assert len(set(pids)) == 2 and os.getpid() not in pids  # two processes that are not this one
    handles = list(ex._workers)
    results = runner.run(12, **RUN)
    assert _rows(tmp_path / "ray.tsv") == _rows(tmp_path / "in.tsv")
    assert results["iterations"] == 12 and results["best_holdout"] is not None
    assert not ex._workers  # run() stopped its workers
    # ray.kill is asynchronous: a call sent just after it may still reach the actor, so the
    # handles must *become* dead (RayActorError) within the exit window, not at once.
    deadline = time.monotonic() + EXIT_S
    for h in handles:
        while True:
            try:
                ray.get(h.pid.remote(), timeout=30)
            except ray.exceptions.RayActorError:
                break
            assert time.monotonic() < deadline, "a stopped Ray worker still answers calls"
            time.sleep(0.2)
    deadline = time.monotonic() + EXIT_S  # and their processes exit
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(pid_alive(p) for p in pids)


def test_driver_model_must_match_the_workers(local_ray, tmp_path):
    from tiny_models import make_model, make_tokenizer

    model, tok = make_model("llama"), make_tokenizer(padding_side="left")
    kw = _task()
    kw["search_space"] = SteerSearchSpace(layer_range=(0, 1), texts=["analytical"])
    runner = AutoSteerRunner(model, tok, log_path=tmp_path / "x.tsv", executor=RayExecutor("organism"), **kw)
    with pytest.raises(InvalidArgumentError, match="workers load a"):
        runner.run(2, **RUN)
    assert not (tmp_path / "x.tsv").exists() or (tmp_path / "x.tsv").stat().st_size == 0


def test_worker_killed_mid_round_is_retried_on_the_other(local_ray, organism, tmp_path):
    model, tok = organism
    kw = _task()
    kw.pop("expected_outputs")
    kw["holdout"] = kw["holdout"][0]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    AutoSteerRunner(model, tok, metric=watched_metric(str(tmp_path / "a")), log_path=tmp_path / "in.tsv",
                    population=4, **kw).run(8, **RUN)
    ex = RayExecutor("organism", num_workers=2)
    runner = AutoSteerRunner(None, None, metric=watched_metric(str(tmp_path / "b"), delay=0.3),
                             log_path=tmp_path / "ray.tsv", population=4, executor=ex, **kw)
    # calls: 2 baselines (search, held-out), then 4 per round on two workers; the 6th call
    # is a worker in the middle of round 1
    killer = Killer(str(tmp_path / "b"), 6, lambda pid: os.kill(pid, signal.SIGKILL))
    killer.start()
    runner.run(8, **RUN)
    killer.join(5)
    assert killer.killed is not None and not pid_alive(killer.killed)
    assert len(ex.lost_workers) == 1 and "Actor" in ex.lost_workers[0], ex.lost_workers
    assert _rows(tmp_path / "ray.tsv") == _rows(tmp_path / "in.tsv")  # the retried candidates scored the same
    assert calls_of(str(tmp_path / "b")).count(killer.killed) >= 2


def test_workers_that_keep_dying_crash_their_candidates_then_stop_the_run(local_ray, organism, tmp_path):
    model, tok = organism
    kw = _task()
    for k in ("expected_outputs", "holdout"):
        kw.pop(k)
    (tmp_path / "w").mkdir()
    # three workers on 2 CPUs; every call after the baseline kills its worker: the round's
    # two slices die on workers 0 and 1, slice 0's retry dies on worker 2, slice 1 finds no
    # worker left; both candidates are crashes, and the next round has no worker at all
    ex = RayExecutor("organism", num_workers=3, resources={"CPU": 0.5})
    runner = AutoSteerRunner(None, None, metric=watched_metric(str(tmp_path / "w"), die_after_first=True),
                             log_path=tmp_path / "log.tsv", population=2, executor=ex, **kw)
    with pytest.raises(WorkersLostError, match="every Ray worker has died"):
        runner.run(6, **RUN)
    hist = read_log(tmp_path / "log.tsv")
    assert [r.status for r in hist] == ["baseline", "crash", "crash"]
    errors = [r.error for r in hist[1:]]
    assert any("the retry on worker" in e and "died too" in e for e in errors), errors
    assert any("no other worker is left" in e for e in errors), errors
    # the run resumes where it stopped, on healthy workers
    (tmp_path / "v").mkdir()
    ex2 = RayExecutor("organism", num_workers=2)
    done = AutoSteerRunner(None, None, metric=watched_metric(str(tmp_path / "v")), log_path=tmp_path / "log.tsv",
                           population=2, executor=ex2, **kw).run(6, resume=True, **RUN)
    assert done["iterations"] == 6
    hist = read_log(tmp_path / "log.tsv")
    assert [r.status for r in hist[:3]] == ["baseline", "crash", "crash"]
    assert all(r.status in ("keep", "discard") for r in hist[3:]) and len(hist) == 7


_DRIVER = textwrap.dedent("""
    import logging, os, sys
    sys.path.insert(0, {tests!r})
    import ray
    from ray_cluster import watched_metric
    from autosteer import AutoSteerRunner, RayExecutor, SteerSearchSpace
    from autosteer.organism import world
    prompts, _ = world.search_prompts(16)
    space = SteerSearchSpace(layer_range=(0, 3), coeff_range=(0.05, 1.0), texts=["analytical", "logical"],
                             negative_texts=["confused"], max_vectors=2, schedules=("none", "decay"))
    ex = RayExecutor("organism", num_workers=2,
                     init_kwargs=dict(num_cpus=2, object_store_memory=80 * 1024 ** 2, _temp_dir={temp!r}))
    AutoSteerRunner(None, None, prompts, metric=watched_metric({calls!r}, delay=0.5), search_space=space,
                    log_path={log!r}, population=2, executor=ex).run(40, verbose=False)
""")


def test_ctrl_c_stops_the_workers_and_keeps_every_logged_trial(organism, tmp_path):
    model, tok = organism
    folder = tmp_path / "driver"
    folder.mkdir()
    log = tmp_path / "log.tsv"
    script = _DRIVER.format(tests=os.path.join(ROOT, "tests"), temp=short_temp_dir("ray"), calls=str(folder),
                            log=str(log))
    env = {**os.environ, **RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": ROOT}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while len(calls_of(str(folder))) < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and b"KeyboardInterrupt" in out
    workers = set(calls_of(str(folder))) - {proc.pid}
    deadline = time.monotonic() + EXIT_S
    while any(pid_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers and not any(pid_alive(p) for p in workers)  # Ctrl-C stopped the workers
    # every finished round is in the log, whole; resuming in process completes the run as an
    # uninterrupted one would have
    hist = read_log(log)
    assert len(hist) >= 3 and (len(hist) - 1) % 2 == 0
    prompts, _ = world.search_prompts(16)
    (tmp_path / "here").mkdir()
    kw = dict(metric=watched_metric(str(tmp_path / "here")), search_space=SPACE, population=2)
    AutoSteerRunner(model, tok, prompts, log_path=log, **kw).run(12, resume=True, **RUN)
    AutoSteerRunner(model, tok, prompts, log_path=tmp_path / "ref.tsv", **kw).run(12, **RUN)
    assert _rows(log) == _rows(tmp_path / "ref.tsv")
