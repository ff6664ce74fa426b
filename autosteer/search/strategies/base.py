"""The strategy interface: propose a round of candidates from the history you are given.

A strategy is an object that carries its own options (``LocalSearch(patience=3)``,
``TPE(n_startup=4)``), declared once on its class and checked in its
constructor.  Given before the search space is known (``AutoSteerRunner(strategy=LocalSearch(patience=3))``),
it is *unbound*; the runner calls :meth:`Strategy.bind` with the resolved
space, the seed and the metric's direction, which returns a bound copy (the
object you gave is left as it is and can be given again), as an Optuna study
hands its sampler the search space and the history.  ``LocalSearch(space,
seed=0, patience=3)`` is bound at once.

A strategy owns no results.  :meth:`Strategy.propose_round` is a pure
function of the strategy's settings (space, seed, options), the history it is
given and the number of candidates asked for: its random generator is seeded
from the seed and the length of the history, so a resumed run proposes what
an uninterrupted one would have, with nothing to replay.  Which candidate is
best, and whether one is kept, is decided by the caller (the runner) and
arrives in the history as each record's ``status``.

:meth:`Strategy.propose` / :meth:`Strategy.record` are the sequential form
for a hand-written loop: the strategy then keeps the records it was told.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from autosteer._checks import check_bool, check_int
from autosteer.errors import InvalidArgumentError, SearchSpaceError
from autosteer.search.candidate import SteerCandidate
from autosteer.search.options import Configurable, make, registrar
from autosteer.search.space import SteerSearchSpace
from autosteer.search.strategies._sampling import prompt_only
from autosteer.search.trial import TrialRecord, last_keep

__all__ = [
    "DEFAULT_STRATEGY",
    "MAX_ATTEMPTS",
    "STRATEGIES",
    "SearchExhaustedError",
    "Strategy",
    "as_strategy",
    "make_strategy",
    "register",
]

#: Draws a strategy makes for one slot before it concludes that everything reachable was tried.
MAX_ATTEMPTS = 200

_RECORDABLE = ("keep", "discard", "crash")


class SearchExhaustedError(SearchSpaceError):
    """Every candidate the search can reach has already been evaluated."""


class Strategy(Configurable):
    """Base class of the search strategies (see :mod:`autosteer.search.strategies`).

    ``Strategy(space=None, seed=0, lower_is_better=False, **options)``:
    without a space the strategy is unbound and only holds its options;
    :meth:`bind` gives it the space.  Subclasses set :attr:`name` and
    :attr:`options`, implement :meth:`_propose`, and are added to
    :data:`STRATEGIES` with :func:`register`.
    """

    kind: ClassVar[str] = "strategy"
    name: ClassVar[str] = "strategy"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            P = inspect.Parameter
            params = [
                P("self", P.POSITIONAL_OR_KEYWORD),
                P("space", P.POSITIONAL_OR_KEYWORD, default=None),
                P("seed", P.POSITIONAL_OR_KEYWORD, default=0),
                P("lower_is_better", P.POSITIONAL_OR_KEYWORD, default=False),
            ]
            params += [P(o.name, P.KEYWORD_ONLY, default=o.default) for o in cls.options]
            cls.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]

    def __init__(
        self, space: SteerSearchSpace | None = None, seed: int = 0, lower_is_better: bool = False, **options: Any
    ) -> None:
        self._set_options(options)
        self.seed = check_int("seed", seed)
        self.lower_is_better = check_bool("lower_is_better", lower_is_better)
        self.space: SteerSearchSpace | None = None
        if space is not None:
            if not isinstance(space, SteerSearchSpace):
                raise InvalidArgumentError(f"space must be a SteerSearchSpace, got {type(space).__name__}")
            if space.layer_range is None:
                raise SearchSpaceError(
                    "the search space has no layer_range yet; call space.resolve(num_layers) "
                    "or give layer_range=(first, last)"
                )
            self.space = space
            self._bound()
        self._records: list[TrialRecord] = []
        self._pending: SteerCandidate | None = None

    def _bound(self) -> None:
        """Called once :attr:`space` is set (subclasses prepare what depends on it)."""

    def bind(self, space: SteerSearchSpace, seed: int = 0, lower_is_better: bool = False) -> Strategy:
        """A copy of this strategy, with the same options, on ``space`` (a resolved
        :class:`~autosteer.SteerSearchSpace`) with ``seed``, for a metric whose direction is
        ``lower_is_better``.  The runner calls it; this object is left unbound."""
        return type(self)(space, seed, lower_is_better, **self.get_options())

    @property
    def bound(self) -> bool:
        """Whether the strategy has its search space (see :meth:`bind`)."""
        return self.space is not None

    def _require_bound(self) -> SteerSearchSpace:
        """The bound space; an :class:`InvalidArgumentError` when there is none yet."""
        if self.space is None:
            raise InvalidArgumentError(
                f"{type(self).__name__} has no search space yet: give it to AutoSteerRunner(strategy=...), or call "
                f"strategy.bind(space, seed) (or {type(self).__name__}(space, seed=...)) before proposing"
            )
        return self.space

    # -- the interface the runner uses -------------------------------------------

    def propose_round(self, history: Sequence[TrialRecord], n: int = 1) -> list[SteerCandidate]:
        """Up to ``n`` distinct candidates never tried in ``history`` (fewer only near exhaustion).

        Raises :class:`SearchExhaustedError` when not even one new candidate can be found.
        """
        self._require_bound()
        n = check_int("n", n, minimum=1)
        tried = {SteerCandidate().key()} | {r.candidate.key() for r in history}
        rng = random.Random(f"autosteer:{self.name}:{self.seed}:{len(history)}")
        # each system prompt alone comes first, so prompting alone is always in the history
        out = [c for c in prompt_only(self._require_bound()) if c.key() not in tried][:n]
        tried.update(c.key() for c in out)
        if len(out) < n:
            out += self._propose(rng, list(history), n - len(out), tried)
        if not out:
            raise SearchExhaustedError(
                f"every candidate the search could reach has been tried ({len(tried) - 1} so far); "
                "widen the search space"
            )
        return out

    def _propose(self, rng: random.Random, history: list[TrialRecord], n: int, tried: set[str]) -> list[SteerCandidate]:
        raise NotImplementedError

    @staticmethod
    def _draw(maker: Callable[[], SteerCandidate | None], tried: set[str]) -> SteerCandidate | None:
        """A candidate from ``maker`` not in ``tried`` (added to it), within MAX_ATTEMPTS draws."""
        for _ in range(MAX_ATTEMPTS):
            cand = maker()
            if cand is not None and cand.key() not in tried:
                tried.add(cand.key())
                return cand
        return None

    # -- the sequential form -------------------------------------------------------

    @property
    def history(self) -> list[TrialRecord]:
        """The records given to :meth:`record`, oldest first."""
        return list(self._records)

    @property
    def pending(self) -> SteerCandidate | None:
        """The candidate proposed and not yet recorded, if any."""
        return self._pending

    def propose(self) -> SteerCandidate:
        """The next candidate to evaluate; the same one again until :meth:`record` is called."""
        if self._pending is None:
            self._pending = self.propose_round(self._records, 1)[0]
        return self._pending

    def record(self, score: float | None, status: str) -> None:
        """Report the outcome of the pending proposal: ``status`` is keep, discard or crash."""
        if self._pending is None:
            raise InvalidArgumentError("record() called with no pending proposal; call propose() first")
        if status not in _RECORDABLE:
            raise InvalidArgumentError(f"status must be one of {', '.join(_RECORDABLE)}, got {status!r}")
        if status == "keep" and (score is None or not math.isfinite(score)):
            raise InvalidArgumentError(f"a kept candidate needs a finite score, got {score!r}")
        self._records.append(
            TrialRecord(
                iteration=len(self._records) + 1,
                status=status,
                candidate=self._pending,
                score=None if score is None else float(score),
            )
        )
        self._pending = None

    def tried(self, candidate: SteerCandidate) -> bool:
        """Whether ``candidate`` was already proposed (or is the pending proposal)."""
        keys = {r.candidate.key() for r in self._records}
        if self._pending is not None:
            keys.add(self._pending.key())
        return candidate.key() in keys

    @property
    def best_candidate(self) -> SteerCandidate | None:
        """The newest kept candidate of the recorded history (derived, never stored)."""
        r = last_keep(self._records)
        return None if r is None else r.candidate

    @property
    def best_score(self) -> float | None:
        r = last_keep(self._records)
        return None if r is None else r.score


#: name -> Strategy class; :func:`register` adds a row.
STRATEGIES: dict[str, type[Strategy]] = {}

DEFAULT_STRATEGY = "local"


#: Class decorator: add a :class:`Strategy` subclass to :data:`STRATEGIES` under its name.
register = registrar("strategy", STRATEGIES)


def as_strategy(value: Any) -> Strategy:
    """``value`` as a :class:`Strategy`: an object as it is, a name with its defaults (None: ``"local"``)."""
    return make("strategy", STRATEGIES, Strategy, value, default=DEFAULT_STRATEGY)


def make_strategy(
    strategy: Any, space: SteerSearchSpace, seed: int = 0, lower_is_better: bool = False, **options: Any
) -> Strategy:
    """The strategy (a name, then with ``options``; or an object, then no ``options``) bound to ``space``.

    An option the strategy does not declare is an
    :class:`~autosteer.errors.InvalidArgumentError`.
    """
    if options:
        if not isinstance(strategy, str):
            raise InvalidArgumentError(
                f"give the options of a strategy object in its constructor, not to make_strategy: got {sorted(options)}"
            )
        obj = as_strategy(strategy)  # an unknown name fails here
        obj = type(obj)(**options)
    else:
        obj = as_strategy(strategy)
    return obj.bind(space, seed, lower_is_better)
