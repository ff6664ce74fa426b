"""The strategy interface: propose a round of candidates from the history you are given.

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

import math
import random
from typing import Callable, Sequence

from autosteer._checks import check_int
from autosteer.search.candidate import SteerCandidate
from autosteer.errors import InvalidArgumentError, SearchSpaceError
from autosteer.search.space import SteerSearchSpace
from autosteer.search.trial import TrialRecord, last_keep

__all__ = ["Strategy", "SearchExhaustedError", "MAX_ATTEMPTS"]

#: Draws a strategy makes for one slot before it concludes that everything reachable was tried.
MAX_ATTEMPTS = 200

_RECORDABLE = ("keep", "discard", "crash")


class SearchExhaustedError(SearchSpaceError):
    """Every candidate the search can reach has already been evaluated."""


class Strategy:
    """Base class of the search strategies (see :mod:`autosteer.search.strategies`).

    Subclasses set :attr:`name` and implement :meth:`_propose`.
    """

    name: str = "strategy"

    def __init__(self, space: SteerSearchSpace, seed: int = 0) -> None:
        if not isinstance(space, SteerSearchSpace):
            raise InvalidArgumentError(f"space must be a SteerSearchSpace, got {type(space).__name__}")
        if space.layer_range is None:
            raise SearchSpaceError(
                "the search space has no layer_range yet; call space.resolve(num_layers) "
                "or give layer_range=(first, last)"
            )
        self.space = space
        self.seed = check_int("seed", seed)
        self._records: list[TrialRecord] = []
        self._pending: SteerCandidate | None = None

    # -- the interface the runner uses -------------------------------------------

    def propose_round(self, history: Sequence[TrialRecord], n: int = 1) -> list[SteerCandidate]:
        """Up to ``n`` distinct candidates never tried in ``history`` (fewer only near exhaustion).

        Raises :class:`SearchExhaustedError` when not even one new candidate can be found.
        """
        n = check_int("n", n, minimum=1)
        tried = {SteerCandidate().key()} | {r.candidate.key() for r in history}
        rng = random.Random(f"autosteer:{self.name}:{self.seed}:{len(history)}")
        out = self._propose(rng, list(history), n, tried)
        if not out:
            raise SearchExhaustedError(
                f"every candidate the search could reach has been tried ({len(tried) - 1} so far); "
                "widen the search space"
            )
        return out

    def _propose(self, rng: random.Random, history: list[TrialRecord], n: int,
                 tried: set[str]) -> list[SteerCandidate]:
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
        self._records.append(TrialRecord(iteration=len(self._records) + 1, status=status,
                                         candidate=self._pending,
                                         score=None if score is None else float(score)))
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
