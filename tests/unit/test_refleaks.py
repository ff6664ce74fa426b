"""Reference-count and memory leaks of the C core: 100,000 hook calls and
schedule evaluations leave reference counts and the process's memory flat."""

from __future__ import annotations

import gc
import resource
import sys

import numpy as np
import torch
from test_steer import make_hook, make_tracker

from autosteer import CosineSchedule, DecaySchedule, WarmupSchedule

N = 100_000


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_hook_calls_do_not_leak():
    tracker = make_tracker()
    dirs = torch.randn(2, 16)
    sched = DecaySchedule(0.9, 0.1, 2)
    py_sched = lambda k: 0.5  # noqa: E731 - the slow path through a Python callable
    hook = make_hook(tracker, 3, dirs, [0.5, -0.25], [sched, py_sched])
    h = torch.zeros(2, 3, 16)
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    module = torch.nn.Identity()
    args = (h,)
    kwargs = {"attention_mask": mask}
    def burst(n):
        with torch.no_grad():
            for _ in range(n):
                h.zero_()  # the hook steers h in place: unreset it would grow to inf (and raise)
                tracker(module, (), kwargs)
                hook(module, args, kwargs)

    burst(1000)  # warm up: the tracker now holds the last forward's mask
    gc.collect()
    refs = [sys.getrefcount(o) for o in (hook, tracker, h, mask, module, sched, py_sched, dirs, args, kwargs)]
    before = rss_kib()
    burst(N)
    gc.collect()
    grew = rss_kib() - before
    after = [sys.getrefcount(o) for o in (hook, tracker, h, mask, module, sched, py_sched, dirs, args, kwargs)]
    assert after == refs
    assert hook.calls == N + 1000 and hook.kernel_calls == N + 1000
    assert grew < 4096, f"RSS grew by {grew} KiB over {N} hook calls"


def test_schedule_evaluations_do_not_leak():
    scheds = [DecaySchedule(0.8, 0.2, 3), CosineSchedule(10, 0.1), WarmupSchedule(5, 0.2)]
    steps = np.arange(64)
    refs = [sys.getrefcount(s) for s in scheds] + [sys.getrefcount(steps)]

    def burst(n):
        for i in range(n):
            for s in scheds:
                s(i % 50)
            if i % 10 == 0:
                for s in scheds:
                    s(steps)
                    s.to_dict()
                    repr(s)

    burst(1000)
    gc.collect()
    before = rss_kib()
    burst(N)
    gc.collect()
    grew = rss_kib() - before
    assert [sys.getrefcount(s) for s in scheds] + [sys.getrefcount(steps)] == refs
    assert grew < 4096, f"RSS grew by {grew} KiB over {N} schedule evaluations"


def test_torch_fallback_path_does_not_leak():
    """Hidden states that require grad take the torch-op path; it must not leak either."""
    tracker = make_tracker()
    dirs = torch.randn(1, 8)
    hook = make_hook(tracker, 0, dirs, [0.3])
    h = torch.zeros(1, 2, 8, requires_grad=True)
    module = torch.nn.Identity()
    args, kwargs = (h, 7), {}
    refs = [sys.getrefcount(o) for o in (hook, tracker, h, args, kwargs)]
    for _ in range(5000):
        out_args, out_kwargs = hook(module, args, kwargs)
        assert out_args[1] == 7 and out_args[0] is not h
    del out_args, out_kwargs
    gc.collect()
    assert [sys.getrefcount(o) for o in (hook, tracker, h, args, kwargs)] == refs


def test_per_row_hook_calls_do_not_leak():
    """Row groups on the tracker, a membership matrix on the weights: the steady state allocates nothing."""
    tracker = make_tracker()
    dirs = torch.randn(3, 16)
    membership = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    sched = CosineSchedule(8, 0.2)
    hook = make_hook(tracker, 1, dirs, [0.5, -0.25, 0.1], [sched, None, None], membership=membership)
    groups = torch.tensor([1, 0])
    tracker.set_row_groups(groups)
    h = torch.zeros(4, 3, 16)  # 4 = 2 * 2 rows
    module = torch.nn.Identity()
    args, kwargs = (h,), {"attention_mask": torch.ones(4, 3, dtype=torch.long)}

    def burst(n):
        with torch.no_grad():
            for _ in range(n):
                h.zero_()  # the hook steers h in place: unreset it would grow to inf (and raise)
                tracker(module, (), kwargs)
                hook(module, args, kwargs)

    burst(1000)
    gc.collect()
    objs = (hook, tracker, h, membership, groups, sched, dirs, args, kwargs)
    refs = [sys.getrefcount(o) for o in objs]
    before = rss_kib()
    burst(N)
    gc.collect()
    grew = rss_kib() - before
    assert [sys.getrefcount(o) for o in objs] == refs
    assert hook.kernel_calls == N + 1000
    assert grew < 4096, f"RSS grew by {grew} KiB over {N} per-row hook calls"
    held = sys.getrefcount(groups)
    tracker.set_row_groups(None)
    assert sys.getrefcount(groups) == held - 1  # the tracker let go of its reference


def test_error_paths_do_not_leak():
    """Refused schedules, bad schedule returns, bad rows and deep copies leave reference counts flat."""
    import copy

    from autosteer import _C, InvalidArgumentError, ScheduleError

    tracker = make_tracker()
    dirs = torch.randn(2, 8)
    bad = lambda k: "not a number"  # noqa: E731
    membership = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    hook = make_hook(tracker, 0, dirs, [0.5, 0.5], [None, bad], membership=membership)
    h = torch.zeros(2, 2, 8)
    module = torch.nn.Identity()
    args = (h,)
    kwargs = {}
    groups = torch.tensor([0, 1])
    d = {"type": "decay", "rate": 0.9, "bogus": 1}
    objs = (hook, tracker, h, bad, membership, dirs, groups, d)

    def burst(n):
        for _ in range(n):
            for make in (lambda: CosineSchedule(1.5), lambda: DecaySchedule(rate=True),
                         lambda: DecaySchedule.from_dict(d), lambda: WarmupSchedule(2, 0.1, 3)):
                try:
                    make()
                except ScheduleError:
                    pass
            with torch.no_grad():
                try:  # no rows set
                    hook(module, args, kwargs)
                except InvalidArgumentError:
                    pass
                tracker.set_row_groups(groups)
                try:  # the schedule returns a str
                    hook(module, args, kwargs)
                except InvalidArgumentError:
                    pass
                tracker.set_row_groups(None)
            copy.deepcopy(hook)
            _C.schedule_kinds()

    burst(200)
    gc.collect()
    refs = [sys.getrefcount(o) for o in objs]
    burst(3000)
    gc.collect()
    assert [sys.getrefcount(o) for o in objs] == refs
