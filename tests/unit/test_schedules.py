"""Schedules: exact values against the formulas (written here), vectorised calls,
serialisation, equality, pickling, domain errors, and the one table every kind
comes from."""

import inspect
import math
import pickle

import numpy as np
import pytest
import torch

from autosteer import (
    AutoSteerError,
    CosineSchedule,
    DecaySchedule,
    ScheduleError,
    WarmupSchedule,
    schedule_from_dict,
)


def decay_ref(rate, mn, restarts, k):
    if rate <= 0:
        return 1.0
    if restarts > 0:
        cycle = math.ceil(math.log(mn) / math.log(rate)) + 1
        p = k % cycle if k < cycle * restarts else k - cycle * restarts
    else:
        p = k
    return max(rate**p, mn)


def cosine_ref(period, mn, k):
    if k >= period:
        return mn
    return mn + (1 - mn) * 0.5 * (1 + math.cos(math.pi * k / period))


def warmup_ref(steps, start, k):
    if k >= steps:
        return 1.0
    return start + (1 - start) * k / steps


@pytest.mark.parametrize("rate,mn", [(0.9, 0.0), (0.5, 0.2), (1.0, 0.0), (0.0, 0.5), (-1.0, 0.3), (0.97, 0.6)])
def test_decay_values(rate, mn):
    s = DecaySchedule(rate=rate, min_multiplier=mn)
    for k in range(200):
        assert s(k) == pytest.approx(decay_ref(rate, mn, 0, k), rel=1e-12, abs=0)


@pytest.mark.parametrize("rate,mn,restarts", [(0.5, 0.1, 2), (0.8, 0.3, 3), (0.9, 0.05, 1), (0.25, 0.25, 4)])
def test_decay_sawtooth(rate, mn, restarts):
    s = DecaySchedule(rate, mn, restarts)
    cycle = math.ceil(math.log(mn) / math.log(rate)) + 1
    assert s.cycle_length == cycle
    values = [s(k) for k in range(cycle * (restarts + 2))]
    for k, v in enumerate(values):
        assert v == pytest.approx(decay_ref(rate, mn, restarts, k), rel=1e-12)
    for c in range(restarts):
        assert values[c * cycle] == 1.0  # each cycle starts at 1.0 ...
        assert values[c * cycle + cycle - 1] == mn  # ... and ends exactly at min
    # after the restarts it decays on and stays at min
    assert values[restarts * cycle] == 1.0
    assert s(restarts * cycle + 10_000) == mn


def test_decay_sawtooth_shape_explicit():
    # rate 0.5, min 0.1: 1, .5, .25, .125, then the cycle's last step is exactly .1
    s = DecaySchedule(0.5, 0.1, 1)
    assert [s(k) for k in range(11)] == [1.0, 0.5, 0.25, 0.125, 0.1, 1.0, 0.5, 0.25, 0.125, 0.1, 0.1]


@pytest.mark.parametrize("period,mn", [(1, 0.0), (10, 0.2), (7, 1.0)])
def test_cosine_values(period, mn):
    s = CosineSchedule(period, mn)
    for k in range(3 * period + 3):
        assert s(k) == pytest.approx(cosine_ref(period, mn, k), rel=1e-12, abs=1e-15)
    assert s(0) == 1.0
    assert s(period) == mn


@pytest.mark.parametrize("steps,start", [(0, 0.0), (1, 0.5), (8, 0.0), (5, 0.3)])
def test_warmup_values(steps, start):
    s = WarmupSchedule(steps, start)
    for k in range(steps + 5):
        assert s(k) == pytest.approx(warmup_ref(steps, start, k), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "sched", [DecaySchedule(0.8, 0.2, 2), CosineSchedule(6, 0.1), WarmupSchedule(4, 0.25), DecaySchedule()]
)
def test_vectorised_matches_scalar(sched):
    steps = np.arange(40, dtype=np.int64).reshape(5, 8)
    out = sched(steps)
    assert out.dtype == np.float64 and out.shape == (5, 8)
    assert [float(x) for x in out.ravel()] == [sched(int(k)) for k in steps.ravel()]
    assert list(sched([0, 1, 2])) == [sched(0), sched(1), sched(2)]
    assert sched(np.int32(3)) == sched(3)


