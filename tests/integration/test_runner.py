"""The autonomous loop on tiny offline models: documented usage, determinism,
bookkeeping, crash recovery, interrupt + resume, weights untouched, bad input,
and the evaluator against plain-torch references."""

import math
import os
import re
from pathlib import Path

import pytest
import torch
from tiny_models import make_config, make_model, make_tokenizer

from autosteer import (
    AutoSteerRunner,
    CustomMetric,
    InvalidArgumentError,
    LocalSearch,
    LogFormatError,
    MeanRule,
    SearchSpaceError,
    Steer,
    SteerCandidate,
    SteerSearchSpace,
    read_log,
)
from autosteer.search.log import COLUMNS
from autosteer.search.trial import running_best

PROMPTS = ["what is 3 plus 4 ?", "the cat likes", "I feel happy because"]
EXPECTED = ["7", "the", "the"]
SPACE = SteerSearchSpace(layer_range=(0, 2), texts=["logical", "precise"], negative_texts=["confused"])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and far faster on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return make_model("llama")


def n_hooks(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def probe(model, tokenizer):
    """Last-position logits on a fixed input: changes when (and only when) steering is on."""
    ids = tokenizer("the teacher reads a story", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids).logits[0, -1].clone()


def logit_metric(model, tokenizer, prompts):
    """A deterministic custom metric of the steered model (crashes on some candidates)."""
    value = float(probe(model, tokenizer)[:16].mean())
    if n_hooks(model) and int(abs(value) * 1e5) % 5 == 0:
        raise RuntimeError(f"unlucky value {value:.6f}")
    return value


def scripted(scores):
    """A custom metric returning (or raising) the given values in order; baseline first."""
    calls = []

    def fn(model, tokenizer, prompts):
        v = scores[len(calls)]
        calls.append(prompts)
        if isinstance(v, BaseException):
            raise v
        return v

    fn.calls = calls
    return fn


def strip_timings(path):
    drop = {COLUMNS.index("timestamp"), COLUMNS.index("elapsed_s")}
    return [
        [f for i, f in enumerate(line.split("\t")) if i not in drop]
        for line in Path(path).read_text(encoding="utf-8").split("\n")
    ]


def runner(model, tmp_path, name="r.tsv", *, verbose=False, overwrite=True, **kw):
    """A runner whose run() is silent and overwrites by default (tests reuse file names; the
    refusal has its own test)."""
    kw.setdefault("tokenizer", make_tokenizer())
    kw.setdefault("prompts", PROMPTS)
    kw.setdefault("search_space", SPACE)
    r = AutoSteerRunner(model=model, log_path=tmp_path / name, **kw)
    run = r.run
    r.run = lambda n, resume=False, **s: run(n, resume, **{"verbose": verbose, "overwrite": overwrite, **s})
    return r


# ---------------------------------------------------------------------------
# the documented usage


def test_documented_usage_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = make_config("llama")
    cfg.num_hidden_layers = 26  # the layer_range (15, 25) must fit
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    tokenizer = make_tokenizer()
    prompts, expected = PROMPTS[:2], EXPECTED[:2]
    before = snapshot(model)

    space = SteerSearchSpace(layer_range=(15, 25), coeff_range=(0.05, 1.0),
                             texts=["logical", "precise", "analytical"],
                             negative_texts=["confused", "irrational", "imprecise"])
    runner = AutoSteerRunner(model=model, tokenizer=tokenizer, prompts=prompts,
                             metric="task_accuracy", expected_outputs=expected,
                             lower_is_better=False, search_space=space,
                             log_path="results.tsv", seed=42)
    results = runner.run(max_iterations=30)
    results["baseline_score"], results["best_score"], results["best_candidate"], results["history"]

    assert len(results["history"]) == 31 and results["iterations"] == 30
    assert results["keeps"] + results["discards"] + results["crashes"] == 30
    assert 0.0 <= results["baseline_score"] <= results["best_score"] <= 1.0
    hist = read_log(tmp_path / "results.tsv")
    assert [r["status"] for r in hist] == [r["status"] for r in results["history"]]
    assert all(space.contains(r["candidate"]) for r in hist[1:])
    assert_same_weights(model, before)
    assert n_hooks(model) == 0
    assert re.match(
        r"Baseline: \d\.\d{4} -> Best: \d\.\d{4} \((found at iteration \d+|no candidate beat the baseline)\) \| "
        r"keeps \d+, discards \d+, crashes \d+$",
        str(results).splitlines()[0],
    )


# ---------------------------------------------------------------------------
# determinism


def test_same_seed_same_log(model, tmp_path):
    kw = dict(metric="task_accuracy", expected_outputs=EXPECTED, max_new_tokens=3, seed=7)
    a = runner(model, tmp_path, "a.tsv", **kw).run(8)
    b = runner(model, tmp_path, "b.tsv", **kw).run(8)
    assert strip_timings(tmp_path / "a.tsv") == strip_timings(tmp_path / "b.tsv")
    assert a["best_score"] == b["best_score"] and a["best_candidate"] == b["best_candidate"]
    c = runner(model, tmp_path, "c.tsv", **{**kw, "seed": 8}).run(8)
    assert strip_timings(tmp_path / "a.tsv")[2:] != strip_timings(tmp_path / "c.tsv")[2:]
    assert c["iterations"] == 8


# ---------------------------------------------------------------------------
# bookkeeping with scores the test controls


def test_keep_discard_crash_bookkeeping(model, tmp_path):
    tok = make_tokenizer()
    scores = [0.5, 0.6, 0.6, 0.55, RuntimeError("boom\tbad"), math.nan, 0.64, 0.66, math.inf, 0.7, 0.61]
    fn = scripted(scores)
    r = runner(model, tmp_path, tokenizer=tok, metric=fn, keep_rule=MeanRule(min_improvement=0.05), seed=1)
    res = r.run(10)
    want = ["baseline", "keep", "discard", "discard", "crash", "crash", "discard", "keep", "crash", "discard", "discard"]
    assert [h["status"] for h in res["history"]] == want
    assert (res["keeps"], res["discards"], res["crashes"]) == (2, 5, 3)
    assert res["baseline_score"] == 0.5 and res["best_score"] == 0.66 and res["best_iteration"] == 7
    assert res["best_candidate"] == res["history"][7]["candidate"]
    assert running_best(res["history"]) == [0.5] + [0.6] * 6 + [0.66] * 4
    assert res["history"][4]["error"] == "RuntimeError: boom\tbad" and res["history"][4]["score"] is None
    assert res["history"][5]["error"] == "non-finite score: nan" and math.isnan(res["history"][5]["score"])
    assert res["history"][8]["error"] == "non-finite score: inf"
    assert all(p == PROMPTS for p in fn.calls)
    log = read_log(tmp_path / "r.tsv")
    assert [h["status"] for h in log] == want and log[4]["error"] == "RuntimeError: boom\tbad"
    assert res["best_steer_code"] == res["best_candidate"].to_code()
    text = str(res)
    assert text.splitlines()[0] == (
        "Baseline: 0.5000 -> Best: 0.6600 (found at iteration 7) | keeps 2, discards 5, crashes 3"
    )
    assert res["best_steer_code"] in text
    assert res.best_score == 0.66 and "0.6600" in repr(res)


def test_lower_is_better_and_no_improvement(model, tmp_path):
    fn = scripted([10.0, 11.0, 9.0, 9.0, 12.0])
    res = runner(model, tmp_path, metric=fn, lower_is_better=True).run(4)
    assert [h["status"] for h in res["history"]] == ["baseline", "discard", "keep", "discard", "discard"]
    fn = scripted([1.0, 0.5, 1.0, 0.9])
    res = runner(model, tmp_path, metric=fn).run(3)
    assert res["best_candidate"] is None and res["best_iteration"] == 0 and res["best_score"] == 1.0
    assert "no candidate beat the baseline" in str(res)
    assert res["best_steer_code"].startswith("#")


def test_steering_is_on_during_trials_and_off_after(model, tmp_path):
    tok = make_tokenizer()
    clean = probe(model, tok)
    seen = []

    def fn(m, t, prompts):
        seen.append((n_hooks(m), probe(m, t)))
        if len(seen) == 3:
            raise ValueError("crash mid-trial")
        return float(len(seen))

    before = snapshot(model)
    r = runner(model, tmp_path, tokenizer=tok, metric=fn)
    res = r.run(5)
    assert seen[0][0] == 0 and torch.equal(seen[0][1], clean)  # baseline: unsteered
    for hooks, logits in seen[1:]:
        assert hooks > 0 and not torch.allclose(logits, clean)  # every trial: steered
    assert res["crashes"] == 1
    assert n_hooks(model) == 0 and torch.equal(probe(model, tok), clean)  # removed, also after the crash
    assert_same_weights(model, before)


def test_holdout_is_reported_never_decides(model, tmp_path):
    main = [0.5, 0.6, 0.4, 0.7]

    def fn(m, t, prompts):
        if prompts == ["held out"]:
            return -float(len(held))  # gets worse at every new best
        v = main[len(trial)]
        trial.append(v)
        held.append(v)
        return v

    trial, held = [], []
    res = runner(model, tmp_path, metric=fn, holdout=["held out"]).run(3)
    assert [h["status"] for h in res["history"]] == ["baseline", "keep", "discard", "keep"]
    assert res["baseline_holdout"] == -1.0 and res["best_holdout"] == -4.0
    assert [h["holdout_score"] for h in res["history"]] == [-1.0, -2.0, None, -4.0]
    assert "Held-out: -1.0000 -> -4.0000" in str(res)
    assert [h["holdout_score"] for h in read_log(tmp_path / "r.tsv")] == [-1.0, -2.0, None, -4.0]


def test_only_a_rounds_new_best_is_scored_on_held_out_prompts(model, tmp_path):
    """With a population, a keep that a later keep of the same round supersedes is never the
    result: the held-out prompts are scored for the round's last keep only."""
    main = [0.3, 0.5, 0.4, 0.7, 0.1, 0.2, 0.3]  # the baseline first
    calls, trial = [], []

    def score(m, t, prompts):
        if prompts == ["held out"]:
            calls.append(None)
            return -float(len(calls))
        trial.append(None)
        return main[len(trial) - 1]

    res = runner(model, tmp_path, metric=score, holdout=["held out"], population=3).run(6)
    assert [h["status"] for h in res["history"]] == ["baseline", "keep", "discard", "keep", "discard", "discard",
                                                     "discard"]
    assert len(calls) == 2  # the baseline and iteration 3, not iteration 1 (superseded in its round)
    assert [h["holdout_score"] for h in res["history"]] == [-1.0, None, None, -2.0, None, None, None]
    assert res["best_iteration"] == 3 and res["best_holdout"] == -2.0


def test_search_exhausted_stops_early(model, tmp_path):
    space = SteerSearchSpace(layer_range=(1, 1), coeff_range=(0.3, 0.3), texts=["logical"], schedules=["none"])
    res = runner(model, tmp_path, search_space=space, metric=scripted([0.0, 1.0])).run(5)
    assert res["iterations"] == 1 and "widen" in res["stopped_early"] and "Stopped early" in str(res)


# ---------------------------------------------------------------------------
# interrupt and resume


def interrupting(k):
    calls = []

    def fn(model, tokenizer, prompts):
        calls.append(1)
        if len(calls) == k:
            raise KeyboardInterrupt
        return logit_metric(model, tokenizer, prompts)

    return fn


@pytest.mark.parametrize("k, population", [(1, 1), (2, 1), (7, 1), (2, 3), (6, 3)])
def test_interrupt_then_resume_equals_uninterrupted(model, tmp_path, k, population):
    tok = make_tokenizer()
    kw = dict(tokenizer=tok, seed=5, strategy=LocalSearch(patience=2), population=population)
    full = runner(model, tmp_path, "full.tsv", metric=logit_metric, **kw).run(12)
    assert {h["status"] for h in full["history"][1:]} >= {"keep", "discard"}

    before = snapshot(model)
    r = runner(model, tmp_path, "part.tsv", metric=interrupting(k), **kw)
    with pytest.raises(KeyboardInterrupt):
        r.run(12)
    assert n_hooks(model) == 0
    assert_same_weights(model, before)
    # the interrupted call's trial is not logged; k == 1 is the baseline; a round of a population is
    # logged when it ends, so an interrupted round logs nothing (it is evaluated again on resume)
    rows = max(0, k - 1) if population == 1 else 1 + population * ((k - 2) // population)
    assert len((tmp_path / "part.tsv").read_text().splitlines()) == 1 + rows
    if rows:
        assert len(r.results["history"]) == rows

    resumed = runner(model, tmp_path, "part.tsv", metric=logit_metric, **kw).run(12, resume=True)
    assert strip_timings(tmp_path / "part.tsv") == strip_timings(tmp_path / "full.tsv")
    for key in ("baseline_score", "best_score", "best_candidate", "best_iteration", "keeps", "discards", "crashes"):
        assert resumed[key] == full[key], key
    assert [h["candidate"] for h in resumed["history"]] == [h["candidate"] for h in full["history"]]


def test_resume_edge_cases(model, tmp_path):
    kw = dict(seed=5)
    full = runner(model, tmp_path, "full.tsv", metric=logit_metric, **kw).run(4)
    # a complete log: nothing is evaluated again
    calls = scripted([])
    again = runner(model, tmp_path, "full.tsv", metric=calls, **kw).run(4, resume=True)
    assert calls.calls == [] and again["best_score"] == full["best_score"]
    # a missing log starts a fresh run
    fresh = runner(model, tmp_path, "new.tsv", metric=logit_metric, **kw).run(4, resume=True)
    assert strip_timings(tmp_path / "new.tsv") == strip_timings(tmp_path / "full.tsv")
    assert fresh["best_score"] == full["best_score"]
    # a row cut off mid-write (killed process) is dropped and re-run
    p = tmp_path / "cut.tsv"
    lines = (tmp_path / "full.tsv").read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:-1]) + lines[-1][:25])
    runner(model, tmp_path, "cut.tsv", metric=logit_metric, **kw).run(4, resume=True)
    assert strip_timings(p) == strip_timings(tmp_path / "full.tsv")
    # extending a finished run continues the same sequence
    runner(model, tmp_path, "full.tsv", metric=logit_metric, **kw).run(6, resume=True)
    runner(model, tmp_path, "six.tsv", metric=logit_metric, **kw).run(6)
    assert strip_timings(tmp_path / "full.tsv") == strip_timings(tmp_path / "six.tsv")


