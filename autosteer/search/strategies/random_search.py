"""Random search: every proposal a fresh random sample of the space (``strategy="random"``).

The baseline every other strategy has to beat at equal budget.
"""

from __future__ import annotations

import random

from autosteer.search.candidate import SteerCandidate
from autosteer.search.strategies import _sampling
from autosteer.search.strategies.base import Strategy, register
from autosteer.search.trial import TrialRecord

__all__ = ["RandomSearch"]


@register
class RandomSearch(Strategy):
    """Independent random samples of the space, never a repeat: ``RandomSearch()``; takes no option."""

    name = "random"

    def _propose(self, rng: random.Random, history: list[TrialRecord], n: int, tried: set[str]) -> list[SteerCandidate]:
        space = self._require_bound()
        out = []
        for _ in range(n):
            cand = self._draw(lambda: _sampling.random_candidate(rng, space), tried)
            if cand is None:
                break
            out.append(cand)
        return out
