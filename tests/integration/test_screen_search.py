"""Screening in real searches (the keep rule's ``screen``): on the organism with task accuracy,
and on a tiny model with the answer objective.

Survivors are checked against a separate whole-set evaluation of the same candidate, pruned rows
against SciPy's Wilcoxon test on their logged values, the saving by counting the rows that
``model.generate`` receives, and resume against the uninterrupted log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autosteer import (
    AutoSteerRunner,
    CustomMetric,
    InvalidArgumentError,
    KLNeutral,
    MeanRule,
    PairedRule,
    RandomSearch,
    Steer,
    SteerEvaluator,
    read_log,
)
from autosteer.demo import _organism_setup
from autosteer.errors import LogFormatError
from autosteer.models import load_model
from autosteer.search.candidate import SteerCandidate
from autosteer.search.log import COLUMNS, LogWriter
from autosteer.search.trial import TrialRecord

stats = pytest.importorskip("scipy.stats")

N_PROMPTS, SCREEN = 16, 6


@pytest.fixture(scope="module")
def organism():
    return load_model("organism")


def setup():
    return _organism_setup("task_accuracy", N_PROMPTS, 20, None, None)


def kwargs(st):
    """The demo's runner options without its held-out set: every generated row is a search row."""
    return {**st.runner_kwargs, "holdout": None}


def counting(model):
    """Count the rows model.generate receives (prompts times candidates), the cost screening cuts."""
    plain = model.generate
    rows = []

    def generate(*args, **kwargs):
        rows.append(int(kwargs["input_ids"].shape[0]))
        return plain(*args, **kwargs)

    model.generate = generate
    return rows


def search(organism, path, rule, iterations=24, **kw):
    model, tok = organism
    st = setup()
    runner = AutoSteerRunner(model, tok, st.prompts, log_path=path, keep_rule=rule, strategy=RandomSearch(),
                             seed=3, population=8, **{**kwargs(st), **kw})
    return runner, runner.run(iterations, verbose=False, overwrite=True, batch_size=st.batch_size)


def scipy_p(cand, best):
    d = [b - c for b, c in zip(best, cand)]
    nz = [x for x in d if x != 0]
    if not nz:
        return 1.0
    ties = len({abs(x) for x in nz}) != len(nz)
    return stats.wilcoxon(d, alternative="greater", zero_method="wilcox",
                          method="approx" if ties else "exact", correction=ties).pvalue


def test_screening_prunes_the_worse_and_scores_survivors_as_a_full_evaluation(organism, tmp_path):
    model, tok = organism
    st = setup()
    rows = counting(model)
    try:
        _, res = search(organism, tmp_path / "screen.tsv", MeanRule(screen=SCREEN))
        screened_rows = sum(rows)
        rows.clear()
        _, plain = search(organism, tmp_path / "plain.tsv", MeanRule())
        plain_rows = sum(rows)
    finally:
        del model.generate
    hist = read_log(tmp_path / "screen.tsv")
    assert hist.config["screen"] == SCREEN and hist.config["screen_alpha"] == 0.1
    assert "screen" not in read_log(tmp_path / "plain.tsv").config
    pruned = [r for r in hist if (r.details or {}).get("fidelity") is not None]
    survivors = [r for r in hist[1:] if r not in pruned and r.status != "crash"]
    assert pruned and survivors

    # a pruned row: its screened prompts, its fidelity, the test that pruned it, the reason
    for r in pruned:
        assert r.status == "discard"
        assert len(r.per_prompt) == SCREEN and r.details["fidelity"] == SCREEN / N_PROMPTS
        assert r.score == pytest.approx(sum(r.per_prompt) / SCREEN)
        before = [h for h in hist if h.round < r.round]
        best = ([h for h in before if h.status == "keep"] or before)[-1]
        p = scipy_p(r.per_prompt, best.per_prompt[:SCREEN])
        assert r.details["screen_p"] == pytest.approx(p, rel=1e-9)
        assert p < 0.1 and sum(r.per_prompt) < sum(best.per_prompt[:SCREEN])
        assert r.error.startswith(f"pruned after {SCREEN} of {N_PROMPTS} prompts: worse there than the best "
                                  f"(iteration {best.iteration})")

    # a survivor: exactly what a separate evaluation of all the prompts gives
    ev = SteerEvaluator(model, tok, "task_accuracy", max_new_tokens=st.runner_kwargs["max_new_tokens"],
                        batch_size=st.batch_size)
    steer = Steer(model, tok)
    full = ev.evaluate_candidates(steer, [r.candidate for r in survivors], st.prompts, st.expected)
    for r, f in zip(survivors, full):
        assert len(r.per_prompt) == N_PROMPTS and "fidelity" not in (r.details or {})
        assert r.score == f.value and r.per_prompt == f.per_prompt

    # fewer rows generated: the baseline, then each candidate on its screened prompts or on all
    assert plain_rows == N_PROMPTS * 25
    assert screened_rows == N_PROMPTS + sum(len(r.per_prompt) for r in hist[1:])
    assert screened_rows < plain_rows
    assert res["iterations"] == plain["iterations"] == 24


