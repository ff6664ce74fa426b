"""Executors without a cluster: argument checks, what a missing Ray says, what travels when an
executor is pickled, and the runner's rules for model=None."""

from __future__ import annotations

import pickle
import sys

import pytest

from autosteer import AutoSteerError, AutoSteerRunner, InvalidArgumentError
from autosteer.search.executor import InProcessExecutor, RayExecutor, _actor_options, check_executor


def test_ray_executor_checks_its_arguments_before_any_work():
    pytest.importorskip("ray")
    for kwargs, match in (({"model": 3}, "name or path"), ({"model": " "}, "empty"),
                          ({"model": "organism", "num_workers": 0}, "num_workers"),
                          ({"model": "organism", "resources": {"CPU": -1}}, "non-negative"),
                          ({"model": "organism", "resources": {"CPU": True}}, "non-negative"),
                          ({"model": "organism", "address": ""}, "address"),
                          ({"model": "organism", "init_kwargs": [1]}, "init_kwargs")):
        with pytest.raises(InvalidArgumentError, match=match):
            RayExecutor(**kwargs)


def test_resources_become_actor_options_and_threads():
    opts, threads = _actor_options({"CPU": 2, "GPU": 0.5, "node_a": 1})
    assert opts == {"num_cpus": 2, "num_gpus": 0.5, "resources": {"node_a": 1}, "max_restarts": 0,
                    "max_task_retries": 0}
    assert threads == 2
    assert _actor_options(None) == ({"num_cpus": 1, "max_restarts": 0, "max_task_retries": 0}, 1)
    assert _actor_options({"CPU": 0.5})[1] == 1


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AutoSteerError, match=r'pip install "autosteer\[ray\]"'):
        RayExecutor("organism")


def test_a_pickled_executor_carries_its_settings_not_its_workers():
    pytest.importorskip("ray")
    ex = RayExecutor("organism", num_workers=3, resources={"CPU": 2}, address="auto")
    ex._workers = ["a live actor handle"]
    ex.lost_workers.append("x")
    copy = pickle.loads(pickle.dumps(ex))
    assert (copy.model, copy.num_workers, copy.resources, copy.address) == ("organism", 3, {"CPU": 2}, "auto")
    assert copy._workers == [] and copy.lost_workers == []


def test_check_executor_and_the_in_process_default():
    assert isinstance(check_executor(None), InProcessExecutor)
    with pytest.raises(InvalidArgumentError, match="executor must be"):
        check_executor("ray")
    ex = InProcessExecutor()
    with pytest.raises(AutoSteerError, match="not open"):
        ex.evaluate([], "search")


def test_model_none_needs_an_executor_that_loads_it():
    with pytest.raises(InvalidArgumentError, match="only with a RayExecutor"):
        AutoSteerRunner(None, None, ["a"], metric="perplexity", log_path=None)
