"""Calibration of steering strength and the layer pre-screen against plain-torch computations."""

import math

import pytest
import torch
from tiny_models import make_model, make_tokenizer

from autosteer import Steer, SteerCandidate
from autosteer.errors import InvalidArgumentError
from autosteer.search.calibrate import calibrate, concept_space
from autosteer.steering.concept import Concept

PROMPTS = ["the cat likes", "I feel happy because", "a dog", "the old man is calm and"]
CONCEPT = Concept("calm", positive=["the old man is calm", "she is calm and happy"],
                  negative=["the old man is angry", "she is sad and tired"])


@pytest.fixture(scope="module")
def model():
    return make_model("llama")


def next_logp(model, tok, prompt):
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)


def kl_reference(model, tok, layer, coeff):
    steer = Steer(model, tok)
    cand = SteerCandidate.from_dict([{"layer_idx": layer, "coeff": coeff, "concept": CONCEPT.ref()}], [CONCEPT])
    plain = [next_logp(model, tok, p) for p in PROMPTS]
    with steer.applied(cand):
        steered = [next_logp(model, tok, p) for p in PROMPTS]
    return sum(float((s.exp() * (s - q)).sum()) for s, q in zip(steered, plain)) / len(PROMPTS)


def lift_reference(model, tok, layer, coeff):
    steer = Steer(model, tok)
    cand = SteerCandidate.from_dict([{"layer_idx": layer, "coeff": coeff, "concept": CONCEPT.ref()}], [CONCEPT])

    def mean_logp():
        vals = []
        for p in PROMPTS:
            for t in texts:
                a, b = tok(p)["input_ids"], tok(t, add_special_tokens=False)["input_ids"]
                with torch.inference_mode():
                    logp = torch.log_softmax(model(input_ids=torch.tensor([a + b])).logits[0].double(), -1)
                vals.append(sum(float(logp[len(a) + i - 1, x]) for i, x in enumerate(b)) / len(b))
        return sum(vals) / len(vals)

    out = 0.0
    for texts, sign in ((CONCEPT.positive, 1), (CONCEPT.negative, -1)):
        base = mean_logp()
        with steer.applied(cand):
            out += sign * (mean_logp() - base)
    return out


def test_calibrated_coefficients_reach_the_target_kl(model):
    tok = make_tokenizer()
    cal = calibrate(model, tok, CONCEPT, [0, 1, 2], target_kl=0.002, prompts=PROMPTS, chat=False, steps=5)
    assert cal.passes == 6  # five root-finding passes and one pre-screen pass
    for layer in (0, 1, 2):
        kl = kl_reference(model, tok, layer, cal.coeff[layer])
        assert kl == pytest.approx(cal.kl[layer], rel=1e-3, abs=1e-6)
        assert abs(math.log(kl / 0.002)) < math.log(1.3), (layer, cal.coeff[layer], kl)
        assert cal.lift[layer] == pytest.approx(lift_reference(model, tok, layer, cal.coeff[layer]), abs=1e-4)


def test_concept_space_covers_the_best_window(model):
    tok = make_tokenizer()
    space, cal = concept_space(model, tok, CONCEPT, layer_fraction=(0.0, 1.0), stride=1, window=2, target_kl=0.002,
                               cache=False)
    a, b = space.layer_range
    assert b - a == 1
    sums = {(x, x + 1): cal.lift[x] + cal.lift[x + 1] for x in (0, 1)}
    assert (a, b) == max(sums, key=sums.get)
    cs = [cal.coeff[x] for x in (a, b)]
    assert space.coeff_range[0] == pytest.approx(0.5 * min(cs), rel=1e-2)
    assert space.coeff_range[1] == pytest.approx(1.5 * max(cs), rel=1e-2)
    assert list(space.texts) == [CONCEPT]


def test_an_answer_only_space_steers_the_generated_tokens_only(model):
    import random

    from autosteer.search.strategies._sampling import random_candidate

    tok = make_tokenizer()
    kw = dict(layer_fraction=(0.0, 1.0), stride=1, window=2, target_kl=0.002, cache=False)
    space, cal = concept_space(model, tok, CONCEPT, positions="answer", **kw)
    cs = [cal.coeff[x] for x in range(space.layer_range[0], space.layer_range[1] + 1)]
    assert space.coeff_range[1] == pytest.approx(2.0 * max(cs), rel=1e-2)
    assert space.schedules == ("warmup",)
    rng = random.Random(0)
    drawn = [v for _ in range(20) for v in random_candidate(rng, space)]
    assert drawn and all(dict(v.schedule) == {"type": "warmup", "steps": 1, "start": 0.0} for v in drawn)
    from autosteer import WarmupSchedule

    assert WarmupSchedule(1, 0.0)(0) == 0.0 and WarmupSchedule(1, 0.0)(1) == 1.0  # the prefill is step 0
    with pytest.raises(InvalidArgumentError, match="positions must be 'all' or 'answer', got 'prompt'"):
        concept_space(model, tok, CONCEPT, positions="prompt", **kw)


def test_bad_calibration_input_is_refused(model):
    tok = make_tokenizer()
    with pytest.raises(InvalidArgumentError, match="target_kl"):
        calibrate(model, tok, CONCEPT, [0], target_kl=0)
    with pytest.raises(InvalidArgumentError, match="at least one layer"):
        calibrate(model, tok, CONCEPT, [])


def test_a_calibration_is_remembered_per_model_and_concept(model, tmp_path, monkeypatch):
    from autosteer.search.calibrate import cached_calibration

    monkeypatch.setenv("AUTOSTEER_CACHE", str(tmp_path))
    tok = make_tokenizer()
    first = cached_calibration(model, tok, CONCEPT, [1, 2], target_kl=0.002, prompts=PROMPTS, chat=False)
    again = cached_calibration(model, tok, CONCEPT, [1, 2], target_kl=0.002, prompts=PROMPTS, chat=False)
    assert first.passes == 5 and again.passes == 0  # the second one did no forward pass
    assert (again.coeff, again.kl, again.lift) == (first.coeff, first.kl, first.lift)
    other = cached_calibration(model, tok, CONCEPT, [1, 2], target_kl=0.001, prompts=PROMPTS, chat=False)
    assert other.passes == 5 and other.coeff != first.coeff  # other options: calibrated anew
    assert len(list((tmp_path / "calibration").glob("*.json"))) == 2
