"""Screening (a keep rule's ``screen``): scoring part of a prompt set and joining the parts.

The parts are scored by a fresh evaluator each (so no reference measured on the whole set is
reused from a cache), one candidate at a time with ``batch_size=1`` (so every forward pass has the
same shape as in the whole-set evaluation): the joined result must then equal the whole-set result
exactly, and each part's per-prompt measurements must be the whole set's at those positions.
The screening test is checked against SciPy's Wilcoxon test and the sign test by hand.
"""

import math

import pytest
from tiny_models import make_model, make_tokenizer

from autosteer import (
    ConceptRate,
    Fluency,
    KLNeutral,
    MeanRule,
    PairedRule,
    Perplexity,
    Steer,
    SteerCandidate,
    SteeredAnswer,
    SteeredConcept,
    SteerEvaluator,
    TaskAccuracy,
)
from autosteer.errors import InvalidArgumentError

PROMPTS = ["what is 3 plus 4 ?", "the cat likes", "I feel happy because", "a dog", "the old man is calm and"]
EXPECTED = ["7", "the", "the", "the", "the"]
N_NEW = 6
SPLIT = ([0, 1], [2, 3, 4])


@pytest.fixture(scope="module")
def model():
    return make_model("llama")


def word_of(model, tok):
    """A word the unsteered model says, so that the concept metrics see hits and misses."""
    ev = SteerEvaluator(model, tok, "fluency", max_new_tokens=N_NEW)
    texts = ev.evaluate_result(PROMPTS).outputs
    return texts[0].split()[0]


def metrics(word):
    return {
        "task_accuracy": (TaskAccuracy(), EXPECTED),
        "perplexity": (Perplexity(), None),
        "perplexity_expected": (Perplexity(), EXPECTED),
        "concept_rate": (ConceptRate(pattern=[word]), None),
        "fluency": (Fluency(), None),
        "steered_concept_penalised": (SteeredConcept(pattern=[word], fluency_margin=0.0), None),
        "steered_concept": (SteeredConcept(pattern=[word], fluency_margin=10.0), None),
        "steered_answer_infeasible": (SteeredAnswer(pattern=[word], fluency_margin=0.0), None),
        "steered_answer": (SteeredAnswer(pattern=[word], fluency_margin=10.0, fluency_scale=2.0), None),
    }


CANDIDATES = {
    "mild": [{"layer_idx": 1, "coeff": 0.5, "text": "happy"}],
    "strong": [{"layer_idx": 0, "coeff": 4.0, "text": "the old man"}],
}


@pytest.mark.parametrize("cand_name", list(CANDIDATES))
@pytest.mark.parametrize("name", list(metrics("x")))
def test_joined_parts_equal_the_whole_set_exactly(model, name, cand_name):
    tok = make_tokenizer()
    metric, expected = metrics(word_of(model, tok))[name]
    cand = SteerCandidate.from_dict(CANDIDATES[cand_name])

    def fresh():
        ev = SteerEvaluator(model, tok, metric, max_new_tokens=N_NEW, batch_size=1)
        ev.evaluate_result(PROMPTS, expected)  # the baseline, as the runner scores it first
        return ev, Steer(model, tok)

    ev, steer = fresh()
    (whole,) = ev.evaluate_candidates(steer, [cand], PROMPTS, expected)
    parts = []
    for idx in SPLIT:
        ev, steer = fresh()
        (part,) = ev.evaluate_candidates(steer, [cand], PROMPTS, expected, indexes=idx)
        parts.append(part)
        # each prompt's own measurement is the whole set's at its position
        if name.startswith("steered_answer"):
            for axis in ("concept", "relevance", "relevance_score", "nll", "fluency_score", "stuck", "combined"):
                assert getattr(part.parts, axis) == tuple(getattr(whole.parts, axis)[i] for i in idx), axis
        elif not name.startswith("steered_concept"):
            assert part.per_prompt == tuple(whole.per_prompt[i] for i in idx)
        if part.outputs is not None:
            assert part.outputs == tuple(whole.outputs[i] for i in idx)
    joined = metric.merge(parts)
    assert joined.value == whole.value
    assert joined.per_prompt == whole.per_prompt
    assert joined.outputs == whole.outputs
    assert joined.details == whole.details
    assert math.isfinite(joined.value)


