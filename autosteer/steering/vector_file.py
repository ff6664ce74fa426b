"""Steering vectors as files: AutoSteer's own safetensors, and llama.cpp's GGUF control vectors.

``steer.save(path)`` / ``Steer.load(model, tokenizer, path)``; the format follows the
extension (``.safetensors``, ``.gguf``) unless ``format=`` says otherwise.

**safetensors** holds the exact state of a ``Steer``: per vector its decoder layer,
its direction (the very float32 values the hooks use), coefficient, schedule,
source (a text, a concept with all its texts, or a given vector), how the
direction was normalised, and its row group; and the model it was made for
(class, hidden size, number of layers, a fingerprint of the weights' names and
shapes).  Loading it reproduces the original steering bit for bit.

**GGUF control vectors** are what llama.cpp reads (``--control-vector``,
``--control-vector-scaled``, ``--control-vector-layer-range``; also repeng's
format): one float32 tensor ``direction.{il}`` per layer, which llama.cpp adds to
the *output* of decoder layer ``il`` (``il >= 1``; there is never a tensor for
layer 0) at every position.  AutoSteer adds ``coeff * schedule(step) * rms(h) *
direction`` to a layer's *input*, which is the previous layer's output, so a
vector at AutoSteer layer ``L`` is written as ``direction.{L-1}`` (vectors at
layers 0 and 1 have no llama.cpp equivalent and are refused), with the
coefficient, the schedule and the activation scale folded in as constants:
``coeff * mean(schedule(0..N-1)) * r_L * direction``, where ``r_L`` is the rms of
layer L's input measured on calibration prompts (the mean over their tokens,
the first excluded) and N ``schedule_steps`` (default 32).  Vectors on one layer
are summed.  The file's metadata records all of this (``autosteer.*`` keys),
including the note that schedules and the per-row rms are approximated by
constants.  **Importing** a GGUF control vector gives llama.cpp's semantics: a
fixed vector added to that layer's output (``Steer.add_output``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autosteer._checks import check_bool, check_int, check_real, check_str_list
from autosteer.errors import AutoSteerError, InvalidArgumentError
from autosteer.steering.vectors import SteeringVector

__all__ = [
    "DEFAULT_CALIBRATION",
    "FORMATS",
    "SAFETENSORS_FORMAT",
    "format_of",
    "load_into",
    "model_fingerprint",
    "save",
]

SAFETENSORS_FORMAT = "autosteer-steering"
FORMAT_VERSION = 1
FORMATS = ("safetensors", "gguf")

#: Calibration prompts when none are given: ordinary text of several kinds.
DEFAULT_CALIBRATION = (
    "The weather today is mild, with a light breeze from the west and a few clouds.",
    "To make a cup of tea, boil the water, pour it over the leaves and wait three minutes.",
    "def add(a, b):\n    return a + b",
    "The committee will meet on Tuesday to review the budget for next year.",
    "She opened the old book and found a letter folded between the pages.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Could you tell me how to get to the train station from here?",
    "In 1969, two astronauts walked on the surface of the Moon.",
)


class VectorFileError(InvalidArgumentError):
    """A steering file is malformed, of an unknown version, or made for another model."""


def format_of(path: str | os.PathLike, format: str | None = None) -> str:
    """The format of a steering file: ``format`` when given (checked), else from the
    extension of ``path`` (``.safetensors`` or ``.gguf``)."""
    path = Path(path)
    if format is not None:
        if format not in FORMATS:
            raise InvalidArgumentError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        return format
    ext = path.suffix.lower().lstrip(".")
    if ext not in FORMATS:
        raise InvalidArgumentError(
            f"cannot tell the format of {str(path)!r} from its extension: use .safetensors or .gguf, or format="
        )
    return ext


def model_fingerprint(model) -> str:
    """16 hex digits of a hash of the names, shapes and dtypes of the model's weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    return h.hexdigest()[:16]


