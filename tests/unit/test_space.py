"""SteerSearchSpace: validation against the schedule table, defaults, resolve, JSON round trip."""

import json
import math

import pytest

from autosteer import SearchSpaceError, SteerSearchSpace

SPACE = SteerSearchSpace(
    layer_range=(2, 6),
    coeff_range=(0.05, 1.0),
    texts=["logical", "precise", "analytical"],
    negative_texts=["confused", "irrational"],
)


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