def test_the_set_level_term_is_recomputed_on_the_joined_set(model):
    """steered_answer's feasibility is a mean over the set: a part may be infeasible alone while
    the whole set is feasible (or the reverse); the joined result follows the whole set, and
    perplexity is token-weighted (the joined value is not the mean of the parts' values)."""
    tok = make_tokenizer()
    cand = SteerCandidate.from_dict(CANDIDATES["strong"])
    ev = SteerEvaluator(model, tok, Fluency(), max_new_tokens=N_NEW, batch_size=1)
    steer = Steer(model, tok)
    (base,) = [ev.evaluate_result(PROMPTS)]
    (fl,) = ev.evaluate_candidates(steer, [cand], PROMPTS)
    excess = [a - b for a, b in zip(fl.per_prompt, base.per_prompt)]
    # a margin between the first part's mean excess and the whole set's
    first = sum(excess[:2]) / 2
    whole = sum(excess) / len(excess)
    assert first != pytest.approx(whole)
    margin = max(0.0, (first + whole) / 2)
    metric = SteeredAnswer(pattern=lambda t: 1.0, fluency_margin=margin)
    ev = SteerEvaluator(model, tok, metric, max_new_tokens=N_NEW, batch_size=1)
    ev.evaluate_result(PROMPTS)
    (part,) = ev.evaluate_candidates(steer, [cand], PROMPTS, indexes=[0, 1])
    (rest,) = ev.evaluate_candidates(steer, [cand], PROMPTS, indexes=[2, 3, 4])
    (full,) = ev.evaluate_candidates(steer, [cand], PROMPTS)
    assert part.details["feasible"] == (1.0 if first <= margin else 0.0)
    assert full.details["feasible"] == (1.0 if whole <= margin else 0.0)
    assert part.details["feasible"] != full.details["feasible"]
    joined = metric.merge([part, rest])
    assert joined.details["feasible"] == full.details["feasible"]
    assert joined.value == pytest.approx(full.value, abs=1e-6)

    ppl = SteerEvaluator(model, tok, Perplexity(), batch_size=1)
    a, b = (ppl.evaluate_candidates(steer, [cand], PROMPTS, indexes=i)[0] for i in SPLIT)
    rows = list(a.parts) + list(b.parts)  # (sum of token NLLs, tokens) per prompt
    by_hand = math.exp(sum(s for s, _ in rows) / sum(n for _, n in rows))
    assert Perplexity().merge([a, b]).value == pytest.approx(by_hand, rel=1e-12)
    assert by_hand != pytest.approx((a.value * 2 + b.value * 3) / 5, rel=1e-6)


def test_bad_indexes_and_unmergeable_metrics_are_refused(model):
    tok = make_tokenizer()
    steer = Steer(model, tok)
    cand = SteerCandidate.from_dict(CANDIDATES["mild"])
    ev = SteerEvaluator(model, tok, Fluency(), max_new_tokens=2)
    for bad, match in (([], "non-empty"), ([5], r"positions in 0\.\.4"), ([2, 1], "increasing"), ([1, 1], "increasing"),
                       ([-1], r"positions in 0\.\.4")):
        with pytest.raises(InvalidArgumentError, match=match):
            ev.evaluate_candidates(steer, [cand], PROMPTS, indexes=bad)
    for metric in (KLNeutral(), lambda m, t, p: 0.0):
        ev = SteerEvaluator(model, tok, metric, max_new_tokens=2)
        with pytest.raises(InvalidArgumentError, match="not mergeable"):
            ev.evaluate_candidates(steer, [cand], PROMPTS, indexes=[0])


# --------------------------------------------------------------------------- the screening test


