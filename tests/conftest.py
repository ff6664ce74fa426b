"""Shared pytest fixtures: a seeded torch RNG and the offline tiny tokenizer.

Run with ``python -m pytest`` (or ``pytest``) from the repository root.
Tiny models come from ``tests/tiny_models.py`` (``make_model(name)``).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

# the shared helpers (tiny_models, reference) live beside this file; the tests in
# tests/unit, tests/integration and tests/docs import them by name
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tiny_models  # noqa: E402
from ray_cluster import RAY_ENV  # noqa: E402

# Ray reads its settings once per process, at the first ray.init, and the Ray example of docs/scaling.md
# starts a private instance in this process before tests/integration/test_ray.py
# does: every Ray instance of the session must see the same settings (token auth off on
# loopback, no usage stats), or workers started later reject the driver's calls ("Missing
# authorization header") and die before their first task.
os.environ.update(RAY_ENV)

# The tiny test models run fastest on one thread (and a loaded 2-core machine makes
# intra-op threading many times slower); benchmarks, not tests, measure speed.
torch.set_num_threads(1)


def _seed_value() -> int:
    return int(os.environ.get("AUTOSTEER_TEST_SEED", tiny_models.SEED))


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed torch's global RNG before every test; the seed is printed (shown on failure).

    Override with the environment variable ``AUTOSTEER_TEST_SEED``.
    """
    value = _seed_value()
    print(f"torch seed = {value} (set AUTOSTEER_TEST_SEED to change)")
    torch.manual_seed(value)
    return value


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny byte-level BPE tokenizer, right padding. Shared: do not mutate it."""
    return tiny_models.make_tokenizer(padding_side="right")


@pytest.fixture(scope="session")
def left_tokenizer():
    """The same tokenizer with left padding (for batched generate). Shared: do not mutate it."""
    return tiny_models.make_tokenizer(padding_side="left")
