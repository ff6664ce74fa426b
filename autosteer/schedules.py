"""Coefficient schedules: multipliers on a steering coefficient per generation step.

The three built-in schedules are C types from ``autosteer._C`` (the math lives
in ``csrc/schedule.h``).  Each is callable on an int step or on a NumPy array
of steps (vectorised in C), has ``to_dict()`` / ``from_dict()``, compares by
value, has a ``repr`` that rebuilds it, and pickles.  Any Python callable
``f(step) -> float`` also works wherever a schedule is accepted (slower path:
it is called from C once per layer forward).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Union

from . import _C
from .errors import ScheduleError

__all__ = [
    "DecaySchedule",
    "CosineSchedule",
    "WarmupSchedule",
    "Schedule",
    "schedule_from_dict",
    "schedule_to_dict",
    "as_schedule",
]

DecaySchedule = _C.DecaySchedule
CosineSchedule = _C.CosineSchedule
WarmupSchedule = _C.WarmupSchedule

_BUILTIN = (DecaySchedule, CosineSchedule, WarmupSchedule)
_BY_TYPE = {"decay": DecaySchedule, "cosine": CosineSchedule, "warmup": WarmupSchedule}

Schedule = Union[DecaySchedule, CosineSchedule, WarmupSchedule, Callable[[int], float]]


def schedule_from_dict(d: Mapping[str, Any]):
    """Rebuild a built-in schedule from the dict its ``to_dict()`` returned."""
    if not isinstance(d, Mapping):
        raise ScheduleError(f"a schedule dict must be a mapping, got {type(d).__name__}")
    kind = d.get("type")
    cls = _BY_TYPE.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ScheduleError(
            f"unknown schedule type {kind!r}: expected one of {sorted(_BY_TYPE)} "
            "(custom callables cannot be rebuilt from a dict)"
        )
    try:
        return cls.from_dict(dict(d))
    except TypeError as exc:
        raise ScheduleError(f"bad parameters for a {kind} schedule: {exc} (got {dict(d)!r})") from None


def schedule_to_dict(schedule) -> dict | None:
    """``to_dict()`` of a schedule; None for None; a descriptive dict for a callable."""
    if schedule is None:
        return None
    if isinstance(schedule, _BUILTIN):
        return schedule.to_dict()
    to_dict = getattr(schedule, "to_dict", None)
    if callable(to_dict):
        d = to_dict()
        if isinstance(d, dict):
            return d
    name = getattr(schedule, "__qualname__", None) or type(schedule).__qualname__
    return {"type": "custom", "name": name}


def as_schedule(obj):
    """Validate what a user passed as ``coeff_schedule``.

    None, a built-in schedule, a dict from ``to_dict()``, or any callable.
    """
    if obj is None or isinstance(obj, _BUILTIN):
        return obj
    if isinstance(obj, Mapping):
        return schedule_from_dict(obj)
    if callable(obj):
        return obj
    raise ScheduleError(
        "coeff_schedule must be None, a DecaySchedule/CosineSchedule/WarmupSchedule, "
        f"a dict from to_dict(), or a callable step -> multiplier; got {type(obj).__name__}"
    )


# ---------------------------------------------------------------------------
# TRANSITIONAL (replaced by the table exported from C on the core-redesign branch)
from dataclasses import dataclass as _dataclass
from types import MappingProxyType as _MappingProxyType


@_dataclass(frozen=True)
class ScheduleParam:
    name: str
    kind: str  # "int" or "float"
    default: Any  # None: required
    search_range: tuple
    search_domain: tuple  # (low, high, low_open, high_open): where a search range may lie


@_dataclass(frozen=True)
class ScheduleKind:
    type: str
    class_name: str
    cls: Any
    params: tuple


SCHEDULE_KINDS = _MappingProxyType({
    "decay": ScheduleKind("decay", "DecaySchedule", DecaySchedule, (
        ScheduleParam("rate", "float", 1.0, (0.8, 0.99), (0.0, 1.0, True, False)),
        ScheduleParam("min_multiplier", "float", 0.0, (0.0, 0.5), (0.0, 1.0, False, False)),
        ScheduleParam("times_restart", "int", 0, (0, 0), (0, float("inf"), False, True)))),
    "cosine": ScheduleKind("cosine", "CosineSchedule", CosineSchedule, (
        ScheduleParam("period", "int", None, (4, 32), (1, float("inf"), False, True)),
        ScheduleParam("min_multiplier", "float", 0.0, (0.0, 0.5), (0.0, 1.0, False, False)))),
    "warmup": ScheduleKind("warmup", "WarmupSchedule", WarmupSchedule, (
        ScheduleParam("steps", "int", None, (1, 8), (1, float("inf"), False, True)),
        ScheduleParam("start", "float", 0.0, (0.0, 0.5), (0.0, 1.0, False, False)))),
})
