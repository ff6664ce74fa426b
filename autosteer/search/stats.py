"""Paired tests on per-prompt values: is a candidate better than the best so far, prompt by prompt?

Pure Python (no SciPy): exact distributions for small samples, the normal
approximation with continuity correction beyond.

* :func:`sign_test` — one-sided: the share of positive differences among the
  non-zero ones is above 1/2 (an exact binomial tail).
* :func:`wilcoxon_test` — one-sided Wilcoxon signed-rank test: the differences
  are shifted above 0.  Zero differences are dropped (Wilcoxon's own
  convention), tied magnitudes get average ranks; exact null distribution up to
  ``EXACT_LIMIT`` non-zero differences when there are no ties, the normal
  approximation (with tie correction) otherwise.

Both return a p-value: small means the candidate's per-prompt values are
reliably higher (pass the differences *in the metric's good direction*).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["EXACT_LIMIT", "TESTS", "paired_p", "sign_test", "wilcoxon_test"]

EXACT_LIMIT = 50
TESTS = ("wilcoxon", "sign")


def _nonzero(diffs: Sequence[float], eps: float = 1e-12) -> list[float]:
    return [float(d) for d in diffs if abs(d) > eps]


def sign_test(diffs: Sequence[float]) -> float:
    """P(X >= positives) for X ~ Binomial(n_nonzero, 1/2); 1.0 when every difference is zero."""
    nz = _nonzero(diffs)
    n = len(nz)
    if n == 0:
        return 1.0
    k = sum(1 for d in nz if d > 0)
    return min(1.0, sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        i = j + 1
    return ranks


def wilcoxon_test(diffs: Sequence[float]) -> float:
    """One-sided Wilcoxon signed-rank p-value for "the differences are above zero"."""
    nz = _nonzero(diffs)
    n = len(nz)
    if n == 0:
        return 1.0
    mags = [abs(d) for d in nz]
    ranks = _ranks(mags)
    w_plus = sum(r for r, d in zip(ranks, nz) if d > 0)
    ties = len(set(mags)) != len(mags)
    if n <= EXACT_LIMIT and not ties:
        # exact: the number of subsets of {1..n} whose sum is >= w_plus, over 2^n
        total = n * (n + 1) // 2
        counts = [0] * (total + 1)
        counts[0] = 1
        for r in range(1, n + 1):
            for s in range(total, r - 1, -1):
                counts[s] += counts[s - r]
        w = math.ceil(w_plus - 1e-9)
        return min(1.0, sum(counts[w:]) / 2**n)
    mean = n * (n + 1) / 4
    tie_term = 0.0
    for m in set(mags):
        t = mags.count(m)
        tie_term += t**3 - t
    var = n * (n + 1) * (2 * n + 1) / 24 - tie_term / 48
    if var <= 0:
        return 1.0
    z = (w_plus - mean - 0.5) / math.sqrt(var)  # continuity correction
    return 0.5 * math.erfc(z / math.sqrt(2))


def paired_p(candidate: Sequence[float], best: Sequence[float], lower_is_better: bool, test: str = "wilcoxon") -> float:
    """p-value that ``candidate`` beats ``best`` prompt by prompt (the same prompts, in order)."""
    if len(candidate) != len(best):
        raise ValueError(f"paired values differ in length ({len(candidate)} vs {len(best)})")
    diffs = [(b - c) if lower_is_better else (c - b) for c, b in zip(candidate, best)]
    if test == "sign":
        return sign_test(diffs)
    if test == "wilcoxon":
        return wilcoxon_test(diffs)
    raise ValueError(f"unknown test {test!r}; expected one of {', '.join(TESTS)}")
