"""What the search evaluates: :class:`SteerVector` (one ``Steer.add`` call) and
:class:`SteerCandidate` (a set of them).

Both are immutable values with a canonical JSON form (sorted keys, vectors in a
fixed order, floats as given), which is what the results log stores and what
strategies use to never try the same configuration twice.  A vector's
schedule is a plain dict such as ``{"type": "decay", "rate": 0.9, ...}``,
checked and completed against the schedule table of
:data:`autosteer.steering.schedules.SCHEDULE_KINDS`, so a new schedule kind needs no
change here.

A vector's source is a text (llm_steer's meaning) or a
:class:`~autosteer.steering.concept.Concept`.  In JSON a concept is named by
``{"name", "hash"}`` (its content hash); reading such JSON back needs the
concepts themselves (``concepts=``: a list, or a mapping from hash), which
``SteerCandidate.to_dict(full=True)`` carries along (``best.json``) and the
log keeps in its configuration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from autosteer._canonical import canonical_json
from autosteer._checks import check_bool, is_int, is_real
from autosteer._checks import describe as _describe
from autosteer.errors import InvalidArgumentError
from autosteer.steering.concept import Concept

__all__ = ["SteerCandidate", "SteerVector", "normalise_schedule"]


def _kinds():
    from autosteer.steering.schedules import SCHEDULE_KINDS

    return SCHEDULE_KINDS


def normalise_schedule(d: Any, where: str = "schedule") -> dict[str, Any] | None:
    """Check a schedule dict against the schedule table; return a complete, clean copy.

    ``None`` and ``{"type": "none"}`` mean a constant coefficient (``None``).
    Missing parameters are filled with the constructor defaults; a schedule
    object with ``to_dict()`` is accepted too.
    """
    if d is None:
        return None
    if hasattr(d, "to_dict") and not isinstance(d, Mapping):
        d = d.to_dict()
    if not isinstance(d, Mapping):
        raise InvalidArgumentError(f"{where} must be None or a dict with a 'type' key, got {_describe(d)}")
    kinds = _kinds()
    kind = d.get("type")
    if kind == "none":
        return None
    if kind not in kinds:
        raise InvalidArgumentError(
            f"{where} has unknown type {kind!r}; expected one of {', '.join(map(repr, ['none', *kinds]))}"
        )
    spec = kinds[kind]
    names = [p.name for p in spec.params]
    unknown = sorted(set(d) - set(names) - {"type"})
    if unknown:
        raise InvalidArgumentError(f"{where}: {kind} schedule has no parameter(s) {', '.join(unknown)}")
    out: dict[str, Any] = {"type": kind}
    for p in spec.params:
        value = d.get(p.name, p.default)
        if value is None:
            raise InvalidArgumentError(f"{where}: {kind} schedule needs {p.name}")
        if p.kind == "int":
            if not (is_int(value) or (is_real(value) and float(value).is_integer())):
                raise InvalidArgumentError(f"{where}: {kind} {p.name} must be an integer, got {_describe(value)}")
            out[p.name] = int(value)
        else:
            if not is_real(value) or not math.isfinite(value):
                raise InvalidArgumentError(f"{where}: {kind} {p.name} must be a finite number, got {_describe(value)}")
            out[p.name] = float(value) + 0.0
    return out


def _schedule_args(sched: Mapping[str, Any], sep: str) -> str:
    return sep.join(f"{p.name}={sched[p.name]!r}" for p in _kinds()[sched["type"]].params)


def schedule_object(sched: Mapping[str, Any] | None):
    """The schedule object that ``Steer.add(coeff_schedule=...)`` takes (None for constant)."""
    if sched is None:
        return None
    spec = _kinds()[sched["type"]]
    return spec.cls(**{p.name: sched[p.name] for p in spec.params})


def _concept_map(concepts) -> dict[str, Concept]:
    if concepts is None:
        return {}
    items = list(concepts.values()) if isinstance(concepts, Mapping) else list(concepts)
    out = {}
    for c in items:
        if isinstance(c, Mapping):
            c = Concept.from_dict(c)
        if not isinstance(c, Concept):
            raise InvalidArgumentError(f"concepts must hold Concept objects or their dicts, got {_describe(c)}")
        out[c.hash] = c
    return out


def source_key(source: str | Concept) -> str:
    """A sort key for a vector's source: the text, or the concept's name and hash."""
    return source if isinstance(source, str) else f"\x00concept {source.name} {source.hash}"


def source_code(source: str | Concept, names: Mapping[str, str] | None = None) -> str:
    """The ``text=...`` or ``concept=...`` argument of ``Steer.add`` for a source."""
    if isinstance(source, str):
        return f"text={json.dumps(source, ensure_ascii=False)}"
    return f"concept={(names or {}).get(source.hash, _identifier(source.name))}"


def _identifier(name: str) -> str:
    ident = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name.strip()).strip("_") or "concept"
    return ident if not ident[0].isdigit() else f"concept_{ident}"


@dataclass(frozen=True)
class SteerVector:
    """One steering vector: ``Steer.add(layer_idx, coeff, text=text, coeff_schedule=schedule)``.

    ``text`` is the vector's source: a text, or a :class:`~autosteer.Concept`
    (then ``Steer.add(..., concept=text)``).  ``schedule`` is ``None``
    (constant coefficient) or a schedule dict such as
    ``{"type": "decay", "rate": 0.9, "min_multiplier": 0.2, "times_restart": 0}``;
    a schedule object with ``to_dict()`` is accepted too.  The dict is stored
    read-only, so a vector is immutable and hashable.
    """

    layer_idx: int
    coeff: float
    text: str | Concept
    schedule: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not is_int(self.layer_idx) or self.layer_idx < 0:
            raise InvalidArgumentError(f"layer_idx must be a non-negative integer, got {_describe(self.layer_idx)}")
        if not is_real(self.coeff) or not math.isfinite(self.coeff):
            raise InvalidArgumentError(f"coeff must be a finite number, got {_describe(self.coeff)}")
        if not isinstance(self.text, Concept) and (not isinstance(self.text, str) or not self.text.strip()):
            raise InvalidArgumentError(f"text must be a non-empty string or a Concept, got {_describe(self.text)}")
        sched = normalise_schedule(self.schedule)
        object.__setattr__(self, "layer_idx", int(self.layer_idx))
        object.__setattr__(self, "coeff", float(self.coeff) + 0.0)
        object.__setattr__(self, "schedule", None if sched is None else MappingProxyType(sched))

    def __hash__(self) -> int:
        return hash(self.key())

    @property
    def concept(self) -> Concept | None:
        """The vector's concept, when its source is one."""
        return self.text if isinstance(self.text, Concept) else None

    def to_dict(self) -> dict[str, Any]:
        """``{"layer_idx", "coeff", "text", "schedule"}`` with plain Python values;
        ``"concept": {"name", "hash"}`` in place of ``"text"`` for a concept."""
        d: dict[str, Any] = {"layer_idx": self.layer_idx, "coeff": self.coeff}
        if isinstance(self.text, Concept):
            d["concept"] = self.text.ref()
        else:
            d["text"] = self.text
        d["schedule"] = None if self.schedule is None else dict(self.schedule)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], concepts=None) -> SteerVector:
        """Inverse of :meth:`to_dict`; also accepts ``coeff_schedule`` (as ``Steer.get_all()`` writes).

        A concept reference needs the concept: ``concepts`` (a list, or a mapping from hash).
        """
        if not isinstance(d, Mapping):
            raise InvalidArgumentError(f"a vector must be a dict, got {_describe(d)}")
        d = dict(d)
        if "coeff_schedule" in d and "schedule" not in d:
            d["schedule"] = d.pop("coeff_schedule")
        if "concept" in d and d.get("text") is None:
            d.pop("text", None)
            ref = d.pop("concept")
            if not isinstance(ref, Mapping) or not isinstance(ref.get("hash"), str):
                raise InvalidArgumentError(f"a vector's concept must be {{\"name\", \"hash\"}}, got {_describe(ref)}")
            found = _concept_map(concepts).get(ref["hash"])
            if found is None:
                raise InvalidArgumentError(
                    f"the vector uses concept {ref.get('name')!r} (hash {ref['hash']}), whose texts were not given: "
                    "load them with the candidate (best.json's \"concepts\", the log's configuration, --concept FILE)"
                )
            d["text"] = found
        missing = [k for k in ("layer_idx", "coeff", "text") if k not in d]
        if missing:
            raise InvalidArgumentError(f"a vector needs {', '.join(missing)}; got keys {sorted(d)}")
        unknown = sorted(set(d) - {"layer_idx", "coeff", "text", "schedule", "group"})
        if unknown:
            raise InvalidArgumentError(f"a vector has unknown key(s) {', '.join(unknown)}")
        return cls(d["layer_idx"], d["coeff"], d["text"], d.get("schedule"))

    def key(self) -> str:
        """Canonical JSON of the vector."""
        return canonical_json(self.to_dict())

    def describe(self) -> str:
        """Short text such as ``L3 +0.4 "logical" decay(rate=0.9,...)`` (``concept "name"`` for a concept)."""
        source = self.text
        if isinstance(source, Concept):
            shown = f"concept {json.dumps(source.name, ensure_ascii=False)}"
        else:
            shown = json.dumps(source, ensure_ascii=False)
        s = f"L{self.layer_idx} {self.coeff:+g} {shown}"
        if self.schedule is not None:
            s += f" {self.schedule['type']}({_schedule_args(self.schedule, ',')})"
        return s

    def to_code(self, var: str = "steered", names: Mapping[str, str] | None = None) -> str:
        """The ``steered.add(...)`` line that reproduces this vector (``names``: concept hash -> variable)."""
        args = f"layer_idx={self.layer_idx}, coeff={self.coeff!r}, {source_code(self.text, names)}"
        if self.schedule is not None:
            cls = _kinds()[self.schedule["type"]].class_name
            args += f", coeff_schedule={cls}({_schedule_args(self.schedule, ', ')})"
        return f"{var}.add({args})"

    def apply(self, steer, group: int | None = None) -> None:
        """``steer.add(...)`` this vector (on the rows of ``group`` only, when given)."""
        kwargs: dict[str, Any] = {} if group is None else {"group": group}
        if isinstance(self.text, Concept):
            kwargs["concept"] = self.text
        else:
            kwargs["text"] = self.text
        steer.add(layer_idx=self.layer_idx, coeff=self.coeff, coeff_schedule=schedule_object(self.schedule), **kwargs)


