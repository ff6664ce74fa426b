"""Search space, candidates and the search itself: no model needed."""

import json
import math
import random

import pytest

from autosteer import AutoSteerSearch, SearchSpaceError, SteerCandidate, SteerSearchSpace, SteerVector
from autosteer.errors import InvalidArgumentError
from autosteer.strategies import SearchExhaustedError

SPACE = SteerSearchSpace(
    layer_range=(2, 6),
    coeff_range=(0.05, 1.0),
    texts=["logical", "precise", "analytical"],
    negative_texts=["confused", "irrational"],
)


def drive(search, statuses):
    """Propose/record along a fixed status sequence; return the proposals' keys."""
    out = []
    for i, status in enumerate(statuses):
        cand = search.propose()
        out.append(cand.key())
        search.record(float(i) if status != "crash" else None, status)
    return out


def random_statuses(n, seed, p_keep=0.2, p_crash=0.1):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u = rng.random()
        out.append("keep" if u < p_keep else "crash" if u < p_keep + p_crash else "discard")
    return out


# ---------------------------------------------------------------------------
# values


def test_vector_and_candidate_are_canonical_values():
    a = SteerVector(3, 0.4, "logical")
    b = SteerVector(1, -0.2, "confused", {"type": "decay", "rate": 0.9, "min_multiplier": 0.2})
    c1 = SteerCandidate((a, b))
    c2 = SteerCandidate((b, a))
    assert c1 == c2 and hash(c1) == hash(c2) and c1.key() == c2.key()
    assert [v.layer_idx for v in c1] == [1, 3]
    # the missing times_restart is filled with the constructor default
    assert c1.vectors[0].schedule == {"type": "decay", "rate": 0.9, "min_multiplier": 0.2, "times_restart": 0}
    key = c1.key()
    assert key == json.dumps(json.loads(key), sort_keys=True, separators=(",", ":"))
    assert SteerCandidate.from_json(key) == c1
    assert SteerCandidate.from_dict(c1.to_dict()) == c1
    # Steer.get_all() style rows are accepted too
    rows = [{"layer_idx": 3, "text": "logical", "coeff": 0.4, "coeff_schedule": None}]
    assert SteerCandidate.from_dict(rows) == SteerCandidate((a,))
    with pytest.raises(TypeError):
        c1.vectors[0].schedule["rate"] = 0.5  # read-only
    with pytest.raises(AttributeError):
        a.coeff = 1.0  # frozen


def test_describe_and_code():
    cand = SteerCandidate(
        (
            SteerVector(3, 0.4, "logical"),
            SteerVector(5, -0.25, 'say "no"\t', {"type": "decay", "rate": 0.9, "min_multiplier": 0.2}),
        )
    )
    assert cand.describe() == (
        'L3 +0.4 "logical" + L5 -0.25 "say \\"no\\"\\t" decay(rate=0.9,min_multiplier=0.2,times_restart=0)'
    )
    assert "\t" not in cand.describe() and "\n" not in cand.describe()
    assert cand.to_code() == (
        "from autosteer import Steer, DecaySchedule\n"
        "steered = Steer(model, tokenizer)\n"
        'steered.add(layer_idx=3, coeff=0.4, text="logical")\n'
        'steered.add(layer_idx=5, coeff=-0.25, text="say \\"no\\"\\t", '
        "coeff_schedule=DecaySchedule(rate=0.9, min_multiplier=0.2, times_restart=0))"
    )
    assert SteerCandidate().describe() == "no steering"
    assert SteerCandidate().to_code(imports=False) == "steered = Steer(model, tokenizer)"


def test_apply_calls_steer_add_with_schedule_objects():
    from autosteer import CosineSchedule, WarmupSchedule

    calls = []

    class FakeSteer:
        def add(self, **kw):
            calls.append(kw)

    cand = SteerCandidate(
        (
            SteerVector(0, 0.5, "a", {"type": "cosine", "period": 8, "min_multiplier": 0.1}),
            SteerVector(1, -0.5, "b", {"type": "warmup", "steps": 3, "start": 0.0}),
            SteerVector(2, 0.1, "c"),
        )
    )
    cand.apply(FakeSteer())
    assert [c["layer_idx"] for c in calls] == [0, 1, 2]
    assert calls[0]["coeff_schedule"] == CosineSchedule(period=8, min_multiplier=0.1)
    assert calls[1]["coeff_schedule"] == WarmupSchedule(steps=3, start=0.0)
    assert calls[2]["coeff_schedule"] is None and calls[2]["text"] == "c" and calls[2]["coeff"] == 0.1


