"""Steering configurations of the server: presets loaded at start-up, and the ``steering``
field of a request, both turned into :class:`RowSteering` objects that the engine applies
to one group of batch rows (``Steer.applied([...])`` + ``Steer.rows(...)``).

A request's ``steering`` is the name of a preset, or a list of vector objects in the form
of the ``vectors`` entries of the ``best.json`` the search writes::

    {"layer_idx": 3, "coeff": 0.4, "text": "logical"}
    {"layer_idx": 3, "coeff": 0.4, "concept": "precise"}        # a preset's concept, by name
    {"layer_idx": 3, "coeff": 0.4, "concept": {"name": "precise", "hash": "..."}}  # as best.json has it
    {"layer_idx": 3, "coeff": 0.4, "vector": [0.1, ...]}        # hidden_size floats
    ... optional "schedule" (a schedule's to_dict(); "coeff_schedule" is an alias)

Every check happens here, before the request waits for a batch row, and raises
:class:`RequestError` naming the field (``steering[1].coeff``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autosteer._checks import describe, is_int, is_real
from autosteer.errors import AutoSteerError, InvalidArgumentError

__all__ = ["DEFAULT_MAX_COEFF", "Preset", "RequestError", "RowSteering", "load_preset", "parse_steering"]

#: The largest |coeff| a request may ask for (steering collapses text far below it).
DEFAULT_MAX_COEFF = 100.0
_VECTOR_KEYS = {"layer_idx", "coeff", "text", "concept", "vector", "schedule", "coeff_schedule"}


class RequestError(InvalidArgumentError):
    """A request the server refuses: ``status`` (400, 404, 413, 429...), the OpenAI error
    ``type`` and the request field it is about (``param``)."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.type = type
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class VectorSpec:
    """One resolved steering vector.  ``kind``: "text", "concept", "vector" (a direction used
    as is) or "output" (a llama.cpp control vector: a constant added to the output of layer
    ``layer_idx - 1``, applied as a constant on the input of ``layer_idx``)."""

    layer_idx: int
    coeff: float
    kind: str
    source: Any  # str | Concept | torch.Tensor
    schedule: Mapping[str, Any] | None = None
    text_label: str | None = None  # the text a vector-file direction was made from, if any

    def to_dict(self) -> dict[str, Any]:
        """The vector in best.json's form (a direction as a list of floats)."""
        d: dict[str, Any] = {"layer_idx": self.layer_idx, "coeff": self.coeff}
        if self.kind == "text":
            d["text"] = self.source
        elif self.kind == "concept":
            d["concept"] = self.source.ref()
        else:
            d["vector"] = [float(x) for x in self.source.tolist()]
            if self.text_label is not None:
                d["from_text"] = self.text_label
            if self.kind == "output":
                d["output_of_layer"] = self.layer_idx - 1
        d["schedule"] = None if self.schedule is None else dict(self.schedule)
        return d


class _RowSchedule:
    """A schedule evaluated at the step of one request, whatever the batch's step is: rows
    join a running batch at different times, so each row counts its own steps."""

    def __init__(self, schedule, row):
        self.schedule = schedule
        self.row = row

    def __call__(self, step):
        return self.schedule(self.row.step)

    def to_dict(self):
        return self.schedule.to_dict()


class _Constant:
    """A steering_method adding a fixed vector (llama.cpp's control-vector semantics)."""

    def __init__(self, vector):
        self.vector = vector
        self._on: dict[Any, Any] = {}

    def __call__(self, h, step, layer_idx):
        key = (h.device, h.dtype)
        v = self._on.get(key)
        if v is None:
            v = self._on[key] = self.vector.to(device=h.device, dtype=h.dtype).view(1, 1, -1)
        return v