#: Where a candidate's prompt goes: a system message, or after the request in the user's turn.
PROMPT_ROLES = ("system", "user")


def ends_in_user_text(conv: Sequence[Any]) -> bool:
    """Whether a conversation's last message is a user message with text content: where a
    ``prompt_role="user"`` prompt is added."""
    last = conv[-1] if conv else None
    return isinstance(last, Mapping) and last.get("role") == "user" and isinstance(last.get("content"), str)


@dataclass(frozen=True)
class SteerCandidate:
    """An immutable set of :class:`SteerVector` s, and optionally a system prompt: the unit the
    search evaluates.

    The vectors are kept in a canonical order (by layer, then text, then
    coefficient, then schedule), so two candidates holding the same vectors are
    equal and have the same :meth:`key`.  They are applied in that order.
    ``system``: a prompt (an instruction) the candidate generates with (a
    search space with ``system_prompts``; chat models only), or None.
    ``prompt_role`` says where it goes: ``"system"`` (default), a system
    message before each request; ``"user"``, after the request's text in the
    user's turn, separated by a blank line (for models that ignore system
    messages, SmolLM2-135M among them).  A candidate with a prompt and no
    vectors is prompting alone; an empty candidate means "no steering, no
    prompt" (the baseline).
    """

    vectors: tuple[SteerVector, ...] = field(default_factory=tuple)
    system: str | None = None
    prompt_role: str = "system"

    def __post_init__(self) -> None:
        if self.system is not None and (not isinstance(self.system, str) or not self.system.strip()):
            raise InvalidArgumentError(f"system must be None or a non-empty string, got {_describe(self.system)}")
        if self.prompt_role not in PROMPT_ROLES:
            raise InvalidArgumentError(f"prompt_role must be 'system' or 'user', got {_describe(self.prompt_role)}")
        if self.system is None:
            object.__setattr__(self, "prompt_role", "system")  # no prompt, no place: one key for "no prompt"
        vecs = []
        for i, v in enumerate(self.vectors):
            if isinstance(v, Mapping):
                v = SteerVector.from_dict(v)
            if not isinstance(v, SteerVector):
                raise InvalidArgumentError(f"vectors[{i}] must be a SteerVector or a dict, got {_describe(v)}")
            vecs.append(v)
        vecs.sort(key=lambda v: (v.layer_idx, source_key(v.text), v.coeff, v.key()))
        object.__setattr__(self, "vectors", tuple(vecs))

    def __hash__(self) -> int:
        return hash(self.key())

    def __len__(self) -> int:
        return len(self.vectors)

    def __iter__(self):
        return iter(self.vectors)

    @property
    def empty(self) -> bool:
        """No vectors and no system prompt: the unsteered model (the baseline)."""
        return not self.vectors and self.system is None

    @property
    def prompt_only(self) -> bool:
        """A system prompt and no vectors: prompting alone."""
        return not self.vectors and self.system is not None

    @property
    def concepts(self) -> dict[str, Concept]:
        """The concepts the vectors use, by hash."""
        return {v.text.hash: v.text for v in self.vectors if isinstance(v.text, Concept)}

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """``{"vectors": [vector dicts]}`` (and ``"system"`` when the candidate has a system
        prompt); ``full=True`` adds ``"concepts"`` (hash -> the concept's dict, its texts
        included), so the candidate reproduces anywhere."""
        full = check_bool("full", full)
        d: dict[str, Any] = {"vectors": [v.to_dict() for v in self.vectors]}
        if self.system is not None:  # absent otherwise: keys (and logs) of steering-only candidates unchanged
            d["system"] = self.system
        if self.prompt_role != "system":  # absent for a system message: keys of earlier logs unchanged
            d["prompt_role"] = self.prompt_role
        if full and self.concepts:
            d["concepts"] = {h: c.to_dict() for h, c in sorted(self.concepts.items())}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | Sequence[Mapping[str, Any]], concepts=None) -> SteerCandidate:
        """Inverse of :meth:`to_dict`; a plain list of vector dicts (``Steer.get_all()``) works too.

        Concept references resolve against ``concepts`` and the dict's own ``"concepts"``.
        """
        known = _concept_map(concepts)
        vectors: Any = d  # each item is checked by SteerVector.from_dict
        if isinstance(d, Mapping):
            unknown = sorted(set(d) - {"vectors", "concepts", "system", "prompt_role"})
            if unknown or "vectors" not in d:
                raise InvalidArgumentError(
                    "a candidate is {'vectors': [...], 'system': None or a string, 'prompt_role': 'system' or "
                    f"'user'}}, got keys {sorted(d)}"
                )
            if d.get("concepts") is not None:
                known.update(_concept_map(d["concepts"]))
            vectors = d["vectors"]
            system, role = d.get("system"), d.get("prompt_role", "system")
        else:
            system, role = None, "system"
        if isinstance(vectors, (str, bytes)) or not isinstance(vectors, Iterable):
            raise InvalidArgumentError(f"a candidate's vectors must be a list, got {_describe(vectors)}")
        return cls(tuple(SteerVector.from_dict(v, known) for v in vectors), system, role)

    @classmethod
    def from_json(cls, s: str, concepts=None) -> SteerCandidate:
        """Parse the canonical JSON that :meth:`key` writes."""
        try:
            d = json.loads(s)
        except (json.JSONDecodeError, RecursionError) as e:
            raise InvalidArgumentError(f"not valid candidate JSON: {e}") from None
        return cls.from_dict(d, concepts)

    def key(self) -> str:
        """Canonical JSON (sorted keys, vectors in canonical order); equal candidates, equal keys."""
        return canonical_json(self.to_dict())

    to_json = key

    def describe(self) -> str:
        """One line such as ``L3 +0.4 "logical" + L5 -0.2 "confused" decay(...)``, with
        ``system "..."`` (or ``user "..."``, by ``prompt_role``) in front when the candidate has a prompt."""
        prompt = f"{self.prompt_role} {json.dumps(self.system, ensure_ascii=False)}"
        parts = [prompt] if self.system is not None else []
        parts += [v.describe() for v in self.vectors]
        return " + ".join(parts) if parts else "no steering"

    def messages(self, prompt: Any) -> Any:
        """The chat conversation the candidate generates from for ``prompt`` (a string: one user
        message; or a conversation): its system message first, or (``prompt_role="user"``) its
        prompt after the last user message's text, a blank line between; ``prompt`` as it is when
        the candidate has no prompt."""
        if self.system is None:
            return prompt
        conv = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.prompt_role == "user":
            if not ends_in_user_text(conv):
                raise InvalidArgumentError(
                    "a candidate with prompt_role='user' adds its prompt to the request's last message, which must "
                    f"be a user message with text content, got {_describe(conv[-1] if conv else None)}"
                )
            last = conv[-1]
            return [*conv[:-1], {**last, "content": f"{last['content']}\n\n{self.system}"}]
        if conv and conv[0].get("role") == "system":
            raise InvalidArgumentError(
                "a prompt already starts with a system message, and the candidate adds its own system prompt: "
                "give the requests without a system message when the search space has system_prompts"
            )
        return [{"role": "system", "content": self.system}, *conv]

    def apply(self, steer, group: int | None = None) -> None:
        """Add every vector to ``steer`` (an :class:`autosteer.Steer`) with ``steer.add``.

        With ``group``, the vectors steer only the batch rows of that group
        (see ``Steer.rows``): how a population of candidates shares one batch.
        """
        for v in self.vectors:
            v.apply(steer, group)

    def to_code(self, var: str = "steered", imports: bool = True) -> str:
        """Python lines that reproduce this candidate, ready to paste::

        from autosteer import Steer, DecaySchedule
        steered = Steer(model, tokenizer)
        steered.add(layer_idx=3, coeff=0.4, text="logical", coeff_schedule=DecaySchedule(...))
        """
        imports = check_bool("imports", imports)
        lines = []
        concepts = self.concepts
        if imports:
            kinds = _kinds()
            names = ["Steer"] + (["Concept"] if concepts else [])
            names += sorted({kinds[v.schedule["type"]].class_name for v in self.vectors if v.schedule})
            lines.append(f"from autosteer import {', '.join(names)}")
        variables: dict[str, str] = {}
        for h, c in sorted(concepts.items(), key=lambda kv: kv[1].name):
            name = _identifier(c.name)
            while name in variables.values():
                name += "_"
            variables[h] = name
            lines.append(f"{name} = Concept.from_dict({json.dumps(c.to_dict(), ensure_ascii=False)})")
        lines.append(f"{var} = Steer(model, tokenizer)")
        lines.extend(v.to_code(var, variables) for v in self.vectors)
        if self.system is not None and self.prompt_role == "user":
            lines.append("# and add this after each request's text, a blank line between (in the user's turn):")
            lines.append(f"instruction = {json.dumps(self.system, ensure_ascii=False)}")
        elif self.system is not None:
            lines.append("# and put this system message before each request (tokenizer.apply_chat_template):")
            lines.append(f"system = {{'role': 'system', 'content': {json.dumps(self.system, ensure_ascii=False)}}}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()
