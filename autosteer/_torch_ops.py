"""The steering math as torch ops, for tensors the C kernel does not write.

The C hook (``autosteer._C.SteerHook``) calls these when the hidden states live
on a GPU or take part in autograd.  Same formula as ``csrc/kernel.h``; all
device-side, no host synchronisation (no ``.item()``, no ``.cpu()``).
"""

from __future__ import annotations

import torch

RMS_EPS = 1e-6


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


def apply_delta(h, directions, weights, last, deltas):
    """Return ``h + s_b * sum_j w_j d_j`` (plus user deltas) out of place.

    ``s_b`` is the rms of the unsteered state at each row's last real token,
    computed from a detached copy so that steering never enters autograd.
    Written for few kernel launches (about eight per call on a GPU).
    """
    hd = h.detach()
    batch, _, width = hd.shape
    if last is None:
        ref = hd[:, -1:, :]
    else:
        index = last.to(hd.device).view(batch, 1, 1).expand(batch, 1, width)
        ref = torch.take_along_dim(hd, index, dim=1)  # [B, 1, D]
    # rms = sqrt(|x|^2 / D + eps), accumulated in float32; Python scalars only
    # (a tensor made from a host number would be a synchronising copy)
    norm = torch.linalg.vector_norm(ref, dim=-1, keepdim=True, dtype=torch.float32)
    scale = norm.square().mul_(1.0 / width).add_(RMS_EPS).sqrt_()
    combined = None
    for j, w in enumerate(weights):
        if w == 0.0:
            continue
        d = directions[j]
        combined = d * w if combined is None else combined.add(d, alpha=w)
    out = h
    if combined is not None:
        # accumulate in float32 and round once, as the C kernel does; the
        # gradient flows through h (the delta itself is detached)
        out = torch.addcmul(h.float(), scale, combined.to(hd.device).view(1, 1, width)).to(h.dtype)
    if deltas:
        for d in deltas:
            out = out + d
    return out
