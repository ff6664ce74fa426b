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
    """
    hd = h.detach()
    hf = hd.float()
    batch = hf.shape[0]
    if last is None:
        ref = hf[:, -1, :]
    else:
        ref = hf[torch.arange(batch, device=hf.device), last.to(hf.device)]
    scale = ref.pow(2).mean(dim=-1, keepdim=True).add(RMS_EPS).sqrt()  # [B, 1]
    combined = None
    for j, w in enumerate(weights):
        if w == 0.0:
            continue
        d = directions[j].to(device=hf.device)
        combined = d * w if combined is None else combined.add(d, alpha=w)
    out = h
    if combined is not None:
        delta = (scale * combined)[:, None, :]
        # accumulate in float32 and round once, as the C kernel does; the
        # gradient flows through h (the delta itself is detached)
        out = (h.float() + delta).to(h.dtype)
    if deltas:
        for d in deltas:
            out = out + d
    return out
