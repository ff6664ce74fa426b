"""The CPU thread policy: one thread for a small model, two for a larger one unless the machine is busy."""

import os

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
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert auto_threads(_Model(n)) == want
