"""SteerVector and SteerCandidate: canonical values, JSON, code, apply."""

import json
import math

import pytest

from autosteer import SteerCandidate, SteerVector
from autosteer.errors import InvalidArgumentError

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