def test_resume_refuses_a_log_from_another_run(model, tmp_path):
    runner(model, tmp_path, metric=logit_metric, seed=5).run(2)
    with pytest.raises(LogFormatError, match=r"r\.tsv line 2: the log was written by another run \(seed: 5 vs 6\)"):
        runner(model, tmp_path, metric=logit_metric, seed=6).run(3, resume=True)
    with pytest.raises(LogFormatError, match="prompts differs"):
        runner(model, tmp_path, metric=logit_metric, seed=5, prompts=["x y"]).run(3, resume=True)
    (tmp_path / "other.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(LogFormatError, match="line 1: not an AutoSteer results log"):
        runner(model, tmp_path, "other.tsv", metric=logit_metric).run(3, resume=True)
    # an edited candidate: the replay notices the search would not have proposed it
    p = tmp_path / "r.tsv"
    text = p.read_text()
    first = read_log(p)[1]["candidate"]
    edited = SteerCandidate(tuple(type(v)(v.layer_idx, v.coeff * 0.5, v.text, v.schedule) for v in first))
    p.write_text(text.replace(first.key(), edited.key()).replace(first.describe(), edited.describe()))
    with pytest.raises(LogFormatError, match=r"line 3: seed 5 proposes"):
        runner(model, tmp_path, metric=logit_metric, seed=5).run(3, resume=True)


# ---------------------------------------------------------------------------
# bad input: every error comes before the baseline


def never(*a):
    raise AssertionError("the metric must not run")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(prompts=PROMPTS, expected_outputs=EXPECTED[:2]), InvalidArgumentError, r"different lengths \(3 vs 2\)"),
        (dict(metric="accuracy"), InvalidArgumentError, "unknown metric str 'accuracy'; expected one of 'task_accuracy', 'perplexity', 'custom'"),
        (dict(metric="custom"), InvalidArgumentError, "metric 'custom' needs the option 'fn'"),
        (dict(metric=CustomMetric), InvalidArgumentError, r"got the class CustomMetric; call it"),
        (dict(metric=3), InvalidArgumentError, "unknown metric int 3"),
        (dict(prompts=[]), InvalidArgumentError, "prompts is empty"),
        (dict(prompts=["ok", " "]), InvalidArgumentError, r"prompts\[1\] is empty"),
        (dict(prompts="one prompt"), InvalidArgumentError, "single string"),
        (dict(expected_outputs=None), InvalidArgumentError, "needs expected_outputs"),
        (dict(expected_outputs=["7", "", "x"]), InvalidArgumentError, r"expected_outputs\[1\] is empty"),
        (dict(search_space=SteerSearchSpace(layer_range=(15, 25))), SearchSpaceError,
         r"layer_range \(15, 25\) is outside the model: LlamaForCausalLM has 3 decoder layers \(0\.\.2\)"),
        (dict(log_path="."), InvalidArgumentError, "is a directory"),
        (dict(log_path="no/such/dir/r.tsv"), InvalidArgumentError, "does not exist"),
        (dict(log_path=__file__ + "/r.tsv"), InvalidArgumentError, "cannot write the log"),
        (dict(keep_rule="median"), InvalidArgumentError, "unknown keep rule str 'median'; expected one of 'mean', 'paired'"),
        (dict(strategy="grid"), InvalidArgumentError, "unknown strategy str 'grid'; expected one of 'local', 'random', 'tpe'"),
        (dict(strategy=LocalSearch), InvalidArgumentError, "got the class LocalSearch; call it"),
        (dict(max_new_tokens=0), InvalidArgumentError, "max_new_tokens"),
        (dict(population=0), InvalidArgumentError, "population"),
        (dict(patience=5), TypeError, "patience"),
        (dict(lower_is_better="yes"), InvalidArgumentError, "lower_is_better"),
        (dict(search_space={"layer_range": (0, 1)}), InvalidArgumentError, "SteerSearchSpace"),
        (dict(holdout=(["a", "b"], ["7"])), InvalidArgumentError, r"holdout\[0\] and holdout\[1\] have different lengths"),
        (dict(holdout="held out"), InvalidArgumentError, "holdout must be a list of strings, got a single str"),
        (dict(metric=never, expected_outputs=EXPECTED), InvalidArgumentError, "not used by metric='custom'"),
        (dict(metric=CustomMetric(never), expected_outputs=EXPECTED), InvalidArgumentError, "not used by metric='custom'"),
    ],
)
def test_bad_input_fails_before_the_baseline(model, tmp_path, monkeypatch, kwargs, exc, match):
    monkeypatch.chdir(tmp_path)
    kw = dict(model=model, tokenizer=make_tokenizer(), prompts=PROMPTS, metric="task_accuracy",
              expected_outputs=EXPECTED, search_space=SPACE, log_path="r.tsv")
    kw.update(kwargs)
    with pytest.raises(exc, match=match):
        AutoSteerRunner(**kw)
    assert not os.path.exists("r.tsv")


