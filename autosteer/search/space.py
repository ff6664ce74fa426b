"""What a search may try: :class:`SteerSearchSpace`.

A space is a value (frozen, comparable, JSON round trip).  It knows nothing of
any model until :meth:`SteerSearchSpace.resolve` fixes the default layer range
and checks the space against a model's number of layers.  Schedule names and
their parameter ranges come from the schedule table
(:data:`autosteer.steering.schedules.SCHEDULE_KINDS`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from autosteer._canonical import canonical_json
from autosteer._checks import check_list, is_int, is_real
from autosteer._checks import describe as _describe
from autosteer.errors import AutoSteerError, InvalidArgumentError, SearchSpaceError
from autosteer.search.candidate import PROMPT_ROLES, SteerCandidate
from autosteer.steering.concept import Concept

__all__ = ["DEFAULT_TEXTS", "SteerSearchSpace", "schedule_types"]

#: Concept texts of the default search space (steered with positive coefficients).
DEFAULT_TEXTS: tuple[str, ...] = ("logical", "precise", "analytical")


def _kinds():
    from autosteer.steering.schedules import SCHEDULE_KINDS

    return SCHEDULE_KINDS


def schedule_types() -> tuple[str, ...]:
    """Schedule names a space may list: ``"none"`` (constant) and every kind of the table."""
    return ("none", *_kinds())


def _norm_texts(name: str, texts: Any) -> tuple:
    """Texts (strings) and concepts (Concept objects, or their dicts), duplicates dropped."""
    if texts is None:
        return ()
    if isinstance(texts, (str, Concept)):
        texts = [texts]  # a lone string is one text, not a list of characters
    items = check_list(name, texts, "strings or Concepts")
    out: list = []
    for i, t in enumerate(items):
        if isinstance(t, Mapping):
            try:
                t = Concept.from_dict(t)
            except InvalidArgumentError as exc:
                raise SearchSpaceError(f"{name}[{i}]: {exc}") from None
        if isinstance(t, Concept):
            if any(isinstance(o, Concept) and o.name == t.name and o != t for o in out):
                raise SearchSpaceError(f"{name}[{i}]: two different concepts are named {t.name!r}")
        elif not isinstance(t, str):
            raise SearchSpaceError(f"{name}[{i}] must be a string or a Concept, got {_describe(t)}")
        elif not t.strip():
            raise SearchSpaceError(f"{name}[{i}] is empty; every steering text needs at least one word")
        if t not in out:
            out.append(t)
    return tuple(out)


def _text_json(t) -> Any:
    return t.to_dict() if isinstance(t, Concept) else t


def _norm_range(name: str, value: Any, *, integer: bool) -> tuple:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise SearchSpaceError(f"{name} must be a (low, high) pair, got {value!r}") from None
    for x in (lo, hi):
        if integer:
            if not is_int(x):
                raise SearchSpaceError(f"{name} must hold integers, got {value!r}")
        elif not is_real(x) or not math.isfinite(x):
            raise SearchSpaceError(f"{name} must hold finite numbers, got {value!r}")
    if lo > hi:
        raise SearchSpaceError(f"{name} {value!r} is empty: low must be <= high")
    return (int(lo), int(hi)) if integer else (float(lo) + 0.0, float(hi) + 0.0)


def _domain_text(d) -> str:
    lo = "-inf" if d.min is None else f"{d.min:g}"
    hi = "inf" if d.max is None else f"{d.max:g}"
    return f"{'(' if d.min_open or d.min is None else '['}{lo}, {hi}{')' if d.max_open or d.max is None else ']'}"


def _resolve_schedule_ranges(overrides) -> dict[str, Mapping[str, tuple]]:
    kinds = _kinds()
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(kinds))
    if unknown:
        raise SearchSpaceError(
            f"schedule_ranges has unknown schedule(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(map(repr, kinds))}"
        )
    out: dict[str, Mapping[str, tuple]] = {}
    for kind, spec in kinds.items():
        given = dict(overrides.get(kind) or {})
        bad = sorted(set(given) - {p.name for p in spec.params})
        if bad:
            raise SearchSpaceError(f"schedule_ranges[{kind!r}] has unknown parameter(s) {', '.join(bad)}")
        ranges: dict[str, tuple] = {}
        for p in spec.params:
            where = f"schedule_ranges[{kind!r}][{p.name!r}]"
            value = given.get(p.name, p.search_range)
            if is_real(value):
                value = (value, value)  # a single number fixes the parameter
            integer = p.kind == "int"
            if (
                integer
                and isinstance(value, (tuple, list))
                and all(is_real(x) and float(x).is_integer() for x in value)
            ):
                value = tuple(int(x) for x in value)
            rng = _norm_range(where, value, integer=integer)
            for x in rng:
                if x not in p.search_domain:
                    raise SearchSpaceError(f"{where}: {p.name} {value!r} must lie in {_domain_text(p.search_domain)}")
            ranges[p.name] = rng
        # every corner of the box must be a valid schedule (the cross-parameter rules
        # live in the schedule table: e.g. decay restarts need 0 < rate < 1)
        names = [p.name for p in spec.params]
        for corner in itertools.product(*(ranges[n] for n in names)):
            params = dict(zip(names, corner))
            try:
                spec.cls(**params)
            except AutoSteerError as exc:
                raise SearchSpaceError(f"schedule_ranges[{kind!r}]: {exc} (at {params})") from None
        out[kind] = MappingProxyType(ranges)
    return out


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
        What to steer towards / away from: texts (llm_steer's single-text
        directions) and :class:`~autosteer.Concept` objects (contrastive
        directions, what steers a real model), mixed freely.  At least one
        overall; a single string counts as one text; duplicates are dropped.
    max_vectors:
        Most vectors in one candidate (default 2).  Two vectors never share
        both layer and text.
    schedules:
        Schedule names to try: ``"none"`` (constant) and the kinds of the
        schedule table (``"decay"``, ``"cosine"``, ``"warmup"``).  When a
        vector's schedule is drawn, ``"none"`` has probability 1/2 if listed
        (constant steering is the usual winner) and the other listed names
        share the rest.
    schedule_ranges:
        Overrides of the parameter ranges, e.g.
        ``{"decay": {"rate": (0.85, 0.95), "times_restart": (0, 2)}}``.
        The defaults are the search ranges of the schedule table: decay rate
        0.8..0.99, min_multiplier 0..0.5, times_restart 0..0; cosine period
        4..32, min_multiplier 0..0.5; warmup steps 1..8, start 0..0.5.  A
        single number fixes a parameter.  Every corner of the ranges must be
        a valid schedule.
    coeff_scale:
        ``"log"`` (default) draws magnitudes log-uniformly, which spends as
        many trials on 0.05..0.2 as on 0.25..1.0: good optima usually sit at
        small coefficients.  ``"linear"`` draws uniformly.  A range starting
        at 0 is always drawn linearly.
    system_prompts:
        System messages the search may put before each request (default
        none: steering only).  With some, every candidate also draws one of
        ``(None, *system_prompts)``, so the best may be steering, a prompt,
        or prompt + steering; each prompt alone (no vectors) is evaluated in
        the first round, so prompting alone is always in the log beside the
        steered candidates.  Needs ``chat=True`` (the tokenizer's chat template).
        Answers are judged against the plain request either way (see
        :mod:`autosteer.search.objective`).
    prompt_role:
        Where a system prompt goes: ``"system"`` (default), a system message
        before the request; ``"user"``, after the request's text in the
        user's turn, a blank line between.  Small chat models often ignore
        system messages (SmolLM2-135M-Instruct does) but partly follow the
        same sentence in the user's turn.

    Strategies round coefficients to 4 significant digits and float schedule
    parameters to 3, so the candidates' JSON is short and exact.
    """

    layer_range: tuple[int, int] | None = None
    coeff_range: tuple[float, float] = (0.05, 1.0)
    texts: tuple[str, ...] = DEFAULT_TEXTS
    negative_texts: tuple[str, ...] = ()
    max_vectors: int = 2
    # None in __init__ means every kind / the table's ranges; __post_init__ always replaces it
    schedules: tuple[str, ...] = None  # type: ignore[assignment]  # see the line above
    schedule_ranges: Mapping[str, Mapping[str, tuple]] = None  # type: ignore[assignment]  # see above
    coeff_scale: str = "log"
    system_prompts: tuple[str, ...] = ()
    prompt_role: str = "system"

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
        if not is_int(self.max_vectors) or self.max_vectors < 1:
            raise SearchSpaceError(f"max_vectors must be an integer >= 1, got {self.max_vectors!r}")
        set_("max_vectors", int(self.max_vectors))
        known = schedule_types()
        if self.schedules is None:
            scheds = known
        else:
            scheds = (
                (self.schedules,)
                if isinstance(self.schedules, str)
                else tuple(check_list("schedules", self.schedules, "schedule names"))
            )
        if not scheds:
            raise SearchSpaceError("schedules is empty; use ('none',) for constant coefficients only")
        for s in scheds:
            if s not in known:
                raise SearchSpaceError(f"unknown schedule {s!r}; expected one of {', '.join(map(repr, known))}")
        set_("schedules", tuple(dict.fromkeys(scheds)))
        set_("schedule_ranges", MappingProxyType(_resolve_schedule_ranges(self.schedule_ranges)))
        if self.coeff_scale not in ("log", "linear"):
            raise SearchSpaceError(f"coeff_scale must be 'log' or 'linear', got {self.coeff_scale!r}")
        systems = self.system_prompts
        if systems is None:
            systems = ()
        elif isinstance(systems, str):
            systems = (systems,)  # a lone string is one prompt, not a list of characters
        items = tuple(check_list("system_prompts", systems, "strings"))
        for i, t in enumerate(items):
            if not isinstance(t, str) or not t.strip():
                raise SearchSpaceError(f"system_prompts[{i}] must be a non-empty string, got {_describe(t)}")
        set_("system_prompts", tuple(dict.fromkeys(items)))
        if self.prompt_role not in PROMPT_ROLES:
            raise SearchSpaceError(f"prompt_role must be 'system' or 'user', got {_describe(self.prompt_role)}")

    # -- model binding ------------------------------------------------------

    def resolve(self, num_layers: int, model_name: str = "the model") -> SteerSearchSpace:
        """Fix the default layer range and check the space fits a model with ``num_layers`` layers.

        Raises :class:`SearchSpaceError` naming the model and its layers when
        ``layer_range`` reaches outside ``0..num_layers-1``.
        """
        if not is_int(num_layers) or num_layers < 1:
            raise SearchSpaceError(f"{model_name} has no decoder layers to steer (num_layers={num_layers!r})")
        if self.layer_range is None:
            q = num_layers // 4
            return self.replace(layer_range=(q, max(q, num_layers - 1 - q)))
        _lo, hi = self.layer_range
        if hi >= num_layers:
            raise SearchSpaceError(
                f"layer_range {self.layer_range!r} is outside the model: {model_name} has "
                f"{num_layers} decoder layers (0..{num_layers - 1})"
            )
        return self

    def replace(self, **changes: Any) -> SteerSearchSpace:
        """A copy with some fields changed (validated again)."""
        d = self.to_dict()
        d.update(changes)
        return SteerSearchSpace.from_dict(d)

    # -- serialisation ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; :meth:`from_dict` rebuilds an equal space."""
        d: dict[str, Any] = {
            "layer_range": None if self.layer_range is None else list(self.layer_range),
            "coeff_range": list(self.coeff_range),
            "texts": [_text_json(t) for t in self.texts],
            "negative_texts": [_text_json(t) for t in self.negative_texts],
            "max_vectors": self.max_vectors,
            "schedules": list(self.schedules),
            "schedule_ranges": {k: {p: list(r) for p, r in v.items()} for k, v in self.schedule_ranges.items()},
            "coeff_scale": self.coeff_scale,
        }
        if self.system_prompts:  # absent otherwise: steering-only spaces keep their key (and run ids)
            d["system_prompts"] = list(self.system_prompts)
        if self.prompt_role != "system":  # absent by default: earlier spaces keep their key (and run ids)
            d["prompt_role"] = self.prompt_role
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SteerSearchSpace:
        if not isinstance(d, Mapping):
            raise SearchSpaceError(f"a search space must be a dict, got {_describe(d)}")
        d = dict(d)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise SearchSpaceError(f"unknown search space field(s) {', '.join(unknown)}")
        for k in ("layer_range", "coeff_range", "system_prompts"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        if isinstance(d.get("schedule_ranges"), Mapping):
            d["schedule_ranges"] = {
                k: {p: tuple(r) if isinstance(r, list) else r for p, r in v.items()} if isinstance(v, Mapping) else v
                for k, v in d["schedule_ranges"].items()
            }
        return cls(**d)

    def key(self) -> str:
        """Canonical JSON of :meth:`to_dict`."""
        return canonical_json(self.to_dict())

    def __repr__(self) -> str:
        d = self.to_dict()
        d["schedule_ranges"] = {k: {p: tuple(r) for p, r in v.items()} for k, v in d["schedule_ranges"].items()}
        for k in ("layer_range", "coeff_range", "schedules", "system_prompts"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        d["texts"], d["negative_texts"] = self.texts, self.negative_texts
        return "SteerSearchSpace(" + ", ".join(f"{k}={v!r}" for k, v in d.items()) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SteerSearchSpace) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    # -- what is in the space ----------------------------------------------

    @property
    def concepts(self) -> dict[str, Concept]:
        """The space's concepts, by content hash (to read candidates that name them)."""
        return {t.hash: t for t in (*self.texts, *self.negative_texts) if isinstance(t, Concept)}

    @property
    def signed_texts(self) -> tuple[tuple[str, int], ...]:
        """``(text, +1)`` for each text and ``(text, -1)`` for each negative text."""
        return tuple((t, 1) for t in self.texts) + tuple((t, -1) for t in self.negative_texts)

    def contains(self, candidate: SteerCandidate) -> bool:
        """Whether a strategy could propose ``candidate`` (layers, texts, signs, magnitudes,
        schedules, system prompt)."""
        system = candidate.system
        if system is not None and (system not in self.system_prompts or candidate.prompt_role != self.prompt_role):
            return False
        least = 0 if system is not None else 1  # a system prompt alone is prompting alone
        if not least <= len(candidate) <= self.max_vectors or self.layer_range is None:
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
            if v.schedule is not None:
                for p, (plo, phi) in self.schedule_ranges[kind].items():
                    if not plo <= v.schedule[p] <= phi:
                        return False
        return True
