"""The search half of the autonomous loop: what to try next.

Three pieces, none of which touches a model:

* :class:`SteerSearchSpace` says what may be tried: a range of decoder layers
  (inclusive), a range of coefficient magnitudes, the concept texts (steered
  with positive coefficients) and negative texts (steered with negative
  coefficients), how many vectors one candidate may hold, and which
  coefficient schedules to try with their parameter ranges.
* :class:`SteerVector` and :class:`SteerCandidate` are immutable values: one
  ``Steer.add`` call, and a set of them.  A candidate has a canonical JSON form
  (sorted keys, vectors in a fixed order, floats rounded at creation), which is
  what the results log stores and what the search uses to never try the same
  configuration twice.
* :class:`AutoSteerSearch` proposes candidates and is told how each one did.

Determinism: :class:`AutoSteerSearch` draws from its own ``random.Random(seed)``
and nothing else, so its proposals depend only on the seed, the space and the
sequence of ``(score, status)`` values it was given.  That is what makes a run
reproducible and lets :meth:`AutoSteerRunner.run(resume=True)
<autosteer.runner.AutoSteerRunner.run>` replay a log and carry on exactly as an
uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import numbers
import random
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from autosteer.errors import InvalidArgumentError, SearchSpaceError

__all__ = [
    "SteerSearchSpace",
    "SteerVector",
    "SteerCandidate",
    "AutoSteerSearch",
    "SearchExhaustedError",
    "DEFAULT_TEXTS",
    "SCHEDULE_TYPES",
]

#: Concept texts of the default search space (steered with positive coefficients).
DEFAULT_TEXTS: tuple[str, ...] = ("logical", "precise", "analytical")

#: Schedule names a search space may list; ``"none"`` means a constant coefficient.
SCHEDULE_TYPES: tuple[str, ...] = ("none", "decay", "cosine", "warmup")

# Parameters of each schedule, in constructor order: name -> (kind, default range).
# "int" parameters are drawn as integers; "float" ones are rounded to 3
# significant digits so that their JSON form stays short and exact.
_SCHEDULE_PARAMS: dict[str, dict[str, tuple[str, tuple[float, float]]]] = {
    "decay": {
        "rate": ("float", (0.8, 0.99)),
        "min_multiplier": ("float", (0.0, 0.5)),
        "times_restart": ("int", (0, 0)),
    },
    "cosine": {
        "period": ("int", (4, 32)),
        "min_multiplier": ("float", (0.0, 0.5)),
    },
    "warmup": {
        "steps": ("int", (1, 8)),
        "start": ("float", (0.0, 0.5)),
    },
}

# Constructor defaults (a parameter absent here is required).
_SCHEDULE_DEFAULTS: dict[str, dict[str, Any]] = {
    "decay": {"rate": 1.0, "min_multiplier": 0.0, "times_restart": 0},
    "cosine": {"min_multiplier": 0.0},
    "warmup": {"start": 0.0},
}

_SCHEDULE_CLASSES = {"decay": "DecaySchedule", "cosine": "CosineSchedule", "warmup": "WarmupSchedule"}

# How many proposals the search draws before it concludes that everything
# reachable has been tried.
_MAX_ATTEMPTS = 200


class SearchExhaustedError(SearchSpaceError):
    """Every candidate the search can reach has already been evaluated."""


# --------------------------------------------------------------------------
# small helpers


def _canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no spaces, no NaN: one string per value."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _round_sig(x: float, digits: int) -> float:
    """Round to ``digits`` significant digits; ``-0.0`` becomes ``0.0``."""
    if x == 0:
        return 0.0
    return float(f"{x:.{digits}g}") + 0.0


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _norm_texts(name: str, texts: Any) -> tuple[str, ...]:
    if texts is None:
        return ()
    if isinstance(texts, str):
        texts = [texts]  # a lone string is one text, not a list of characters
    try:
        items = list(texts)
    except TypeError:
        raise SearchSpaceError(f"{name} must be a list of strings, got {type(texts).__name__}") from None
    out: list[str] = []
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise SearchSpaceError(f"{name}[{i}] must be a string, got {type(t).__name__}")
        if not t.strip():
            raise SearchSpaceError(f"{name}[{i}] is empty; every steering text needs at least one word")
        if t not in out:
            out.append(t)
    return tuple(out)


def _norm_schedule_dict(d: Any, where: str = "schedule") -> dict[str, Any] | None:
    """Validate a schedule dict (``{"type": ..., params}``) and return a clean copy."""
    if d is None:
        return None
    if hasattr(d, "to_dict") and not isinstance(d, Mapping):
        d = d.to_dict()
    if not isinstance(d, Mapping):
        raise InvalidArgumentError(f"{where} must be None or a dict with a 'type' key, got {type(d).__name__}")
    kind = d.get("type")
    if kind == "none":
        return None
    if kind not in _SCHEDULE_PARAMS:
        raise InvalidArgumentError(
            f"{where} has unknown type {kind!r}; expected one of {', '.join(map(repr, _SCHEDULE_PARAMS))}"
        )
    spec = _SCHEDULE_PARAMS[kind]
    unknown = sorted(set(d) - set(spec) - {"type"})
    if unknown:
        raise InvalidArgumentError(f"{where}: {kind} schedule has no parameter(s) {', '.join(unknown)}")
    out: dict[str, Any] = {"type": kind}
    for pname, (pkind, _range) in spec.items():
        value = d.get(pname, _SCHEDULE_DEFAULTS[kind].get(pname))
        if value is None:
            raise InvalidArgumentError(f"{where}: {kind} schedule needs {pname}")
        if pkind == "int":
            if not (_is_int(value) or (_is_real(value) and float(value).is_integer())):
                raise InvalidArgumentError(f"{where}: {kind} {pname} must be an integer, got {value!r}")
            out[pname] = int(value)
        else:
            if not _is_real(value) or not math.isfinite(value):
                raise InvalidArgumentError(f"{where}: {kind} {pname} must be a finite number, got {value!r}")
            out[pname] = float(value) + 0.0
    return out


def _schedule_code(sched: Mapping[str, Any]) -> str:
    params = ", ".join(f"{k}={sched[k]!r}" for k in _SCHEDULE_PARAMS[sched["type"]])
    return f"{_SCHEDULE_CLASSES[sched['type']]}({params})"


def _schedule_short(sched: Mapping[str, Any]) -> str:
    params = ",".join(f"{k}={sched[k]!r}" for k in _SCHEDULE_PARAMS[sched["type"]])
    return f"{sched['type']}({params})"


def _make_schedule(sched: Mapping[str, Any]):
    """Build the schedule object that ``Steer.add(coeff_schedule=...)`` takes."""
    from autosteer import schedules as _schedules  # imported lazily: the C core may be absent

    cls = getattr(_schedules, _SCHEDULE_CLASSES[sched["type"]])
    return cls(**{k: sched[k] for k in _SCHEDULE_PARAMS[sched["type"]]})


# --------------------------------------------------------------------------
# values


@dataclass(frozen=True)
class SteerVector:
    """One steering vector: ``Steer.add(layer_idx, coeff, text=text, coeff_schedule=schedule)``.

    ``schedule`` is ``None`` (constant coefficient) or a schedule dict such as
    ``{"type": "decay", "rate": 0.9, "min_multiplier": 0.2, "times_restart": 0}``;
    a schedule object with ``to_dict()`` is accepted too.  The dict is stored
    read-only, so a vector is immutable and hashable.
    """

    layer_idx: int
    coeff: float
    text: str
    schedule: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.layer_idx) or self.layer_idx < 0:
            raise InvalidArgumentError(f"layer_idx must be a non-negative integer, got {self.layer_idx!r}")
        if not _is_real(self.coeff) or not math.isfinite(self.coeff):
            raise InvalidArgumentError(f"coeff must be a finite number, got {self.coeff!r}")
        if not isinstance(self.text, str) or not self.text.strip():
            raise InvalidArgumentError(f"text must be a non-empty string, got {self.text!r}")
        sched = _norm_schedule_dict(self.schedule)
        object.__setattr__(self, "layer_idx", int(self.layer_idx))
        object.__setattr__(self, "coeff", float(self.coeff) + 0.0)
        object.__setattr__(self, "schedule", None if sched is None else MappingProxyType(sched))

    def __hash__(self) -> int:
        return hash(self.key())

    def to_dict(self) -> dict[str, Any]:
        """``{"layer_idx", "coeff", "text", "schedule"}`` with plain Python values."""
        return {
            "layer_idx": self.layer_idx,
            "coeff": self.coeff,
            "text": self.text,
            "schedule": None if self.schedule is None else dict(self.schedule),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SteerVector":
        """Inverse of :meth:`to_dict`; also accepts ``coeff_schedule`` (as ``Steer.get_all()`` writes)."""
        if not isinstance(d, Mapping):
            raise InvalidArgumentError(f"a vector must be a dict, got {type(d).__name__}")
        d = dict(d)
        if "coeff_schedule" in d and "schedule" not in d:
            d["schedule"] = d.pop("coeff_schedule")
        missing = [k for k in ("layer_idx", "coeff", "text") if k not in d]
        if missing:
            raise InvalidArgumentError(f"a vector needs {', '.join(missing)}; got keys {sorted(d)}")
        unknown = sorted(set(d) - {"layer_idx", "coeff", "text", "schedule"})
        if unknown:
            raise InvalidArgumentError(f"a vector has unknown key(s) {', '.join(unknown)}")
        return cls(d["layer_idx"], d["coeff"], d["text"], d.get("schedule"))

    def key(self) -> str:
        """Canonical JSON of the vector."""
        return _canonical_json(self.to_dict())

    def describe(self) -> str:
        """Short text such as ``L3 +0.4 "logical" decay(rate=0.9,...)``."""
        s = f"L{self.layer_idx} {self.coeff:+g} {json.dumps(self.text, ensure_ascii=False)}"
        if self.schedule is not None:
            s += " " + _schedule_short(self.schedule)
        return s

    def to_code(self, var: str = "steered") -> str:
        """The ``steered.add(...)`` line that reproduces this vector."""
        args = f"layer_idx={self.layer_idx}, coeff={self.coeff!r}, text={json.dumps(self.text, ensure_ascii=False)}"
        if self.schedule is not None:
            args += f", coeff_schedule={_schedule_code(self.schedule)}"
        return f"{var}.add({args})"


@dataclass(frozen=True)
class SteerCandidate:
    """An immutable set of :class:`SteerVector` s, the unit the search evaluates.

    The vectors are kept in a canonical order (by layer, then text, then
    coefficient, then schedule), so two candidates holding the same vectors are
    equal and have the same :meth:`key`.  They are applied in that order.
    An empty candidate means "no steering" (the baseline).
    """

    vectors: tuple[SteerVector, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        vecs = []
        for i, v in enumerate(self.vectors):
            if isinstance(v, Mapping):
                v = SteerVector.from_dict(v)
            if not isinstance(v, SteerVector):
                raise InvalidArgumentError(f"vectors[{i}] must be a SteerVector or a dict, got {type(v).__name__}")
            vecs.append(v)
        vecs.sort(key=lambda v: (v.layer_idx, v.text, v.coeff, v.key()))
        object.__setattr__(self, "vectors", tuple(vecs))

    def __hash__(self) -> int:
        return hash(self.key())

    def __len__(self) -> int:
        return len(self.vectors)

    def __iter__(self):
        return iter(self.vectors)

    def to_dict(self) -> dict[str, Any]:
        """``{"vectors": [vector dicts]}``."""
        return {"vectors": [v.to_dict() for v in self.vectors]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> "SteerCandidate":
        """Inverse of :meth:`to_dict`; a plain list of vector dicts (``Steer.get_all()``) works too."""
        if isinstance(d, Mapping):
            unknown = sorted(set(d) - {"vectors"})
            if unknown or "vectors" not in d:
                raise InvalidArgumentError(f"a candidate is {{'vectors': [...]}}, got keys {sorted(d)}")
            d = d["vectors"]
        if isinstance(d, (str, bytes)) or not isinstance(d, Iterable):
            raise InvalidArgumentError(f"a candidate's vectors must be a list, got {type(d).__name__}")
        return cls(tuple(SteerVector.from_dict(v) for v in d))

    @classmethod
    def from_json(cls, s: str) -> "SteerCandidate":
        """Parse the canonical JSON that :meth:`key` writes."""
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise InvalidArgumentError(f"not valid candidate JSON: {e}") from None
        return cls.from_dict(d)

    def key(self) -> str:
        """Canonical JSON (sorted keys, vectors in canonical order); equal candidates, equal keys."""
        return _canonical_json(self.to_dict())

    to_json = key

    def describe(self) -> str:
        """One line such as ``L3 +0.4 "logical" + L5 -0.2 "confused" decay(...)``."""
        if not self.vectors:
            return "no steering"
        return " + ".join(v.describe() for v in self.vectors)

    def apply(self, steer) -> None:
        """Add every vector to ``steer`` (an :class:`autosteer.Steer`) with ``steer.add``."""
        for v in self.vectors:
            sched = None if v.schedule is None else _make_schedule(v.schedule)
            steer.add(layer_idx=v.layer_idx, coeff=v.coeff, text=v.text, coeff_schedule=sched)

    def to_code(self, var: str = "steered", imports: bool = True) -> str:
        """Python lines that reproduce this candidate, ready to paste::

            from autosteer import Steer, DecaySchedule
            steered = Steer(model, tokenizer)
            steered.add(layer_idx=3, coeff=0.4, text="logical", coeff_schedule=DecaySchedule(...))
        """
        lines = []
        if imports:
            names = ["Steer"] + sorted({_SCHEDULE_CLASSES[v.schedule["type"]] for v in self.vectors if v.schedule})
            lines.append(f"from autosteer import {', '.join(names)}")
        lines.append(f"{var} = Steer(model, tokenizer)")
        lines.extend(v.to_code(var) for v in self.vectors)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


# --------------------------------------------------------------------------
# the space


def _norm_range(name: str, value: Any, *, integer: bool, error=SearchSpaceError) -> tuple:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise error(f"{name} must be a (low, high) pair, got {value!r}") from None
    for x in (lo, hi):
        if integer:
            if not _is_int(x):
                raise error(f"{name} must hold integers, got {value!r}")
        elif not _is_real(x) or not math.isfinite(x):
            raise error(f"{name} must hold finite numbers, got {value!r}")
    if lo > hi:
        raise error(f"{name} {value!r} is empty: low must be <= high")
    return (int(lo), int(hi)) if integer else (float(lo) + 0.0, float(hi) + 0.0)


@dataclass(frozen=True, eq=False)
class SteerSearchSpace:
    """What the search may try.

    Parameters
    ----------
    layer_range:
        ``(first, last)`` decoder layer indices, inclusive.  ``None`` means the
        model's middle layers, fixed by :meth:`resolve` once the number of
        layers is known: ``(L // 4, L - 1 - L // 4)``, e.g. 8..23 of 32.
    coeff_range:
        ``(low, high)`` coefficient *magnitudes*, ``0 <= low <= high``, ``high > 0``.
        Texts get ``+magnitude``, negative texts ``-magnitude``.
    texts, negative_texts:
        Concept texts steered towards / away from.  At least one text overall;
        a single string counts as one text; duplicates are dropped.
    max_vectors:
        Most vectors in one candidate (default 2).  Two vectors never share
        both layer and text.
    schedules:
        Schedule names to try, from ``"none"`` (constant), ``"decay"``,
        ``"cosine"``, ``"warmup"``.  When a vector's schedule is drawn,
        ``"none"`` has probability 1/2 if listed (constant steering is the
        usual winner) and the other listed names share the rest.
    schedule_ranges:
        Overrides of the parameter ranges, e.g.
        ``{"decay": {"rate": (0.85, 0.95), "times_restart": (0, 2)}}``.
        Defaults: decay rate 0.8..0.99, min_multiplier 0..0.5,
        times_restart 0..0; cosine period 4..32, min_multiplier 0..0.5;
        warmup steps 1..8, start 0..0.5.  A single number fixes a parameter.
    coeff_scale:
        ``"log"`` (default) draws magnitudes log-uniformly, which spends as
        many trials on 0.05..0.2 as on 0.25..1.0: good optima usually sit at
        small coefficients.  ``"linear"`` draws uniformly.  A range starting
        at 0 is always drawn linearly.

    Coefficients are rounded to 4 significant digits and float schedule
    parameters to 3, so the candidates' JSON is short and exact.
    """

    layer_range: tuple[int, int] | None = None
    coeff_range: tuple[float, float] = (0.05, 1.0)
    texts: tuple[str, ...] = DEFAULT_TEXTS
    negative_texts: tuple[str, ...] = ()
    max_vectors: int = 2
    schedules: tuple[str, ...] = SCHEDULE_TYPES
    schedule_ranges: Mapping[str, Mapping[str, tuple]] | None = None
    coeff_scale: str = "log"

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if self.layer_range is not None:
            lr = _norm_range("layer_range", self.layer_range, integer=True)
            if lr[0] < 0:
                raise SearchSpaceError(f"layer_range {self.layer_range!r} starts below layer 0")
            set_("layer_range", lr)
        cr = _norm_range("coeff_range", self.coeff_range, integer=False)
        if cr[0] < 0:
            raise SearchSpaceError(
                f"coeff_range {self.coeff_range!r} holds magnitudes and must be >= 0; "
                "put texts to steer away from in negative_texts"
            )
        if cr[1] <= 0:
            raise SearchSpaceError(f"coeff_range {self.coeff_range!r} is empty: a zero coefficient steers nothing")
        set_("coeff_range", cr)
        texts = _norm_texts("texts", self.texts)
        neg = _norm_texts("negative_texts", self.negative_texts)
        if not texts and not neg:
            raise SearchSpaceError("texts is empty: the search needs at least one concept text to steer with")
        set_("texts", texts)
        set_("negative_texts", neg)
        if not _is_int(self.max_vectors) or self.max_vectors < 1:
            raise SearchSpaceError(f"max_vectors must be an integer >= 1, got {self.max_vectors!r}")
        set_("max_vectors", int(self.max_vectors))
        scheds = (self.schedules,) if isinstance(self.schedules, str) else tuple(self.schedules or ())
        if not scheds:
            raise SearchSpaceError("schedules is empty; use ('none',) for constant coefficients only")
        for s in scheds:
            if s not in SCHEDULE_TYPES:
                raise SearchSpaceError(f"unknown schedule {s!r}; expected one of {', '.join(map(repr, SCHEDULE_TYPES))}")
        set_("schedules", tuple(dict.fromkeys(scheds)))
        set_("schedule_ranges", MappingProxyType(self._resolve_schedule_ranges(self.schedule_ranges)))
        if self.coeff_scale not in ("log", "linear"):
            raise SearchSpaceError(f"coeff_scale must be 'log' or 'linear', got {self.coeff_scale!r}")

    @staticmethod
    def _resolve_schedule_ranges(overrides) -> dict[str, Mapping[str, tuple]]:
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(_SCHEDULE_PARAMS))
        if unknown:
            raise SearchSpaceError(
                f"schedule_ranges has unknown schedule(s) {', '.join(map(repr, unknown))}; "
                f"expected {', '.join(map(repr, _SCHEDULE_PARAMS))}"
            )
        out: dict[str, Mapping[str, tuple]] = {}
        for kind, spec in _SCHEDULE_PARAMS.items():
            given = dict(overrides.get(kind) or {})
            bad = sorted(set(given) - set(spec))
            if bad:
                raise SearchSpaceError(f"schedule_ranges[{kind!r}] has unknown parameter(s) {', '.join(bad)}")
            ranges: dict[str, tuple] = {}
            for pname, (pkind, default) in spec.items():
                value = given.get(pname, default)
                if _is_real(value):
                    value = (value, value)
                integer = pkind == "int"
                if integer and isinstance(value, (tuple, list)) and all(_is_real(x) and float(x).is_integer() for x in value):
                    value = tuple(int(x) for x in value)
                ranges[pname] = _norm_range(f"schedule_ranges[{kind!r}][{pname!r}]", value, integer=integer)
            _check_schedule_ranges(kind, ranges)
            out[kind] = MappingProxyType(ranges)
        return out

    # -- model binding ------------------------------------------------------

    def resolve(self, num_layers: int, model_name: str = "the model") -> "SteerSearchSpace":
        """Fix the default layer range and check the space fits a model with ``num_layers`` layers.

        Raises :class:`SearchSpaceError` naming the model and its layers when
        ``layer_range`` reaches outside ``0..num_layers-1``.
        """
        if not _is_int(num_layers) or num_layers < 1:
            raise SearchSpaceError(f"{model_name} has no decoder layers to steer (num_layers={num_layers!r})")
        if self.layer_range is None:
            q = num_layers // 4
            return self.replace(layer_range=(q, max(q, num_layers - 1 - q)))
        lo, hi = self.layer_range
        if hi >= num_layers:
            raise SearchSpaceError(
                f"layer_range {self.layer_range!r} is outside the model: {model_name} has "
                f"{num_layers} decoder layers (0..{num_layers - 1})"
            )
        return self

    def replace(self, **changes: Any) -> "SteerSearchSpace":
        """A copy with some fields changed (validated again)."""
        d = self.to_dict()
        d.update(changes)
        return SteerSearchSpace.from_dict(d)

    # -- serialisation ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; :meth:`from_dict` rebuilds an equal space."""
        return {
            "layer_range": None if self.layer_range is None else list(self.layer_range),
            "coeff_range": list(self.coeff_range),
            "texts": list(self.texts),
            "negative_texts": list(self.negative_texts),
            "max_vectors": self.max_vectors,
            "schedules": list(self.schedules),
            "schedule_ranges": {k: {p: list(r) for p, r in v.items()} for k, v in self.schedule_ranges.items()},
            "coeff_scale": self.coeff_scale,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SteerSearchSpace":
        d = dict(d)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise SearchSpaceError(f"unknown search space field(s) {', '.join(unknown)}")
        for k in ("layer_range", "coeff_range"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        if d.get("schedule_ranges"):
            d["schedule_ranges"] = {
                k: {p: tuple(r) if isinstance(r, list) else r for p, r in v.items()}
                for k, v in d["schedule_ranges"].items()
            }
        return cls(**d)

    def key(self) -> str:
        """Canonical JSON of :meth:`to_dict`."""
        return _canonical_json(self.to_dict())

    def __repr__(self) -> str:
        d = self.to_dict()
        d["schedule_ranges"] = {k: {p: tuple(r) for p, r in v.items()} for k, v in d["schedule_ranges"].items()}
        for k in ("layer_range", "coeff_range", "texts", "negative_texts", "schedules"):
            if d[k] is not None:
                d[k] = tuple(d[k])
        return "SteerSearchSpace(" + ", ".join(f"{k}={v!r}" for k, v in d.items()) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SteerSearchSpace) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    # -- what is in the space ----------------------------------------------

    @property
    def signed_texts(self) -> tuple[tuple[str, int], ...]:
        """``(text, +1)`` for each text and ``(text, -1)`` for each negative text."""
        return tuple((t, 1) for t in self.texts) + tuple((t, -1) for t in self.negative_texts)

    def contains(self, candidate: SteerCandidate) -> bool:
        """Whether the search could propose ``candidate`` (layers, texts, signs, magnitudes, schedules)."""
        if not 1 <= len(candidate) <= self.max_vectors or self.layer_range is None:
            return False
        lo, hi = self.layer_range
        seen = set()
        for v in candidate:
            sign = 1 if v.coeff > 0 else -1
            if (v.layer_idx, v.text) in seen or not lo <= v.layer_idx <= hi:
                return False
            seen.add((v.layer_idx, v.text))
            if (v.text, sign) not in self.signed_texts:
                return False
            if not self.coeff_range[0] <= abs(v.coeff) <= self.coeff_range[1]:
                return False
            kind = "none" if v.schedule is None else v.schedule["type"]
            if kind not in self.schedules:
                return False
        return True


def _check_schedule_ranges(kind: str, r: Mapping[str, tuple]) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise SearchSpaceError(f"schedule_ranges[{kind!r}]: {msg}")

    if kind == "decay":
        need(0 < r["rate"][0] and r["rate"][1] <= 1, f"rate {r['rate']!r} must lie in (0, 1]")
        need(0 <= r["min_multiplier"][0] and r["min_multiplier"][1] <= 1, "min_multiplier must lie in [0, 1]")
        need(r["times_restart"][0] >= 0, "times_restart must be >= 0")
        if r["times_restart"][1] > 0:
            need(
                r["min_multiplier"][0] > 0 and r["rate"][1] < 1 and r["min_multiplier"][1] < 1,
                "restarts need 0 < rate < 1 and 0 < min_multiplier < 1",
            )
    elif kind == "cosine":
        need(r["period"][0] >= 1, f"period {r['period']!r} must be >= 1")
        need(0 <= r["min_multiplier"][0] and r["min_multiplier"][1] <= 1, "min_multiplier must lie in [0, 1]")
    elif kind == "warmup":
        need(r["steps"][0] >= 1, f"steps {r['steps']!r} must be >= 1")
        need(0 <= r["start"][0] and r["start"][1] <= 1, "start must lie in [0, 1]")


# --------------------------------------------------------------------------
# the search


_STATUSES = ("keep", "discard", "crash")


class AutoSteerSearch:
    """Propose candidates from a :class:`SteerSearchSpace`; learn from their outcome.

    Usage::

        search = AutoSteerSearch(space.resolve(num_layers), seed=42, patience=5)
        for _ in range(30):
            cand = search.propose()
            score = evaluate(cand)
            search.record(score, "keep" if better(score) else "discard")

    Strategy:

    * While nothing has beaten the baseline, and in *explore* mode, every
      proposal is a fresh random sample: 1..``max_vectors`` vectors, each with
      a random layer, signed text, magnitude and schedule.
    * Otherwise it *exploits*: it perturbs the best candidate with one move
      drawn uniformly from those that apply: shift a layer by 1 or 2, scale a
      coefficient by a factor in [1.1, 2] up or down, swap a text for another
      (the sign follows the text's list), change or drop a schedule, add a
      random vector, remove a vector.
    * After ``patience`` consecutive non-keeps (discards and crashes both
      count) it switches to explore mode, and stays there until a proposal is
      kept.
    * A candidate already proposed (including the empty baseline) is never
      proposed again: a duplicate is redrawn, up to 200 draws of the current
      kind and then 200 fresh random samples; if all of those were tried
      :class:`SearchExhaustedError` is raised.

    The search keeps its own ``random.Random(seed)``; the proposals depend only
    on the seed, the space and the ``(score, status)`` sequence recorded.
    """

    def __init__(self, space: SteerSearchSpace, seed: int = 0, patience: int = 5) -> None:
        if not isinstance(space, SteerSearchSpace):
            raise InvalidArgumentError(f"space must be a SteerSearchSpace, got {type(space).__name__}")
        if space.layer_range is None:
            raise SearchSpaceError(
                "the search space has no layer_range yet; call space.resolve(num_layers) "
                "or give layer_range=(first, last)"
            )
        if not _is_int(seed):
            raise InvalidArgumentError(f"seed must be an integer, got {seed!r}")
        if not _is_int(patience) or patience < 1:
            raise InvalidArgumentError(f"patience must be an integer >= 1, got {patience!r}")
        self.space = space
        self.seed = int(seed)
        self.patience = int(patience)
        self._rng = random.Random(self.seed)
        self._tried: set[str] = {SteerCandidate().key()}
        self._pending: SteerCandidate | None = None
        self._pending_mode: str | None = None
        self.best_candidate: SteerCandidate | None = None
        self.best_score: float | None = None
        self.history: list[tuple[SteerCandidate, float | None, str]] = []
        self.non_keeps = 0
        self.exploring = False

    # -- public -------------------------------------------------------------

    @property
    def pending(self) -> SteerCandidate | None:
        """The candidate proposed and not yet recorded, if any."""
        return self._pending

    @property
    def mode(self) -> str:
        """``"explore"`` (random samples) or ``"exploit"`` (perturb the best)."""
        return "explore" if self.exploring or self.best_candidate is None else "exploit"

    def propose(self) -> SteerCandidate:
        """The next candidate to evaluate; the same one again until :meth:`record` is called."""
        if self._pending is not None:
            return self._pending
        mode = self.mode
        cand = None
        if mode == "exploit":
            cand = self._draw(self._perturb)
        if cand is None:
            cand = self._draw(self._random_candidate)
        if cand is None:
            raise SearchExhaustedError(
                f"every candidate the search could reach has been tried ({len(self._tried) - 1} so far); "
                "widen the search space"
            )
        self._tried.add(cand.key())
        self._pending = cand
        self._pending_mode = mode
        return cand

    def record(self, score: float | None, status: str) -> None:
        """Report the outcome of the pending proposal: ``status`` is keep, discard or crash."""
        if self._pending is None:
            raise InvalidArgumentError("record() called with no pending proposal; call propose() first")
        if status not in _STATUSES:
            raise InvalidArgumentError(f"status must be one of {', '.join(_STATUSES)}, got {status!r}")
        if status == "keep":
            if score is None or not math.isfinite(score):
                raise InvalidArgumentError(f"a kept candidate needs a finite score, got {score!r}")
            self.best_candidate = self._pending
            self.best_score = float(score)
            self.non_keeps = 0
            self.exploring = False
        else:
            self.non_keeps += 1
            if self.non_keeps >= self.patience:
                self.exploring = True
        self.history.append((self._pending, None if score is None else float(score), status))
        self._pending = None
        self._pending_mode = None

    def tried(self, candidate: SteerCandidate) -> bool:
        """Whether ``candidate`` was already proposed."""
        return candidate.key() in self._tried

    # -- drawing --------------------------------------------------------------

    def _draw(self, maker) -> SteerCandidate | None:
        for _ in range(_MAX_ATTEMPTS):
            cand = maker()
            if cand is not None and cand.key() not in self._tried:
                return cand
        return None

    def _magnitude(self) -> float:
        lo, hi = self.space.coeff_range
        if lo == hi:
            return lo
        if self.space.coeff_scale == "log" and lo > 0:
            x = math.exp(self._rng.uniform(math.log(lo), math.log(hi)))
        else:
            x = self._rng.uniform(lo, hi)
        return self._clip_coeff(x)

    def _clip_coeff(self, x: float) -> float:
        lo, hi = self.space.coeff_range
        x = _round_sig(min(max(x, lo), hi), 4)
        # rounding may step just outside the range; the bounds themselves are exact
        return min(max(x, lo), hi)

    def _schedule(self, exclude: str | None = None) -> dict[str, Any] | None:
        names = [s for s in self.space.schedules if s != exclude]
        if not names:
            return None
        if "none" in names and len(names) > 1:
            kind = "none" if self._rng.random() < 0.5 else self._rng.choice([s for s in names if s != "none"])
        else:
            kind = self._rng.choice(names)
        if kind == "none":
            return None
        out: dict[str, Any] = {"type": kind}
        for pname, (pkind, _) in _SCHEDULE_PARAMS[kind].items():
            lo, hi = self.space.schedule_ranges[kind][pname]
            if pkind == "int":
                out[pname] = self._rng.randint(lo, hi)
            else:
                out[pname] = min(max(_round_sig(self._rng.uniform(lo, hi), 3), lo), hi)
        return out

    def _random_vector(self, taken: set[tuple[int, str]]) -> SteerVector | None:
        lo, hi = self.space.layer_range
        for _ in range(20):
            layer = self._rng.randint(lo, hi)
            text, sign = self._rng.choice(self.space.signed_texts)
            if (layer, text) not in taken:
                return SteerVector(layer, sign * self._magnitude(), text, self._schedule())
        return None

    def _random_candidate(self) -> SteerCandidate | None:
        n = self._rng.randint(1, self.space.max_vectors)
        vecs: list[SteerVector] = []
        taken: set[tuple[int, str]] = set()
        for _ in range(n):
            v = self._random_vector(taken)
            if v is None:
                break
            vecs.append(v)
            taken.add((v.layer_idx, v.text))
        return SteerCandidate(tuple(vecs)) if vecs else None

    def _perturb(self) -> SteerCandidate | None:
        best = list(self.best_candidate.vectors)
        space = self.space
        moves = []
        if space.layer_range[0] < space.layer_range[1]:
            moves.append("shift_layer")
        if space.coeff_range[0] < space.coeff_range[1]:
            moves.append("scale_coeff")
        if len(space.signed_texts) > 1:
            moves.append("swap_text")
        if space.schedules != ("none",):
            moves.append("change_schedule")
        if len(best) < space.max_vectors:
            moves.append("add_vector")
        if len(best) > 1:
            moves.append("remove_vector")
        if not moves:
            return None
        move = self._rng.choice(moves)
        i = self._rng.randrange(len(best))
        v = best[i]
        taken = {(w.layer_idx, w.text) for j, w in enumerate(best) if j != i}
        if move == "shift_layer":
            lo, hi = space.layer_range
            layer = min(max(v.layer_idx + self._rng.choice((-2, -1, 1, 2)), lo), hi)
            if (layer, v.text) in taken:
                return None
            best[i] = SteerVector(layer, v.coeff, v.text, v.schedule)
        elif move == "scale_coeff":
            factor = math.exp(self._rng.uniform(math.log(1.1), math.log(2.0)))
            if self._rng.random() < 0.5:
                factor = 1.0 / factor
            sign = 1.0 if v.coeff > 0 else -1.0
            best[i] = SteerVector(v.layer_idx, sign * self._clip_coeff(abs(v.coeff) * factor), v.text, v.schedule)
        elif move == "swap_text":
            sign = 1 if v.coeff > 0 else -1
            choices = [ts for ts in space.signed_texts if ts != (v.text, sign)]
            text, new_sign = self._rng.choice(choices)
            if (v.layer_idx, text) in taken:
                return None
            best[i] = SteerVector(v.layer_idx, new_sign * abs(v.coeff), text, v.schedule)
        elif move == "change_schedule":
            current = "none" if v.schedule is None else v.schedule["type"]
            # "change" re-draws the parameters of the same kind or switches kind;
            # "drop" is the "none" outcome of the draw.
            best[i] = SteerVector(v.layer_idx, v.coeff, v.text, self._schedule())
            if best[i].key() == v.key() and current == "none":
                best[i] = SteerVector(v.layer_idx, v.coeff, v.text, self._schedule(exclude="none"))
        elif move == "add_vector":
            w = self._random_vector({(x.layer_idx, x.text) for x in best})
            if w is None:
                return None
            best.append(w)
        elif move == "remove_vector":
            del best[i]
        return SteerCandidate(tuple(best))

