"""The answer objective (steered_answer) against plain-torch computations on a tiny model."""

import math

import pytest
import torch
from tiny_models import make_model, make_tokenizer

from autosteer import (
    AutoSteerRunner,
    Steer,
    SteerCandidate,
    SteeredAnswer,
    SteerEvaluator,
    SteerSearchSpace,
)
from autosteer.errors import InvalidArgumentError
from autosteer.search.objective import combine, relevance_others

PROMPTS = ["what is 3 plus 4 ?", "the cat likes", "I feel happy because", "a dog", "the old man is calm and"]
N_NEW = 6


@pytest.fixture(scope="module")
def model():
    return make_model("llama")


def greedy_ids(model, tok, prompt, n):
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


def mean_logp(model, tok, prompt, cont):
    """Mean per-token log-probability of ``cont`` (ids) after ``prompt``, one unpadded pass in float64."""
    ids = tok(prompt)["input_ids"]
    x = torch.tensor([ids + cont])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
    return sum(float(logp[len(ids) + i - 1, t]) for i, t in enumerate(cont)) / len(cont)


def rep3(ids):
    wins = [tuple(ids[i:i + 3]) for i in range(len(ids) - 2)]
    return 0.0 if not wins else sum(1 for i, w in enumerate(wins) if w in wins[:i]) / len(wins)


def reference(model, tok, prompts, answers, concept, margin, scale, topic=None):
    """The objective by hand: references from the unsteered model's own greedy answers; with a
    ``topic`` request, relevance is the smaller of the PMI against the other requests and against it."""
    n = len(prompts)
    others = [[(p + 1) % n, (p + 2) % n] for p in range(n)]

    def axes(conts):
        own = [mean_logp(model, tok, prompts[p], c) for p, c in enumerate(conts)]
        other = [sum(mean_logp(model, tok, prompts[q], c) for q in others[p]) / 2 for p, c in enumerate(conts)]
        pmi = [a - b for a, b in zip(own, other)]
        if topic is not None:
            pmi = [min(x, a - mean_logp(model, tok, topic, c)) for x, a, c in zip(pmi, own, conts)]
        return [-x for x in own], pmi

    plain = [greedy_ids(model, tok, p, N_NEW) for p in prompts]
    nll0, pmi0 = axes(plain)
    f0, rho0 = sum(nll0) / n, sum(pmi0) / n
    nll, pmi = axes(answers)
    q = []
    for p, ids in enumerate(answers):
        c = concept(tok.decode(ids, skip_special_tokens=True))
        r = min(1.0, max(0.0, pmi[p] / max(rho0, 0.1)))
        f = min(1.0, max(0.0, 1 - max(0.0, nll[p] - nll0[p]) / scale))
        stuck = rep3(ids) > 0.3
        q.append(0.0 if stuck or min(c, r, f) <= 0 else 3 / (1 / c + 1 / r + 1 / f))
    excess = sum(nll) / n - f0
    if excess > margin:
        q = [-(excess - margin)] * n
    return q, {"fluency_reference": f0, "relevance_reference": rho0, "fluency_excess": excess,
               "relevance": sum(pmi) / n}


def test_combine_and_others_by_hand():
    assert combine(1.0, 1.0, 1.0, False) == 1.0
    assert combine(1.0, 0.5, 0.25, False) == pytest.approx(3 / (1 + 2 + 4))
    assert combine(1.0, 0.0, 1.0, False) == 0.0 and combine(0.0, 1.0, 1.0, False) == 0.0
    assert combine(1.0, 1.0, 1.0, True) == 0.0
    assert relevance_others(4) == [[1, 2], [2, 3], [3, 0], [0, 1]]
    assert relevance_others(2) == [[1], [0]]


