"""The paired keep rule and the confidence of the final gain, checked against SciPy's tests
(an independent implementation) on real runs of the organism."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autosteer import AutoSteerError, AutoSteerRunner, InvalidArgumentError, MeanRule, PairedRule, read_log
from autosteer.demo import _organism_setup
from autosteer.models import load_model

stats = pytest.importorskip("scipy.stats")


@pytest.fixture(scope="module")
def organism():
    return load_model("organism")


def _setup(n_prompts=16, n_holdout=60):
    st = _organism_setup("task_accuracy", n_prompts, n_holdout, None, None)
    return st, st.runner_kwargs


def _scipy_p(cand, best, test):
    diffs = [c - b for c, b in zip(cand, best)]
    nz = [d for d in diffs if d != 0]
    if not nz:
        return 1.0
    if test == "sign":
        return stats.binomtest(sum(d > 0 for d in nz), len(nz), 0.5, alternative="greater").pvalue
    ties = len({abs(d) for d in nz}) != len(nz)
    return stats.wilcoxon(diffs, alternative="greater", zero_method="wilcox",
                          method="approx" if ties else "exact", correction=ties).pvalue


@pytest.mark.parametrize("test", ["wilcoxon", "sign"])
def test_paired_rule_keeps_only_what_the_paired_test_accepts(organism, tmp_path, test):
    model, tok = organism
    st, kw = _setup()
    alpha = 0.05
    res = AutoSteerRunner(model, tok, st.prompts, log_path=tmp_path / "log.tsv",
                          keep_rule=PairedRule(alpha=alpha, test=test), strategy="random", seed=2,
                          **kw).run(40, verbose=False, batch_size=st.batch_size)
    hist = read_log(tmp_path / "log.tsv")
    assert hist.config["keep_rule"] == "paired" and hist.config["alpha"] == alpha and hist.config["test"] == test
    best = hist[0]
    higher_but_discarded = 0
    for r in hist[1:]:
        if r.status == "crash":
            continue
        p = _scipy_p(r.per_prompt, best.per_prompt, test)
        assert r.details["keep_p"] == pytest.approx(p, rel=1e-6, abs=1e-12)
        mean_better = r.score > best.score
        assert (r.status == "keep") == (mean_better and p <= alpha), (r.iteration, r.score, best.score, p)
        higher_but_discarded += mean_better and r.status == "discard"
        if r.status == "keep":
            best = r
    assert res["keeps"] >= 1 and higher_but_discarded >= 1  # the rule decided something the mean rule would not


def test_mean_rule_is_the_default_and_ignores_the_test(organism, tmp_path):
    model, tok = organism
    st, kw = _setup()
    AutoSteerRunner(model, tok, st.prompts, log_path=tmp_path / "log.tsv", strategy="random", seed=3, **kw).run(20)
    hist = read_log(tmp_path / "log.tsv")
    assert hist.config["keep_rule"] == "mean" and "alpha" not in hist.config
    best = hist[0]
    for r in hist[1:]:
        assert (r.status == "keep") == (r.score > best.score)
        assert "keep_p" not in (r.details or {})
        if r.status == "keep":
            best = r


def test_confidence_of_the_final_gain_is_the_paired_test_on_held_out_prompts(organism, tmp_path):
    model, tok = organism
    st, kw = _setup()
    res = AutoSteerRunner(model, tok, st.prompts, log_path=tmp_path / "log.tsv", **kw).run(20)
    hist = read_log(tmp_path / "log.tsv")
    base, best = hist[0], [r for r in hist if r.status == "keep"][-1]
    assert len(base.holdout_per_prompt) == len(st.holdout) == len(best.holdout_per_prompt)
    # the held-out values are the accuracy of each held-out prompt: their mean is the held-out score
    assert sum(best.holdout_per_prompt) / len(st.holdout) == pytest.approx(best.holdout_score)
    conf = res["confidence"]
    want = _scipy_p(best.holdout_per_prompt, base.holdout_per_prompt, "wilcoxon")
    assert conf["p_wilcoxon"] == pytest.approx(want, rel=1e-6)
    assert conf["confidence"] == pytest.approx(1 - want, rel=1e-6)
    assert conf["better"] + conf["worse"] + conf["tied"] == len(st.holdout)
    assert conf["better"] == sum(b > a for a, b in zip(base.holdout_per_prompt, best.holdout_per_prompt))
    assert "Confidence of the held-out gain" in str(res)
    # `autosteer best` reads the same from the log
    out = subprocess.run([sys.executable, "-m", "autosteer", "best", str(tmp_path / "log.tsv")],
                         capture_output=True, text=True, check=True).stdout
    assert f"Confidence of the held-out gain: {conf['confidence']:.2f}" in out
    js = json.loads(subprocess.run([sys.executable, "-m", "autosteer", "best", str(tmp_path / "log.tsv"), "--json"],
                                   capture_output=True, text=True, check=True).stdout)
    assert js["confidence"]["p_wilcoxon"] == pytest.approx(want, rel=1e-6)


def test_keep_rule_bad_input(organism, tmp_path):
    model, tok = organism
    st, kw = _setup()
    for make, match in ((lambda: "median", "unknown keep rule str 'median'; expected one of 'mean', 'paired'"),
                        (lambda: PairedRule(alpha=1.5), r"PairedRule.alpha must be a level"),
                        (lambda: PairedRule(alpha=0), r"PairedRule.alpha must be a level"),
                        (lambda: PairedRule(test="t"), r"PairedRule.test must be one of 'wilcoxon', 'sign'"),
                        (lambda: MeanRule(alpha=0.1), "keep rule 'mean' has no option 'alpha'"),
                        (lambda: MeanRule(min_improvement=-1), r"MeanRule.min_improvement must be >= 0")):
        with pytest.raises(InvalidArgumentError, match=match):
            AutoSteerRunner(model, tok, st.prompts, log_path=None, keep_rule=make(), **kw)
    # a custom metric that returns one number cannot be tested prompt by prompt: said before any trial
    runner = AutoSteerRunner(model, tok, st.prompts, metric=lambda m, t, p: 0.5, keep_rule="paired",
                             search_space=st.space, log_path=tmp_path / "c.tsv")
    with pytest.raises(AutoSteerError, match="one number per prompt"):
        runner.run(3, verbose=False)
    assert len(read_log(tmp_path / "c.tsv", allow_incomplete=True)) == 0  # nothing was run