def test_screening_with_the_answer_objective_on_a_tiny_model(tmp_path):
    """steered_answer: set-level fluency, relevance against the next prompts, references on the
    whole set; a survivor's row equals a whole-set evaluation, up to the float32 rounding that
    different batch shapes give (as population batching already does)."""
    import torch
    from tiny_models import make_model, make_tokenizer

    from autosteer import SteeredAnswer, SteerSearchSpace

    torch.set_num_threads(1)
    model, tok = make_model("llama"), make_tokenizer()
    prompts = ["what is 3 plus 4 ?", "the cat likes", "I feel happy because", "a dog", "the old man is calm and",
               "the teacher reads", "my friend went to", "a small bird"]
    metric = SteeredAnswer(pattern=lambda text: 1.0, fluency_margin=0.3)  # relevance and fluency decide
    space = SteerSearchSpace(layer_range=(0, 2), coeff_range=(0.05, 1.0), texts=["logical", "the old man"])
    runner = AutoSteerRunner(model, tok, prompts, metric=metric, search_space=space, log_path=tmp_path / "a.tsv",
                             keep_rule=MeanRule(screen=5, screen_alpha=0.2), population=4, seed=1,
                             max_new_tokens=5)
    runner.run(12, verbose=False)
    hist = read_log(tmp_path / "a.tsv")
    pruned = [r for r in hist if "fidelity" in (r.details or {})]
    assert 0 < len(pruned) < len(hist) - 1
    ev = SteerEvaluator(model, tok, metric, max_new_tokens=5)
    steer = Steer(model, tok)
    for r in hist[1:]:
        if r.status == "crash":
            continue
        if "fidelity" in r.details:
            assert len(r.per_prompt) == 5 and r.details["fidelity"] == 5 / 8
            continue
        (f,) = ev.evaluate_candidates(steer, [r.candidate], prompts)
        assert r.score == pytest.approx(f.value, abs=1e-5)
        assert r.per_prompt == pytest.approx(f.per_prompt, abs=1e-5)
        assert r.details.keys() == f.details.keys()
        for k, v in f.details.items():
            assert r.details[k] == pytest.approx(v, abs=1e-5), k


def strip_timings(path):
    drop = {COLUMNS.index("timestamp"), COLUMNS.index("elapsed_s")}
    return [[f for i, f in enumerate(line.split("\t")) if i not in drop]
            for line in Path(path).read_text(encoding="utf-8").split("\n")]


@pytest.mark.parametrize("k", [3, 4, 5])
def test_an_interrupted_screened_run_resumes_to_the_uninterrupted_log(organism, tmp_path, k):
    """Interrupted in the k-th generate call (one per pass: the baseline, then per round a screening
    stage and a survivors' pass), the resumed run writes the uninterrupted run's log, pruned rows
    included."""
    model, tok = organism
    rule = PairedRule(screen=SCREEN, alpha=0.2)
    _, full = search(organism, tmp_path / "full.tsv", rule, iterations=16)
    calls = []
    plain = model.generate

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            raise KeyboardInterrupt
        return plain(*args, **kwargs)

    model.generate = interrupting
    try:
        with pytest.raises(KeyboardInterrupt):
            search(organism, tmp_path / "part.tsv", rule, iterations=16)
    finally:
        del model.generate
    assert len(read_log(tmp_path / "part.tsv")) < 17
    st = setup()
    runner = AutoSteerRunner(model, tok, st.prompts, log_path=tmp_path / "part.tsv", keep_rule=rule,
                             strategy=RandomSearch(), seed=3, population=8, **kwargs(st))
    resumed = runner.run(16, resume=True, verbose=False, batch_size=st.batch_size)
    assert strip_timings(tmp_path / "part.tsv") == strip_timings(tmp_path / "full.tsv")
    assert any("fidelity" in (r.details or {}) for r in resumed["history"])
    for key in ("best_score", "best_iteration", "keeps", "discards", "crashes"):
        assert resumed[key] == full[key], key


def test_a_half_logged_screened_round_is_completed_on_resume(organism, tmp_path):
    """A run killed while writing a round's rows: the rest of the round is screened against the best
    before the round (not a keep of its logged part), as the uninterrupted run screened it."""
    model, tok = organism
    rule = MeanRule(screen=SCREEN)
    search(organism, tmp_path / "full.tsv", rule, iterations=24)
    third = [r for r in read_log(tmp_path / "full.tsv") if r.round == 3]
    keep = next(i for i, r in enumerate(third) if r.status == "keep")
    assert any("fidelity" in (r.details or {}) for r in third[keep + 1 :])  # pruned after a keep of its round
    lines = (tmp_path / "full.tsv").read_text().splitlines(keepends=True)
    st = setup()
    for logged in range(1, 8):  # header, baseline, rounds 1 and 2, and part of round 3
        (tmp_path / "half.tsv").write_text("".join(lines[: 1 + 1 + 16 + logged]))
        runner = AutoSteerRunner(model, tok, st.prompts, log_path=tmp_path / "half.tsv", keep_rule=rule,
                                 strategy=RandomSearch(), seed=3, population=8, **kwargs(st))
        runner.run(24, resume=True, verbose=False, batch_size=st.batch_size)
        assert strip_timings(tmp_path / "half.tsv") == strip_timings(tmp_path / "full.tsv"), logged