@pytest.mark.parametrize(
    "space_kwargs, match",
    [
        (dict(texts=[], negative_texts=[]), "texts is empty"),
        (dict(coeff_range=(0.5, 0.1)), "empty"),
        (dict(coeff_range=(0.1, math.inf)), "finite"),
        (dict(coeff_range=(math.nan, 0.5)), "finite"),
    ],
)
def test_bad_space_is_caught_at_construction(space_kwargs, match):
    with pytest.raises(SearchSpaceError, match=match):
        SteerSearchSpace(layer_range=(0, 1), **space_kwargs)


@pytest.mark.parametrize("bad", [-1, 1.5, None, True])
def test_bad_max_iterations(model, tmp_path, bad):
    fn = scripted([])
    r = runner(model, tmp_path, metric=fn)
    with pytest.raises(InvalidArgumentError, match="max_iterations"):
        r.run(bad)
    assert fn.calls == [] and not (tmp_path / "r.tsv").exists()


def test_resume_without_log_path(model, tmp_path):
    r = AutoSteerRunner(model, make_tokenizer(), PROMPTS, metric=scripted([1.0]),
                        search_space=SPACE, log_path=None)
    with pytest.raises(InvalidArgumentError, match="resume"):
        r.run(1, resume=True, verbose=False)
    assert r.run(0, verbose=False)["baseline_score"] == 1.0  # no log at all is fine