@pytest.mark.parametrize("topic", [None, "I feel happy and the cat likes"])
@pytest.mark.parametrize("steered", [False, True])
def test_steered_answer_matches_a_plain_torch_reference(model, steered, topic):
    tok = make_tokenizer()
    plain = [greedy_ids(model, tok, p, N_NEW) for p in PROMPTS]
    # on-concept: the answers that contain the unsteered first answer's first word
    word = tok.decode(plain[0][:1]).strip()
    concept = lambda text: 1.0 if word in text else 0.0
    ev = SteerEvaluator(model, tok, SteeredAnswer(pattern=concept, fluency_margin=10.0, fluency_scale=2.0,
                                                  topic_request=topic),
                        max_new_tokens=N_NEW, batch_size=2)
    steer = Steer(model, tok)
    cand = SteerCandidate.from_dict([{"layer_idx": 1, "coeff": 0.5, "text": "happy"}])
    if steered:
        (got,) = ev.evaluate_candidates(steer, [cand], PROMPTS)
        with steer.applied(cand):
            answers = [greedy_ids(model, tok, p, N_NEW) for p in PROMPTS]
    else:
        got = ev.evaluate_result(PROMPTS)
        answers = plain
    assert list(got.outputs) == [tok.decode(a, skip_special_tokens=True) for a in answers]
    want, details = reference(model, tok, PROMPTS, answers, concept, 10.0, 2.0, topic)
    if topic is not None:  # the topic term changes the measure here: the test can tell it was applied
        assert details["relevance"] < reference(model, tok, PROMPTS, answers, concept, 10.0, 2.0)[1]["relevance"]
    assert got.per_prompt == pytest.approx(want, abs=1e-5)
    assert got.value == pytest.approx(sum(want) / len(want), abs=1e-5)
    for k, v in details.items():
        assert got.details[k] == pytest.approx(v, abs=1e-5), k
    if not steered:
        assert got.details["fluency_excess"] == pytest.approx(0.0, abs=1e-9)
    assert got.details["feasible"] == 1.0


def test_over_the_budget_scores_below_every_feasible_candidate(model):
    tok = make_tokenizer()
    ev = SteerEvaluator(model, tok, SteeredAnswer(pattern=lambda t: 1.0, fluency_margin=0.0,
                                                  relevance_judge=lambda request, answer: 1.0), max_new_tokens=N_NEW)
    steer = Steer(model, tok)
    cand = SteerCandidate.from_dict([{"layer_idx": 0, "coeff": 4.0, "text": "the old man"}])
    (got,) = ev.evaluate_candidates(steer, [cand], PROMPTS)
    with steer.applied(cand):
        answers = [greedy_ids(model, tok, p, N_NEW) for p in PROMPTS]
    _, details = reference(model, tok, PROMPTS, answers, lambda t: 1.0, 0.0, 3.0)
    assert details["fluency_excess"] > 0  # the strong steering costs fluency
    assert got.details["feasible"] == 0.0
    assert got.per_prompt == pytest.approx([-details["fluency_excess"]] * len(PROMPTS), abs=1e-5)
    base = ev.evaluate_result(PROMPTS)  # the judge and the concept say 1 everywhere: a perfect, feasible score
    assert base.value == pytest.approx(1.0 - sum(rep3(greedy_ids(model, tok, p, N_NEW)) > 0.3 for p in PROMPTS)
                                       / len(PROMPTS))


def test_bad_inputs_are_refused_before_work(model):
    tok = make_tokenizer()
    with pytest.raises(InvalidArgumentError, match="metric 'steered_answer' needs the option 'pattern'"):
        SteerEvaluator(model, tok, "steered_answer")
    with pytest.raises(InvalidArgumentError, match=r"SteeredAnswer.relevance_judge must be a callable"):
        SteeredAnswer(pattern="x", relevance_judge=3)
    with pytest.raises(InvalidArgumentError, match=r"SteeredAnswer.fluency_scale must be > 0"):
        SteeredAnswer(pattern="x", fluency_scale=0)
    ev = SteerEvaluator(model, tok, SteeredAnswer(pattern="x"), max_new_tokens=2)
    with pytest.raises(InvalidArgumentError, match="at least 2 prompts"):
        ev.evaluate(["a dog"])