@dataclass
class RowSteering:
    """The steering of one request: what ``Steer.applied([...])`` applies to its group."""

    vectors: tuple[VectorSpec, ...] = ()
    preset: str | None = None
    row: Any = None  # the engine's row (its .step drives schedules)
    _methods: dict[int, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.vectors)

    def apply(self, steer, group: int | None = None) -> None:
        from autosteer.search.candidate import schedule_object

        kw: dict[str, Any] = {} if group is None else {"group": group}
        for i, v in enumerate(self.vectors):
            sched = schedule_object(v.schedule)
            if sched is not None and self.row is not None:
                sched = _RowSchedule(sched, self.row)
            if v.kind == "text":
                steer.add(v.layer_idx, v.coeff, text=v.source, coeff_schedule=sched, **kw)
            elif v.kind == "concept":
                steer.add(v.layer_idx, v.coeff, concept=v.source, coeff_schedule=sched, **kw)
            elif v.kind == "vector":
                steer.add(v.layer_idx, v.coeff, vector=v.source, coeff_schedule=sched, **kw)
            else:
                method = self._methods.get(i)
                if method is None:
                    method = self._methods[i] = _Constant(v.source)
                steer.add(v.layer_idx, 1.0, vector=v.source, steering_method=method, **kw)

    def describe(self) -> dict[str, Any]:
        return {"vectors": [v.to_dict() for v in self.vectors]}


@dataclass
class Preset:
    """A named steering configuration given at start-up."""

    name: str
    path: str
    steering: RowSteering
    concepts: dict[str, Any]  # name -> Concept

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "file": os.path.basename(self.path), **self.steering.describe()}
        concepts = {c.hash: c.to_dict() for c in self.concepts.values()}
        if concepts:
            d["concepts"] = concepts
        return d


@dataclass
class ModelInfo:
    """What validation needs to know about the served model."""

    num_layers: int
    hidden_size: int
    tokenizer: Any
    max_coeff: float = DEFAULT_MAX_COEFF


def _preset_error(path: str, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"preset file {path!r}: {why}")


def load_preset(name: str, path: str | os.PathLike, model, tokenizer) -> Preset:
    """A preset from a file: a ``best.json`` (or any candidate JSON the CLI reads), or a vector
    file written by ``Steer.save`` (``.safetensors``) or a llama.cpp control vector (``.gguf``)."""
    from autosteer.steering.steer import Steer

    path = str(path)
    if not Path(path).is_file():
        raise _preset_error(path, "no such file")
    suffix = Path(path).suffix.lower()
    if suffix in (".safetensors", ".gguf"):
        steer = Steer.load(model, tokenizer, path)
        try:
            specs, concepts = [], {}
            for v in steer.vectors:  # the very directions the file holds
                if v.steering_method is not None:
                    raise _preset_error(path, "a vector with a custom steering_method cannot be served")
                sched = None if v.schedule is None else v.schedule.to_dict()
                if v.concept is not None:
                    concepts[v.concept.name] = v.concept
                specs.append(
                    VectorSpec(
                        v.layer_idx,
                        v.coeff,
                        "vector",
                        v.direction.detach().cpu().clone(),
                        sched,
                        v.text if v.text is not None else (v.concept.name if v.concept else None),
                    )
                )
            for il, vec in steer.output_vectors.items():
                if il + 1 >= steer.num_layers:
                    raise _preset_error(
                        path,
                        f"its vector for the output of the last decoder layer ({il}) cannot be "
                        "steered per request (only outputs of layers 0.."
                        f"{steer.num_layers - 2})",
                    )
                specs.append(VectorSpec(il + 1, 1.0, "output", vec.detach().cpu().clone()))
        finally:
            steer.reset_all()
        return Preset(name, path, RowSteering(tuple(specs), preset=name), concepts)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read(), parse_constant=_refuse_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise _preset_error(path, f"not a readable JSON file ({exc})") from None
    from autosteer.search.candidate import SteerCandidate
    from autosteer.steering.concept import Concept

    concepts_raw = data.get("concepts") if isinstance(data, dict) else None
    if isinstance(data, dict) and "candidate" in data:
        data = data["candidate"]
    try:
        cand = SteerCandidate.from_dict(data, concepts_raw)
    except InvalidArgumentError as exc:
        raise _preset_error(path, str(exc)) from None
    if cand.system is not None:
        import warnings

        # the server steers; the messages are the client's: the search's prompt is not added to them
        warnings.warn(
            f"preset {name!r} ({path}) was found with a system prompt ({cand.system!r}); the server applies its "
            "steering only: "
            + (
                "add that text after each request's text (the user's turn)"
                if cand.prompt_role == "user"
                else "send that system message in the requests' messages"
            )
            + " to get what the search measured",
            UserWarning,
            stacklevel=2,
        )
    if cand.prompt_only:
        raise _preset_error(path, "the configuration is a system prompt alone, no vectors: nothing to steer with")
    steer = Steer(model, tokenizer)  # validates the layers against the model
    specs, concepts = [], {}
    for i, cv in enumerate(cand.vectors):
        try:
            steer.check_layer(cv.layer_idx)
        except InvalidArgumentError as exc:
            raise _preset_error(path, f"vectors[{i}]: {exc}") from None
        if isinstance(cv.text, Concept):
            concepts[cv.text.name] = cv.text
            specs.append(VectorSpec(cv.layer_idx, cv.coeff, "concept", cv.text, cv.schedule and dict(cv.schedule)))
        else:
            specs.append(VectorSpec(cv.layer_idx, cv.coeff, "text", cv.text, cv.schedule and dict(cv.schedule)))
    return Preset(name, path, RowSteering(tuple(specs), preset=name), concepts)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (JSON has no NaN or infinite numbers)")


