"""How many CPU threads torch uses while AutoSteer scores a model: one policy for the API,
the command line and the notebook.

Small models lose more to thread start-up and synchronisation than they gain
from a second core (measured on the 2-core CI machine: the organism demo took
11 s on one thread and 65-77 s on the default two under load), so a model
below :data:`SMALL_MODEL_PARAMETERS` runs on one thread; a larger one on
:data:`LARGE_MODEL_THREADS` (capped by the machine's cores).  ``threads=N``
(``--threads N``) overrides it; the previous setting is restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from autosteer._checks import check_int

__all__ = ["auto_threads", "using_threads", "SMALL_MODEL_PARAMETERS", "LARGE_MODEL_THREADS", "check_threads"]

SMALL_MODEL_PARAMETERS = 20_000_000
LARGE_MODEL_THREADS = 2


def check_threads(threads: Any) -> int | None:
    """None (automatic) or an integer >= 1."""
    if threads is None or threads == "auto":
        return None
    return check_int("threads", threads, minimum=1)


def auto_threads(model: Any) -> int:
    """The thread count for ``model`` under the policy above."""
    try:
        n = sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - not a torch module: be conservative
        n = 0
    if n < SMALL_MODEL_PARAMETERS:
        return 1
    return max(1, min(LARGE_MODEL_THREADS, os.cpu_count() or 1))


@contextlib.contextmanager
def using_threads(threads: int | None, model: Any = None) -> Iterator[int]:
    """torch uses ``threads`` (None: :func:`auto_threads` of ``model``) inside the block."""
    import torch

    n = auto_threads(model) if threads is None else threads
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