def test_default_space_is_the_middle_layers(model, tmp_path):
    r = runner(model, tmp_path, search_space=None, metric=scripted([0.0]))
    assert r.search_space.layer_range == (0, 2) and r.search_space.texts == ("logical", "precise", "analytical")
    assert r.lower_is_better is False
    assert runner(model, tmp_path, metric="perplexity").lower_is_better is True


# ---------------------------------------------------------------------------
# the evaluator against plain torch


def test_tokenizer_and_training_flags_are_restored(tmp_path):
    model = make_model("llama")
    model.train()
    model.model.layers[1].eval()  # a mixed state must come back as it was
    flags = [m.training for m in model.modules()]
    tok = make_tokenizer()
    tok.pad_token = None
    assert tok.pad_token_id is None
    res = runner(model, tmp_path, tokenizer=tok, metric="task_accuracy", expected_outputs=EXPECTED,
                 max_new_tokens=2).run(2)
    assert res["iterations"] == 2
    assert tok.pad_token is None and tok.padding_side == "right"
    assert [m.training for m in model.modules()] == flags


def test_best_steer_code_reproduces_the_candidate(model, tmp_path):
    fn = scripted([0.0] + [float(i) for i in range(1, 6)])
    res = runner(model, tmp_path, metric=fn).run(5)
    ns = {"model": model, "tokenizer": make_tokenizer()}
    exec(res["best_steer_code"], ns)
    steered = ns["steered"]
    try:
        got = SteerCandidate.from_dict(steered.get_all())
        assert got == res["best_candidate"]
    finally:
        steered.reset_all()
    assert n_hooks(model) == 0
    assert isinstance(steered, Steer)


