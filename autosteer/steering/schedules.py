"""Coefficient schedules: multipliers on a steering coefficient per generation step.

Every schedule kind is one row of the table in ``csrc/schedule.h`` (its type
name, class name, doc, parameters with defaults, domains and default search
ranges, and its formula); the C core builds one type per row and this module
builds everything else from the same rows (``autosteer._C.schedule_kinds()``):

* the classes (``DecaySchedule``, ``CosineSchedule``, ``WarmupSchedule``), C
  types of module ``autosteer``: callable on an int step or on an array of
  steps (vectorised in C), ``to_dict()`` / ``from_dict()``, equal and hashed
  by value, a ``repr`` that rebuilds them, picklable;
* :data:`SCHEDULE_KINDS`, a read-only mapping from type name (``"decay"``) to
  a :class:`ScheduleKind` (``cls``, ``class_name``, ``doc``, ``params``), which
  the search reads for parameter names, defaults and search ranges;
* :func:`schedule_from_dict`, which refuses an unknown ``"type"``, unknown
  keys and missing required parameters with :class:`ScheduleError`.

Any Python callable ``f(step) -> float`` also works wherever a schedule is
accepted (slower path: it is called once per steered layer and forward).
Nothing here imports torch.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Union

from autosteer import _C
from autosteer.errors import ArgumentTypeError, ScheduleError

if TYPE_CHECKING:  # the names below are built from the table at import
    from autosteer._C import CosineSchedule, DecaySchedule, WarmupSchedule  # noqa: F401 - for type checkers

__all__ = [
    "SCHEDULE_KINDS",
    "Schedule",
    "ScheduleDomain",
    "ScheduleKind",
    "ScheduleParam",
    "as_schedule",
    "schedule_from_dict",
    "schedule_to_dict",
]


@dataclass(frozen=True)
class ScheduleDomain:
    """The values a parameter admits: ``min``/``max`` (None: unbounded), open or closed ends.

    Float parameters must also be finite.  ``x in domain`` tests a value.
    """

    min: float | int | None
    max: float | int | None
    min_open: bool
    max_open: bool

    def __contains__(self, x: Any) -> bool:
        try:
            v = float(x)
        except (TypeError, ValueError, OverflowError):
            return False
        if math.isnan(v):
            return False
        if self.min is not None and (v <= self.min if self.min_open else v < self.min):
            return False
        return not (self.max is not None and (v >= self.max if self.max_open else v > self.max))


@dataclass(frozen=True)
class ScheduleParam:
    """One constructor parameter of a schedule kind, in constructor order.

    ``kind`` is ``"int"`` or ``"float"``; ``default`` is None when the
    parameter is ``required``; ``search_range`` is the ``(lo, hi)`` range the
    autonomous search draws from by default, and ``search_domain`` where a
    search range may lie (narrower than ``domain`` where a value means "no
    schedule at all", such as a decay rate <= 0).
    """

    name: str
    kind: str
    default: int | float | None
    required: bool
    domain: ScheduleDomain
    search_range: tuple
    search_domain: ScheduleDomain
    doc: str


@dataclass(frozen=True)
class ScheduleKind:
    """One row of the schedule table: ``type`` (the ``to_dict()`` type), the
    class ``cls`` and its ``class_name``, ``doc``, the ordered ``params`` and
    the names of the ``derived`` read-only properties."""

    type: str
    cls: builtins.type[_C._ScheduleBase]  # builtins: the field above shadows type
    class_name: str
    doc: str
    params: tuple[ScheduleParam, ...]
    derived: tuple[str, ...]

    @property
    def defaults(self) -> dict[str, Any]:
        """The parameters that have a default, with it."""
        return {p.name: p.default for p in self.params if not p.required}


def _build_kinds() -> Mapping[str, ScheduleKind]:
    kinds = {}
    for row in _C.schedule_kinds():
        params = tuple(
            ScheduleParam(
                name=p["name"],
                kind=p["kind"],
                default=p["default"],
                required=p["required"],
                domain=ScheduleDomain(**p["domain"]),
                search_range=tuple(p["search_range"]),
                search_domain=ScheduleDomain(**p["search_domain"]),
                doc=p["doc"],
            )
            for p in row["params"]
        )
        kinds[row["type"]] = ScheduleKind(
            type=row["type"],
            cls=getattr(_C, row["class_name"]),
            class_name=row["class_name"],
            doc=row["doc"],
            params=params,
            derived=tuple(d["name"] for d in row["derived"]),
        )
    return MappingProxyType(kinds)


#: Every schedule kind, by type name (``"decay"``, ``"cosine"``, ``"warmup"``).
SCHEDULE_KINDS: Mapping[str, ScheduleKind] = _build_kinds()

# the classes, under their own names
for _kind in SCHEDULE_KINDS.values():
    globals()[_kind.class_name] = _kind.cls
    __all__.append(_kind.class_name)
del _kind

_BUILTIN = tuple(k.cls for k in SCHEDULE_KINDS.values())

# Union of a tuple built at import (not Union[(*_BUILTIN, ...)]: mypy reads that as 3.11's star syntax)
Schedule = Union[_BUILTIN + (Callable[[int], float],)]  # type: ignore[valid-type]  # noqa: UP007, RUF005


def schedule_from_dict(d: Mapping[str, Any]):
    """Rebuild a built-in schedule from the dict its ``to_dict()`` returned.

    Raises :class:`ScheduleError` for a non-mapping, an unknown ``"type"``, an
    unknown key, a missing required parameter or a value outside its domain.
    """
    if not isinstance(d, Mapping):
        raise ScheduleError(f"a schedule dict must be a mapping, got {type(d).__name__}")
    kind = d.get("type")
    info = SCHEDULE_KINDS.get(kind) if isinstance(kind, str) else None
    if info is None:
        raise ScheduleError(
            f"unknown schedule type {kind!r}: expected one of {sorted(SCHEDULE_KINDS)} "
            "(custom callables cannot be rebuilt from a dict)"
        )
    return info.cls.from_dict(dict(d))


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


def _check_step_signature(fn) -> None:
    """A callable schedule must accept one positional argument, the step (an int);
    refused at ``add()`` rather than with a bare TypeError at the first forward.  A
    callable whose signature Python cannot read (some builtins) is accepted as is."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(0)
    except TypeError:
        from autosteer._checks import describe

        raise ArgumentTypeError(
            f"coeff_schedule must be a callable that takes one positional argument, the generation step "
            f"(an int), and returns a multiplier; got {describe(fn)} with signature {sig}"
        ) from None


def as_schedule(obj):
    """Validate what a user passed as ``coeff_schedule``.

    None, a built-in schedule, a dict from ``to_dict()``, or a callable that takes
    one positional int step (checked by its signature: ``lambda: 1.0`` is refused
    with a ``TypeError`` naming ``coeff_schedule``).  A class
    (``DecaySchedule`` rather than ``DecaySchedule(rate=0.9)``) is refused with a
    ``TypeError``: called with a step it would build a schedule, not give a multiplier.
    """
    if obj is None or isinstance(obj, _BUILTIN):
        return obj
    if isinstance(obj, type):
        raise ArgumentTypeError(
            f"coeff_schedule must be a schedule object such as {obj.__name__}(...), got the class "
            f"{obj.__module__}.{obj.__qualname__} itself; call it with its parameters, e.g. DecaySchedule(rate=0.9)"
        )
    if isinstance(obj, Mapping):
        return schedule_from_dict(obj)
    if callable(obj):
        _check_step_signature(obj)
        return obj
    names = "/".join(k.class_name for k in SCHEDULE_KINDS.values())
    raise ScheduleError(
        f"coeff_schedule must be None, a {names}, a dict from to_dict(), "
        f"or a callable step -> multiplier; got {type(obj).__name__}"
    )