def test_bad_screening_is_refused_before_any_work(organism, tmp_path):
    model, tok = organism
    st = setup()
    calls = counting(model)
    try:
        kw = {**kwargs(st), "log_path": tmp_path / "x.tsv"}
        with pytest.raises(InvalidArgumentError, match=r"keep_rule screen=16 must be smaller than the number of "
                                                       r"search prompts \(16\).*give screen <= 15"):
            AutoSteerRunner(model, tok, st.prompts, keep_rule=MeanRule(screen=16), **kw)
        kw.pop("metric")
        with pytest.raises(InvalidArgumentError, match=r"metric 'custom' cannot be scored that way \(a custom "
                                                       r"function scores the prompt set as a whole\); use screen=0"):
            AutoSteerRunner(model, tok, st.prompts, metric=CustomMetric(lambda m, t, p: 0.0),
                            keep_rule=MeanRule(screen=4), **kw)
        with pytest.raises(InvalidArgumentError, match="metric 'kl_neutral' cannot be scored that way"):
            AutoSteerRunner(model, tok, st.prompts, metric=KLNeutral(), keep_rule=MeanRule(screen=4),
                            **{k: v for k, v in kw.items() if k != "max_new_tokens"})
    finally:
        del model.generate
    assert calls == []


def test_the_log_accepts_a_pruned_discard_that_beats_the_best_on_its_prompts(tmp_path):
    """A pruned candidate's score covers only the screened prompts, so it may exceed the best's
    score on all of them; any other discard that beats the best is refused as an edited log."""
    cand = SteerCandidate.from_dict([{"layer_idx": 1, "coeff": 0.5, "text": "happy"}])
    config = {"format": 2, "metric": "task_accuracy", "keep_rule": "mean", "min_improvement": 0.0,
              "lower_is_better": False, "screen": 4, "screen_alpha": 0.1}
    for details, ok in (({"fidelity": 0.25, "screen_p": 0.06}, True), (None, False)):
        path = tmp_path / "log.tsv"
        with LogWriter(path) as w:
            w.write(TrialRecord(0, "baseline", SteerCandidate(), score=0.5, per_prompt=(0.5,) * 16), config)
            w.write(TrialRecord(1, "discard", cand, score=0.75, per_prompt=(1.0, 1.0, 1.0, 0.0), details=details,
                                round=1))
        if ok:
            assert read_log(path)[1].details["fidelity"] == 0.25
        else:
            with pytest.raises(LogFormatError, match="a discard with score 0.75 beats the best so far"):
                read_log(path)


def test_a_system_prompt_alone_is_never_pruned(tmp_path):
    """Prompting alone is reported beside the best, so it is scored on every prompt even when its
    screened values alone would prune it."""
    import torch
    from tiny_models import make_model, make_tokenizer

    from autosteer import SteeredAnswer, SteerSearchSpace

    torch.set_num_threads(1)
    model, tok = make_model("llama"), make_tokenizer(padding_side="left")
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}<assistant>"
    prompts = ["what is 3 plus 4 ?", "the cat likes", "I feel happy because", "a dog", "the old man is calm and",
               "the teacher reads", "my friend went to", "a small bird"]
    systems = ("you love cats", "talk about the old man", "answer in one word")
    space = SteerSearchSpace(layer_range=(0, 2), coeff_range=(0.05, 1.0), texts=["logical"], max_vectors=1,
                             schedules=("none",), system_prompts=systems)
    rule = MeanRule(screen=4, screen_alpha=0.6)  # prunes whatever is worse on the first 4 prompts
    metric = SteeredAnswer(pattern=lambda t: 1.0, fluency_margin=0.3)
    runner = AutoSteerRunner(model, tok, prompts, metric=metric,
                             search_space=space, log_path=tmp_path / "s.tsv", chat=True, keep_rule=rule,
                             population=4, seed=1, max_new_tokens=5)
    res = runner.run(8, verbose=False)
    hist = read_log(tmp_path / "s.tsv")
    alone = [r for r in hist[1:] if r.candidate.system is not None and not len(r.candidate)]
    assert len(alone) == len(systems)
    for r in alone:
        assert len(r.per_prompt) == len(prompts) and "fidelity" not in (r.details or {})
    assert any("fidelity" in (r.details or {}) for r in hist)  # while other candidates were pruned
    assert res["prompt_alone"] is not None