def test_progress_output(model, tmp_path, capsys):
    runner(model, tmp_path, metric=scripted([0.0, 1.0, 0.5])).run(2)
    assert capsys.readouterr().out == ""  # verbose=False: silent
    runner(model, tmp_path, metric=scripted([0.0, 1.0, 0.5]), verbose=True).run(2)
    out = capsys.readouterr().out.splitlines()  # stdout is not a terminal: plain lines
    assert out[0] == "[autosteer] baseline 0.0000"
    assert out[1].startswith("[autosteer] 1/2 keep    score 1.0000  best 1.0000  L")
    assert out[2].startswith("[autosteer] 2/2 discard score 0.5000  best 1.0000  L")


def test_plot_history_from_results(model, tmp_path):
    pytest.importorskip("matplotlib")
    from autosteer import plot_history

    res = runner(model, tmp_path, metric=scripted([0.0, 1.0, RuntimeError("x"), 0.5])).run(3)
    fig = plot_history(res, tmp_path / "h.svg")
    assert (tmp_path / "h.svg").stat().st_size > 1000
    assert "higher is better" in fig.axes[0].get_ylabel()


# ---------------------------------------------------------------------------
# nothing is lost: an existing file is never overwritten by surprise


@pytest.mark.parametrize("content", ['{"prompt": "a", "expected": "1"}\n', "my notes\n"])
def test_a_new_run_refuses_to_overwrite_a_file_that_is_not_its_log(model, tmp_path, content):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    fn = scripted([0.5, 0.6])
    r = AutoSteerRunner(model, make_tokenizer(), PROMPTS, metric=fn, search_space=SPACE,
                        log_path=path)
    with pytest.raises(InvalidArgumentError, match="already exists and is a file that is not an AutoSteer"):
        r.run(1, verbose=False)
    assert path.read_text() == content and fn.calls == []  # refused before any work
    r2 = AutoSteerRunner(model, make_tokenizer(), PROMPTS, metric=fn, search_space=SPACE,
                         log_path=path)
    assert r2.run(1, verbose=False, overwrite=True)["iterations"] == 1 and len(read_log(path)) == 2