@pytest.mark.parametrize(
    "args",
    [
        (-1, 0.5, "a", None),
        (1.5, 0.5, "a", None),
        (True, 0.5, "a", None),
        (0, math.nan, "a", None),
        (0, math.inf, "a", None),
        (0, 0.5, "", None),
        (0, 0.5, "   ", None),
        (0, 0.5, "a", {"type": "linear"}),
        (0, 0.5, "a", {"type": "decay", "rate": 0.9, "speed": 2}),
        (0, 0.5, "a", {"type": "cosine"}),
        (0, 0.5, "a", {"type": "warmup", "steps": 2.5}),
    ],
)
def test_bad_vectors(args):
    with pytest.raises(InvalidArgumentError):
        SteerVector(*args)


def test_bad_candidate_json():
    with pytest.raises(InvalidArgumentError):
        SteerCandidate.from_json("{not json")
    with pytest.raises(InvalidArgumentError):
        SteerCandidate.from_json('{"vectors": [{"layer_idx": 1}]}')
    with pytest.raises(InvalidArgumentError):
        SteerCandidate.from_json('{"vecs": []}')


# ---------------------------------------------------------------------------
# the space


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(texts=[], negative_texts=[]), "texts is empty"),
        (dict(texts=["ok", ""]), r"texts\[1\] is empty"),
        (dict(texts=None, negative_texts=None), "texts is empty"),
        (dict(coeff_range=(1.0, 0.5)), "empty"),
        (dict(coeff_range=(0.0, 0.0)), "empty"),
        (dict(coeff_range=(0.1, math.inf)), "finite"),
        (dict(coeff_range=(math.nan, 1.0)), "finite"),
        (dict(coeff_range=(-1.0, 1.0)), "magnitudes"),
        (dict(coeff_range=0.5), "pair"),
        (dict(layer_range=(5, 2)), "empty"),
        (dict(layer_range=(-1, 2)), "below layer 0"),
        (dict(layer_range=(0.5, 2)), "integers"),
        (dict(max_vectors=0), "max_vectors"),
        (dict(schedules=["none", "exponential"]), "unknown schedule"),
        (dict(schedules=[]), "schedules is empty"),
        (dict(schedule_ranges={"decay": {"rate": (0.0, 0.9)}}), "rate"),
        (dict(schedule_ranges={"decay": {"times_restart": (0, 2)}}), "restarts"),
        (dict(schedule_ranges={"cosine": {"length": (1, 2)}}), "unknown parameter"),
        (dict(schedule_ranges={"sawtooth": {}}), "unknown schedule"),
        (dict(coeff_scale="cubic"), "coeff_scale"),
    ],
)
def test_bad_spaces(kwargs, match):
    with pytest.raises(SearchSpaceError, match=match):
        SteerSearchSpace(**kwargs)


def test_space_defaults_resolve_and_roundtrip():
    space = SteerSearchSpace(texts="logical")  # a lone string is one text
    assert space.texts == ("logical",)
    assert space.layer_range is None
    assert space.resolve(32).layer_range == (8, 23)
    assert space.resolve(8).layer_range == (2, 5)
    assert space.resolve(3).layer_range == (0, 2)
    assert space.resolve(1).layer_range == (0, 0)
    with pytest.raises(SearchSpaceError, match=r"TinyLM has 8 decoder layers \(0\.\.7\)"):
        SteerSearchSpace(layer_range=(15, 25)).resolve(8, "TinyLM")
    assert SPACE.resolve(7) is SPACE
    fixed = SteerSearchSpace(schedule_ranges={"warmup": {"steps": 4}})
    assert fixed.schedule_ranges["warmup"]["steps"] == (4, 4)
    for s in (SPACE, space, fixed):
        again = SteerSearchSpace.from_dict(json.loads(json.dumps(s.to_dict())))
        assert again == s and hash(again) == hash(s)
    assert "SteerSearchSpace(layer_range=(2, 6)" in repr(SPACE)


# ---------------------------------------------------------------------------
# the search


def test_search_needs_a_resolved_space_and_valid_arguments():
    with pytest.raises(SearchSpaceError, match="resolve"):
        AutoSteerSearch(SteerSearchSpace())
    with pytest.raises(InvalidArgumentError):
        AutoSteerSearch(SPACE, patience=0)
    with pytest.raises(InvalidArgumentError):
        AutoSteerSearch(SPACE, seed=1.5)
    s = AutoSteerSearch(SPACE)
    with pytest.raises(InvalidArgumentError, match="propose"):
        s.record(1.0, "keep")
    s.propose()
    with pytest.raises(InvalidArgumentError, match="status"):
        s.record(1.0, "kept")
    with pytest.raises(InvalidArgumentError, match="finite"):
        s.record(math.nan, "keep")


