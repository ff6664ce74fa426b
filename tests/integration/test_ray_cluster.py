"""A two-node Ray cluster on this machine (``ray start --head`` and a second ``ray start
--address``, each node its own processes, temp dir and resources): ``autosteer search --ray
ADDRESS`` writes the log of the in-process search, the workers sit on both nodes, and a node lost
mid-round has its candidates retried on the other node."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[test]'")

from ray_cluster import EXIT_S, RAY_ENV, Killer, pid_alive, start_cluster, watched_metric  # noqa: E402

from autosteer import AutoSteerRunner, RayExecutor, SteerSearchSpace  # noqa: E402
from autosteer.models import load_model  # noqa: E402
from autosteer.organism import world  # noqa: E402
from autosteer.search.log import COLUMNS  # noqa: E402

SPACE = SteerSearchSpace(layer_range=(0, 3), coeff_range=(0.05, 1.0), texts=["analytical", "logical"],
                         negative_texts=["confused"], max_vectors=2, schedules=("none", "decay"))


@pytest.fixture(scope="module")
def cluster():
    """(address, nodes): a head and one more node, 1 CPU each; killed through their process groups."""
    saved = {"RAY_ADDRESS": os.environ.pop("RAY_ADDRESS", None)}  # RAY_ENV is the session's (conftest.py)
    if ray.is_initialized():
        ray.shutdown()
    nodes = []
    try:
        address, nodes = start_cluster(2)
        yield address, nodes
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes):
            node.kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _rows(path):
    drop = {COLUMNS.index("timestamp"), COLUMNS.index("elapsed_s")}
    with open(path, encoding="utf-8") as f:
        return [[x for i, x in enumerate(line.rstrip("\n").split("\t")) if i not in drop] for line in f]


def test_cli_search_on_the_cluster_writes_the_in_process_log(cluster, tmp_path):
    address, _ = cluster
    prompts = tmp_path / "prompts.jsonl"
    ps, expected = world.search_prompts(16)
    prompts.write_text("".join(json.dumps({"prompt": p, "expected": e}) + "\n" for p, e in zip(ps, expected)))
    common = ["--model", "organism", "--prompts", str(prompts), "--metric", "task_accuracy", "--layers", "0:3",
              "--texts", "analytical", "logical", "--negative-texts", "confused", "--schedules", "none", "decay",
              "--max-new-tokens", "4", "--batch-size", "16", "--population", "4", "--iterations", "8", "--quiet"]
    env = {**os.environ, **RAY_ENV}
    cli = [sys.executable, "-m", "autosteer"]
    local = subprocess.run(cli + ["search", *common, "--log", str(tmp_path / "in.tsv")], env=env,
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    out = subprocess.run(cli + ["search", *common, "--log", str(tmp_path / "ray.tsv"), "--ray", address,
                                "--workers", "2", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["iterations"] == 8
    assert _rows(tmp_path / "ray.tsv") == _rows(tmp_path / "in.tsv")


def test_lost_node_mid_round_is_retried_on_the_other_node(cluster, tmp_path):
    address, nodes = cluster
    model, tok = load_model("organism")
    prompts, _ = world.search_prompts(16)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    kw = dict(search_space=SPACE, population=4)
    AutoSteerRunner(model, tok, prompts, metric=watched_metric(str(tmp_path / "a")), log_path=tmp_path / "in.tsv",
                    **kw).run(8, verbose=False)
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        ex = RayExecutor("organism", num_workers=2, address=address)
        runner = AutoSteerRunner(None, None, prompts, metric=watched_metric(str(tmp_path / "b"), delay=4.0),
                                 log_path=tmp_path / "ray.tsv", executor=ex, **kw)
        head_node = ray.get_runtime_context().get_node_id()
        placed = dict(zip(ex.worker_pids(), ex.worker_nodes()))
        assert len(set(placed.values())) == 2  # one worker per node (1 CPU each)
        remote_pid = next(pid for pid, node in placed.items() if node != head_node)
        # calls: the baseline, then round 1 starts on both workers at once (calls 2 and 3);
        # at the 3rd call both are busy for 4 s: kill the second node (its raylet and agents).
        # A worker whose raylet is gone exits within about 2 s (the head checks health every
        # 0.5 s), so its call fails; a shorter call could still return from the orphaned worker.
        killer = Killer(str(tmp_path / "b"), 3, lambda pid: nodes[1].kill())
        killer.start()
        runner.run(8, verbose=False)
        killer.join(5)
        assert nodes[1].proc.poll() is not None  # the node is gone
        assert len(ex.lost_workers) == 1 and "Actor" in ex.lost_workers[0], ex.lost_workers
        deadline = time.monotonic() + EXIT_S
        while pid_alive(remote_pid) and time.monotonic() < deadline:  # it exits once its raylet is gone
            time.sleep(0.2)
        assert not pid_alive(remote_pid)
        assert _rows(tmp_path / "ray.tsv") == _rows(tmp_path / "in.tsv")
    finally:
        ray.shutdown()
