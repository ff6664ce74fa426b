"""Search strategies: what to try next, proposed from the history they are given.

A strategy is an object with its own options, given whole to the runner
(``AutoSteerRunner(strategy=LocalSearch(patience=3))``) or named with its
defaults (``strategy="local"``, ``autosteer search --strategy local --patience 3``):

``local`` (default)   :class:`~autosteer.search.strategies.local.LocalSearch` (``patience``, ``n_init``):
                      local search around the best, random restarts after ``patience`` non-keeps.
``random``            :class:`~autosteer.search.strategies.random_search.RandomSearch`: independent samples.
``tpe``               :class:`~autosteer.search.strategies.tpe.TPE` (``n_startup``): Optuna's TPE sampler
                      (``pip install "autosteer[optuna]"``).

``AutoSteerSearch`` and ``TPESearch`` are the former names of ``LocalSearch`` and ``TPE``.

Adding a strategy: a :class:`~autosteer.search.strategies.base.Strategy` subclass in
its own module, its options declared in ``options``, decorated with
:func:`~autosteer.search.strategies.base.register` and imported here.
Optional dependencies are imported when the strategy is bound, never here.
"""

from __future__ import annotations

from autosteer.search.strategies.base import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    SearchExhaustedError,
    Strategy,
    as_strategy,
    make_strategy,
    register,
)
from autosteer.search.strategies.local import AutoSteerSearch, LocalSearch
from autosteer.search.strategies.random_search import RandomSearch
from autosteer.search.strategies.tpe import TPE, TPESearch

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "TPE",
    "AutoSteerSearch",
    "LocalSearch",
    "RandomSearch",
    "SearchExhaustedError",
    "Strategy",
    "TPESearch",
    "as_strategy",
    "make_strategy",
    "register",
]
