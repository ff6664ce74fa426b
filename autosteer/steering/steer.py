"""``Steer``: add steering vectors to a transformers model's decoder layers.

A drop-in replacement for ``llm_steer.Steer`` (see docs/steering.md for every
deliberate difference).  The per-forward work happens in C:
``autosteer._C.StepTracker`` reads the generation step from the KV cache, and
each steered layer gets one forward pre-hook, chosen once by the layer's
device: ``autosteer._C.SteerHook`` on the CPU (the fused C kernel, in place)
or ``autosteer.steering._torch_hook.TorchHook`` elsewhere (the same math as torch
ops).  Both take the weights of the layer's vectors from one
``autosteer._C.SteerWeights``.  This module validates input, computes
directions once, owns the direction storage (one float32 [J, D] matrix per
layer, on the layer's device; each vector's ``direction`` is a row view of
it), and registers/removes hooks through PyTorch's public API.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autosteer import _C
from autosteer._checks import check_bool, check_int, check_list, check_real, describe, is_int
from autosteer.errors import InvalidArgumentError, LayerIndexError, SteerStateError, VectorShapeError
from autosteer.steering import _torch_hook
from autosteer.steering.concept import MIN_SEPARATION, Concept, normalise, positions_of, render, text_ids
from autosteer.steering.layers import TRANSFORMERS_CONVENTION, find_decoder_layers, first_layernorm_eps, hidden_size_of
from autosteer.steering.schedules import as_schedule, schedule_to_dict
from autosteer.steering.vectors import SteeringVector

__all__ = ["Steer", "SteeringVector", "UnownedSteeringWarning", "active_steering", "is_steered", "steering_paused"]

_F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class _Vector:
    layer_idx: int
    coeff: float
    text: str | None
    schedule: Any
    method: Callable | None
    group: int | None
    direction: torch.Tensor  # float32 [D]; once installed, a row view of its layer's matrix
    concept: Any = None  # the Concept it came from, if any


def _check_coeff(coeff) -> float:
    """A real coefficient, finite in float32 (the kernel's weights are float32)."""
    if torch.is_tensor(coeff):
        if coeff.numel() != 1 or coeff.dtype == torch.bool or coeff.dtype.is_complex or coeff.is_meta:
            raise InvalidArgumentError(
                f"coeff must be a real number, got a {coeff.dtype} tensor of shape {tuple(coeff.shape)}"
            )
        coeff = coeff.item()
    value = check_real("coeff", coeff)
    if abs(value) > _F32_MAX:
        raise InvalidArgumentError(f"coeff must be finite in float32 (|coeff| <= {_F32_MAX!r}), got {value!r}")
    return value


def _check_group(group) -> int | None:
    if group is None:
        return None
    return check_int("group", group, minimum=0)


def _check_groups(groups) -> torch.Tensor:
    """Row groups as a contiguous int64 CPU tensor [R] of values >= 0."""
    if torch.is_tensor(groups):
        bad = groups.dtype.is_floating_point or groups.dtype.is_complex or groups.dtype == torch.bool or groups.is_meta
        if bad or groups.dim() != 1:
            raise InvalidArgumentError(
                f"groups must be a 1-D sequence of ints, got a {groups.dtype} tensor of shape {tuple(groups.shape)}"
            )
        t = groups.detach().to(device="cpu", dtype=torch.int64)
    elif isinstance(groups, np.ndarray):
        if groups.dtype.kind not in "iu" or groups.ndim != 1:
            raise InvalidArgumentError(
                f"groups must be a 1-D sequence of ints, got an array of {groups.dtype} with shape {groups.shape}"
            )
        t = torch.from_numpy(groups.astype(np.int64))
    elif isinstance(groups, (list, tuple, range)):
        t = torch.tensor([check_int(f"groups[{i}]", g, minimum=0) for i, g in enumerate(groups)], dtype=torch.int64)
    else:
        raise InvalidArgumentError(f"groups must be a sequence of ints (one per batch row), got {describe(groups)}")
    if t.numel() == 0:
        raise InvalidArgumentError("groups must name the group of at least one batch row, got an empty sequence")
    if bool((t < 0).any()):
        raise InvalidArgumentError(f"groups must be >= 0, got {t.tolist()}")
    return t.contiguous().clone()


def _use_c_hook(device: torch.device) -> bool:
    """The path of a layer on ``device``: the C SteerHook (True) or the TorchHook."""
    return device.type == "cpu"


_HOOK_TYPES = (_C.StepTracker, _C.SteerHook, _torch_hook.TorchHook, _torch_hook.OutputHook)


def _is_autosteer_hook(hook) -> bool:
    return isinstance(hook, _HOOK_TYPES)


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks")


@contextlib.contextmanager
def steering_paused(model: torch.nn.Module) -> Iterator[None]:
    """Inside the block ``model`` computes unsteered: every AutoSteer hook (of any ``Steer``)
    is off, and back in its place, in its order, afterwards.  How metrics score text under
    the unsteered model (fluency) while a candidate is applied (:meth:`Steer.disabled`
    does the same for one instance's steering)."""
    with _paused(model, _is_autosteer_hook):
        yield


@contextlib.contextmanager
def _paused(model: torch.nn.Module, which: Callable[[Any], bool]) -> Iterator[None]:
    """The hooks for which ``which(hook)`` is true come off ``model``'s modules for the block
    and go back in their places afterwards (hooks added meanwhile stay, after them)."""
    saved = []
    for module in model.modules():
        for attr in _HOOK_DICTS:
            hooks = getattr(module, attr)
            ours = [key for key, hook in hooks.items() if which(hook)]
            if ours:
                saved.append((hooks, list(hooks.items())))
                for key in ours:
                    del hooks[key]
    try:
        yield
    finally:
        for hooks, items in saved:
            added = [(k, h) for k, h in hooks.items() if k not in dict(items)]
            hooks.clear()
            for key, hook in items + added:
                hooks[key] = hook


#: Every live Steer, so that the steering on a model can be described by what it steers with.
_LIVE: weakref.WeakSet[Steer] = weakref.WeakSet()


def _describe_vector(d: dict) -> str:
    if d.get("output_of_layer") is not None:
        return f"layer {d['layer_idx']}: a fixed vector on its output (norm {d['norm']:.3g})"
    what = (
        f"concept {d['concept']['name']!r}"
        if d.get("concept")
        else repr(d["text"])
        if d.get("text") is not None
        else "a vector"
    )
    sched = f", schedule {d['coeff_schedule']['type']}" if d.get("coeff_schedule") else ""
    return f"layer {d['layer_idx']}: {what} coeff {d['coeff']:g}{sched}"


class UnownedSteeringWarning(UserWarning):
    """A ``Steer`` was made on a model that carries AutoSteer steering no live ``Steer``
    owns (e.g. a ``copy.deepcopy`` of a steered model): that steering stays active, and
    the new instance's ``get_all()`` / ``vectors`` do not list it."""


def active_steering(model: torch.nn.Module, *, unowned_only: bool = False) -> list[str]:
    """One line per AutoSteer vector active on ``model``, whichever ``Steer`` added it
    (``"layer 2: 'logical' coeff 0.4"``); empty when the model computes unsteered.

    Steering that no live ``Steer`` owns (e.g. copied along with a model) is
    described from its hooks.  What :class:`~autosteer.AutoSteerRunner`
    checks before it takes a model's unsteered score as its baseline.
    ``unowned_only=True`` lists only that steering (what ``Steer(model)`` warns about).
    """
    if not isinstance(model, torch.nn.Module):
        return []
    modules = {id(m) for m in model.modules()}
    out: list[str] = []
    owned: set[int] = set()
    for steer in list(_LIVE):
        if not (steer._hooks or steer._outputs) or not any(id(layer) in modules for layer in steer._layers):
            continue
        owned.update(id(hook) for _, hook in steer._hooks.values())
        owned.update(id(steer._layers[il]) for il in steer._outputs)  # their output hooks
        if not unowned_only:
            out.extend(_describe_vector(d) for d in steer.get_all())
    for module in model.modules():
        for attr in _HOOK_DICTS:
            for hook in getattr(module, attr).values():
                if not _is_autosteer_hook(hook) or isinstance(hook, _C.StepTracker) or id(hook) in owned:
                    continue
                if isinstance(hook, _torch_hook.OutputHook):
                    if id(module) not in owned:
                        out.append(f"layer {hook.layer_idx}: a fixed vector on its output (no Steer owns it)")
                    continue
                w = hook.weights
                coeffs = ", ".join(f"{c:g}" for c in w.coeffs)
                out.append(f"layer {w.layer_idx}: {w.count} vector(s), coeff {coeffs} (no Steer owns them)")
    return out


def is_steered(model: torch.nn.Module) -> bool:
    """Whether any AutoSteer steering (of any ``Steer``, or copied along with the model) is
    on ``model``'s modules: what a metric asks before it reuses an unsteered score."""
    return any(
        _is_autosteer_hook(h) and not isinstance(h, _C.StepTracker)
        for m in model.modules()
        for attr in _HOOK_DICTS
        for h in getattr(m, attr).values()
    )


def _copy_without_steering(model: torch.nn.Module) -> torch.nn.Module:
    """copy.deepcopy(model), then the copied AutoSteer hooks come off the copy."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if _is_autosteer_hook(hook):
                del module._forward_pre_hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)
        for key, hook in list(module._forward_hooks.items()):
            if _is_autosteer_hook(hook):
                del module._forward_hooks[key]
    return copied


class Steer:
    """Steer a causal LM by adding vectors to the input of its decoder layers.

    ``Steer(model, tokenizer=None, copy_model=False, layers=None)``;
    ``copyModel=`` is accepted as llm_steer spells it.  ``tokenizer`` is needed
    only for text directions (``add(text=...)``); ``tokenizer=None`` allows
    ``add(vector=...)`` only.  ``layers`` overrides the decoder-layer discovery
    (a ModuleList, a list of modules, or a dotted attribute path).
    ``copy_model=True`` steers a ``copy.deepcopy`` of the model, made without
    any AutoSteer steering that other ``Steer`` instances put on the original.

    Scope the steering with ``applied`` (restores exactly what was there) or
    use the instance as a context manager (``reset_all()`` on exit)::

        with Steer(model, tokenizer) as steered:
            steered.add(layer_idx=3, coeff=0.4, text="logical")
            model.generate(...)

    A steered model deep-copies (``copy.deepcopy``) into a steered copy that
    no ``Steer`` owns: ``Steer(copy, tokenizer)`` warns
    (:class:`UnownedSteeringWarning`, naming that steering; its ``get_all()``
    lists only its own vectors) and its ``reset_all()`` removes that steering
    (or make the copy with ``Steer(model, tokenizer, copy_model=True)``, which
    has none).  A steered model does not pickle (``pickle``,
    ``torch.save(model)``): call ``reset_all()`` first, or save
    ``model.state_dict()``.  One steered model serves one thread at a time
    (two threads in one steered model raise :class:`SteerStateError`).
    """

    def __init__(self, model, tokenizer=None, copy_model: bool = False, layers=None, *, copyModel: bool | None = None):
        if not isinstance(model, torch.nn.Module):
            raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if tokenizer is not None and not callable(tokenizer):
            raise InvalidArgumentError(
                "tokenizer must be a callable tokenizer (e.g. from AutoTokenizer), or None to steer with "
                f"vector= only; got {describe(tokenizer)}"
            )
        copy_model = check_bool("copy_model", copy_model)
        if copyModel is not None:
            copy_model = check_bool("copyModel", copyModel)
        if copy_model:
            model = _copy_without_steering(model)
        self.model = model
        self.tokenizer = tokenizer
        found = find_decoder_layers(model, layers)
        self._layers = list(found.layers)
        self.layers_path = found.path
        self._model_class = type(model).__name__
        self.hidden_size = hidden_size_of(model)
        self._ln_eps = first_layernorm_eps(model)
        self._convention = TRANSFORMERS_CONVENTION
        self._vectors: list[_Vector] = []
        self._hooks: dict[int, tuple[Any, Any]] = {}  # layer -> (handle, SteerHook | TorchHook)
        self._directions: dict[int, torch.Tensor] = {}  # layer -> float32 [J, D] on its device
        self._signatures: dict[int, tuple] = {}  # layer -> what its hook was configured with
        self._declared_groups = 0  # len(configs) inside applied([...])
        self._tracker_module = self._owner_of(found.layers) or self.model
        self._tracker = _C.StepTracker(**self._convention.tracker_kwargs(), last_index_fn=_torch_hook.last_token_index)
        # a VLM's or PEFT wrapper's outer forward gets the 2-D mask the owner may not
        self._relay = self._tracker.relay() if self.model is not self._tracker_module else None
        self._tracker_handles: list = []
        # capture results, every layer at once: text -> [L, D]; ("concept", hash) -> [L, D]
        self._dir_cache: dict[Any, torch.Tensor] = {}
        # llama.cpp-style fixed vectors on layer outputs (imported control vectors): layer -> vector
        self._outputs: dict[int, torch.Tensor] = {}
        self._output_handles: dict[int, Any] = {}
        self._disabled = 0  # depth of `with self.disabled()`
        unowned = active_steering(model, unowned_only=True)
        if unowned:
            import warnings

            warnings.warn(
                f"{self._model_class} already carries AutoSteer steering that no live Steer owns "
                f"({'; '.join(unowned)}), e.g. from copy.deepcopy of a steered model: it stays active and this "
                "Steer's get_all() and vectors do not list it; call reset_all() on this Steer to remove it",
                UnownedSteeringWarning,
                stacklevel=2,
            )
        _LIVE.add(self)

    # ------------------------------------------------------------------ info
    @property
    def num_layers(self) -> int:
        """Number of decoder layers that can be steered."""
        return len(self._layers)

    @property
    def tracker(self):
        """The C StepTracker of this instance (its ``step`` is the current generation step)."""
        return self._tracker

    @property
    def num_groups(self) -> int:
        """G, the number of row groups: 1 + the largest ``group=`` of the active
        vectors (0 when no vector has a group), at least the number of configs
        inside ``applied([...])``."""
        groups = [v.group for v in self._vectors if v.group is not None]
        return max(max(groups) + 1 if groups else 0, self._declared_groups if groups else 0)

    @property
    def vectors(self) -> tuple[SteeringVector, ...]:
        """The active vectors, in the order they were added, as read-only
        :class:`SteeringVector` records (each direction a copy): what vector
        files, servers and metrics read instead of this object's internals."""
        return tuple(
            SteeringVector(
                v.layer_idx,
                v.coeff,
                v.direction.detach().to("cpu", torch.float32).clone(),
                v.schedule,
                v.text,
                v.concept,
                v.group,
                v.method,
            )
            for v in self._vectors
        )

    @property
    def output_vectors(self) -> dict[int, torch.Tensor]:
        """The fixed vectors on layer outputs (:meth:`add_output`, imported GGUF control
        vectors): ``{layer_idx: float32 CPU copy of the summed vector}``."""
        return {il: vec.detach().to("cpu", torch.float32).clone() for il, vec in sorted(self._outputs.items())}

    @property
    def normalisation(self) -> str:
        """How text and concept directions are normalised on this model: ``"layernorm"``
        (the model has an ``nn.LayerNorm``; its eps is used) or ``"rms"`` (unit RMS)."""
        return "rms" if self._ln_eps is None else "layernorm"

    def __repr__(self) -> str:
        return (
            f"Steer({self._model_class}, {self.num_layers} layers at {self.layers_path!r}, "
            f"{len(self._vectors)} vector(s))"
        )

    def get_all(self) -> list[dict]:
        """Every active vector of this instance: ``{"layer_idx", "text", "coeff", "coeff_schedule"}``.

        Only this instance's own vectors: steering that other ``Steer`` instances
        added, or that came with a ``copy.deepcopy`` of a steered model (which
        ``Steer()`` warns about), is not listed; ``active_steering(model)``
        (``autosteer.steering.steer``) lists everything active on the model.

        A vector added with ``group=g`` also has ``"group": g``; one added with
        ``concept=c`` has ``"concept": {"name", "hash"}`` (and ``"text": None``).
        """
        out = []
        for v in self._vectors:
            d = {
                "layer_idx": v.layer_idx,
                "text": v.text,
                "coeff": v.coeff,
                "coeff_schedule": schedule_to_dict(v.schedule),
            }
            if v.concept is not None:
                d["concept"] = v.concept.ref()
            if v.group is not None:
                d["group"] = v.group
            out.append(d)
        for il, vec in sorted(self._outputs.items()):
            out.append(
                {
                    "layer_idx": il,
                    "text": None,
                    "coeff": 1.0,
                    "coeff_schedule": None,
                    "output_of_layer": il,
                    "norm": float(vec.norm()),
                }
            )
        return out

    # ------------------------------------------------------------------ add
    def add(
        self,
        layer_idx: int,
        coeff: float,
        text: str | None = None,
        steering_method: Callable | None = None,
        coeff_schedule=None,
        vector=None,
        *,
        group: int | None = None,
        concept=None,
    ) -> None:
        """Steer ``layer_idx`` with the direction of ``text``, a ``concept`` or a given ``vector``.

        At every forward of that layer its input hidden states get
        ``coeff * schedule(step) * direction * rms(h[b, last])`` added at every
        position.  ``steering_method(elem, step, layer_idx) -> delta`` replaces
        that formula: it receives the unsteered layer input and its return value
        (a tensor that broadcasts to the input's shape) is added as is.
        ``group=g`` steers only the batch rows of group ``g`` (see
        :meth:`rows`); None steers every row.  ``concept``: an
        :class:`autosteer.Concept`, whose contrastive direction at this layer
        is computed once (one batched pass for every layer) and cached.  All
        input is validated before any model work; on failure the steering
        stays as it was.
        """
        self._check_enabled("add a vector")
        layer_idx = self._check_layer(layer_idx)
        coeff = _check_coeff(coeff)
        group = _check_group(group)
        if steering_method is not None and not callable(steering_method):
            raise InvalidArgumentError(
                "steering_method must be callable (elem, step, layer_idx) -> delta, "
                f"got {type(steering_method).__name__}"
            )
        schedule = as_schedule(coeff_schedule)
        given = [k for k, v in (("text", text), ("vector", vector), ("concept", concept)) if v is not None]
        if len(given) != 1:
            raise InvalidArgumentError(
                "give exactly one of text=, vector= or concept= (got "
                + ("both " + " and ".join(given) if given else "neither")
                + ")"
            )
        if concept is not None:
            if not isinstance(concept, Concept):
                raise InvalidArgumentError(f"concept must be an autosteer.Concept, got {describe(concept)}")
            if self.tokenizer is None:
                raise InvalidArgumentError(
                    f"concept {concept.name!r} needs a tokenizer: this Steer was made with tokenizer=None, "
                    "which steers with vector= only"
                )
            direction = self.concept_directions(concept)[layer_idx]
            gap = float(self.concept_separation(concept)[layer_idx])
            if not gap >= MIN_SEPARATION:
                raise InvalidArgumentError(
                    f"concept {concept.name!r} has no direction at layer {layer_idx}: its positive and negative "
                    f"texts give (nearly) the same activations there (they differ by {gap:.2g} of their size, "
                    f"below {MIN_SEPARATION:g}); give texts that differ in the concept, or another layer"
                )
        elif text is not None:
            if not isinstance(text, str):
                raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
            if not text.strip():
                raise InvalidArgumentError(f"text must contain non-whitespace characters, got {text!r}")
            if self.tokenizer is None:
                raise InvalidArgumentError(
                    f"text={text!r} needs a tokenizer: this Steer was made with tokenizer=None, "
                    "which steers with vector= only"
                )
            direction = self._text_directions(text)[layer_idx]
        else:
            direction = self._check_vector(vector)
        if steering_method is None:
            self._check_strength(layer_idx, coeff, direction)
        self._vectors.append(_Vector(layer_idx, coeff, text, schedule, steering_method, group, direction, concept))
        try:
            self._sync()
        except BaseException:
            # the hooks keep their previous vectors; this one was never added
            del self._vectors[-1]
            self._sync()
            raise

    # ------------------------------------------------------------------ reset
    def reset(self, layer_idx: int) -> None:
        """Remove every vector of one layer."""
        self._check_enabled("reset a layer")
        layer_idx = self._check_layer(layer_idx)
        self._vectors = [v for v in self._vectors if v.layer_idx != layer_idx]
        self._sync()

    def remove_groups(self, groups) -> None:
        """Remove every vector added with ``group=g`` for ``g`` in ``groups`` (ints >= 0);
        the other vectors, and the hooks of layers they alone steer, stay untouched."""
        self._check_enabled("remove groups")
        drop = {check_int(f"groups[{i}]", g, minimum=0) for i, g in enumerate(check_list("groups", groups, "ints"))}
        kept = [v for v in self._vectors if v.group is None or v.group not in drop]
        if len(kept) != len(self._vectors):
            self._vectors = kept
            self._sync()

    def declare_groups(self, n: int) -> None:
        """Keep the row-group count at least ``n`` (``num_groups``) while vectors have groups, so
        that layers whose vectors do not change keep their hooks as groups come and go (a
        server's batch slots); 0 forgets it."""
        self._check_enabled("declare groups")
        self._declared_groups = check_int("n", n, minimum=0)
        self._sync()

    def reset_all(self) -> None:
        """Remove every vector and hook: the model computes exactly as before.

        Also removes AutoSteer steering on the model that no live ``Steer`` owns, e.g.
        what a ``copy.deepcopy`` of a steered model carries: ``Steer(copy).reset_all()``
        makes such a copy unsteered.  Other live instances' steering stays."""
        self._check_enabled("reset the steering")
        self._vectors = []
        self._sync()
        for il in sorted(self._output_handles, reverse=True):
            self._output_handles.pop(il).remove()
        self._outputs = {}
        self._remove_orphans()

    # ------------------------------------------------------------------ files
    def save(self, path, format: str | None = None, **kwargs):
        """Write this steering to a file: ``.safetensors`` (exact) or ``.gguf`` (a llama.cpp
        control vector); see :mod:`autosteer.steering.vector_file`.  Returns the path."""
        from autosteer.steering.vector_file import save

        return save(self, path, format, **kwargs)

    @classmethod
    def load(cls, model, tokenizer, path, format: str | None = None, *, check_model: bool = True, layers=None) -> Steer:
        """A ``Steer`` on ``model`` steered as the file at ``path`` says (safetensors written by
        :meth:`save`, or a GGUF control vector of llama.cpp / repeng / :meth:`save`).
        ``check_model=False`` loads a safetensors file made for another model of the same
        shape; ``layers`` as for ``Steer``.  A file whose metadata does not match its
        tensors is refused (:class:`~autosteer.steering.vector_file.VectorFileError`)."""
        from autosteer.steering.vector_file import load_into

        steer = cls(model, tokenizer, layers=layers)
        load_into(steer, path, format, check_model=check_model)
        return steer

    def add_output(self, layer_idx: int, vector, scale: float = 1.0) -> None:
        """Add ``scale * vector`` to the *output* of decoder layer ``layer_idx`` at every position:
        llama.cpp's control-vector semantics (no schedule, no activation scale).  Vectors added
        to one layer's output are summed."""
        self._check_enabled("add an output vector")
        layer_idx = self._check_layer(layer_idx)
        scale = _check_coeff(scale)
        vec = self._check_vector(vector)
        self._check_strength(layer_idx, scale, vec, relative=False)
        vec = vec * scale
        total = self._outputs.get(layer_idx)
        total = vec if total is None else total + vec
        device = self._layer_device(layer_idx)
        hook = _torch_hook.OutputHook(total.to(device), layer_idx)
        handle = self._layers[layer_idx].register_forward_hook(hook)
        old = self._output_handles.pop(layer_idx, None)
        if old is not None:
            old.remove()
        self._outputs[layer_idx] = total
        self._output_handles[layer_idx] = handle

    def add_vector(self, vector: SteeringVector) -> None:
        """Add a :class:`SteeringVector` exactly as it is: its direction is used as given
        (not recomputed from its text or concept, which only label it), with its
        coefficient, schedule and group.  How a saved steering is loaded back bit for
        bit, and how one ``Steer``'s vectors move to another model of the same shape
        (``for v in a.vectors: b.add_vector(v)``).  A ``steering_method`` is refused:
        it cannot be checked against this model."""
        self._check_enabled("add a vector")
        if not isinstance(vector, SteeringVector):
            raise InvalidArgumentError(f"vector must be a SteeringVector (from Steer.vectors), got {describe(vector)}")
        if vector.steering_method is not None:
            raise InvalidArgumentError(
                "a SteeringVector with a steering_method cannot be added with add_vector; "
                "use add(..., steering_method=...)"
            )
        if vector.concept is not None and not isinstance(vector.concept, Concept):
            raise InvalidArgumentError(f"vector.concept must be a Concept, got {describe(vector.concept)}")
        if vector.text is not None and not isinstance(vector.text, str):
            raise InvalidArgumentError(f"vector.text must be a str or None, got {describe(vector.text)}")
        layer_idx = self._check_layer(vector.layer_idx)
        direction = self._check_vector(vector.direction)
        self._check_strength(layer_idx, float(vector.coeff), direction)
        self._vectors.append(
            _Vector(
                layer_idx,
                _check_coeff(vector.coeff),
                vector.text,
                as_schedule(vector.schedule),
                None,
                _check_group(vector.group),
                direction,
                vector.concept,
            )
        )
        try:
            self._sync()
        except BaseException:
            del self._vectors[-1]
            self._sync()
            raise

    def __enter__(self) -> Steer:
        return self

    def __exit__(self, *exc) -> None:
        self.reset_all()

    # ------------------------------------------------------------------ scopes
    @contextlib.contextmanager
    def applied(self, config) -> Iterator[Steer]:
        """Apply ``config`` for the duration of the block, then restore exactly.

        ``config`` has ``apply(steer, group=None)`` (a ``SteerCandidate``), which
        adds its vectors with ``steer.add(..., group=group)``; or it is a list
        of such objects, config ``i`` steering the batch rows of group ``i``
        (set the rows with :meth:`rows`).  On exit, also on an exception or
        KeyboardInterrupt, the vectors present before the block are back
        (the logits are bit-identical to before).
        """
        self._check_enabled("apply a config")
        configs = list(config) if isinstance(config, (list, tuple)) else [config]
        for i, c in enumerate(configs):
            if not callable(getattr(c, "apply", None)):
                where = f"config[{i}]" if isinstance(config, (list, tuple)) else "config"
                raise InvalidArgumentError(
                    f"{where} must have an apply(steer, group=None) method (a SteerCandidate), got {describe(c)}"
                )
        saved, saved_groups = list(self._vectors), self._declared_groups
        try:
            if isinstance(config, (list, tuple)):
                # a config without vectors is a group too (its rows stay unsteered)
                self._declared_groups = max(saved_groups, len(configs))
                for i, c in enumerate(configs):
                    c.apply(self, group=i)
            else:
                config.apply(self)
            yield self
        finally:
            self._vectors, self._declared_groups = saved, saved_groups
            self._sync()

    @contextlib.contextmanager
    def rows(self, groups) -> Iterator[Steer]:
        """Per-row steering: batch row ``b`` of the forwards inside belongs to group ``groups[b]``.

        ``groups``: one int >= 0 per batch row of the input (a list, a NumPy
        array or a tensor).  When ``generate()`` repeats rows (``num_beams``,
        ``num_return_sequences``) a batch of ``m * R`` rows maps row ``b`` to
        ``groups[b // m]``.  The previous row groups are back on exit.
        """
        t = _check_groups(groups)
        previous = self._tracker.row_groups
        self._tracker.set_row_groups(t)
        try:
            yield self
        finally:
            self._tracker.set_row_groups(previous)

    @contextlib.contextmanager
    def disabled(self) -> Iterator[Steer]:
        """Inside the block the model computes without this instance's steering (other
        ``Steer`` instances' steering stays); on exit, also on an exception, every hook of
        this instance is back in its place, in its order, and the vectors are unchanged.
        The steering cannot change inside the block (add, reset, applied, capture raise
        :class:`SteerStateError`).  How a metric scores text under the unsteered model
        while a candidate is applied::

            with steer.disabled():
                reference = model(**batch).logits
        """
        mine = self._hook_ids()
        self._disabled += 1
        try:
            with _paused(self.model, lambda hook: id(hook) in mine):
                yield self
        finally:
            self._disabled -= 1

    def _hook_ids(self) -> set[int]:
        """The ids of every hook object this instance has on the model."""
        mine = {id(hook) for _, hook in self._hooks.values()}
        mine.update(id(h) for h in (self._tracker, self._relay) if h is not None)
        for il, handle in self._output_handles.items():
            hook = self._layers[il]._forward_hooks.get(handle.id)
            if hook is not None:
                mine.add(id(hook))
        return mine

    def _remove_orphans(self) -> None:
        """Remove the AutoSteer hooks on this model that no live ``Steer`` owns: steering that
        came with a ``copy.deepcopy`` of a steered model, or was left by a ``Steer`` that was
        garbage collected without ``reset_all()``."""
        owned: set[int] = set()
        for steer in list(_LIVE):
            owned |= steer._hook_ids()
        for module in self.model.modules():
            for attr in _HOOK_DICTS:
                hooks = getattr(module, attr)
                for key in [k for k, h in hooks.items() if _is_autosteer_hook(h) and id(h) not in owned]:
                    del hooks[key]
                    for extra in (
                        "_forward_pre_hooks_with_kwargs",
                        "_forward_hooks_with_kwargs",
                        "_forward_hooks_always_called",
                    ):
                        getattr(module, extra, {}).pop(key, None)

    def _check_enabled(self, what: str) -> None:
        if self._disabled:
            raise SteerStateError(
                f"cannot {what} inside `with steer.disabled():`; change the steering before or after the block"
            )

    # ------------------------------------------------------------------ internals
    def check_layer(self, layer_idx) -> int:
        """``layer_idx`` as an int, or :class:`LayerIndexError` naming the model's layer range
        (:class:`InvalidArgumentError` for a non-integer)."""
        return self._check_layer(layer_idx)

    def _check_layer(self, layer_idx) -> int:
        if not is_int(layer_idx):
            raise InvalidArgumentError(f"layer_idx must be an int, got {type(layer_idx).__name__}: {layer_idx!r}")
        layer_idx = int(layer_idx)
        n = self.num_layers
        if not 0 <= layer_idx < n:
            raise LayerIndexError(
                f"layer_idx {layer_idx} is out of range: {self._model_class} has {n} decoder layers (0..{n - 1})"
            )
        return layer_idx

    def _check_vector(self, vector) -> torch.Tensor:
        if isinstance(vector, np.ndarray):
            if vector.dtype.kind not in "fiu":
                raise InvalidArgumentError(f"vector must hold real numbers, got a NumPy array of dtype {vector.dtype}")
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: refused below
                t = torch.from_numpy(np.asarray(vector, dtype=np.float32).copy())
        elif torch.is_tensor(vector):
            if vector.is_meta:
                raise InvalidArgumentError(
                    f"vector is a meta-device tensor of shape {tuple(vector.shape)}: it has no values"
                )
            if vector.dtype.is_complex or vector.dtype == torch.bool:
                raise InvalidArgumentError(f"vector must hold real numbers, got a {vector.dtype} tensor")
            t = vector.detach().to(device="cpu", dtype=torch.float32).clone()
        else:
            raise InvalidArgumentError(f"vector must be a torch tensor or a NumPy array, got {type(vector).__name__}")
        if t.dim() == 2 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 1 or t.shape[0] != self.hidden_size:
            raise VectorShapeError(
                f"vector must have shape ({self.hidden_size},) to match {self._model_class}'s hidden size, "
                f"got {tuple(t.shape)}"
            )
        if not torch.isfinite(t).all():
            raise InvalidArgumentError("vector contains NaN or infinite values (or values beyond float32's range)")
        return t.contiguous()

    def _check_strength(self, layer_idx: int, coeff: float, direction: torch.Tensor, relative: bool = True) -> None:
        """Refuse a coefficient that cannot give finite activations in the layer's dtype.

        The steered state reaches ``|coeff| * max|direction|`` times the activations' rms
        (``relative``; an output vector: that value itself).  Beyond the dtype's largest
        value, or beyond ``sqrt(float32 max / D)`` (where the sum of squares a following
        norm layer takes over D dimensions overflows float32, turning every later
        activation into 0 or NaN), no activation scale keeps the forward finite at an rms
        of 1.  (At run time the CPU kernel also refuses a delta that is not finite.)
        """
        dtype = next(
            (p.dtype for p in self._layers[layer_idx].parameters() if p.dtype.is_floating_point), torch.float32
        )
        peak = abs(coeff) * float(direction.abs().max())
        limit = min(float(torch.finfo(dtype).max), (_F32_MAX / self.hidden_size) ** 0.5)
        if peak > limit:
            scale = " times the activations' rms" if relative else ""
            raise InvalidArgumentError(
                f"{'coeff' if relative else 'scale'} {coeff!r} cannot give finite activations at layer {layer_idx} "
                f"({str(dtype).replace('torch.', '')}, hidden size {self.hidden_size}): the steered state would reach "
                f"{peak:.3g}{scale}, beyond {limit:.3g}, where a norm layer's sum of squares overflows; useful "
                "coefficients are around 0.1 to 10"
            )

    def _owner_of(self, layers):
        """The module whose child is the layer list: it receives the KV cache and mask."""
        for module in self.model.modules():
            for child in module.children():
                if child is layers:
                    return module
        return None

    def _layer_device(self, layer_idx: int) -> torch.device:
        layer = self._layers[layer_idx]
        for p in layer.parameters():
            return p.device
        for b in layer.buffers():
            return b.device
        return torch.device("cpu")

    def _text_directions(self, text: str) -> torch.Tensor:
        """Normalised mean layer input of ``text`` for every layer: float32 [L, D] (cached)."""
        cached = self._dir_cache.get(text)
        if cached is not None:
            return cached
        ids = text_ids(self.tokenizer, text, "text")
        means = self.capture([ids], [slice(None)])[:, 0]  # every position, as llm_steer averages
        dirs = torch.stack([normalise(m, self._ln_eps) for m in means])
        self._dir_cache[text] = dirs
        return dirs

    def concept_directions(self, concept) -> torch.Tensor:
        """A concept's normalised direction at every layer: float32 [L, D] (cached per concept)."""
        key = ("concept", concept.hash)
        cached = self._dir_cache.get(key)
        if cached is not None:
            return cached
        rows, positions = [], []
        for side in ("positive", "negative"):
            for i, item in enumerate(getattr(concept, side)):
                ids = render(item, self.tokenizer, f"concept {concept.name!r} {side}[{i}]")
                rows.append(ids)
                positions.append(positions_of(len(ids), concept.position))
        acts = self.capture(rows, positions)  # [L, N, D]
        n = len(concept.positive)
        dirs = concept.directions(acts[:, :n], acts[:, n:], self._ln_eps)
        self._dir_cache[key] = dirs
        self._dir_cache[("separation", concept.hash)] = concept.separation(acts[:, :n], acts[:, n:])
        return dirs

    def concept_separation(self, concept) -> torch.Tensor:
        """How far apart a concept's two sides are at every layer, relative to the size of their
        activations: float32 [L] (see :meth:`Concept.separation`; cached with the directions).
        :meth:`add` refuses a concept below ``MIN_SEPARATION`` at the layer it steers."""
        self.concept_directions(concept)
        return self._dir_cache[("separation", concept.hash)]

    def capture_rms(self, rows: list[list[int]], positions: list, batch_size: int = 16) -> torch.Tensor:
        """Mean rms (``sqrt(mean(x^2) + eps)``) of each row's layer input over its ``positions``:
        float32 [L, len(rows)]."""
        return self.capture(rows, positions, batch_size, reduce="rms")

    def capture(
        self, rows: list[list[int]], positions: list, batch_size: int = 16, reduce: str = "mean"
    ) -> torch.Tensor:
        """Mean layer input of each token-id row over its ``positions``, at every layer.

        Returns float32 [L, len(rows), D] on the CPU (``reduce="rms"``: the mean rms of
        those positions, [L, len(rows)]).  The rows go through the model
        ``batch_size`` at a time, right-padded with an attention mask, in eval
        mode, without this instance's steering (its hooks come off meanwhile,
        and the same hook objects go back on afterwards).
        """
        self._check_enabled("capture activations")
        n_layers = self.num_layers
        shape = (n_layers, len(rows)) if reduce == "rms" else (n_layers, len(rows), self.hidden_size)
        out = torch.empty(*shape, dtype=torch.float32)
        seen = [False] * n_layers
        hidden_kw = self._convention.hidden_states_kwarg
        batch: dict[str, Any] = {}

        def recorder(i):
            def pre_hook(module, args, kwargs):
                h = (args[0] if args else kwargs.get(hidden_kw)).detach()
                for b, (r, pos) in enumerate(zip(batch["rows"], batch["positions"])):
                    sel = h[b, pos] if isinstance(pos, slice) else h[b, list(pos)]
                    if reduce == "rms":
                        out[i, r] = sel.float().pow(2).mean(dim=-1).add(_C.RMS_EPS).sqrt().mean().cpu()
                    else:
                        out[i, r] = sel.float().mean(dim=0).cpu()
                seen[i] = True

            return pre_hook

        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.tokenizer, "eos_token_id", None)
        pad = 0 if pad is None else pad
        device = self._layer_device(0)
        paused = [(i, self._hooks.pop(i)) for i in sorted(self._hooks, reverse=True)]
        for _, (handle, _hook) in paused:
            handle.remove()
        self._remove_tracker()
        modes = [(m, m.training) for m in self.model.modules()]
        handles = []
        try:
            self.model.eval()
            for i, layer in enumerate(self._layers):
                handles.append(layer.register_forward_pre_hook(recorder(i), with_kwargs=True))
            with torch.inference_mode():
                for start in range(0, len(rows), batch_size):
                    chunk = list(range(start, min(start + batch_size, len(rows))))
                    width = max(len(rows[r]) for r in chunk)
                    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(chunk), width), dtype=torch.long)
                    for b, r in enumerate(chunk):
                        ids[b, : len(rows[r])] = torch.tensor(rows[r], dtype=torch.long)
                        mask[b, : len(rows[r])] = 1
                    batch["rows"], batch["positions"] = chunk, [positions[r] for r in chunk]
                    self.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        finally:
            for h in reversed(handles):
                h.remove()
            for m, mode in modes:
                m.training = mode
            if paused:
                self._ensure_tracker()
            for i, (_handle, hook) in reversed(paused):
                self._hooks[i] = (self._layers[i].register_forward_pre_hook(hook, with_kwargs=True), hook)
        missing = [i for i, ok in enumerate(seen) if not ok]
        if missing:
            raise InvalidArgumentError(
                f"the forward pass of {self._model_class} did not reach decoder layers {missing}; "
                "pass layers= to Steer to point at the layers the model really runs"
            )
        return out

    def _ensure_tracker(self) -> None:
        # on the owner of the layer list (it gets the KV cache), and a relay on
        # the outermost model, whose 2-D attention mask a VLM does not pass down
        if not self._tracker_handles:
            self._tracker.reset()
            if self._relay is not None:
                self._tracker_handles.append(self.model.register_forward_pre_hook(self._relay, with_kwargs=True))
            self._tracker_handles.append(
                self._tracker_module.register_forward_pre_hook(self._tracker, with_kwargs=True)
            )

    def _remove_tracker(self) -> None:
        while self._tracker_handles:
            self._tracker_handles.pop().remove()
        self._tracker.reset()

    def _sync(self) -> None:
        """Bring every layer's hook in line with ``self._vectors``.

        A layer whose vectors did not change keeps its hook untouched (only
        the vectors' positions in get_all(), used in error messages, are
        refreshed); a changed layer gets its hook reconfigured in place (the
        hook keeps its position among the layer's pre-hooks); a layer without
        vectors loses its hook.
        """
        groups = self.num_groups
        by_layer: dict[int, list[tuple[int, _Vector]]] = {}
        for pos, v in enumerate(self._vectors):
            by_layer.setdefault(v.layer_idx, []).append((pos, v))
        for layer_idx in sorted(set(self._hooks) | set(by_layer), reverse=True):
            entries = by_layer.get(layer_idx)
            if not entries:
                self._uninstall(layer_idx)
                continue
            vecs = [v for _, v in entries]
            index = [pos for pos, _ in entries]
            grouped = any(v.group is not None for v in vecs)
            device = self._layer_device(layer_idx)
            signature = (tuple(map(id, vecs)), groups if grouped else 0, device, _use_c_hook(device))
            if self._signatures.get(layer_idx) == signature:
                self._hooks[layer_idx][1].weights.index = index
            else:
                self._configure(layer_idx, vecs, index, groups if grouped else 0, signature)
        if not self._hooks:
            self._remove_tracker()

    def _configure(self, layer_idx: int, vecs: list[_Vector], index: list[int], groups: int, signature) -> None:
        """(Re)build the weights and direction matrix of one layer; the old hook stays until both exist."""
        device = signature[2]
        matrix = torch.stack([v.direction.to(device=device, dtype=torch.float32) for v in vecs]).contiguous()
        membership = None
        if groups:
            membership = torch.zeros(groups, len(vecs), dtype=torch.float32)
            for j, v in enumerate(vecs):
                if v.group is None:
                    membership[:, j] = 1.0
                else:
                    membership[v.group, j] = 1.0
        weights = _C.SteerWeights(
            layer_idx=layer_idx,
            coeffs=[v.coeff for v in vecs],
            schedules=[v.schedule for v in vecs],
            methods=[v.method for v in vecs],
            membership=membership,
            index=index,
        )
        on_cpu = _use_c_hook(device)
        entry = self._hooks.get(layer_idx)
        if entry is not None and isinstance(entry[1], _torch_hook.TorchHook) != on_cpu:
            entry[1].reconfigure(weights, matrix)
        else:
            self._ensure_tracker()
            hook: _C.SteerHook | _torch_hook.TorchHook
            if on_cpu:
                hook = _C.SteerHook(
                    tracker=self._tracker,
                    weights=weights,
                    directions=matrix,
                    fallback=_torch_hook.steer,
                    grad_enabled=torch.is_grad_enabled,
                    hidden_states_kwarg=self._convention.hidden_states_kwarg,
                )
            else:
                hook = _torch_hook.TorchHook(
                    tracker=self._tracker,
                    weights=weights,
                    directions=matrix,
                    hidden_states_kwarg=self._convention.hidden_states_kwarg,
                )
            handle = self._layers[layer_idx].register_forward_pre_hook(hook, with_kwargs=True)
            self._hooks[layer_idx] = (handle, hook)
            if entry is not None:
                entry[0].remove()
        self._directions[layer_idx] = matrix
        self._signatures[layer_idx] = signature
        for j, v in enumerate(vecs):
            v.direction = matrix[j]

    def _uninstall(self, layer_idx: int) -> None:
        entry = self._hooks.pop(layer_idx, None)
        self._directions.pop(layer_idx, None)
        self._signatures.pop(layer_idx, None)
        if entry is not None:
            entry[0].remove()
