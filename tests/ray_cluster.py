"""Real Ray for the executor tests: a private instance in the test process, or nodes started
with ``ray start`` as separate processes, and a slow custom metric whose calls can be watched.

Nothing here calls ``ray stop`` (it stops every Ray process of the machine); each node is
started in its own process group and killed through it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: what every Ray process of the tests runs with: no token auth, no usage report
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
#: how long a stopped worker's process may take to exit: Ray disconnects it at once, but
#: Python's teardown of a worker (torch, the model) took 40 s once on a loaded 2-core machine
EXIT_S = 120
#: the GCS declares a lost node dead within about 2 s instead of about 13 s
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
               "RAY_health_check_timeout_ms": "500", "RAY_health_check_initial_delay_ms": "500"}


def short_temp_dir(prefix: str) -> str:
    """A temp dir short enough for Ray's unix sockets (107 bytes with Ray's own suffix)."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


class Node:
    """One ``ray start`` node, in its own process group."""

    def __init__(self, args: list[str], temp_dir: str, env: dict[str, str]) -> None:
        self.temp_dir = temp_dir
        cmd = [ray_bin(), "start", "--block", "--temp-dir", temp_dir, "--disable-usage-stats", *args]
        self.output = os.path.join(temp_dir, "ray_start.out")
        with open(self.output, "wb") as out:  # a file, not a pipe: a full pipe would block the node
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pgid = self.proc.pid

    def text(self) -> str:
        with open(self.output, "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL every daemon of the node (raylet, agents, and the GCS on a head)."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def start_cluster(num_nodes: int = 2, cpus_per_node: int = 1, timeout: float = 120.0) -> tuple[str, list[Node]]:
    """A head and ``num_nodes - 1`` worker nodes on this machine; returns (address, nodes).

    Each node has its own temp dir and a custom resource ``node_<i>``; the head checks node
    health every 0.5 s.  The caller kills the nodes (``Node.kill``) even when this raises.
    """
    env = {**os.environ, **RAY_ENV, **FAST_HEALTH}
    env.pop("RAY_ADDRESS", None)
    nodes: list[Node] = []
    head_dir = short_temp_dir("rH")
    port = _free_port()
    nodes.append(Node(["--head", f"--port={port}", f"--num-cpus={cpus_per_node}", "--include-dashboard=false",
                       f"--resources={json.dumps({'node_0': 1})}"], head_dir, env))
    address = _wait_address(head_dir, nodes[0], timeout)
    for i in range(1, num_nodes):
        nodes.append(Node([f"--address={address}", f"--num-cpus={cpus_per_node}",
                           f"--resources={json.dumps({f'node_{i}': 1})}"], short_temp_dir(f"r{i}"), env))
    _wait_nodes(address, num_nodes, timeout)
    return address, nodes


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _wait_address(temp_dir: str, head: Node, timeout: float) -> str:
    path = Path(temp_dir) / "ray_current_cluster"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if head.proc.poll() is not None:
            raise RuntimeError(f"ray start --head exited: {head.text()[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"the Ray head did not write {path} within {timeout} s")


def _wait_nodes(address: str, n: int, timeout: float) -> None:
    env = {**os.environ, **RAY_ENV}
    code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1.0)
    raise RuntimeError(f"{n} Ray nodes did not come up at {address} within {timeout} s")


def watched_metric(folder: str, delay: float = 0.0, die_after_first: bool = False):
    """A custom metric (one value per prompt: each prompt's top next-token logit) that appends its
    process id to ``folder/calls`` at every call and then sleeps ``delay`` s.  With
    ``die_after_first``, every call after the first one (the baseline) kills its own process,
    as a crashing worker would.  A closure, so Ray pickles it by value."""

    calls = os.path.join(folder, "calls")

    def metric(model, tokenizer, prompts):
        import os as _os
        import time as _time

        import torch

        with open(calls, "a") as f:
            f.write(f"{_os.getpid()}\n")
        if die_after_first:
            with open(calls) as f:
                if len(f.read().split()) > 1:
                    _os._exit(3)
        _time.sleep(delay)
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = model(**enc).logits
        last = enc["attention_mask"].sum(1) - 1 if tokenizer.padding_side == "right" else None
        rows = range(len(prompts))
        picked = logits[list(rows), last] if last is not None else logits[:, -1]
        return [float(x) for x in picked.max(-1).values]

    return metric


def calls_of(folder: str) -> list[int]:
    path = os.path.join(folder, "calls")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(x) for x in f.read().split()]


class Killer(threading.Thread):
    """Once ``folder/calls`` holds ``after`` lines, run ``kill(pid of the last caller)`` once."""

    def __init__(self, folder: str, after: int, kill, timeout: float = 300.0) -> None:
        super().__init__(daemon=True)
        self.folder, self.after, self.kill, self.timeout = folder, after, kill, timeout
        self.killed: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            calls = calls_of(self.folder)
            if len(calls) >= self.after:
                self.killed = calls[self.after - 1]
                self.kill(self.killed)
                return
            time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
