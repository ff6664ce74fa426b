"""How many CPU threads torch uses while AutoSteer scores a model: one policy for the API,
the command line and the notebook.

Small models lose more to thread start-up and synchronisation than they gain
from a second core (measured on the 2-core CI machine: the organism demo took
11 s on one thread and 65-77 s on the default two under load), so a model
below :data:`SMALL_MODEL_PARAMETERS` runs on one thread; a larger one on
:data:`LARGE_MODEL_THREADS` (capped by the machine's cores) unless the machine
is busy: when the 1-minute load average leaves less than one idle core per
extra thread, it runs on as many threads as there are idle cores (at least
one).  Measured on the 2-core machine at a load average of 4 (SmolLM2, 8 chat
prompts x 32 greedy tokens, 3 alternating repeats): one thread 4.2 / 6.0 / 8.1 s,
two threads 8.6 / 9.8 / 40.1 s -- two threads on a busy machine were slower
every time and collapsed once (OpenMP threads spin-wait for a core).  ``threads=N``
(``--threads N``) overrides it; the previous setting is restored afterwards.

A search decides once, when ``AutoSteerRunner.run()`` starts: asked at every
evaluation, the policy counted the run's own threads in the load average and
talked a SmolLM2 demo on an idle 2-core machine down to one thread.  For the
same reason the load this process itself put into the 1-minute average (loading
the model, calibrating) is estimated from its CPU time since AutoSteer was
imported and subtracted: measured, a demo started at a load average of 0.34
had pushed it past 0.5 by the time its run began and ran on one thread.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from typing import Any

from autosteer._checks import check_int

__all__ = ["LARGE_MODEL_THREADS", "SMALL_MODEL_PARAMETERS", "auto_threads", "check_threads", "using_threads"]

SMALL_MODEL_PARAMETERS = 20_000_000
LARGE_MODEL_THREADS = 2

# when this module was imported: what this process's own load is estimated from
_STARTED = (time.monotonic(), time.process_time())


def own_load(cores: int) -> float:
    """This process's estimated share of the 1-minute load average: its mean number of busy
    CPUs since AutoSteer was imported (CPU time over wall time, at most ``cores``), weighted as
    the kernel's exponential 1-minute average weighs that much of the past."""
    wall = time.monotonic() - _STARTED[0]
    if wall <= 0:
        return 0.0
    busy = min(float(cores), max(0.0, (time.process_time() - _STARTED[1]) / wall))
    return busy * (1.0 - math.exp(-wall / 60.0))


def check_threads(threads: Any) -> int | None:
    """None (automatic) or an integer >= 1."""
    if threads is None or threads == "auto":
        return None
    return check_int("threads", threads, minimum=1)


def auto_threads(model: Any) -> int:
    """The thread count for ``model`` under the policy above."""
    try:
        n = sum(p.numel() for p in model.parameters())
    except Exception:
        n = 0
    if n < SMALL_MODEL_PARAMETERS:
        return 1
    cores = os.cpu_count() or 1
    want = max(1, min(LARGE_MODEL_THREADS, cores))
    try:
        others = max(0.0, os.getloadavg()[0] - own_load(cores))
    except (AttributeError, OSError):  # no load average on this platform
        return want
    idle = cores - others
    return max(1, min(want, int(idle + 0.5)))


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
