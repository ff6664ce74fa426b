"""The strategies: proposals from a history, determinism, exploit/explore, exhaustion."""

import math
import random

import pytest

from autosteer import AutoSteerSearch, SteerCandidate, SteerSearchSpace, SteerVector
from autosteer.errors import InvalidArgumentError, SearchSpaceError
from autosteer.search.strategies import SearchExhaustedError

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
    s = AutoSteerSearch(space, seed=5, patience=3, n_init=0)
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


def test_the_first_n_init_candidates_are_random_samples_whatever_is_kept():
    space = SteerSearchSpace(layer_range=(0, 20), coeff_range=(0.05, 1.0), texts=["a", "b", "c"], max_vectors=1,
                             schedules=["none"])
    assert AutoSteerSearch(space).n_init == 8  # the default, measured by benchmarks/search_quality.py
    s = AutoSteerSearch(space, seed=1, patience=10, n_init=4)
    s.propose()
    s.record(1.0, "keep")
    for i in range(3):  # candidates 2..4: still exploring although one was kept
        assert s.mode == "explore"
        s.propose()
        s.record(0.5, "discard")
    assert s.mode == "exploit"  # from the 5th on: perturb the best
    (bv,) = s.best_candidate.vectors
    (v,) = s.propose().vectors
    assert sum([v.layer_idx != bv.layer_idx, v.coeff != bv.coeff, v.text != bv.text]) == 1
    with pytest.raises(InvalidArgumentError):
        AutoSteerSearch(space, n_init=-1)


def test_add_and_remove_vector_moves():
    space = SteerSearchSpace(layer_range=(0, 3), coeff_range=(0.5, 0.5), texts=["a"], max_vectors=3,
                             schedules=["none"])
    s = AutoSteerSearch(space, seed=0, patience=10, n_init=1)  # six proposals, all in exploit mode
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


# ---------------------------------------------------------------------------
# strategies as objects: options declared once, bound to the space by the runner


def test_an_unbound_strategy_holds_its_options_and_binds_to_a_copy():
    from autosteer import TPE, LocalSearch, RandomSearch, TPESearch

    assert AutoSteerSearch is LocalSearch and TPESearch is TPE  # the former names still work
    s = LocalSearch(patience=3, n_init=2)
    assert not s.bound and s.get_options() == {"patience": 3, "n_init": 2}
    assert repr(s) == "LocalSearch(patience=3, n_init=2)"
    with pytest.raises(InvalidArgumentError, match="no search space yet.*bind"):
        s.propose_round([], 1)
    bound = s.bind(SPACE, seed=4)
    assert bound is not s and bound.bound and not s.bound and bound == s
    assert (bound.patience, bound.n_init, bound.seed, bound.space) == (3, 2, 4, SPACE)
    # binding is the same as constructing on the space: the same proposals for the same outcomes
    statuses = random_statuses(20, seed=3)
    assert drive(bound, statuses) == drive(LocalSearch(SPACE, seed=4, patience=3, n_init=2), statuses)
    assert drive(RandomSearch().bind(SPACE, 1), statuses) == drive(RandomSearch(SPACE, seed=1), statuses)


@pytest.mark.parametrize("make, match", [
    (lambda: AutoSteerSearch(patiense=3), r"strategy 'local' has no option 'patiense'; its options are patience, n_init"),
    (lambda: AutoSteerSearch(n_startup=3), r"strategy 'local' has no option 'n_startup'"),
    (lambda: __import__("autosteer").RandomSearch(patience=3), r"strategy 'random' has no option 'patience'; "
                                                               r"it takes no option"),
    (lambda: __import__("autosteer").TPE(n_startup=0), r"TPE.n_startup must be an integer >= 1, got 0"),
    (lambda: AutoSteerSearch(patience=2.5), r"LocalSearch.patience must be an integer, got float 2.5"),
])
def test_unknown_or_bad_options_are_errors(make, match):
    with pytest.raises(InvalidArgumentError, match=match):
        make()


def test_make_strategy_reaches_every_option_and_refuses_unknown_ones():
    from autosteer.search.strategies import make_strategy

    s = make_strategy("local", SPACE, seed=2, n_init=0, patience=7)  # n_init was silently dropped before
    assert (s.n_init, s.patience, s.seed) == (0, 7, 2)
    with pytest.raises(InvalidArgumentError, match="strategy 'random' has no option 'patience'"):
        make_strategy("random", SPACE, patience=3)
    with pytest.raises(InvalidArgumentError, match="unknown strategy str 'grid'"):
        make_strategy("grid", SPACE)
    with pytest.raises(InvalidArgumentError, match="constructor"):
        make_strategy(AutoSteerSearch(), SPACE, patience=3)


def test_n_init_changes_what_is_proposed():
    """n_init reaches the search: with 0 random samples it exploits right after the first keep,
    with 8 it still explores."""
    for n_init, mode in ((0, "exploit"), (8, "explore")):
        local = AutoSteerSearch(n_init=n_init).bind(SPACE, seed=0)
        local.propose()
        local.record(1.0, "keep")
        assert local.mode == mode