def parse_steering(value: Any, presets: Mapping[str, Preset], info: ModelInfo, param: str = "steering") -> RowSteering:
    """The ``steering`` field of a request as a :class:`RowSteering` (empty: unsteered)."""
    if value is None:
        return RowSteering()
    if isinstance(value, str):
        preset = presets.get(value)
        if preset is None:
            known = ", ".join(sorted(presets)) or "none were given at start-up"
            raise RequestError(f"{param}: unknown preset {value!r} (presets: {known})", param)
        return RowSteering(preset.steering.vectors, preset=preset.name)
    given: dict[str, Any] = {}
    if isinstance(value, Mapping) and "vectors" in value:  # a whole best.json / candidate pasted
        extra = sorted(set(value) - {"vectors", "concepts"})
        if extra:
            raise RequestError(
                f"{param}: unknown key(s) {', '.join(extra)}; expected a preset name, a list of "
                "vectors or {\"vectors\": [...], \"concepts\": {...}}",
                param,
            )
        given = _parse_concepts(value.get("concepts"), f"{param}.concepts")
        value = value["vectors"]
        param = f"{param}.vectors"
    if not isinstance(value, list):
        raise RequestError(
            f"{param} must be a preset name (string) or a list of vector objects, got {_json_type(value)}", param
        )
    if len(value) > 4 * info.num_layers:
        raise RequestError(f"{param}: at most {4 * info.num_layers} vectors, got {len(value)}", param)
    concepts: dict[str, Any] = dict(given)
    for p in presets.values():
        for c in p.concepts.values():
            concepts.setdefault(c.name, c)
            concepts.setdefault(c.hash, c)
    return RowSteering(tuple(_parse_vector(v, f"{param}[{i}]", concepts, info) for i, v in enumerate(value)))


def _parse_concepts(value: Any, where: str) -> dict[str, Any]:
    """best.json's "concepts" ({hash: concept dict}): the concepts by hash and by name."""
    if value is None:
        return {}
    from autosteer.steering.concept import Concept

    if not isinstance(value, Mapping):
        raise RequestError(f"{where} must be an object {{hash: concept}}, got {_json_type(value)}", where)
    if len(value) > 16:
        raise RequestError(f"{where}: at most 16 concepts, got {len(value)}", where)
    out: dict[str, Any] = {}
    for key, d in value.items():
        try:
            c = Concept.from_dict(d)
        except (AutoSteerError, ValueError, TypeError, KeyError) as exc:
            raise RequestError(f"{where}[{key!r}] is not a concept: {exc}", where) from None
        out[c.hash] = out[c.name] = c
    return out


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({json.dumps(v)})"
    if isinstance(v, (int, float)):
        return f"a number ({v!r})"
    if isinstance(v, str):
        return f"a string ({describe(v)})"
    if isinstance(v, list):
        return "a list"
    return "an object"


