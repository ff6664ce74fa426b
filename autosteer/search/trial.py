"""One evaluated configuration: :class:`TrialRecord`, the unit the log stores and strategies learn from.

A record holds what was measured, never what can be derived: the running
best, the number of vectors and the one-line description all follow from the
records before it and from the candidate (:func:`running_best`,
``record.n_vectors``, ``record.description``).  Records read like dicts too
(``record["score"]``), as the history rows of earlier releases did.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from autosteer.search.candidate import SteerCandidate

__all__ = ["STATUSES", "TrialRecord", "improves", "running_best"]

#: Status of a record: the unsteered baseline (first record only), then one per candidate.
STATUSES: tuple[str, ...] = ("baseline", "keep", "discard", "crash")


@dataclass(frozen=True)
class TrialRecord:
    """One row of a search's history.

    ``iteration``: 0 for the baseline, then 1, 2, ... in evaluation order.
    ``round``: the round that proposed it (candidates of one round are
    evaluated together; 0 for the baseline).  ``status``: see
    :data:`STATUSES`.  ``score``: the metric (None when a crash left none;
    a non-finite score is a crash).  ``holdout_score``: the held-out score
    (measured for the baseline, each round's new best and each system prompt alone).  ``per_prompt``: what the
    metric measured on each search prompt (None when the metric reports no
    per-prompt values).  ``details``: other named measurements of the metric
    (e.g. ``concept_rate`` and ``fluency`` beside ``steered_concept``; held-out
    ones prefixed ``holdout_``).  ``candidate``: what was evaluated.  ``error``: why a
    crash crashed.  ``timestamp`` (UTC ISO 8601) and ``elapsed_s`` (seconds
    since the run started, carried on across resumes).
    """

    iteration: int
    status: str
    candidate: SteerCandidate
    score: float | None = None
    holdout_score: float | None = None
    per_prompt: tuple[float, ...] | None = None
    holdout_per_prompt: tuple[float, ...] | None = None
    details: dict[str, float] | None = None
    error: str | None = None
    round: int = 0
    timestamp: str = ""
    elapsed_s: float = 0.0

    @property
    def n_vectors(self) -> int:
        return len(self.candidate)

    @property
    def description(self) -> str:
        return "baseline (no steering)" if self.status == "baseline" else self.candidate.describe()

    # dict-style reading, as history rows have always been read
    def keys(self) -> list[str]:
        return [f.name for f in fields(self)] + ["n_vectors", "description"]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def to_dict(self) -> dict[str, Any]:
        return {k: self[k] for k in self.keys()}

    def replace(self, **changes: Any) -> TrialRecord:
        return replace(self, **changes)


def improves(score: float | None, best: float, lower_is_better: bool, min_improvement: float = 0.0) -> bool:
    """Whether ``score`` beats ``best`` by more than ``min_improvement`` in the metric's direction."""
    if score is None or not math.isfinite(score):
        return False
    if lower_is_better:
        return score < best - min_improvement
    return score > best + min_improvement


def running_best(records: Iterable[TrialRecord]) -> list[float | None]:
    """The best score after each record: the baseline's, then the last keep's."""
    out: list[float | None] = []
    best = None
    for r in records:
        if r.status in ("baseline", "keep"):
            best = r.score
        out.append(best)
    return out


def last_keep(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The newest kept record (each keep beat everything before it), or None."""
    for r in reversed(records):
        if r.status == "keep":
            return r
    return None
