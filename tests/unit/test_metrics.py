"""Every metric against an independent computation in plain torch on a tiny offline model.

Each reference generates greedily one prompt at a time without padding, scores in float64 from
one unpadded forward pass, and computes the metric's formula by hand; the evaluator under test
batches, pads and scores only at the kept positions.  Steered cases apply the candidate with
``Steer.applied`` for the reference's generation (steering itself is checked against
``tests/reference.py`` in test_steer.py); the scoring passes of the reference run on the model
with no hook at all.
"""

import math
import re

import pytest
import torch
from tiny_models import make_model, make_tokenizer

from autosteer import (
    ConceptRate,
    CustomMetric,
    Fluency,
    KLNeutral,
    Perplexity,
    Steer,
    SteerCandidate,
    SteeredConcept,
    SteerEvaluator,
    TaskAccuracy,
)
from autosteer.search.metrics import REPETITION_LIMIT, repetition

PROMPTS = ["what is 3 plus 4 ?", "the cat likes", "I feel happy because", "a dog", "the old man is calm and"]
NEUTRAL = ["she reads", "the book is", "we walk to the"]
N_NEW = 8
MILD = SteerCandidate.from_dict([{"layer_idx": 1, "coeff": 0.5, "text": "happy"}])
STRONG = SteerCandidate.from_dict([{"layer_idx": 0, "coeff": 4.0, "text": "the old man"}])