@pytest.mark.parametrize(
    "sched", [DecaySchedule(0.8, 0.2, 2), CosineSchedule(6, 0.1), WarmupSchedule(4, 0.25)]
)
def test_serialisation_roundtrips(sched):
    d = sched.to_dict()
    assert d["type"] in {"decay", "cosine", "warmup"}
    assert schedule_from_dict(d) == sched
    assert type(sched).from_dict(d) == sched
    assert eval(repr(sched)) == sched  # noqa: S307 - the repr rebuilds it
    assert pickle.loads(pickle.dumps(sched)) == sched
    assert hash(schedule_from_dict(d)) == hash(sched)


def test_equality_is_by_value_and_type():
    assert DecaySchedule(0.9, 0.1) == DecaySchedule(rate=0.9, min_multiplier=0.1, times_restart=0)
    assert DecaySchedule(0.9, 0.1) != DecaySchedule(0.9, 0.2)
    assert CosineSchedule(5, 0.0) != WarmupSchedule(5, 0.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DecaySchedule(rate=1.5),
        lambda: DecaySchedule(rate=float("nan")),
        lambda: DecaySchedule(min_multiplier=-0.1),
        lambda: DecaySchedule(0.9, 0.0, 2),  # restarts need 0 < min < 1
        lambda: DecaySchedule(1.0, 0.5, 1),  # restarts need 0 < rate < 1
        lambda: DecaySchedule(0.9, 0.1, -1),
        lambda: CosineSchedule(0),
        lambda: CosineSchedule(10, 1.5),
        lambda: WarmupSchedule(-1),
        lambda: WarmupSchedule(3, float("inf")),
    ],
)
def test_domain_errors(make):
    with pytest.raises(ScheduleError) as info:
        make()
    assert isinstance(info.value, ValueError) and isinstance(info.value, AutoSteerError)
    assert "got" in str(info.value)


def test_bad_steps_and_dicts():
    s = DecaySchedule(0.9)
    with pytest.raises(ScheduleError):
        s(-1)
    with pytest.raises(ScheduleError):
        s(np.array([0, 1, -3]))
    with pytest.raises(TypeError):
        s(1.5)
    with pytest.raises(TypeError):
        s(np.array([0.5, 1.0]))
    with pytest.raises(ScheduleError, match="unknown schedule type"):
        schedule_from_dict({"type": "linear"})
    with pytest.raises(ScheduleError):
        schedule_from_dict({"type": "decay", "rate": 0.9, "bogus": 1})
    with pytest.raises(ScheduleError):
        DecaySchedule.from_dict({"type": "cosine", "period": 3})


def test_lists_of_non_integers_are_refused_and_huge_restarts_too():
    with pytest.raises(TypeError):
        DecaySchedule(0.5)([0.5, 1.7])
    with pytest.raises(TypeError):
        DecaySchedule(0.5)([True, False])
    with pytest.raises(ScheduleError, match="too large"):
        DecaySchedule(0.5, 0.1, 1844674407370955162)