def _model_info(steer) -> dict[str, Any]:
    config = getattr(steer.model, "config", None)
    model_type = getattr(config, "model_type", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    return {
        "class": type(steer.model).__name__,
        "model_type": getattr(text, "model_type", model_type),
        "hidden_size": steer.hidden_size,
        "num_layers": steer.num_layers,
        "fingerprint": model_fingerprint(steer.model),
    }


# ------------------------------------------------------------------------------- safetensors


def _source(v) -> dict[str, Any]:
    if v.source == "concept":
        return {"kind": "concept", "concept": v.concept.to_dict()}
    if v.source == "text":
        return {"kind": "text", "text": v.text}
    return {"kind": "vector"}


def save(
    steer,
    path: str | os.PathLike,
    format: str | None = None,
    *,
    calibration_prompts: Sequence[str] | None = None,
    schedule_steps: int = 32,
) -> Path:
    """Write the steering of ``steer`` to ``path`` (see the module docstring); returns the path."""
    if calibration_prompts is not None:
        calibration_prompts = check_str_list("calibration_prompts", calibration_prompts, allow_empty=False)
        for i, p in enumerate(calibration_prompts):
            if not p.strip():
                raise InvalidArgumentError(f"calibration_prompts[{i}] is empty")
    path = Path(path)
    fmt = format_of(path, format)
    if not path.parent.is_dir():
        raise InvalidArgumentError(f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    vectors = steer.vectors
    if not vectors and not steer.output_vectors:
        raise InvalidArgumentError("there is nothing to save: this Steer steers no layer")
    for pos, v in enumerate(vectors):
        if v.steering_method is not None:
            raise InvalidArgumentError(
                f"vector {pos} (layer {v.layer_idx}) uses a steering_method, a Python function that no file can hold"
            )
    if fmt == "safetensors":
        _save_safetensors(steer, vectors, path)
    else:
        _save_gguf(steer, vectors, path, calibration_prompts, check_int("schedule_steps", schedule_steps, minimum=1))
    return path


def _schedule_json(v, pos: int) -> dict | None:
    from autosteer.steering.schedules import SCHEDULE_KINDS, schedule_to_dict

    d = schedule_to_dict(v.schedule)
    if d is not None and d.get("type") not in SCHEDULE_KINDS:
        raise InvalidArgumentError(
            f"vector {pos} (layer {v.layer_idx}) has a custom schedule ({d.get('name', 'a callable')}); only the "
            "built-in schedules can be saved"
        )
    return d


def _save_safetensors(steer, vectors, path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    tensors, entries = {}, []
    for pos, v in enumerate(vectors):
        tensors[f"vector.{pos}.direction"] = v.direction.detach().to("cpu", torch.float32).contiguous().clone()
        entries.append(
            {
                "layer_idx": v.layer_idx,
                "coeff": v.coeff,
                "schedule": _schedule_json(v, pos),
                "source": _source(v),
                "group": v.group,
                "normalisation": "as given" if _source(v)["kind"] == "vector" else steer.normalisation,
            }
        )
    for pos, (il, vec) in enumerate(sorted(steer.output_vectors.items())):
        tensors[f"output.{pos}.vector"] = vec.detach().to("cpu", torch.float32).contiguous().clone()
        entries.append({"output_of_layer": il})
    metadata = {
        "format": SAFETENSORS_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "vectors": json.dumps(entries, ensure_ascii=False),
        "model": json.dumps(_model_info(steer)),
    }
    save_file(tensors, str(path), metadata=metadata)


def _read_safetensors(path: Path):
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open handles are not iterable
    except Exception as exc:
        raise VectorFileError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    if metadata.get("format") != SAFETENSORS_FORMAT:
        raise VectorFileError(
            f"{path}: metadata field 'format' is {metadata.get('format')!r}, expected "
            f"{SAFETENSORS_FORMAT!r} (not a file written by Steer.save)"
        )
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise VectorFileError(
            f"{path}: metadata field 'format_version' is {metadata.get('format_version')!r}; "
            f"this release reads version {FORMAT_VERSION}"
        )
    try:
        entries = json.loads(metadata["vectors"])
        model = json.loads(metadata["model"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise VectorFileError(f"{path}: metadata field {exc} is missing or not JSON") from None
    return entries, model, tensors


def _check_model(path: Path, info: dict, steer, check_model: bool) -> None:
    for key, mine in (("hidden_size", steer.hidden_size), ("num_layers", steer.num_layers)):
        if info.get(key) != mine:
            raise VectorFileError(
                f"{path}: made for a model with {key} {info.get(key)!r} ({info.get('class')}), but "
                f"{type(steer.model).__name__} has {mine}"
            )
    if check_model and info.get("fingerprint") not in (None, model_fingerprint(steer.model)):
        raise VectorFileError(
            f"{path}: made for another model ({info.get('class')}, fingerprint {info.get('fingerprint')}) than "
            f"{type(steer.model).__name__} (fingerprint {model_fingerprint(steer.model)}); pass check_model=False "
            "to load it anyway"
        )


def _finite(path: Path, name: str, t) -> None:
    import torch

    if not bool(torch.isfinite(t).all()):
        raise VectorFileError(f"{path}: tensor {name!r} holds NaN or infinite values")


def load_into(steer, path: str | os.PathLike, format: str | None = None, *, check_model: bool = True) -> None:
    """Steer ``steer`` (a ``Steer`` that steers nothing yet) as the file at ``path`` says (see
    the module docstring); :meth:`autosteer.Steer.load` makes the ``Steer`` and calls this.
    The whole file is checked before anything is added; on any error nothing stays added."""
    check_model = check_bool("check_model", check_model)
    if steer.vectors or steer.output_vectors:
        raise InvalidArgumentError("load a steering file into a Steer that steers nothing yet (call reset_all() first)")
    path = Path(path)
    fmt = format_of(path, format)
    if not path.is_file():
        raise InvalidArgumentError(f"steering file {str(path)!r} does not exist")
    plan = _plan_safetensors(path, steer, check_model) if fmt == "safetensors" else _plan_gguf(path, steer)
    try:
        for add in plan:
            add()
    except BaseException:
        steer.reset_all()  # nothing half-applied
        raise


_VECTOR_KEYS = frozenset({"layer_idx", "coeff", "schedule", "source", "group", "normalisation"})
_OUTPUT_KEYS = frozenset({"output_of_layer"})
_SOURCE_KEYS = {"text": {"kind", "text"}, "concept": {"kind", "concept"}, "vector": {"kind"}}


def _check_entry_keys(path: Path, i: int, e: dict, expected: frozenset) -> None:
    missing, unknown = sorted(expected - set(e)), sorted(set(e) - expected)
    if missing or unknown:
        parts = ([f"lacks {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"has the unknown key(s) {', '.join(map(repr, unknown))}"] if unknown else []
        )
        raise VectorFileError(
            f"{path}: metadata 'vectors'[{i}] {' and '.join(parts)} (expected the keys "
            f"{', '.join(sorted(expected))}); the file was edited or damaged"
        )


def _plan_safetensors(path: Path, steer, check_model: bool):
    """Check the whole file against itself and the model; return the adds to run.

    Every metadata entry must have exactly its keys and its tensor, and every tensor
    must be described by an entry: a file whose metadata was edited (an entry
    removed, a key renamed, a tensor added) is refused, naming the file and the entry.
    """
    from autosteer.steering.concept import Concept
    from autosteer.steering.schedules import schedule_from_dict

    entries, info, tensors = _read_safetensors(path)
    _check_model(path, info, steer, check_model)
    if not isinstance(entries, list):
        raise VectorFileError(f"{path}: metadata 'vectors' is not a list")
    plan: list[Callable[[], Any]] = []  # each adds one vector to steer
    pos, out_pos, described = 0, 0, set()
    for i, e in enumerate(entries):
        where = f"{path}: metadata 'vectors'[{i}]"
        if not isinstance(e, dict):
            raise VectorFileError(f"{where} is not an object")
        if "output_of_layer" in e:
            _check_entry_keys(path, i, e, _OUTPUT_KEYS)
            name = f"output.{out_pos}.vector"
            out_pos += 1
            vec = tensors.get(name)
            if vec is None:
                raise VectorFileError(f"{where} describes tensor {name!r}, which is missing")
            described.add(name)
            _finite(path, name, vec)
            try:
                il = steer.check_layer(e["output_of_layer"])
            except AutoSteerError as exc:
                raise VectorFileError(f"{where}: {exc}") from None
            plan.append(functools.partial(steer.add_output, il, vec))
            continue
        _check_entry_keys(path, i, e, _VECTOR_KEYS)
        name = f"vector.{pos}.direction"
        pos += 1
        direction = tensors.get(name)
        if direction is None:
            raise VectorFileError(f"{where} describes tensor {name!r}, which is missing")
        described.add(name)
        if direction.dim() != 1 or direction.shape[0] != steer.hidden_size:
            raise VectorFileError(
                f"{path}: tensor {name!r} has shape {tuple(direction.shape)}, expected ({steer.hidden_size},)"
            )
        _finite(path, name, direction)
        source = e["source"]
        kind = source.get("kind") if isinstance(source, dict) else None
        if kind not in _SOURCE_KEYS or set(source) != _SOURCE_KEYS[kind]:
            raise VectorFileError(
                f"{where}: 'source' must be {{\"kind\": \"text\", \"text\"}}, "
                f"{{\"kind\": \"concept\", \"concept\"}} or {{\"kind\": \"vector\"}}, got {source!r:.120}"
            )
        try:
            concept = Concept.from_dict(source["concept"]) if kind == "concept" else None
            text = source["text"] if kind == "text" else None
            if text is not None and not isinstance(text, str):
                raise InvalidArgumentError(f"source text must be a string, got {text!r:.60}")
            schedule = None if e["schedule"] is None else schedule_from_dict(e["schedule"])
            v = SteeringVector(
                steer.check_layer(e["layer_idx"]),
                check_real("coeff", e["coeff"]),
                direction,
                schedule,
                text,
                concept,
                None if e["group"] is None else check_int("group", e["group"], minimum=0),
            )
        except (KeyError, TypeError, AttributeError, AutoSteerError) as exc:
            raise VectorFileError(f"{where} is malformed ({exc})") from None
        plan.append(functools.partial(steer.add_vector, v))
    extra = sorted(set(tensors) - described)
    if extra:
        raise VectorFileError(
            f"{path}: tensor(s) {', '.join(map(repr, extra))} are described by no entry of "
            "metadata 'vectors' (an entry was removed, or a tensor added); the file was edited or "
            "damaged"
        )
    return plan


# ------------------------------------------------------------------------------- GGUF


def _gguf():
    try:
        import gguf
    except ImportError:
        raise InvalidArgumentError(
            "GGUF control vectors need the gguf package: python -m pip install 'autosteer[real]'"
        ) from None
    return gguf


def calibration_rms(steer, prompts: Sequence[str], layers: Sequence[int]) -> dict[int, float]:
    """The mean rms of each layer's input over the calibration prompts' tokens (the first excluded)."""
    rows = [list(steer.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    if any(not r for r in rows):
        raise InvalidArgumentError("a calibration prompt produces no tokens")
    positions = [range(1, len(r)) if len(r) > 1 else [0] for r in rows]
    rms = steer.capture_rms(rows, positions)  # [L, N]
    return {layer: float(rms[layer].mean()) for layer in layers}


def _save_gguf(steer, vectors, path: Path, calibration_prompts, steps: int) -> None:
    import numpy as np

    gguf = _gguf()
    if steer.tokenizer is None and vectors:
        raise InvalidArgumentError(
            "a GGUF export calibrates the activation scale on prompts: the Steer needs a tokenizer"
        )
    bad = [(pos, v.layer_idx) for pos, v in enumerate(vectors) if v.layer_idx < 2]
    if bad:
        listed = ", ".join(f"{p} (layer {layer})" for p, layer in bad)
        raise InvalidArgumentError(
            f"vector(s) {listed} cannot be exported to GGUF: llama.cpp has no control vector for layer 0 (it adds "
            "direction.{il} to the output of decoder layer il >= 1, which is AutoSteer's input of layer il + 1), so "
            "AutoSteer's layers 0 and 1 have no llama.cpp equivalent. To export, steer at layer 2 or later instead: "
            "remove the vector (steer.reset(layer_idx)) and add it again with layer_idx >= 2, then check the effect "
            "there (the best coefficient usually differs by layer; a search with "
            "SteerSearchSpace(layer_range=(2, ...)) finds it), or save it as .safetensors, which keeps every layer"
        )
    layers = sorted({v.layer_idx for v in vectors})
    prompts = list(calibration_prompts or DEFAULT_CALIBRATION)
    rms = calibration_rms(steer, prompts, layers) if layers else {}
    sums: dict[int, np.ndarray] = {}
    folded = []
    for pos, v in enumerate(vectors):
        sched = 1.0 if v.schedule is None else float(np.mean([float(v.schedule(k)) for k in range(steps)]))
        scale = v.coeff * sched * rms[v.layer_idx]
        il = v.layer_idx - 1
        vec = v.direction.detach().cpu().double().numpy() * scale
        sums[il] = sums.get(il, 0.0) + vec
        folded.append(
            {
                "vector": pos,
                "layer_idx": v.layer_idx,
                "gguf_layer": il,
                "coeff": v.coeff,
                "schedule": _schedule_json(v, pos),
                "schedule_mean": sched,
                "calibration_rms": rms[v.layer_idx],
                "source": _source(v),
            }
        )
    for il, vec in steer.output_vectors.items():
        sums[il] = sums.get(il, 0.0) + vec.detach().cpu().double().numpy()
    info = _model_info(steer)
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", info["model_type"] or info["class"])
    writer.add_uint32("controlvector.layer_count", len(sums))
    writer.add_uint32("autosteer.format_version", FORMAT_VERSION)
    writer.add_string(
        "autosteer.note",
        "AutoSteer steering exported for llama.cpp: direction.{il} is added to the "
        "output of layer il; AutoSteer's coefficient, schedule and per-row activation scale are "
        "folded in as constants (the schedule's mean over the first autosteer.schedule_steps steps, "
        "the rms of the layer input measured on calibration prompts)",
    )
    writer.add_uint32("autosteer.schedule_steps", steps)
    writer.add_uint32("autosteer.calibration_prompts", len(prompts))
    writer.add_string("autosteer.model", json.dumps(info))
    writer.add_string("autosteer.vectors", json.dumps(folded, ensure_ascii=False))
    for il in sorted(sums):
        data = np.asarray(sums[il], dtype=np.float32)
        if not np.isfinite(data).all():
            raise InvalidArgumentError(f"the folded vector for layer {il} is not finite: the coefficient is too large")
        writer.add_tensor(f"direction.{il}", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_gguf(path: str | os.PathLike) -> tuple[dict[int, Any], dict[str, Any]]:
    """The vectors of a GGUF control vector file ({layer: float32 array}) and its metadata."""
    import numpy as np

    gguf = _gguf()
    path = Path(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:
        raise VectorFileError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith(("general.", "controlvector.", "autosteer.")):
            try:
                meta[key] = field.contents()
            except Exception:
                pass
    arch = meta.get("general.architecture")
    if arch != "controlvector":
        raise VectorFileError(f"{path}: field 'general.architecture' is {arch!r}, expected 'controlvector'")
    version = meta.get("autosteer.format_version")
    if version is not None and version != FORMAT_VERSION:
        raise VectorFileError(
            f"{path}: field 'autosteer.format_version' is {version!r}; this release reads {FORMAT_VERSION}"
        )
    vectors: dict[int, Any] = {}
    for t in reader.tensors:
        name = t.name
        prefix, _, index = name.partition(".")
        if prefix != "direction" or not index.isdigit():
            raise VectorFileError(f"{path}: tensor {name!r} is not named direction.<layer>")
        il = int(index)
        if il < 1:
            raise VectorFileError(f"{path}: tensor {name!r}: llama.cpp never steers layer 0")
        data = np.array(t.data, dtype=np.float32).reshape(-1)
        if not np.isfinite(data).all():
            raise VectorFileError(f"{path}: tensor {name!r} holds NaN or infinite values")
        vectors[il] = vectors.get(il, 0.0) + data
    if not vectors:
        raise VectorFileError(f"{path}: no direction.<layer> tensor")
    return vectors, meta


def _plan_gguf(path: Path, steer):
    import torch

    vectors, _ = read_gguf(path)
    plan = []
    for il, data in sorted(vectors.items()):
        if data.shape[0] != steer.hidden_size:
            raise VectorFileError(
                f"{path}: tensor 'direction.{il}' has {data.shape[0]} values, but "
                f"{type(steer.model).__name__}'s hidden size is {steer.hidden_size}"
            )
        if il >= steer.num_layers:
            raise VectorFileError(
                f"{path}: tensor 'direction.{il}' is for layer {il}, but "
                f"{type(steer.model).__name__} has {steer.num_layers} layers (0..{steer.num_layers - 1})"
            )
        vec = torch.from_numpy(data.copy())
        plan.append(functools.partial(steer.add_output, il, vec))
    return plan
