"""The TPE strategy (Optuna): proposals in the space, never repeated, a pure function of the
history (also across processes), candidates <-> parameters, the metric's direction, and a
search that learns (it beats random sampling on a smooth objective at equal budget)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

pytest.importorskip("optuna", reason="the TPE strategy needs the optuna extra: pip install -e '.[test]'")

from autosteer import AutoSteerError, SteerSearchSpace  # noqa: E402
from autosteer.search.strategies import make_strategy  # noqa: E402
from autosteer.search.strategies.tpe import TPESearch  # noqa: E402
from autosteer.search.trial import TrialRecord  # noqa: E402

SPACE = SteerSearchSpace(layer_range=(0, 9), coeff_range=(0.05, 2.0), texts=["logical", "precise"],
                         negative_texts=["confused"], max_vectors=2, schedules=("none", "decay", "cosine"))


def objective(cand):
    """Smooth and known: one vector of "logical" at layer 6 with coeff 0.8 is best."""
    v = cand.vectors[0]
    score = -abs(v.layer_idx - 6) / 3 - abs(v.coeff - 0.8) - (0.5 if v.text != "logical" else 0.0)
    return score - 0.3 * (len(cand) - 1)


def run(strategy, seed, n, population=1, lower=False):
    s = make_strategy(strategy, SPACE, seed=seed, lower_is_better=lower)
    hist = [TrialRecord(0, "baseline", candidate=__import__("autosteer").SteerCandidate(), score=-10.0)]
    best = -10.0 if not lower else 10.0
    while len(hist) - 1 < n:
        for cand in s.propose_round(hist, population):
            assert SPACE.contains(cand), cand.describe()
            score = objective(cand) if not lower else -objective(cand)
            keep = score > best if not lower else score < best
            best = score if keep else best
            hist.append(TrialRecord(len(hist), "keep" if keep else "discard", candidate=cand, score=score,
                                    round=len(hist)))
    return hist


def test_proposals_are_new_in_space_and_reproducible():
    a = run("tpe", 3, 40, population=4)
    keys = [r.candidate.key() for r in a[1:]]
    assert len(set(keys)) == len(keys)
    b = run("tpe", 3, 40, population=4)
    assert keys == [r.candidate.key() for r in b[1:]]
    assert keys != [r.candidate.key() for r in run("tpe", 4, 40, population=4)[1:]]


def test_a_round_is_the_same_in_another_process_with_another_hash_seed():
    hist = run("tpe", 1, 24)
    here = [c.key() for c in TPESearch(SPACE, seed=1).propose_round(hist, 4)]
    code = (
        "import json, sys\n"
        "from autosteer.search.log import read_log\n"
        "from autosteer.search.strategies.tpe import TPESearch\n"
        "from autosteer import SteerSearchSpace\n"
        "space = SteerSearchSpace.from_dict(json.loads(sys.argv[1]))\n"
        "from autosteer.search.candidate import SteerCandidate\n"
        "from autosteer.search.trial import TrialRecord\n"
        "rows = json.loads(sys.argv[2])\n"
        "hist = [TrialRecord(i, st, candidate=SteerCandidate.from_json(c), score=s) for i, (st, c, s) in enumerate(rows)]\n"
        "print(json.dumps([c.key() for c in TPESearch(space, seed=1).propose_round(hist, 4)]))\n"
    )
    rows = [(r.status, r.candidate.key(), r.score) for r in hist]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(SPACE.to_dict()), json.dumps(rows)], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == here


def test_candidates_and_parameters_round_trip():
    s = TPESearch(SPACE, seed=0)
    for r in run("random", 5, 60)[1:]:
        params = s._params_of(r.candidate)
        assert params is not None and params["n_vectors"] == len(r.candidate)
        assert set(s._distributions(params)) == set(params)
        for i, v in enumerate(r.candidate.vectors):
            assert params[f"layer_{i}"] == v.layer_idx and params[f"coeff_{i}"] == abs(v.coeff)
            assert SPACE.signed_texts[params[f"text_{i}"]] == (v.text, 1 if v.coeff > 0 else -1)
    outside = run("random", 5, 1)[1].candidate
    small = SteerSearchSpace(layer_range=(0, 1), texts=["logical"])
    assert TPESearch(small, seed=0)._params_of(outside) is None or all(
        v.layer_idx <= 1 and v.text == "logical" for v in outside.vectors)


@pytest.mark.parametrize("lower", [False, True])
def test_tpe_learns_faster_than_random_in_either_direction(lower):
    def best_after(strategy, seed):
        hist = run(strategy, seed, 40, lower=lower)
        scores = [r.score for r in hist[1:]]
        return max(scores) if not lower else -min(scores)

    tpe = statistics.median(best_after("tpe", s) for s in range(7))
    rnd = statistics.median(best_after("random", s) for s in range(7))
    assert tpe > rnd, (tpe, rnd)


def test_missing_optuna_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(AutoSteerError, match=r"autosteer\[optuna\]"):
        TPESearch(SPACE)
