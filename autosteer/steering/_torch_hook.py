"""The steering math as torch ops, and the forward pre-hook of non-CPU layers.

``Steer`` gives every steered layer one forward pre-hook, chosen once by the
layer's device: the C ``autosteer._C.SteerHook`` on the CPU (the fused kernel
of ``csrc/kernel.h``, in place), :class:`TorchHook` elsewhere.  Both read the
generation step and the row groups from the C ``StepTracker`` and the weights
``W`` (one row of J per group of batch rows, coefficients times schedules)
from the C ``SteerWeights``.  :func:`steer` is the same math as torch ops,
out of place; TorchHook runs it at every forward, and the C hook calls it
whenever it cannot write in place (grad mode, overlapping views, the caller's
inputs_embeds, steering_method vectors).

No host synchronisation on an accelerator: no ``.item()`` or ``.cpu()``; the
host-side weights reach the device through pinned memory with a non-blocking
copy; one small matmul of the per-row weights with the direction matrix, no
Python loop over rows or vectors (only over steering_method callables).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from autosteer import _C
from autosteer._checks import describe
from autosteer.errors import InvalidArgumentError, SteerStateError

__all__ = ["TorchHook", "last_token_index", "steer", "storage_limit"]

_F32_MAX = float(torch.finfo(torch.float32).max)
_LIMITS: dict[torch.dtype, float] = {}  # a cache of constants: torch.finfo per dtype


def storage_limit(dtype: torch.dtype) -> float:
    """Largest finite value of a hidden-state dtype (float32's for non-float dtypes)."""
    limit = _LIMITS.get(dtype)
    if limit is None:
        limit = float(torch.finfo(dtype).max) if dtype.is_floating_point else _F32_MAX
        _LIMITS[dtype] = limit
    return limit


def last_token_index(mask, batch: int, seq: int):
    """Index of each row's last real token among the last ``seq`` mask columns.

    Returns a LongTensor [batch] on the mask's device, or None when the mask is
    not a 2-D tensor of that batch size (then the last position is used).
    """
    if not torch.is_tensor(mask) or mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] < seq:
        return None
    window = mask[:, mask.shape[1] - seq :] != 0
    pos = torch.arange(seq, device=mask.device).expand(batch, seq)
    last = torch.where(window, pos, torch.full_like(pos, -1)).amax(dim=1)
    return torch.where(last < 0, torch.full_like(last, seq - 1), last)


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without a synchronising copy."""
    if device.type == "cpu":
        return host
    try:
        return host.pin_memory().to(device, non_blocking=True)
    except RuntimeError:  # a device without pinned host memory
        return host.to(device)


def _row_index(
    tracker, batch: int, groups: int, layer_idx: int, device: torch.device, cache: list | None = None
) -> torch.Tensor:
    """The group of each batch row, on ``device`` (the tracker checks that they fit).

    ``cache`` (a hook's own two-slot list) keeps the device copy of the host row
    groups while they stay the same object, so a generate() copies them once."""
    m = tracker.check_rows(batch, groups, layer_idx)
    host = tracker.row_groups
    if device.type == "cpu":
        rows = host
    elif cache is not None and cache[0] is host:
        rows = cache[1]
    else:
        rows = _to_device(host, device)
        if cache is not None:
            cache[0], cache[1] = host, rows
    return rows if m == 1 else rows.repeat_interleave(m)


def _check_delta(delta: Any, h: torch.Tensor, weights, j: int, step: int) -> torch.Tensor:
    """A steering_method's return value as a tensor that adds to ``h``, or an error naming it."""
    problem = None
    if isinstance(delta, (int, float)) and not isinstance(delta, bool):
        delta = torch.tensor(float(delta), dtype=torch.float32)
    if not torch.is_tensor(delta):
        problem = "expected a tensor"
    elif delta.dtype.is_complex or not delta.dtype.is_floating_point:
        problem = f"expected a real floating-point tensor, not {delta.dtype}"
    else:
        try:
            shape = torch.broadcast_shapes(delta.shape, h.shape)
        except RuntimeError:
            shape = None
        if shape != h.shape:
            problem = f"expected a tensor broadcastable to the hidden states' shape {tuple(h.shape)}"
        elif delta.device.type == "cpu" and not bool(torch.isfinite(delta).all()):
            problem = "expected finite values (it holds NaN or inf)"
    if problem is None:
        return delta
    got = describe(delta) if not torch.is_tensor(delta) else f"a {delta.dtype} tensor of shape {tuple(delta.shape)}"
    raise InvalidArgumentError(
        f"the steering_method of vector {weights.index[j]} (layer {weights.layer_idx}) returned {got} "
        f"at step {step}: {problem}"
    )


def _check_finite_delta(scale: torch.Tensor, combined: torch.Tensor, dtype: torch.dtype, layer_idx: int) -> None:
    """Raise as the C kernel does when a row's delta ``scale * combined`` is not finite in ``dtype``.

    Runs on the CPU (no synchronisation there) and whenever grad mode is on on any
    device: there it reads one bool back to the host, a synchronisation per steered
    layer that a training/grad forward accepts to never return NaN silently.  An
    accelerator's no-grad forward does not check (no sync per layer)."""
    limit = storage_limit(dtype)
    if not bool((scale * combined).abs().le(limit).all()):  # NaN compares False
        name = str(dtype).replace("torch.", "") if dtype.is_floating_point else "non-float"
        raise InvalidArgumentError(
            f"layer {layer_idx}: the steered hidden states are not finite in {name} (the layer's input is "
            "already NaN/inf, or coeff * rms(h) overflows it), so the forward would emit "
            "garbage; reduce the coefficient(s) of this layer's vectors"
        )


def steer(
    h: torch.Tensor, tracker, weights, directions: torch.Tensor, step: int, rows_cache: list | None = None
) -> torch.Tensor:
    """Return the steered layer input, out of place; ``weights`` is filled for ``step``.

    ``h + s_b * (W[group(b)] @ directions)`` with ``s_b`` the rms of the
    unsteered state at row b's last real token (computed from a detached copy,
    so steering never enters autograd), accumulated in float32 and rounded
    once as the C kernel does; then each steering_method's delta (computed on
    the unsteered input, limited to its group's rows) is added as is.
    """
    hd = h.detach()
    if hd.dim() != 3:
        raise InvalidArgumentError(
            f"layer {weights.layer_idx} got hidden states of shape {tuple(hd.shape)}: expected [batch, seq, hidden]"
        )
    batch, seq, width = hd.shape
    if seq == 0:
        raise InvalidArgumentError(
            f"layer {weights.layer_idx} got hidden states with 0 positions: give the model at least one token"
        )
    device = hd.device
    rows = None
    if weights.groups:
        rows = _row_index(tracker, batch, weights.groups, weights.layer_idx, device, rows_cache)
    methods = weights.methods
    # the user formulas see the unsteered input
    deltas = []
    if weights.has_methods:
        for j, method in enumerate(methods):
            if method is not None:
                deltas.append((j, _check_delta(method(h, step, weights.layer_idx), h, weights, j, step)))
    out = h
    host_w = weights.buffer
    if host_w.any():
        w = _to_device(torch.from_numpy(host_w), device)  # [max(G, 1), J]
        dirs = directions if directions.device == device else directions.to(device)
        combined = w @ dirs  # [max(G, 1), D]
        combined = combined[rows].view(batch, 1, width) if rows is not None else combined.view(1, 1, width)
        last = tracker.last_index(batch, seq)
        if last is None:
            ref = hd[:, -1:, :]
        else:
            index = last.to(device).view(batch, 1, 1).expand(batch, 1, width)
            ref = torch.take_along_dim(hd, index, dim=1)  # [B, 1, D]
        # rms = sqrt(|x|^2 / D + eps), accumulated in float32; Python scalars only
        norm = torch.linalg.vector_norm(ref, dim=-1, keepdim=True, dtype=torch.float32)
        scale = norm.square().mul_(1.0 / width).add_(_C.RMS_EPS).sqrt_()
        if device.type == "cpu" or torch.is_grad_enabled():
            _check_finite_delta(scale, combined, h.dtype, weights.layer_idx)
        out = torch.addcmul(h.float(), scale, combined).to(h.dtype)
    if deltas:
        membership = weights.membership
        for j, delta in deltas:
            if rows is not None:
                member = _to_device(membership[:, j].contiguous(), device)[rows].view(batch, 1, 1)
                delta = delta.to(device) * member
            out = out + delta
    return out


def _replace_hidden(args: tuple, kwargs: dict, from_kwargs: bool, key: str, new_h):
    if from_kwargs:
        kwargs = dict(kwargs)
        kwargs[key] = new_h
        return args, kwargs
    return (new_h, *tuple(args[1:])), kwargs


class _ModelHook:
    """What every Python hook of a steered model shares: ``copy.deepcopy`` copies it with the
    model, pickling refuses with SteerStateError (``_copy_note`` adds what a copy keeps)."""

    _copy_note = ""

    def __deepcopy__(self, memo):
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def __reduce_ex__(self, protocol):
        raise SteerStateError(
            f"cannot pickle or copy {type(self).__qualname__}: it is an AutoSteer hook on a steered model. "
            "Call Steer.reset_all() first, or save model.state_dict() instead" + self._copy_note
        )


class TorchHook(_ModelHook):
    """Forward pre-hook (``with_kwargs=True``) of one decoder layer that is not on the CPU.

    At each forward: the tracker's step, ``weights.fill(step, ...)`` (C), the
    row-group check, then :func:`steer`.  ``directions`` is the layer's float32
    [J, D] direction matrix on the layer's device.  Copied by
    ``copy.deepcopy`` with the model; pickling refuses with SteerStateError.
    """

    kernel_calls = 0  # the C kernel never runs here
    _copy_note = " (copy.deepcopy(model) keeps the steering)"

    def __init__(self, *, tracker, weights, directions: torch.Tensor, hidden_states_kwarg: str):
        self.tracker = tracker
        self.weights = weights
        self.directions = directions
        self.hidden_states_kwarg = hidden_states_kwarg
        self.calls = 0
        self._rows = [None, None]  # (host row groups, their copy on this layer's device)

    @property
    def layer_idx(self) -> int:
        return self.weights.layer_idx

    def reconfigure(self, weights, directions: torch.Tensor) -> None:
        """Steer with other vectors from the next forward on."""
        self.weights, self.directions = weights, directions

    def __call__(self, module, args, kwargs):
        self.calls += 1
        from_kwargs = not args
        h = kwargs.get(self.hidden_states_kwarg) if from_kwargs else args[0]
        if h is None:
            return None
        w = self.weights
        step = self.tracker.step
        w.fill(step, storage_limit(h.dtype), str(h.dtype).replace("torch.", ""))
        if w.groups:
            self.tracker.check_rows(h.shape[0], w.groups, w.layer_idx)
        if not w.has_methods and not w.buffer.any():
            return None
        new_h = steer(h, self.tracker, w, self.directions, step, self._rows)
        return _replace_hidden(args, kwargs, from_kwargs, self.hidden_states_kwarg, new_h)


class OutputHook(_ModelHook):
    """Forward hook (llama.cpp's control-vector semantics): adds a fixed vector to a decoder
    layer's output hidden states at every position (a tensor output, or the first element of
    a tuple); copied by ``copy.deepcopy``, refuses pickling like the other hooks."""

    def __init__(self, vector: torch.Tensor, layer_idx: int):
        self.vector = vector
        self.layer_idx = layer_idx

    def __call__(self, module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        new = h + self.vector.to(device=h.device, dtype=h.dtype)
        return (new, *tuple(output[1:])) if isinstance(output, tuple) else new