def test_same_seed_same_proposals_for_same_outcomes():
    statuses = random_statuses(80, seed=7)
    a = drive(AutoSteerSearch(SPACE, seed=3, patience=4), statuses)
    b = drive(AutoSteerSearch(SPACE, seed=3, patience=4), statuses)
    assert a == b
    c = drive(AutoSteerSearch(SPACE, seed=4, patience=4), statuses)
    assert a != c
    # other outcomes lead elsewhere (same seed)
    d = drive(AutoSteerSearch(SPACE, seed=3, patience=4), random_statuses(80, seed=8))
    assert a != d


def test_propose_is_stable_until_record():
    s = AutoSteerSearch(SPACE, seed=0)
    first = s.propose()
    assert s.propose() == first and s.pending == first
    s.record(0.1, "discard")
    assert s.propose() != first


def test_proposals_stay_in_space_and_never_repeat():
    s = AutoSteerSearch(SPACE, seed=11, patience=3)
    seen = set()
    for status in random_statuses(300, seed=1, p_keep=0.15):
        cand = s.propose()
        assert SPACE.contains(cand), cand.describe()
        assert cand.key() not in seen
        assert len(cand) >= 1
        seen.add(cand.key())
        for v in cand:
            assert v.coeff == float(f"{v.coeff:.4g}")  # rounded: short, exact JSON
        s.record(0.0, status)
    assert len(s.history) == 300


def test_exploit_perturbs_the_best_then_explores_after_patience():
    space = SteerSearchSpace(layer_range=(0, 20), coeff_range=(0.05, 1.0), texts=["a", "b", "c"], max_vectors=1,
                             schedules=["none"])
    s = AutoSteerSearch(space, seed=5, patience=3)
    assert s.mode == "explore"  # nothing beats the baseline yet
    best = s.propose()
    s.record(1.0, "keep")
    assert s.mode == "exploit" and s.best_candidate == best and s.best_score == 1.0
    (bv,) = best.vectors
    for _ in range(2):
        (v,) = s.propose().vectors
        # one move: layer shifted by <= 2, or coefficient scaled by 1.1..2, or text swapped
        changed = [v.layer_idx != bv.layer_idx, v.coeff != bv.coeff, v.text != bv.text]
        assert sum(changed) == 1
        if v.layer_idx != bv.layer_idx:
            assert abs(v.layer_idx - bv.layer_idx) <= 2
        if v.coeff != bv.coeff:
            ratio = max(v.coeff / bv.coeff, bv.coeff / v.coeff)
            assert 1.09 <= ratio <= 2.01 or v.coeff in space.coeff_range
        s.record(0.5, "discard")
    s.propose()
    s.record(None, "crash")  # a crash counts against patience too
    assert s.mode == "explore" and s.exploring
    s.propose()
    s.record(0.2, "discard")
    assert s.mode == "explore"  # stays exploring until something is kept
    s.propose()
    s.record(2.0, "keep")
    assert s.mode == "exploit" and s.non_keeps == 0


def test_add_and_remove_vector_moves():
    space = SteerSearchSpace(layer_range=(0, 3), coeff_range=(0.5, 0.5), texts=["a"], max_vectors=3,
                             schedules=["none"])
    s = AutoSteerSearch(space, seed=0, patience=10)  # six proposals, all in exploit mode
    s.propose()
    s.record(1.0, "keep")
    sizes = set()
    best = s.best_candidate
    for _ in range(6):
        assert s.mode == "exploit"
        cand = s.propose()
        sizes.add(len(cand) - len(best))
        s.record(0.0, "discard")
    assert sizes <= {-1, 0, 1} and 1 in sizes


def test_exhausted_space():
    space = SteerSearchSpace(layer_range=(0, 0), coeff_range=(0.5, 0.5), texts=["a"], schedules=["none"])
    s = AutoSteerSearch(space, seed=0)
    only = s.propose()
    assert only == SteerCandidate((SteerVector(0, 0.5, "a"),))
    s.record(1.0, "keep")
    with pytest.raises(SearchExhaustedError, match="widen"):
        s.propose()
    assert isinstance(SearchExhaustedError("x"), SearchSpaceError)


def test_schedule_draws_respect_ranges():
    space = SteerSearchSpace(
        layer_range=(0, 4),
        schedules=["decay", "cosine", "warmup"],
        schedule_ranges={"decay": {"rate": (0.5, 0.6), "min_multiplier": (0.1, 0.2), "times_restart": (1, 2)},
                         "cosine": {"period": (2, 3)}, "warmup": {"start": 0.25}},
    )
    s = AutoSteerSearch(space, seed=9, patience=2)
    kinds = set()
    for status in random_statuses(60, seed=2):
        cand = s.propose()
        for v in cand:
            sch = v.schedule
            assert sch is not None  # "none" is not listed
            kinds.add(sch["type"])
            for p, (lo, hi) in space.schedule_ranges[sch["type"]].items():
                assert lo <= sch[p] <= hi
        s.record(0.0, status)
    assert kinds == {"decay", "cosine", "warmup"}