@pytest.fixture(scope="module")
def model():
    return make_model("llama")


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def n_hooks(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def greedy_ids(model, tok, prompt, n=N_NEW):
    """Greedy continuation ids of one prompt (EOS included when it comes), no padding."""
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    out = []
    with torch.inference_mode():
        for _ in range(n):
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == tok.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def answers(model, tok, prompts, steer=None, cand=None):
    """Greedy continuation ids, steered by ``cand`` when given."""
    if cand is None:
        return [greedy_ids(model, tok, p) for p in prompts]
    with steer.applied(cand):
        return [greedy_ids(model, tok, p) for p in prompts]


def continuation_nll(model, tok, prompt, cont):
    """Mean per-token NLL of ``cont`` after ``prompt`` under the model as it is, float64."""
    assert n_hooks(model) == 0  # the reference scores the unsteered model
    ids = tok(prompt)["input_ids"]
    x = torch.tensor([ids + cont])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
    return -sum(float(logp[len(ids) + i - 1, t]) for i, t in enumerate(cont)) / len(cont)


def texts_of(tok, ids_list):
    return [tok.decode(ids, skip_special_tokens=True) for ids in ids_list]


def evaluate(model, tok, metric, prompts, cand=None, expected=None, **kw):
    ev = SteerEvaluator(model, tok, metric, max_new_tokens=N_NEW, batch_size=2, **kw)
    if cand is None:
        return ev.evaluate_result(prompts, expected)
    (got,) = ev.evaluate_candidates(Steer(model, tok), [cand], prompts, expected)
    return got


def pattern_for(tok, texts):
    """A word that some continuations contain and others do not (so the rate is neither 0 nor 1)."""
    words = sorted({w for t in texts for w in re.findall(r"[a-z]+", t.lower()) if len(w) > 1})
    for w in words:
        hits = sum(bool(re.search(re.escape(w), t, re.I)) for t in texts)
        if 0 < hits < len(texts):
            return re.escape(w)
    pytest.skip("every continuation shares its words")


# ----------------------------------------------------------------------------- task accuracy, perplexity


@pytest.mark.parametrize("steered", [False, True])
def test_task_accuracy_per_prompt(model, tok, steered):
    steer = Steer(model, tok)
    ids = answers(model, tok, PROMPTS, steer, MILD if steered else None)
    texts = texts_of(tok, ids)
    # expected strings: the first word of every other continuation (a hit), a miss elsewhere
    expected = [(t.split()[0] if t.split() and i % 2 == 0 else "zebra") for i, t in enumerate(texts)]
    want = [1.0 if " ".join(e.lower().split()) in " ".join(t.lower().split()) else 0.0
            for e, t in zip(expected, texts)]
    got = evaluate(model, tok, TaskAccuracy(), PROMPTS, MILD if steered else None, expected)
    assert list(got.per_prompt) == want
    assert got.value == sum(want) / len(want)
    assert n_hooks(model) == 0


@pytest.mark.parametrize("with_expected", [False, True])
def test_perplexity_per_prompt(model, tok, with_expected):
    expected = [" 7 .", " the book", " she", " runs", " kind"] if with_expected else None
    nll, count, per_prompt = 0.0, 0, []
    with torch.inference_mode():
        for i, p in enumerate(PROMPTS):
            ids = tok(p)["input_ids"]
            first = 1
            if expected:
                first = len(ids)
                ids = ids + tok(expected[i], add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
            tokens = [-float(logp[t - 1, ids[t]]) for t in range(first, len(ids))]
            per_prompt.append(math.exp(sum(tokens) / len(tokens)))
            nll, count = nll + sum(tokens), count + len(tokens)
    got = evaluate(model, tok, Perplexity(), PROMPTS, expected=expected)
    assert got.per_prompt == pytest.approx(per_prompt, rel=1e-5)
    assert got.value == pytest.approx(math.exp(nll / count), rel=1e-5)


# ----------------------------------------------------------------------------- custom


def test_custom_metric_scores_the_steered_model_per_prompt(model, tok):
    def logit_of_the(m, t, prompts):
        """Per prompt: the logit of the token "the" after the prompt (a plain forward)."""
        the = t(" the", add_special_tokens=False)["input_ids"][-1]
        with torch.no_grad():
            return [float(m(input_ids=t(p, return_tensors="pt")["input_ids"]).logits[0, -1, the]) for p in prompts]

    steer = Steer(model, tok)
    with steer.applied(MILD):
        want = logit_of_the(model, tok, PROMPTS)
    plain = logit_of_the(model, tok, PROMPTS)
    for metric in (CustomMetric(logit_of_the), logit_of_the):
        got = evaluate(model, tok, metric, PROMPTS, MILD)
        assert got.per_prompt == pytest.approx(want, abs=1e-6)
        assert got.value == pytest.approx(sum(want) / len(want), abs=1e-6)
        assert evaluate(model, tok, metric, PROMPTS).per_prompt == pytest.approx(plain, abs=1e-6)
    assert want != pytest.approx(plain, abs=1e-3)  # the steering reached the function
    one = evaluate(model, tok, CustomMetric(lambda m, t, p: 2.5), PROMPTS)
    assert one.value == 2.5 and one.per_prompt is None


# ----------------------------------------------------------------------------- concept metrics


@pytest.mark.parametrize("steered", [False, True])
def test_concept_rate(model, tok, steered):
    steer = Steer(model, tok)
    texts = texts_of(tok, answers(model, tok, PROMPTS, steer, MILD if steered else None))
    pattern = pattern_for(tok, texts)
    want = [1.0 if re.search(pattern, t, re.I) else 0.0 for t in texts]
    got = evaluate(model, tok, ConceptRate(pattern=pattern), PROMPTS, MILD if steered else None)
    assert list(got.outputs) == texts
    assert list(got.per_prompt) == want and got.value == sum(want) / len(want)
    # keywords are matched as written, anywhere, case-insensitively
    kw = evaluate(model, tok, ConceptRate(pattern=[pattern.replace("\\", "").upper(), "zebra"]), PROMPTS,
                  MILD if steered else None)
    assert list(kw.per_prompt) == want


@pytest.mark.parametrize("cand", [None, MILD, STRONG], ids=["unsteered", "mild", "strong"])
def test_fluency_is_the_unsteered_nll_of_each_continuation(model, tok, cand):
    steer = Steer(model, tok)
    ids = answers(model, tok, PROMPTS, steer, cand)
    want = [continuation_nll(model, tok, p, a) for p, a in zip(PROMPTS, ids)]
    got = evaluate(model, tok, Fluency(), PROMPTS, cand)
    assert list(got.outputs) == texts_of(tok, ids)
    assert got.per_prompt == pytest.approx(want, abs=1e-4)
    assert got.value == pytest.approx(sum(want) / len(want), abs=1e-4)


def test_repetition_by_hand():
    assert repetition([]) == 0.0 and repetition([4, 4]) == 0.0
    assert repetition([1, 2, 3, 4, 5]) == 0.0
    assert repetition([1, 2, 3, 1, 2, 3]) == 1 / 4  # windows 123 231 312 123: the last repeats
    assert repetition([5, 5, 5, 5]) == 1 / 2  # 555 555
    assert repetition([7] * 12) == 9 / 10
    assert repetition([1, 2, 1, 2, 1, 2, 1]) == 3 / 5  # 121 212 121 212 121
    assert REPETITION_LIMIT == 0.3


@pytest.mark.parametrize("cand,margin", [(None, 1.0), (MILD, 1.0), (STRONG, 0.0), (STRONG, 0.2)],
                         ids=["unsteered", "mild", "strong-no-budget", "strong-small-budget"])
def test_steered_concept(model, tok, cand, margin):
    steer = Steer(model, tok)
    plain_ids = answers(model, tok, PROMPTS)
    ids = answers(model, tok, PROMPTS, steer, cand) if cand is not None else plain_ids
    texts = texts_of(tok, ids)
    pattern = pattern_for(tok, texts + ["zz"])
    f0 = sum(continuation_nll(model, tok, p, a) for p, a in zip(PROMPTS, plain_ids)) / len(PROMPTS)
    f = sum(continuation_nll(model, tok, p, a) for p, a in zip(PROMPTS, ids)) / len(PROMPTS)
    penalty = max(0.0, f - f0 - margin)
    matched = [bool(re.search(pattern, t, re.I)) for t in texts]
    counted = [m and repetition(a) <= 0.3 for m, a in zip(matched, ids)]
    want = [(1.0 if c else 0.0) - penalty for c in counted]
    got = evaluate(model, tok, SteeredConcept(pattern=pattern, fluency_margin=margin), PROMPTS, cand)
    assert got.per_prompt == pytest.approx(want, abs=1e-4)
    assert got.value == pytest.approx(sum(want) / len(want), abs=1e-4)
    assert got.details["concept_rate"] == sum(matched) / len(matched)
    assert got.details["fluency"] == pytest.approx(f, abs=1e-4)
    assert got.details["fluency_reference"] == pytest.approx(f0, abs=1e-4)
    assert got.details["repetitive"] == sum(m and not c for m, c in zip(matched, counted)) / len(matched)
    if cand is STRONG and margin == 0.0:
        assert penalty > 0  # the strong steering is over a zero budget: the penalty is exercised


def test_steered_concept_repetition_guard(model, tok):
    """A pattern every continuation matches: only the repetitive ones (share of repeated 3-token
    windows above 0.3) do not count."""
    steer = Steer(model, tok)
    prompts = PROMPTS + ["the the the the", "a b a b a b"]
    ids = answers(model, tok, prompts, steer, STRONG)
    reps = [repetition(a) for a in ids]
    want_counted = [r <= REPETITION_LIMIT for r in reps]
    got = evaluate(model, tok, SteeredConcept(pattern=".", fluency_margin=100.0), prompts, STRONG)
    assert [v == 1.0 for v in got.per_prompt] == want_counted
    assert got.details["repetitive"] == pytest.approx(sum(not c for c in want_counted) / len(prompts))
    if all(want_counted):
        pytest.skip(f"no continuation of the tiny model repeats itself here: {reps}")


def kl_reference(model, tok, prompts, steer, cand):
    out = []
    for p in prompts:
        x = tok(p, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            plain = torch.log_softmax(model(input_ids=x).logits[0, -1].double(), -1)
            if cand is None:
                steered = plain
            else:
                with steer.applied(cand):
                    steered = torch.log_softmax(model(input_ids=x).logits[0, -1].double(), -1)
        out.append(float((steered.exp() * (steered - plain)).sum()))
    return out


@pytest.mark.parametrize("neutral", [None, NEUTRAL], ids=["search-prompts", "own-prompts"])
@pytest.mark.parametrize("cand", [None, MILD, STRONG], ids=["unsteered", "mild", "strong"])
def test_kl_neutral(model, tok, neutral, cand):
    steer = Steer(model, tok)
    want = kl_reference(model, tok, neutral or PROMPTS, steer, cand)
    got = evaluate(model, tok, KLNeutral(prompts=neutral), PROMPTS, cand)
    assert got.per_prompt == pytest.approx(want, abs=1e-5)
    assert got.value == pytest.approx(sum(want) / len(want), abs=1e-5)
    if cand is None:
        assert got.value == pytest.approx(0.0, abs=1e-6)
    else:
        assert got.value > 1e-4
    assert n_hooks(model) == 0


@pytest.mark.parametrize("make, exc, match", [
    (lambda: ConceptRate(pattern=[]), "InvalidArgumentError", r"ConceptRate.pattern is empty"),
    (lambda: ConceptRate(pattern=["wed", 3]), "ArgumentTypeError", r"ConceptRate.pattern\[1\] must be a string"),
    (lambda: ConceptRate(pattern="(unclosed"), "InvalidArgumentError", r"is not a valid regular expression"),
    (lambda: ConceptRate(), "InvalidArgumentError", r"metric 'concept_rate' needs the option 'pattern'"),
    (lambda: SteeredConcept(pattern="x", fluency_margin=-1), "InvalidArgumentError",
     r"SteeredConcept.fluency_margin must be >= 0"),
    (lambda: SteeredConcept(pattern="x", fluency_scale=2), "InvalidArgumentError",
     r"metric 'steered_concept' has no option 'fluency_scale'; its options are pattern, fluency_margin"),
    (lambda: Perplexity(pattern="x"), "InvalidArgumentError", r"metric 'perplexity' has no option 'pattern'; "
                                                                r"it takes no option"),
    (lambda: KLNeutral(prompts="one prompt"), "ArgumentTypeError", r"KLNeutral.prompts must be a list"),
    (lambda: CustomMetric(lambda model, prompts: 1.0), "InvalidArgumentError", r"three arguments"),
])
def test_metric_options_are_checked_in_the_constructor(make, exc, match):
    from autosteer import errors

    with pytest.raises(getattr(errors, exc), match=match):
        make()


def test_a_name_or_a_callable_is_the_metric_with_its_defaults():
    from autosteer.search.metrics import as_metric

    assert as_metric("perplexity") == Perplexity() and as_metric("kl_neutral") == KLNeutral()
    fn = lambda m, t, p: 0.0  # noqa: E731
    assert as_metric(fn) == CustomMetric(fn)
    m = SteeredConcept(pattern="wed")
    assert as_metric(m) is m and repr(m) == "SteeredConcept(pattern=re.compile('wed', re.IGNORECASE), fluency_margin=1.0)"
    assert m.fingerprint() == {"pattern": "wed", "fluency_margin": 1.0}
