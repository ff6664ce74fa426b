"""``Steer``: add steering vectors to a transformers model's decoder layers.

A drop-in replacement for ``llm_steer.Steer`` (see the README for every
deliberate difference).  The per-forward work happens in C:
``autosteer._C.StepTracker`` reads the generation step from the KV cache, and
one ``autosteer._C.SteerHook`` per steered layer evaluates the schedules and
adds the delta (fused C kernel on the CPU, the same math as torch ops
elsewhere).  This module only validates input, computes directions once, and
registers/removes hooks through PyTorch's public API.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import _C, _torch_ops
from .errors import InvalidArgumentError, LayerIndexError, VectorShapeError
from .layers import find_decoder_layers, first_layernorm_eps, hidden_size_of
from .schedules import as_schedule, schedule_to_dict

__all__ = ["Steer"]

_RMS_EPS = 1e-6


@dataclass
class _Vector:
    layer_idx: int
    coeff: float
    text: str | None
    schedule: Any
    method: Callable | None
    direction: torch.Tensor  # float32 [D] on the CPU


def _check_coeff(coeff) -> float:
    if isinstance(coeff, bool) or not isinstance(coeff, numbers.Real):
        if torch.is_tensor(coeff) and coeff.numel() == 1:
            coeff = float(coeff.item())
        else:
            raise InvalidArgumentError(f"coeff must be a real number, got {type(coeff).__name__}: {coeff!r}")
    value = float(coeff)
    if not math.isfinite(value):
        raise InvalidArgumentError(f"coeff must be finite, got {value!r}")
    return value


def _normalise(x: torch.Tensor, ln_eps: float | None) -> torch.Tensor:
    """llm_steer's normalisation of a mean activation, in float32."""
    x = x.float()
    if ln_eps is not None:
        mean = x.mean()
        var = x.var(unbiased=False)
        return (x - mean) / torch.sqrt(var + ln_eps)
    return x / (torch.sqrt(x.pow(2).mean() + _RMS_EPS) + _RMS_EPS)


