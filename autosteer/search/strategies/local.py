"""The default strategy: local search around the best candidate, random restarts after patience.

``LocalSearch(patience=5, n_init=8)`` (``strategy="local"``; the former name
``AutoSteerSearch`` is the same class).

* The first ``n_init`` candidates (default 8), and while nothing has been kept,
  and in *explore* mode, every proposal is a fresh random sample:
  1..``max_vectors`` vectors, each with a random layer, signed text, magnitude
  and schedule.
* Otherwise it *exploits*: each proposal perturbs the best candidate (the
  newest keep) with one move (see :func:`autosteer.search.strategies._sampling.perturb`).
* After ``patience`` consecutive non-keeps (discards and crashes both count)
  it explores, until a proposal is kept.
* A candidate already tried (the empty baseline included) is never proposed
  again: a duplicate is redrawn, up to 200 draws of the current kind, then
  200 fresh random samples.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from autosteer.search.candidate import SteerCandidate
from autosteer.search.options import Option, non_negative_int, positive_int
from autosteer.search.strategies import _sampling
from autosteer.search.strategies.base import Strategy, register
from autosteer.search.trial import TrialRecord, last_keep

__all__ = ["N_INIT", "AutoSteerSearch", "LocalSearch", "non_keeps_since_best"]

#: Fresh random samples before local search starts (measured by benchmarks/search_quality.py:
#: 0 let the first lucky keep pull the search into its neighbourhood, and random search beat it
#: at every budget on the organism; 8 made it as good as TPE and better than random).
N_INIT = 8


def non_keeps_since_best(history: Sequence[TrialRecord]) -> int:
    """Discards and crashes after the newest keep (all of them when nothing was kept)."""
    n = 0
    for r in reversed(history):
        if r.status == "keep":
            break
        if r.status in ("discard", "crash"):
            n += 1
    return n


@register
class LocalSearch(Strategy):
    """Local search with random restarts: the default strategy (``strategy="local"``).

    ``LocalSearch(patience=5, n_init=8)``; bound at once with
    ``LocalSearch(space, seed=0, patience=5)``.  See the module docstring.
    """

    name = "local"
    options = (
        Option(
            "patience",
            5,
            "non-keeps in a row after which local search explores again (random samples)",
            check=positive_int,
            parse=int,
            metavar="N",
        ),
        Option(
            "n_init",
            N_INIT,
            "random samples before local search starts",
            check=non_negative_int,
            parse=int,
            metavar="N",
        ),
    )
    patience: int
    n_init: int

    def exploring_after(self, history: Sequence[TrialRecord]) -> bool:
        """Whether a proposal after ``history`` explores (within the first ``n_init`` candidates,
        nothing kept yet, or patience ran out)."""
        evaluated = sum(1 for r in history if r.status != "baseline")
        return evaluated < self.n_init or last_keep(history) is None or non_keeps_since_best(history) >= self.patience

    def _propose(self, rng: random.Random, history: list[TrialRecord], n: int, tried: set[str]) -> list[SteerCandidate]:
        space = self._require_bound()
        best = last_keep(history)
        explore = self.exploring_after(history)  # always True when there is no best yet
        out: list[SteerCandidate] = []
        for _ in range(n):
            cand = None
            if not explore and best is not None:
                cand = self._draw(lambda: _sampling.perturb(rng, space, best.candidate), tried)
            if cand is None:
                cand = self._draw(lambda: _sampling.random_candidate(rng, space), tried)
            if cand is None:
                break
            out.append(cand)
        return out

    # -- the state of the sequential form, derived from its records ---------------

    @property
    def non_keeps(self) -> int:
        return non_keeps_since_best(self._records)

    @property
    def exploring(self) -> bool:
        """Whether patience ran out after the last keep (stays True until a keep)."""
        return last_keep(self._records) is not None and self.non_keeps >= self.patience

    @property
    def mode(self) -> str:
        """``"explore"`` (random samples) or ``"exploit"`` (perturb the best)."""
        return "explore" if self.exploring_after(self._records) else "exploit"


#: The former name of :class:`LocalSearch`.
AutoSteerSearch = LocalSearch
