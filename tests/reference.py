"""An independent, plain-torch reference of the steering semantics (the test oracle).

Written from the project brief (section 1), not from the library, and kept
simple on purpose: slow, obvious code that the library is compared against.

Semantics implemented
---------------------
Direction of ``text`` at layer ``L``:
    tokens of ``text`` without special tokens -> run the model -> hidden state
    entering ``layers[L]`` (its first positional argument), averaged over the
    positions -> normalised in float32: LayerNorm-style ``(x - mean) / sqrt(var + eps)``
    (biased variance) with the ``eps`` of the model's first ``nn.LayerNorm`` if it has
    one, else RMS-style ``x / (sqrt(mean(x^2) + 1e-6) + 1e-6)``.

At every forward of a steered layer, with input ``h`` of shape [batch, seq, hidden]:
    ``r[b] = sqrt(mean(h[b, last_b, :]^2) + 1e-6)`` in float32, where ``last_b`` is row
    ``b``'s last real token in this chunk (from the 2-D attention mask when there is one,
    else the last position), taken ONCE from the unsteered input; then for each vector
    on the layer, in the order added:
    ``h = h + (coeff * schedule(step) * direction * r[b]).to(h.dtype)`` at every position.

The step is the index of the token being produced: 0 for a forward without a
cache (or with an empty one); after a prefill of length ``P``, a forward whose
cache already holds ``c`` tokens and that feeds ``n`` new ones has step
``c + n - P`` (so the k-th decode step is ``k``).  It is read in a forward
pre-hook on the module that owns the layer list (e.g. ``LlamaModel``), from its
``cache`` argument (transformers >= 5.2x) or ``past_key_values`` (older).

Directions are computed in the order the vectors are listed.  With
``directions_from="sequential"`` (default, like llm_steer) each direction is
captured while the previously listed vectors are already installed, so earlier
vectors on earlier layers shape later directions; the vector's own layer is
captured before any steering of that layer.  ``directions_from="clean"``
captures every direction on the unsteered model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "RefVector",
    "ReferenceSteer",
    "reference_direction",
    "first_layernorm_eps",
    "normalise",
    "rms",
]

RMS_EPS = 1e-6


def rms(x: torch.Tensor) -> torch.Tensor:
    """sqrt(mean(x^2) + 1e-6) over the last dimension, in float32, keepdim."""
    x = x.float()
    return torch.sqrt((x * x).mean(dim=-1, keepdim=True) + RMS_EPS)


def first_layernorm_eps(model: nn.Module) -> float | None:
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            return float(module.eps)
    return None


def normalise(direction: torch.Tensor, ln_eps: float | None) -> torch.Tensor:
    x = direction.float()
    if ln_eps is not None:
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + ln_eps)
    return x / (rms(x) + RMS_EPS)


def _hidden_from(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, new: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (new,) + tuple(args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = new
    return args, kwargs


def reference_direction(
    model: nn.Module, tokenizer: Any, layers: Sequence[nn.Module], layer_idx: int, text: str
) -> torch.Tensor:
    """The normalised float32 direction of ``text`` at ``layers[layer_idx]``, shape [hidden].

    Runs the model as it is now (with whatever hooks are installed).
    """
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []

    def grab(module, args, kwargs):
        captured.append(_hidden_from(args, kwargs).detach().clone())

    handle = layers[layer_idx].register_forward_pre_hook(grab, with_kwargs=True, prepend=True)
    try:
        with torch.no_grad():
            model(input_ids=ids.to(device), use_cache=False)
    finally:
        handle.remove()
    assert len(captured) == 1, f"layer {layer_idx} ran {len(captured)} times"
    mean = captured[0][0].float().mean(dim=0)  # [hidden]
    return normalise(mean, first_layernorm_eps(model))


@dataclass
class RefVector:
    layer_idx: int
    coeff: float
    text: str | None
    schedule: Callable[[int], float] | None = None
    direction: torch.Tensor | None = field(default=None, repr=False)


def _chain_to_owner(model: nn.Module, layers: nn.Module) -> list[nn.Module]:
    """Modules from ``model`` down to the one whose child is ``layers`` (outermost first)."""
    for name, module in model.named_modules():
        if any(child is layers for child in module.children()):
            chain = [model]
            if name:
                obj = model
                for part in name.split("."):
                    obj = getattr(obj, part) if not part.isdigit() else obj[int(part)]
                    chain.append(obj)
            return chain
    raise ValueError("the layer list is not a child of any module of the model")


def _bound_arguments(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    try:
        bound = dict(inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        return dict(kwargs)
    extra = bound.pop("kwargs", None)
    if isinstance(extra, dict):
        for k, v in extra.items():
            bound.setdefault(k, v)
    return bound


class ReferenceSteer:
    """Install reference steering on ``model``; a context manager that removes it.

    ``vectors``: iterable of ``(layer_idx, coeff, text, schedule_or_None)``; ``text`` may
    also be a tensor, used as the (already normalised) direction unchanged.
    ``layers``: the model's decoder-layer ``ModuleList``.
    After construction: ``.vectors`` (with their ``.direction``), ``.steps`` (the step of
    every forward seen), ``.remove()``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        layers: nn.ModuleList,
        vectors: Sequence[tuple],
        directions_from: str = "sequential",
    ):
        if directions_from not in ("sequential", "clean"):
            raise ValueError("directions_from must be 'sequential' or 'clean'")
        self.model = model
        self.layers = layers
        self.vectors: list[RefVector] = []
        self.steps: list[int] = []
        self._handles: list[Any] = []
        self._step = 0
        self._prefill_len = 0
        self._last_rows: torch.Tensor | None = None  # per-row index of the last real token
        self._outer_mask: torch.Tensor | None = None
        self._by_layer: dict[int, list[RefVector]] = {}
        self._layer_handles: dict[int, Any] = {}
        try:
            chain = _chain_to_owner(model, layers)
            # The 2-D attention mask is read from the outermost module that has one
            # (a VLM hands its text model a dict of masks); the step from the owner.
            for module in chain[:-1]:
                self._handles.append(
                    module.register_forward_pre_hook(self._mask_hook, with_kwargs=True)
                )
            self._handles.append(
                chain[-1].register_forward_pre_hook(self._owner_hook, with_kwargs=True)
            )
            spec = [RefVector(*v) for v in vectors]
            if directions_from == "clean":
                for v in spec:
                    v.direction = self._direction_of(tokenizer, v)
            for v in spec:
                if v.direction is None:
                    v.direction = self._direction_of(tokenizer, v)
                self._install(v)
        except BaseException:
            self.remove()
            raise

    # -- directions -------------------------------------------------------------------
    def _direction_of(self, tokenizer: Any, v: RefVector) -> torch.Tensor:
        if isinstance(v.text, torch.Tensor):
            return v.text.detach().float().reshape(-1)
        return reference_direction(self.model, tokenizer, self.layers, v.layer_idx, v.text)

    # -- hooks --------------------------------------------------------------------------
    def _install(self, v: RefVector) -> None:
        self.vectors.append(v)
        group = self._by_layer.setdefault(v.layer_idx, [])
        group.append(v)
        if v.layer_idx not in self._layer_handles:
            idx = v.layer_idx

            def hook(module, args, kwargs, _idx=idx):
                return self._layer_hook(_idx, args, kwargs)

            h = self.layers[idx].register_forward_pre_hook(hook, with_kwargs=True)
            self._layer_handles[idx] = h
            self._handles.append(h)

    def _mask_hook(self, module, args, kwargs):
        mask = _bound_arguments(module, args, kwargs).get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2 and self._outer_mask is None:
            self._outer_mask = mask
        return None

    def _owner_hook(self, module, args, kwargs):
        bound = _bound_arguments(module, args, kwargs)
        cache = bound.get("cache")
        if cache is None:
            cache = bound.get("past_key_values")
        ids = bound.get("input_ids")
        embeds = bound.get("inputs_embeds")
        n_new = (ids if ids is not None else embeds).shape[1]
        past = 0
        if cache is not None and hasattr(cache, "get_seq_length"):
            past = int(cache.get_seq_length())
        if past == 0:
            self._prefill_len = n_new
            self._step = 0
        else:
            self._step = past + n_new - self._prefill_len
        self.steps.append(self._step)

        mask = bound.get("attention_mask")
        if not (isinstance(mask, torch.Tensor) and mask.dim() == 2):
            mask = self._outer_mask
        self._outer_mask = None  # consumed: every forward reaches the owner
        self._last_rows = None
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            # columns of this chunk are the mask's last n_new columns
            chunk = mask[:, -n_new:].bool()
            positions = torch.arange(n_new, device=chunk.device).expand_as(chunk)
            last = torch.where(chunk, positions, torch.full_like(positions, -1)).max(dim=1).values
            last = torch.where(last < 0, torch.full_like(last, n_new - 1), last)
            self._last_rows = last
        return None

    def _layer_hook(self, idx: int, args: tuple, kwargs: dict):
        h = _hidden_from(args, kwargs)
        batch, seq = h.shape[0], h.shape[1]
        if self._last_rows is not None and self._last_rows.shape[0] == batch:
            last = self._last_rows.to(h.device)
        else:
            last = torch.full((batch,), seq - 1, dtype=torch.long, device=h.device)
        rows = h[torch.arange(batch, device=h.device), last]  # [batch, hidden]
        r = rms(rows).reshape(batch, 1, 1)  # float32, unsteered, taken once
        out = h
        for v in self._by_layer[idx]:
            mult = 1.0 if v.schedule is None else float(v.schedule(self._step))
            delta = v.coeff * mult * v.direction.to(h.device).reshape(1, 1, -1) * r
            out = out + delta.to(h.dtype)
        return _with_hidden(args, kwargs, out)

    # -- lifetime -----------------------------------------------------------------------
    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()
        self._layer_handles.clear()

    def __enter__(self) -> ReferenceSteer:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