def test_a_log_of_another_run_is_kept_unless_overwrite(model, tmp_path):
    path = tmp_path / "r.tsv"
    kw = dict(search_space=SPACE, log_path=path)
    AutoSteerRunner(model, make_tokenizer(), PROMPTS, metric=scripted([0.5, 0.6]), seed=1, **kw).run(1, verbose=False)
    before = path.read_bytes()
    with pytest.raises(InvalidArgumentError, match="a results log of another run.*--overwrite"):
        AutoSteerRunner(model, make_tokenizer(), PROMPTS, metric=scripted([0.5]), seed=2, **kw).run(1, verbose=False)
    assert path.read_bytes() == before
    # overwrite=True replaces it
    again = AutoSteerRunner(model, make_tokenizer(), PROMPTS, metric=scripted([0.5, 0.7]), seed=1,
                            **kw).run(1, verbose=False, overwrite=True)
    assert again["best_score"] == 0.7 and read_log(path)[1].score == 0.7


def test_the_same_run_again_refuses_to_wipe_its_own_log(model, tmp_path):
    """A second run of the very same configuration over its log, without resume, used to start
    afresh and wipe the trials (9 rows -> 3): refused before any work, naming both ways out."""
    path = tmp_path / "r.tsv"
    kw = dict(search_space=SPACE, log_path=path, seed=1)
    AutoSteerRunner(model, make_tokenizer(), PROMPTS, metric=scripted([0.5, 0.6, 0.4, 0.7]), **kw).run(3, verbose=False)
    before = path.read_bytes()
    assert len(read_log(path)) == 4
    fn = scripted([0.5])
    with pytest.raises(InvalidArgumentError, match=r"already holds 4 row\(s\) of this very run.*"
                                                   r"run\(resume=True\) / --resume.*run\(overwrite=True\) / --overwrite"):
        AutoSteerRunner(model, make_tokenizer(), PROMPTS, metric=fn, **kw).run(1, verbose=False)
    assert path.read_bytes() == before and fn.calls == []  # nothing lost, nothing evaluated
    # a header-only file (a run killed before its baseline) has nothing to lose
    path.write_text(before.decode().splitlines()[0] + "\n")
    res = AutoSteerRunner(model, make_tokenizer(), PROMPTS, metric=scripted([0.5, 0.6]), **kw).run(1, verbose=False)
    assert res["iterations"] == 1 and len(read_log(path)) == 2