def _parse_vector(d: Any, where: str, concepts: Mapping[str, Any], info: ModelInfo) -> VectorSpec:
    if not isinstance(d, Mapping):
        raise RequestError(
            f"{where} must be an object with layer_idx, coeff and one of text/concept/vector, got {_json_type(d)}",
            where,
        )
    unknown = sorted(set(d) - _VECTOR_KEYS - {"group"})
    if unknown:
        raise RequestError(
            f"{where}: unknown key(s) {', '.join(unknown)} (expected {', '.join(sorted(_VECTOR_KEYS))})",
            f"{where}.{unknown[0]}",
        )
    if "layer_idx" not in d:
        raise RequestError(f"{where}.layer_idx is missing", f"{where}.layer_idx")
    layer = d["layer_idx"]
    if not is_int(layer):
        raise RequestError(f"{where}.layer_idx must be an integer, got {_json_type(layer)}", f"{where}.layer_idx")
    n = info.num_layers
    if not 0 <= layer < n:
        raise RequestError(
            f"{where}.layer_idx {layer} is out of range: the model has {n} decoder layers (0..{n - 1})",
            f"{where}.layer_idx",
        )
    if "coeff" not in d:
        raise RequestError(f"{where}.coeff is missing", f"{where}.coeff")
    coeff = d["coeff"]
    if not is_real(coeff) or isinstance(coeff, bool):
        raise RequestError(f"{where}.coeff must be a number, got {_json_type(coeff)}", f"{where}.coeff")
    coeff = float(coeff)
    if not math.isfinite(coeff) or abs(coeff) > info.max_coeff:
        raise RequestError(
            f"{where}.coeff must be finite with |coeff| <= {info.max_coeff:g}, got {coeff!r}", f"{where}.coeff"
        )
    sources = [k for k in ("text", "concept", "vector") if d.get(k) is not None]
    if len(sources) != 1:
        raise RequestError(
            f"{where} needs exactly one of text, concept or vector, got " + (", ".join(sources) if sources else "none"),
            where,
        )
    if "schedule" in d and "coeff_schedule" in d:
        raise RequestError(f"{where}: give schedule or its alias coeff_schedule, not both", f"{where}.coeff_schedule")
    skey = "coeff_schedule" if "coeff_schedule" in d else "schedule"
    schedule = _parse_schedule(d.get(skey), f"{where}.{skey}")
    kind = sources[0]
    value = d[kind]
    if kind == "text":
        if not isinstance(value, str) or not value.strip():
            raise RequestError(f"{where}.text must be a non-empty string, got {_json_type(value)}", f"{where}.text")
        if len(value) > 10_000:
            raise RequestError(f"{where}.text is {len(value)} characters long; at most 10000", f"{where}.text")
        ids = info.tokenizer(value, add_special_tokens=False)["input_ids"]
        if not ids:
            raise RequestError(f"{where}.text {value!r} produces no tokens", f"{where}.text")
        return VectorSpec(layer, coeff, "text", value, schedule)
    if kind == "concept":
        if isinstance(value, Mapping):
            key = value.get("hash") if isinstance(value.get("hash"), str) else value.get("name")
        else:
            key = value
        concept = concepts.get(key) if isinstance(key, str) else None
        if concept is None:
            names = sorted({c.name for c in concepts.values()})
            raise RequestError(
                f"{where}.concept {describe(value)} is not a concept of any preset "
                f"(concepts: {', '.join(names) if names else 'none'})",
                f"{where}.concept",
            )
        return VectorSpec(layer, coeff, "concept", concept, schedule)
    if not isinstance(value, list):
        raise RequestError(
            f"{where}.vector must be a list of {info.hidden_size} numbers, got {_json_type(value)}", f"{where}.vector"
        )
    if len(value) != info.hidden_size:
        raise RequestError(
            f"{where}.vector has {len(value)} values; the model's hidden size is {info.hidden_size}", f"{where}.vector"
        )
    for j, x in enumerate(value):
        if not is_real(x) or isinstance(x, bool) or not math.isfinite(x) or abs(x) > 3.0e38:
            raise RequestError(f"{where}.vector[{j}] must be a finite number, got {_json_type(x)}", f"{where}.vector")
    import torch

    return VectorSpec(layer, coeff, "vector", torch.tensor(value, dtype=torch.float32), schedule)


def _parse_schedule(value: Any, where: str):
    if value is None:
        return None
    from autosteer.search.candidate import normalise_schedule
    from autosteer.steering.schedules import schedule_from_dict

    if not isinstance(value, Mapping):
        raise RequestError(
            f"{where} must be an object such as {{\"type\": \"decay\", \"rate\": 0.9}}, got {_json_type(value)}", where
        )
    try:
        d = normalise_schedule(value, where)
        if d is not None:
            schedule_from_dict(d)  # the domain checks of the schedule's constructor
    except (AutoSteerError, ValueError, TypeError) as exc:
        msg = str(exc)
        raise RequestError(msg if msg.startswith(where) else f"{where}: {msg}", where) from None
    return d