# ---------------------------------------------------------------- one table
def test_the_table_is_the_one_source():
    """_C.schedule_kinds() and SCHEDULE_KINDS describe every kind the way the search reads them."""
    import autosteer
    from autosteer import _C
    from autosteer.steering.schedules import SCHEDULE_KINDS

    assert [row["type"] for row in _C.schedule_kinds()] == list(SCHEDULE_KINDS) == ["decay", "cosine", "warmup"]
    with pytest.raises(TypeError):
        SCHEDULE_KINDS["linear"] = None  # read-only
    expected = {
        "decay": ("DecaySchedule", [("rate", "float", 1.0, (0.8, 0.99)), ("min_multiplier", "float", 0.0, (0.0, 0.5)),
                                    ("times_restart", "int", 0, (0, 0))]),
        "cosine": ("CosineSchedule", [("period", "int", None, (4, 32)), ("min_multiplier", "float", 0.0, (0.0, 0.5))]),
        "warmup": ("WarmupSchedule", [("steps", "int", None, (1, 8)), ("start", "float", 0.0, (0.0, 0.5))]),
    }
    for kind, (class_name, params) in expected.items():
        info = SCHEDULE_KINDS[kind]
        assert info.class_name == class_name and info.cls is getattr(autosteer, class_name)
        assert info.cls.__module__ == "autosteer" and info.cls.__name__ == class_name
        assert [(p.name, p.kind, p.default, p.search_range) for p in info.params] == params
        assert all(p.required == (p.default is None) for p in info.params)
        for p in info.params:
            lo, hi = p.search_range
            assert type(lo) is type(hi) is (int if p.kind == "int" else float)
            assert lo in p.domain and hi in p.domain
            assert p.doc
        # the signature comes from the table
        sig = inspect.signature(info.cls)
        assert list(sig.parameters) == [p.name for p in info.params]
        assert [sig.parameters[p.name].default for p in info.params if not p.required] == [
            p.default for p in info.params if not p.required
        ]
        assert sig.parameters[info.params[0].name].default is inspect.Parameter.empty or not info.params[0].required
        # one getter per parameter, with the constructed value
        defaults = {p.name: (p.search_range[1]) for p in info.params}
        sched = info.cls(**defaults)
        assert {p.name: getattr(sched, p.name) for p in info.params} == defaults
    assert SCHEDULE_KINDS["decay"].derived == ("cycle_length",)
    d = SCHEDULE_KINDS["decay"].params[0].domain
    assert (d.min, d.max, d.max_open) == (None, 1.0, False) and 1.0 in d and 1.01 not in d
    assert 0.0 not in SCHEDULE_KINDS["cosine"].params[0].domain


@pytest.mark.parametrize(
    "make,pieces",
    [
        (lambda: CosineSchedule(1.5), ["CosineSchedule", "period", "an integer >= 1", "float 1.5"]),
        (lambda: CosineSchedule(2**63), ["CosineSchedule", "period", "9223372036854775808", "int64"]),
        (lambda: CosineSchedule(-(2**70)), ["CosineSchedule", "period", "int64"]),
        (lambda: DecaySchedule(rate=True), ["DecaySchedule", "rate", "bool True"]),
        (lambda: DecaySchedule(0.9, False), ["DecaySchedule", "min_multiplier", "bool False"]),
        (lambda: WarmupSchedule(steps=True), ["WarmupSchedule", "steps", "an integer >= 0", "bool True"]),
        (lambda: WarmupSchedule(np.bool_(True)), ["WarmupSchedule", "steps", "bool"]),
        (lambda: DecaySchedule(rate=0.5 + 1j), ["DecaySchedule", "rate", "complex"]),
        (lambda: DecaySchedule(rate=np.complex128(0.5)), ["DecaySchedule", "rate", "complex"]),
        (lambda: CosineSchedule(4, 1j), ["CosineSchedule", "min_multiplier", "complex 1j"]),
        (lambda: CosineSchedule("4"), ["CosineSchedule", "period", "str '4'"]),
        (lambda: DecaySchedule("0.9"), ["DecaySchedule", "rate", "str '0.9'"]),
        (lambda: WarmupSchedule(3, None), ["WarmupSchedule", "start", "NoneType None"]),
        (lambda: DecaySchedule(10**400), ["DecaySchedule", "rate", "a finite number <= 1"]),
        (lambda: CosineSchedule(), ["CosineSchedule", "missing", "period"]),
        (lambda: WarmupSchedule(2, 0.1, 3), ["WarmupSchedule", "at most 2"]),
        (lambda: DecaySchedule(0.9, rate=0.8), ["DecaySchedule", "multiple values", "rate"]),
        (lambda: DecaySchedule(decay=0.9), ["DecaySchedule", "'decay'", "rate", "min_multiplier", "times_restart"]),
    ],
)
def test_bad_arguments_name_class_argument_expected_and_arrived(make, pieces):
    with pytest.raises(ScheduleError) as info:
        make()
    assert isinstance(info.value, ValueError) and isinstance(info.value, AutoSteerError)
    for piece in pieces:
        assert piece in str(info.value), (piece, str(info.value))


def test_numpy_and_int_arguments_are_accepted_like_their_twins():
    assert DecaySchedule(np.float32(0.5), np.float64(0.25), np.int64(2)) == DecaySchedule(0.5, 0.25, 2)
    assert DecaySchedule(1, 0) == DecaySchedule(1.0, 0.0)
    assert CosineSchedule(np.int32(4)) == CosineSchedule(4)
    assert WarmupSchedule(2, 1) == WarmupSchedule(2, 1.0)


