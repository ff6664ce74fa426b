"""Search strategies: what to try next, proposed from the history they are given.

Every strategy speaks the same candidate JSON and log, and is chosen by name
(``AutoSteerRunner(strategy=...)``, ``autosteer search --strategy``):

``local`` (default)   :class:`~autosteer.search.strategies.local.AutoSteerSearch`: local search
                      around the best, random restarts after ``patience`` non-keeps.
``random``            :class:`~autosteer.search.strategies.random_search.RandomSearch`: independent samples.
``tpe``               :class:`~autosteer.search.strategies.tpe.TPESearch`: Optuna's TPE sampler
                      (``pip install "autosteer[optuna]"``).

Adding a strategy: a :class:`~autosteer.search.strategies.base.Strategy` subclass in
its own module and one row in :data:`STRATEGIES`.
"""

from __future__ import annotations

import importlib
from typing import Any

from autosteer.errors import InvalidArgumentError
from autosteer.search.strategies.base import SearchExhaustedError, Strategy

__all__ = ["STRATEGIES", "DEFAULT_STRATEGY", "make_strategy", "Strategy", "SearchExhaustedError"]

#: name -> "module:class" (imported on first use, so an optional dependency costs nothing until chosen)
STRATEGIES: dict[str, str] = {
    "local": "autosteer.search.strategies.local:AutoSteerSearch",
    "random": "autosteer.search.strategies.random_search:RandomSearch",
    "tpe": "autosteer.search.strategies.tpe:TPESearch",
}

DEFAULT_STRATEGY = "local"


def strategy_class(name: str) -> type[Strategy]:
    if not isinstance(name, str) or name not in STRATEGIES:
        raise InvalidArgumentError(
            f"unknown strategy {name!r}; expected one of {', '.join(map(repr, STRATEGIES))}"
        )
    module, cls = STRATEGIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_strategy(name: str, space, seed: int = 0, **options: Any) -> Strategy:
    """The strategy ``name`` on a resolved ``space``; options it does not take are ignored."""
    cls = strategy_class(name)
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    return cls(space, seed=seed, **{k: v for k, v in options.items() if k in accepted})
