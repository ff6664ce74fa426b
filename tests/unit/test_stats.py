"""The paired tests against SciPy's (an independent implementation)."""

import random

import pytest

from autosteer.search.stats import paired_p, sign_test, wilcoxon_test

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("seed", range(12))
def test_sign_test_matches_scipys_binomial_test(seed):
    rng = random.Random(seed)
    diffs = [rng.choice([-1.0, 0.0, 1.0, 1.0]) for _ in range(rng.randint(1, 40))]
    nz = [d for d in diffs if d]
    want = 1.0 if not nz else stats.binomtest(sum(d > 0 for d in nz), len(nz), 0.5, alternative="greater").pvalue
    assert sign_test(diffs) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_wilcoxon_matches_scipy_exact_and_approximate(seed):
    rng = random.Random(100 + seed)
    n = rng.randint(3, 30)
    diffs = [rng.gauss(0.2, 1.0) for _ in range(n)]  # no ties: the exact distribution
    want = stats.wilcoxon(diffs, alternative="greater", zero_method="wilcox", method="exact").pvalue
    assert wilcoxon_test(diffs) == pytest.approx(want, rel=1e-9)
    tied = [round(d, 0) for d in diffs] + [0.0, 0.0]  # ties and zeros: the normal approximation
    if any(tied):
        want = stats.wilcoxon(tied, alternative="greater", zero_method="wilcox", method="approx",
                              correction=True).pvalue
        assert wilcoxon_test(tied) == pytest.approx(want, rel=1e-6)


def test_paired_p_follows_the_metric_direction():
    better = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    worse = [0.0] * 7
    assert paired_p(better, worse, lower_is_better=False) < 0.05
    assert paired_p(better, worse, lower_is_better=True) > 0.95
    assert paired_p([2.0] * 6, [3.0] * 6, lower_is_better=True, test="sign") == pytest.approx(1 / 64)
    assert paired_p([1.0, 1.0], [1.0, 1.0], False) == 1.0
    with pytest.raises(ValueError, match="length"):
        paired_p([1.0], [1.0, 2.0], False)