def test_from_dict_refuses_unknown_types_keys_and_missing_parameters():
    for cls in (DecaySchedule, CosineSchedule, WarmupSchedule):
        with pytest.raises(ScheduleError, match="expects"):
            cls.from_dict({"type": "linear", "steps": 3})
        with pytest.raises(ScheduleError, match="expects"):
            cls.from_dict({"steps": 3})
        with pytest.raises(ScheduleError, match="expects a dict"):
            cls.from_dict([("type", "decay")])
    with pytest.raises(ScheduleError, match="'bogus'"):
        DecaySchedule.from_dict({"type": "decay", "rate": 0.9, "bogus": 1})
    with pytest.raises(ScheduleError, match="missing required argument 'period'"):
        CosineSchedule.from_dict({"type": "cosine"})
    with pytest.raises(ScheduleError, match="missing required argument 'steps'"):
        schedule_from_dict({"type": "warmup", "start": 0.5})
    with pytest.raises(ScheduleError, match="unknown schedule type"):
        schedule_from_dict({"type": None})
    with pytest.raises(ScheduleError, match="mapping"):
        schedule_from_dict("decay")


@pytest.mark.parametrize("sched", [DecaySchedule(0.8, 0.2, 2), CosineSchedule(6, 0.1), WarmupSchedule(4, 0.25)])
def test_schedules_copy_and_pickle_by_value(sched):
    import copy

    for other in (copy.copy(sched), copy.deepcopy(sched), pickle.loads(pickle.dumps(sched, protocol=2))):
        assert other == sched and type(other) is type(sched) and other is not sched


def test_import_autosteer_does_not_import_torch():
    """A CLI's --help and type stubs: errors and schedules need only the C core and NumPy."""
    import subprocess
    import sys

    code = (
        "import sys, autosteer\n"
        "from autosteer import DecaySchedule, ScheduleError, schedule_from_dict\n"
        "from autosteer.steering.schedules import SCHEDULE_KINDS\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'Steer' in dir(autosteer)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("cls", ["DecaySchedule", "CosineSchedule", "WarmupSchedule"])
def test_a_schedule_class_is_refused_at_add_not_at_the_first_forward(cls, tokenizer):
    """coeff_schedule=DecaySchedule (the class) is a TypeError at add(), before any work."""
    import tiny_models

    import autosteer
    from autosteer import Steer

    model = tiny_models.make_model("llama")
    s = Steer(model, tokenizer)
    with pytest.raises(TypeError, match=f"coeff_schedule must be a schedule object such as {cls}"):
        s.add(0, 0.5, vector=torch.ones(tiny_models.HIDDEN_SIZE), coeff_schedule=getattr(autosteer, cls))
    assert s.get_all() == []


def test_a_callable_schedule_that_takes_no_step_is_refused_at_add(tokenizer):
    """coeff_schedule=lambda: 1.0 was accepted and failed at the first generate with a bare
    TypeError; its signature is now checked at add(), naming the argument and what arrived."""
    import tiny_models

    from autosteer import ArgumentTypeError, Steer

    model = tiny_models.make_model("llama")
    s = Steer(model, tokenizer)
    vec = torch.ones(tiny_models.HIDDEN_SIZE)

    def two(step, other):
        return 1.0

    for bad, sig in ((lambda: 1.0, r"\(\)"), (two, r"\(step, other\)")):
        with pytest.raises(ArgumentTypeError, match=r"coeff_schedule must be a callable that takes one positional "
                                                    r"argument, the generation step \(an int\).*got function .*"
                                                    r"with signature " + sig):
            s.add(0, 0.5, vector=vec, coeff_schedule=bad)
    assert s.get_all() == []
    # one positional step (or *args, or a default second argument) is accepted and runs
    for good in (lambda step: 0.5, lambda *a: 0.5, lambda step, k=2: 0.5):
        s.add(0, 1.0, vector=vec, coeff_schedule=good)
        ids = tokenizer(["the cat"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            model(input_ids=ids)
        s.reset_all()