def test_custom_fn_arity_is_checked_at_construction(model, tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"three arguments \(model, tokenizer, prompts\)"):
        runner(model, tmp_path, metric=lambda model, prompts: 1.0)
    runner(model, tmp_path, metric=CustomMetric(lambda *args: 1.0))  # *args binds


def test_perplexity_holdout_is_scored_like_the_search(model, tmp_path):
    with pytest.raises(InvalidArgumentError, match="held-out prompts must be scored the same way"):
        runner(model, tmp_path, metric="perplexity", expected_outputs=EXPECTED, holdout=["a b c"])
    with pytest.raises(InvalidArgumentError, match="held-out prompts must be scored the same way"):
        runner(model, tmp_path, metric="perplexity", holdout=(["a b c"], ["d"]))
    runner(model, tmp_path, metric="perplexity", holdout=["a b c"])


def test_an_absurd_coefficient_is_a_crash_not_a_score(model, tmp_path):
    # Steer refuses a coefficient no activation survives before any forward (the evaluator's
    # own non-finite-logits check is tested in tests/unit/test_evaluator.py)
    space = SteerSearchSpace(layer_range=(0, 0), coeff_range=(3e38, 3e38), texts=["logical"], schedules=["none"])
    res = runner(model, tmp_path, metric="task_accuracy", expected_outputs=EXPECTED, search_space=space,
                 max_new_tokens=2).run(1)
    (trial,) = res["history"][1:]
    assert trial.status == "crash" and "cannot give finite activations" in trial.error and trial.score is None
    res = runner(model, tmp_path, metric="perplexity", search_space=space).run(1)
    assert res["history"][1].status == "crash" and "cannot give finite activations" in res["history"][1].error


def test_per_prompt_values_are_recorded(model, tmp_path):
    res = runner(model, tmp_path, metric="task_accuracy", expected_outputs=EXPECTED, max_new_tokens=3).run(2)
    for rec in res["history"]:
        if rec.status != "crash":
            assert len(rec.per_prompt) == len(PROMPTS) and set(rec.per_prompt) <= {0.0, 1.0}
            assert rec.score == sum(rec.per_prompt) / len(PROMPTS)
    assert [r.per_prompt for r in read_log(tmp_path / "r.tsv")] == [r.per_prompt for r in res["history"]]
    res = runner(model, tmp_path, metric=lambda m, t, p: [0.0, 1.0, 0.5]).run(1)
    assert res["history"][0].per_prompt == (0.0, 1.0, 0.5) and res["baseline_score"] == 0.5
    with pytest.raises(TypeError, match="the custom metric's function must return a number"):
        runner(model, tmp_path, metric=lambda m, t, p: "high").run(0)


def test_a_population_run_is_reproducible_and_decides_in_proposal_order(model, tmp_path):
    kw = dict(metric="task_accuracy", expected_outputs=EXPECTED, max_new_tokens=3, seed=3, population=4)
    a = runner(model, tmp_path, "a.tsv", **kw).run(10)
    runner(model, tmp_path, "b.tsv", **kw).run(10)
    assert strip_timings(tmp_path / "a.tsv") == strip_timings(tmp_path / "b.tsv")
    hist = read_log(tmp_path / "a.tsv")
    assert [r.round for r in hist] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3]  # 10 candidates: rounds of 4, 4, 2
    best = hist[0].score
    for r in hist[1:]:  # each candidate against the best of the records before it
        assert (r.status == "keep") == (r.score > best)
        best = max(best, r.score)
    assert a["iterations"] == 10 and len({r.candidate.key() for r in hist}) == 11


def test_a_half_logged_round_is_completed_on_resume(model, tmp_path):
    kw = dict(tokenizer=make_tokenizer(), metric=logit_metric, seed=5, population=4)
    runner(model, tmp_path, "full.tsv", **kw).run(8)
    lines = (tmp_path / "full.tsv").read_text().splitlines(keepends=True)
    (tmp_path / "half.tsv").write_text("".join(lines[:1 + 1 + 6]))  # header, baseline, round 1 and half of round 2
    runner(model, tmp_path, "half.tsv", **kw).run(8, resume=True)
    assert strip_timings(tmp_path / "half.tsv") == strip_timings(tmp_path / "full.tsv")