def test_prunes_by_the_one_sided_wilcoxon_test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rule = MeanRule(screen=6, screen_alpha=0.1)
    best = [0.9, 0.8, 0.7, 0.95, 0.6, 0.85]
    cases = [
        [0.1, 0.2, 0.3, 0.15, 0.05, 0.4],  # worse everywhere: p = 2**-6
        [0.95, 0.2, 0.3, 0.15, 0.05, 0.4],  # better on one prompt
        [0.9, 0.8, 0.7, 0.95, 0.6, 0.1],  # worse on one prompt only, ties elsewhere
        [1.0, 0.9, 0.8, 0.99, 0.7, 0.9],  # better everywhere
    ]
    for cand in cases:
        prune, p = rule.prunes(cand, best, lower_is_better=False)
        d = [b - c for b, c in zip(best, cand)]
        nz = [x for x in d if x != 0]
        ties = len({abs(x) for x in nz}) != len(nz)
        want = stats.wilcoxon(d, alternative="greater", zero_method="wilcox",
                              method="approx" if ties else "exact", correction=ties).pvalue
        assert p == pytest.approx(want, rel=1e-9)
        assert prune == (want < 0.1 and sum(cand) < sum(best))
    assert rule.prunes(cases[0], best, False) == (True, pytest.approx(2.0**-6))
    assert rule.prunes(cases[3], best, False)[0] is False
    # lower is better (perplexity): the same values read the other way round
    assert rule.prunes(best, cases[0], lower_is_better=True) == (True, pytest.approx(2.0**-6))


def test_a_candidate_whose_mean_beats_the_best_is_never_pruned():
    """Many small losses and one large gain: the signed-rank test alone would prune it."""
    rule = MeanRule(screen=8, screen_alpha=0.2)
    best = [0.5] * 8
    cand = [0.49, 0.48, 0.47, 0.46, 0.45, 0.44, 0.43, 1.0]
    prune, p = rule.prunes(cand, best, False)
    assert p < 0.2 and sum(cand) > sum(best) and not prune


def test_sign_test_of_the_paired_rule_by_hand():
    rule = PairedRule(test="sign", screen=5, screen_alpha=0.2)
    best = [1.0, 1.0, 1.0, 1.0, 1.0]
    # worse on 4 of 5 non-tied prompts: P(X >= 4), X ~ Binomial(5, 1/2) = 6/32
    prune, p = rule.prunes([0.0, 0.0, 0.0, 0.0, 2.0], best, False)
    assert p == pytest.approx(6 / 32) and prune
    assert rule.screen_test == "sign" and MeanRule().screen_test == "wilcoxon"


@pytest.mark.parametrize("make, match", [
    (lambda: MeanRule(screen=3), r"MeanRule.screen=3 prompts are too few to prune at screen_alpha=0.1.*"
                                 r"2\*\*-3 = 0.125; give screen >= 4"),
    (lambda: PairedRule(screen=2, screen_alpha=0.2), r"give screen >= 3"),
    (lambda: MeanRule(screen=-1), r"MeanRule.screen must be an integer >= 0, got -1"),
    (lambda: MeanRule(screen=2.5), r"MeanRule.screen"),
    (lambda: MeanRule(screen=4, screen_alpha=1.0), r"MeanRule.screen_alpha must be a level strictly between 0 and 1"),
    (lambda: MeanRule(screen_alpha=0), r"screen_alpha must be a level"),
])
def test_bad_screen_options_are_refused(make, match):
    with pytest.raises(InvalidArgumentError, match=match):
        make()


def test_screen_off_leaves_the_fingerprint_as_before():
    assert MeanRule().fingerprint() == {"min_improvement": 0.0}
    assert MeanRule(screen_alpha=0.05).fingerprint() == {"min_improvement": 0.0}
    assert PairedRule().fingerprint() == {"min_improvement": 0.0, "test": "wilcoxon", "alpha": 0.1}
    assert MeanRule(screen=4).fingerprint() == {"min_improvement": 0.0, "screen": 4, "screen_alpha": 0.1}
    assert repr(MeanRule(screen=4)) == "MeanRule(min_improvement=0.0, screen=4, screen_alpha=0.1)"