class Steer:
    """Steer a causal LM by adding vectors to the input of its decoder layers.

    ``Steer(model, tokenizer, copy_model=False, layers=None)``; ``copyModel=`` is
    accepted as llm_steer spells it.  ``layers`` overrides the decoder-layer
    discovery (a ModuleList, a list of modules, or a dotted attribute path).

    Use as a context manager to restore the model on exit::

        with Steer(model, tokenizer) as steered:
            steered.add(layer_idx=3, coeff=0.4, text="logical")
            model.generate(...)
    """

    def __init__(self, model, tokenizer, copy_model: bool = False, layers=None, *, copyModel: bool | None = None):
        if not isinstance(model, torch.nn.Module):
            raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if tokenizer is None or not callable(tokenizer):
            raise InvalidArgumentError(
                f"tokenizer must be a callable tokenizer (e.g. from AutoTokenizer), got {type(tokenizer).__name__}"
            )
        if copyModel is not None:
            copy_model = bool(copyModel)
        if copy_model:
            model = copy.deepcopy(model)
        self.model = model
        self.tokenizer = tokenizer
        found = find_decoder_layers(model, layers)
        self._layers = list(found.layers)
        self.layers_path = found.path
        self._model_class = type(model).__name__
        self.hidden_size = hidden_size_of(model)
        self._ln_eps = first_layernorm_eps(model)
        self._vectors: list[_Vector] = []
        self._hooks: dict[int, tuple[Any, Any]] = {}  # layer -> (handle, SteerHook)
        self._tracker_module = self._owner_of(found.layers) or self.model
        self._tracker = _C.StepTracker(_torch_ops.last_token_index, self._tracker_module)
        self._tracker_handles: list = []
        self._dir_cache: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ info
    @property
    def num_layers(self) -> int:
        """Number of decoder layers that can be steered."""
        return len(self._layers)

    @property
    def tracker(self):
        """The C StepTracker of this instance (its ``step`` is the current generation step)."""
        return self._tracker

    def __repr__(self) -> str:
        return (f"Steer({self._model_class}, {self.num_layers} layers at {self.layers_path!r}, "
                f"{len(self._vectors)} vector(s))")

    def get_all(self) -> list[dict]:
        """Every active vector: ``{"layer_idx", "text", "coeff", "coeff_schedule"}``."""
        return [
            {
                "layer_idx": v.layer_idx,
                "text": v.text,
                "coeff": v.coeff,
                "coeff_schedule": schedule_to_dict(v.schedule),
            }
            for v in self._vectors
        ]

    # ------------------------------------------------------------------ add
    def add(self, layer_idx: int, coeff: float, text: str | None = None, steering_method: Callable | None = None,
            coeff_schedule=None, vector=None) -> None:
        """Steer ``layer_idx`` with the direction of ``text`` (or a given ``vector``).

        At every forward of that layer its input hidden states get
        ``coeff * schedule(step) * direction * rms(h[b, last])`` added at every
        position.  ``steering_method(elem, step, layer_idx) -> delta`` replaces
        that formula: it receives the unsteered layer input and its return value
        is added as is.  All input is validated before any model work.
        """
        layer_idx = self._check_layer(layer_idx)
        coeff = _check_coeff(coeff)
        if steering_method is not None and not callable(steering_method):
            raise InvalidArgumentError(
                f"steering_method must be callable (elem, step, layer_idx) -> delta, got {type(steering_method).__name__}"
            )
        schedule = as_schedule(coeff_schedule)
        if (text is None) == (vector is None):
            raise InvalidArgumentError(
                "give exactly one of text= or vector= (got "
                + ("both" if text is not None else "neither") + ")"
            )
        if text is not None:
            if not isinstance(text, str):
                raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
            if not text.strip():
                raise InvalidArgumentError(f"text must contain non-whitespace characters, got {text!r}")
            direction = self._text_directions(text)[layer_idx]
        else:
            direction = self._check_vector(vector)
        self._vectors.append(_Vector(layer_idx, coeff, text, schedule, steering_method, direction))
        try:
            self._install(layer_idx)
        except BaseException:
            # the layer keeps its previous hook; the vector was never added
            del self._vectors[-1]
            if not self._hooks:
                self._remove_tracker()
            raise

    # ------------------------------------------------------------------ reset
    def reset(self, layer_idx: int) -> None:
        """Remove every vector of one layer."""
        layer_idx = self._check_layer(layer_idx)
        self._vectors = [v for v in self._vectors if v.layer_idx != layer_idx]
        self._uninstall(layer_idx)
        if not self._hooks:
            self._remove_tracker()

    def reset_all(self) -> None:
        """Remove every vector and hook: the model computes exactly as before."""
        self._vectors = []
        for layer_idx in sorted(self._hooks, reverse=True):
            self._uninstall(layer_idx)
        self._remove_tracker()

    def __enter__(self) -> "Steer":
        return self

    def __exit__(self, *exc) -> None:
        self.reset_all()

    # ------------------------------------------------------------------ internals
    def _check_layer(self, layer_idx) -> int:
        if isinstance(layer_idx, bool) or not isinstance(layer_idx, numbers.Integral):
            raise InvalidArgumentError(f"layer_idx must be an int, got {type(layer_idx).__name__}: {layer_idx!r}")
        layer_idx = int(layer_idx)
        n = self.num_layers
        if not 0 <= layer_idx < n:
            raise LayerIndexError(
                f"layer_idx {layer_idx} is out of range: {self._model_class} has {n} decoder layers (0..{n - 1})"
            )
        return layer_idx

    def _check_vector(self, vector) -> torch.Tensor:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - numpy is a dependency
            np = None
        if np is not None and isinstance(vector, np.ndarray):
            t = torch.from_numpy(np.asarray(vector, dtype=np.float32).copy())
        elif torch.is_tensor(vector):
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
            raise InvalidArgumentError("vector contains NaN or infinite values")
        return t.contiguous()

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
        """Normalised mean layer input of ``text`` for every layer: float32 [L, D]."""
        cached = self._dir_cache.get(text)
        if cached is not None:
            return cached
        enc = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        ids = enc["input_ids"]
        if ids.numel() == 0:
            raise InvalidArgumentError(f"text {text!r} produces no tokens with this tokenizer")
        device = self._layer_device(0)
        ids = ids.to(device)
        means: list[torch.Tensor | None] = [None] * self.num_layers

        def recorder(i):
            def pre_hook(module, args, kwargs):
                h = args[0] if args else kwargs.get("hidden_states")
                means[i] = h[0].detach().float().mean(dim=0).cpu()
            return pre_hook

        # capture unsteered by this instance: our own hooks come off meanwhile,
        # and the same hook objects go back on afterwards (nothing is rebuilt)
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
                self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        finally:
            for h in reversed(handles):
                h.remove()
            for m, mode in modes:
                m.training = mode
            if paused:
                self._ensure_tracker()
            for i, (_handle, hook) in reversed(paused):
                self._hooks[i] = (self._layers[i].register_forward_pre_hook(hook, with_kwargs=True), hook)
        missing = [i for i, m in enumerate(means) if m is None]
        if missing:
            raise InvalidArgumentError(
                f"the forward pass of {self._model_class} did not reach decoder layers {missing}; "
                "pass layers= to Steer to point at the layers the model really runs"
            )
        dirs = torch.stack([_normalise(m, self._ln_eps) for m in means])  # type: ignore[arg-type]
        self._dir_cache[text] = dirs
        return dirs

    def _ensure_tracker(self) -> None:
        # on the owner of the layer list (it gets the KV cache), and on the
        # outermost model, whose 2-D attention mask a VLM does not pass down
        if not self._tracker_handles:
            self._tracker.reset()
            if self.model is not self._tracker_module:
                self._tracker_handles.append(self.model.register_forward_pre_hook(self._tracker, with_kwargs=True))
            self._tracker_handles.append(
                self._tracker_module.register_forward_pre_hook(self._tracker, with_kwargs=True)
            )

    def _remove_tracker(self) -> None:
        while self._tracker_handles:
            self._tracker_handles.pop().remove()
        self._tracker.reset()

    def _install(self, layer_idx: int) -> None:
        """(Re)build the hook of one layer; the old hook stays until the new one is in."""
        vecs = [v for v in self._vectors if v.layer_idx == layer_idx]
        if not vecs:
            self._uninstall(layer_idx)
            return
        self._ensure_tracker()
        dirs = torch.stack([v.direction for v in vecs]).contiguous()
        device = self._layer_device(layer_idx)
        dirs_dev = dirs if device.type == "cpu" else dirs.to(device)
        hook = _C.SteerHook(
            self._tracker,
            layer_idx,
            dirs,
            [v.coeff for v in vecs],
            [v.schedule for v in vecs],
            [v.method for v in vecs],
            dirs_dev,
            _torch_ops.apply_delta,
            torch.is_grad_enabled,
        )
        handle = self._layers[layer_idx].register_forward_pre_hook(hook, with_kwargs=True)
        old = self._hooks.get(layer_idx)
        self._hooks[layer_idx] = (handle, hook)
        if old is not None:
            old[0].remove()

    def _uninstall(self, layer_idx: int) -> None:
        entry = self._hooks.pop(layer_idx, None)
        if entry is not None:
            entry[0].remove()


# ---------------------------------------------------------------------------
# TRANSITIONAL (the core-redesign branch brings the real ones)
import contextlib as _contextlib


@_contextlib.contextmanager
def _applied(self, config):
    if isinstance(config, (list, tuple)):
        if len(config) != 1:
            raise NotImplementedError("populations need the core-redesign Steer")
        config = config[0]
    self.reset_all()
    try:
        config.apply(self)
        yield self
    finally:
        self.reset_all()


Steer.applied = _applied