def test_a_model_steered_by_another_steer_is_refused_naming_its_vectors(model, tmp_path):
    """The baseline was silently the steered model's score (0.0 where the unsteered model scores
    0.5): refused at construction and again at run(), naming the active vectors; once that
    steering is removed the baseline is the unsteered model's score (a plain forward)."""
    tok = make_tokenizer()
    other = Steer(model, tok)
    other.add(1, 0.4, text="logical")
    other.add(2, -0.2, text="confused")
    with pytest.raises(InvalidArgumentError, match=r"already steered by another Steer \(layer 1: 'logical' coeff 0\.4; "
                                                   r"layer 2: 'confused' coeff -0\.2\).*reset_all"):
        runner(model, tmp_path, metric=logit_metric)
    other.reset_all()
    r = runner(model, tmp_path, metric=logit_metric)
    with Steer(model, tok) as late:  # steering added between the runner's construction and run()
        late.add(0, 0.3, text="precise")
        with pytest.raises(InvalidArgumentError, match=r"layer 0: 'precise' coeff 0\.3"):
            r.run(1)
    assert not (tmp_path / "r.tsv").exists()  # refused before the log was opened
    base = r.run(0)["baseline_score"]
    assert base == logit_metric(model, tok, PROMPTS) and n_hooks(model) == 0
    # steering that no live Steer owns (its Steer dropped without reset_all) is described from its hooks
    import gc

    orphan = make_model("llama")
    s = Steer(orphan, tok)
    s.add(1, 0.5, text="logical")
    del s
    gc.collect()
    assert n_hooks(orphan)
    with pytest.raises(InvalidArgumentError, match=r"layer 1: 1 vector\(s\), coeff 0\.5 \(no Steer owns them\)"):
        runner(orphan, tmp_path, metric=logit_metric)


def test_objects_carry_their_options_into_the_run(model, tmp_path):
    """The strategy, keep rule and metric objects given to the runner: the strategy is bound to a
    copy (the object given stays unbound and reusable), and every option is in the run's config."""
    strategy, rule = LocalSearch(patience=2, n_init=1), MeanRule(min_improvement=0.01)
    metric = CustomMetric(scripted([0.0, 1.0, 0.5, 0.2]))
    r = runner(model, tmp_path, metric=metric, strategy=strategy, keep_rule=rule, seed=3)
    assert not strategy.bound and r.strategy.bound and r.strategy == strategy and r.keep_rule is rule
    assert (r.config["strategy"], r.config["strategy_options"]) == ("local", {"patience": 2, "n_init": 1})
    assert (r.config["keep_rule"], r.config["min_improvement"]) == ("mean", 0.01)
    assert (r.config["metric"], r.config["metric_options"]) == ("custom", {})
    res = r.run(3)
    assert [h.status for h in res["history"]] == ["baseline", "keep", "discard", "discard"]
    again = runner(model, tmp_path, "b.tsv", metric=lambda m, t, p: 0.0, strategy=strategy, seed=3)
    assert again.strategy.get_options() == {"patience": 2, "n_init": 1}


def test_the_documented_call_and_at_most_16_parameters(model, tmp_path):
    """The original documented call works unchanged; everything else is an object's option or a
    run() setting, so the constructor stays at 16 parameters."""
    import inspect

    params = [p for p in inspect.signature(AutoSteerRunner.__init__).parameters if p != "self"]
    assert len(params) <= 16, params
    r = AutoSteerRunner(model=model, tokenizer=make_tokenizer(), prompts=PROMPTS, metric="task_accuracy",
                        expected_outputs=EXPECTED, lower_is_better=False, search_space=SPACE,
                        log_path=tmp_path / "log.tsv")
    assert r.run(1, verbose=False)["iterations"] == 1


def test_a_concept_with_no_direction_is_refused_before_the_baseline(model, tmp_path):
    """Concept("same", P, P) in the space ran anyway and every trial crashed: run() now refuses
    before any work (no log written), naming the concept and the layers of the range."""
    from autosteer import Concept

    same = ["the cat is happy", "a dog runs"]
    space = SteerSearchSpace(layer_range=(0, 2), texts=["logical", Concept("same", same, list(same))])
    r = runner(model, tmp_path, metric=logit_metric, search_space=space)
    with pytest.raises(SearchSpaceError, match=r"texts\[1\]: concept 'same' has no direction at layer\(s\) 0, 1, 2 "
                                               r"of layer_range 0\.\.2"):
        r.run(3)
    assert not (tmp_path / "r.tsv").exists() and n_hooks(model) == 0
    good = Concept("mood", ["the cat is happy", "a happy dog runs"], ["the cat is old", "a grey dog sits"])
    space = SteerSearchSpace(layer_range=(0, 2), texts=[good])
    results = runner(model, tmp_path, metric=logit_metric, search_space=space).run(1)
    assert len(results["history"]) == 2