def test_a_keep_over_the_budget_on_held_out_prompts_is_never_the_result(model, tmp_path):
    tok = make_tokenizer()
    search, held = PROMPTS[:3], PROMPTS[3:] + ["she reads"]
    plain = {p: tok.decode(greedy_ids(model, tok, p, N_NEW), skip_special_tokens=True) for p in search + held}
    changed = lambda text: 0.0 if text in plain.values() else 1.0
    judge = lambda request, answer: 1.0
    steer = Steer(model, tok)
    # a candidate whose fluency excess is lower on the search prompts than on the held-out ones
    excess = {}
    for coeff in (0.5, 1.0, 2.0, 4.0):
        cand = SteerCandidate.from_dict([{"layer_idx": 1, "coeff": coeff, "text": "happy"}])
        for name, prompts in (("search", search), ("held", held)):
            ev = SteerEvaluator(model, tok, SteeredAnswer(pattern=changed, relevance_judge=judge, fluency_margin=100.0),
                                max_new_tokens=N_NEW)
            (r,) = ev.evaluate_candidates(steer, [cand], prompts)
            excess[coeff, name] = (r.details["fluency_excess"], r.value)
    usable = [c for c in (0.5, 1.0, 2.0, 4.0)
              if excess[c, "held"][0] > excess[c, "search"][0] + 0.01 and excess[c, "search"][1] > 0]
    assert usable, excess
    coeff = usable[0]
    margin = (excess[coeff, "held"][0] + excess[coeff, "search"][0]) / 2
    space = SteerSearchSpace(layer_range=(1, 1), coeff_range=(coeff, coeff), texts=["happy"], max_vectors=1,
                             schedules=("none",))
    metric = SteeredAnswer(pattern=changed, relevance_judge=judge, fluency_margin=margin)
    runner = AutoSteerRunner(model, tok, search, metric=metric, max_new_tokens=N_NEW, holdout=held,
                             search_space=space, log_path=tmp_path / "log.tsv")
    res = runner.run(1, verbose=False)
    rec = res["history"][1]
    assert rec.candidate.vectors[0].coeff == coeff
    assert rec.score > 0 and rec.details["feasible"] == 1.0  # better than the baseline on the search prompts
    assert rec.details["holdout_feasible"] == 0.0
    assert rec.status == "discard" and "fluency budget" in rec.error
    assert res["best_candidate"] is None and res["best_score"] == res["baseline_score"]
    # the log reads back the same decision
    from autosteer.search.log import read_log

    assert read_log(tmp_path / "log.tsv")[1].status == "discard"
    assert math.isfinite(res["baseline_holdout"])


def test_best_and_the_report_show_the_three_axes(model, tmp_path, capsys):
    from autosteer.cli import main
    from autosteer.search.results import answer_axes

    tok = make_tokenizer()
    space = SteerSearchSpace(layer_range=(1, 2), coeff_range=(0.3, 0.6), texts=["happy"], max_vectors=1,
                             schedules=("none",))
    metric = SteeredAnswer(pattern=lambda t: 1.0, relevance_judge=lambda r, a: 1.0)
    runner = AutoSteerRunner(model, tok, PROMPTS[:3], metric, max_new_tokens=N_NEW, holdout=PROMPTS[3:],
                             search_space=space, log_path=tmp_path / "log.tsv", population=2)
    assert runner.metric == "steered_answer"
    res = runner.run(2, verbose=False)
    axes = answer_axes(res)
    base = res["history"][0].details
    assert axes["search"]["baseline"]["relevance"] == base["relevance"]
    assert axes["holdout"]["baseline"]["fluency_excess"] == base["holdout_fluency_excess"]
    assert "Held-out prompts: concept" in str(res)
    assert main(["best", str(tmp_path / "log.tsv")]) == 0
    out = capsys.readouterr().out
    assert "Search prompts: concept 100% -> 100%" in out and "Held-out prompts: concept" in out
    pytest.importorskip("matplotlib")
    from autosteer.search.plot import plot_history

    title = plot_history(tmp_path / "log.tsv").axes[0].get_title()
    assert "held-out, baseline -> best: concept 100% -> 100%" in title
