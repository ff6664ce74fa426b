"""The CPU thread policy: one thread for a small model, two for a larger one unless the machine is busy."""

import math
import os
import time

import pytest
import torch

from autosteer.search._threads import auto_threads


class _Model:
    def __init__(self, n):
        self.n = n

    def parameters(self):
        return iter([torch.empty(self.n, device="meta")])


@pytest.mark.parametrize("load, cores, n, want", [
    (0.0, 2, 1_000, 1),          # small model: one thread whatever the load
    (0.0, 2, 30_000_000, 2),     # idle 2-core machine: two
    (0.6, 2, 30_000_000, 1),     # 1.4 idle cores: one extra thread has no core of its own
    (4.0, 2, 30_000_000, 1),     # busy: one
    (1.0, 8, 30_000_000, 2),     # many idle cores: capped at two
    (7.9, 8, 30_000_000, 1),
])
def test_thread_count_follows_model_size_and_idle_cores(monkeypatch, load, cores, n, want):
    from autosteer.search import _threads

    monkeypatch.setattr(_threads, "own_load", lambda cores: 0.0)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert auto_threads(_Model(n)) == want


def test_a_run_decides_its_threads_once_so_its_own_load_cannot_talk_it_down(monkeypatch, tmp_path):
    """The load average rises while a run works (its own threads count in it); asked at every
    evaluation, the policy would drop to one thread halfway.  The runner asks once, at run()."""
    from tiny_models import make_model, make_tokenizer

    from autosteer import AutoSteerRunner, SteerSearchSpace
    from autosteer.search import _threads

    monkeypatch.setattr(_threads, "SMALL_MODEL_PARAMETERS", 0)  # the tiny model counts as large here
    monkeypatch.setattr(_threads, "own_load", lambda cores: 0.0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    loads = iter([0.0])  # idle when the run starts, busy (its own load) at every later look
    monkeypatch.setattr(os, "getloadavg", lambda: (next(loads, 2.0),) * 3)
    seen = []

    def metric(model, tok, prompts):
        seen.append(torch.get_num_threads())
        return float(len(seen) % 3)

    before = torch.get_num_threads()
    runner = AutoSteerRunner(make_model("llama"), make_tokenizer(), ["a dog", "the cat"], metric=metric,
                             search_space=SteerSearchSpace(layer_range=(0, 1), texts=["happy"]), log_path=None)
    runner.run(4, verbose=False)
    assert runner.threads == 2 and seen == [2] * 5  # the baseline and four trials, all on two threads
    assert torch.get_num_threads() == before
    assert auto_threads(runner.model) == 1  # asked now, under the run's own load, the policy says one


def test_this_process_own_load_is_not_counted_as_another_jobs(monkeypatch):
    """A load average this process made itself (its CPU time since import) leaves the cores idle
    for it.  Started as if 30 s ago with 15 s of CPU (half a core busy), plus real work now."""
    from autosteer.search import _threads

    monkeypatch.setattr(_threads, "_STARTED", (time.monotonic() - 30.0, time.process_time() - 15.0))
    t = time.monotonic()
    while time.monotonic() - t < 0.2:  # one busy CPU, measured by process_time
        pass
    mine = _threads.own_load(2)
    # about half a busy core, weighted by the 1-minute average's memory of 30 s: 0.5 * (1 - e**-0.5)
    assert mine == pytest.approx(0.5 * (1 - math.exp(-0.5)), abs=0.03)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4 + mine,) * 3)  # 0.6: one thread, were it someone else's
    assert auto_threads(_Model(30_000_000)) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (0.6 + mine,) * 3)  # others keep 0.6 of a core busy
    assert auto_threads(_Model(30_000_000)) == 1
