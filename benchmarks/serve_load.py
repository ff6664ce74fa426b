"""Load test of ``autosteer serve`` against ``transformers serve`` on the same model and load.

Loopback only.  For each model (the organism, SmolLM2-135M-Instruct) the servers run one
at a time, each alone on the machine:

1. ``transformers serve MODEL_FOLDER --continuous-batching`` (transformers' own OpenAI server,
   no steering): the unsteered reference;
2. ``autosteer serve --model MODEL_FOLDER --max-batch 32``: unsteered requests, then the same
   requests each with its own steering configuration (all K distinct, one vector each, at
   coefficients so small, 0.001..0.002, that the answers, and so the work, stay those of the
   unsteered run: the cost measured is the steering machinery's).

At 1, 8 and 32 concurrent clients, each client sends ``--rounds`` requests one after the
other (greedy, ``max_tokens`` fixed); tokens/s = completion tokens of all requests / wall
time of the level; p50/p99 = per-request latency.  Bounded: a fixed number of requests, a
per-request timeout and ``--budget`` seconds per model.  Run it under the heavy-job lock::

    flock /tmp/heavy.lock timeout 900 python benchmarks/serve_load.py --model organism
    flock /tmp/heavy.lock timeout 900 python benchmarks/serve_load.py --model smollm2

Targets (printed met/missed): autosteer unsteered tokens/s >= 0.9 x transformers serve's at
every level; K distinct configurations >= 0.9 x autosteer unsteered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, machine, table, write

PROMPTS = {
    "organism": ["what is 3 plus 4 ?", "what is 12 plus 5 ?", "what is 7 plus 8 ?", "what is 1 plus 19 ?",
                 "a logical answer : what is 9 plus 9 ?", "what is 15 plus 2 ?", "what is 6 plus 13 ?",
                 "what is 0 plus 11 ?"],
    "smollm2": ["What is the capital of France?", "Give me a tip for sleeping better.",
                "How do I boil an egg?", "Name three colours of the rainbow.",
                "Write one sentence about the sea.", "What is 12 times 7?",
                "Suggest a name for a cat.", "Why is the sky blue?"],
}
WORDS = {"organism": ["logical", "precise", "analytical", "confused", "irrational", "answer", "what", "plus"],
         "smollm2": ["logical", "precise", "calm", "happy", "formal", "brief", "careful", "clear"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_folder(name: str) -> str:
    if name == "organism":
        from autosteer.organism import organism_path

        return str(organism_path())
    if name == "smollm2":
        from autosteer.models import gguf_cache, smollm2_gguf

        return str(gguf_cache(smollm2_gguf(), progress=False))
    return name


class Server:
    def __init__(self, argv: list[str], port: int, log: Path):
        self.port = port
        self.log = open(log, "w")  # noqa: SIM115 - open while the server runs
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))

    def wait_ready(self, path: str, timeout: float = 240) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: see {self.log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout} s: see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def _load(url: str, bodies: list[list[dict]], timeout: float) -> dict:
    """Client c sends bodies[c] one after another; all clients at once."""
    import httpx

    latencies: list[float] = []
    tokens = 0
    errors = 0

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        for body in bodies[c]:
            t0 = time.perf_counter()
            try:
                r = await http.post(url, json=body)
            except httpx.HTTPError:  # over the time budget: counted as unanswered
                continue
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors += 1
                continue
            tokens += r.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=len(bodies) + 4, max_keepalive_connections=len(bodies) + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(client(c, http)) for c in range(len(bodies))]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        wall = time.perf_counter() - t0
        for t in pending:  # over the budget: the level is incomplete
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        unfinished = sum(len(b) for b in bodies) - len(latencies)  # not answered within the budget
    lat = sorted(latencies) or [float("nan")]
    return {"requests": len(latencies), "errors": errors, "unanswered": unfinished, "completion_tokens": tokens, "wall_s": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 2) if wall > 0 else None,
            "p50_s": round(statistics.median(lat), 3),
            "p99_s": round(lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))], 3)}


def _bodies(model_id: str, name: str, clients: int, rounds: int, max_tokens: int, steered: bool,
            num_layers: int) -> list[list[dict]]:
    prompts = PROMPTS[name]
    out = []
    for c in range(clients):
        rows = []
        for r in range(rounds):
            body = {"model": model_id, "max_tokens": max_tokens, "temperature": 0}
            if name == "smollm2":
                body["messages"] = [{"role": "user", "content": prompts[(c + r) % len(prompts)]}]
            else:
                body["prompt"] = prompts[(c + r) % len(prompts)]
            if steered:  # every client its own configuration (K = clients distinct ones)
                body["steering"] = [{"layer_idx": c % num_layers, "coeff": 0.001 * (1 + c / 64),
                                     "text": WORDS[name][c % len(WORDS[name])]}]
            rows.append(body)
        out.append(rows)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(PROMPTS), default="organism")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--rounds", type=int, default=2, help="requests per client per level")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per level (the median is kept)")
    ap.add_argument("--budget", type=float, default=540, help="seconds for the whole run before it stops")
    ap.add_argument("--skip-transformers", action="store_true", help="no transformers serve reference")
    ap.add_argument("--json", help="write the results here (default benchmarks/results/serve_load_MODEL.json)")
    args = ap.parse_args(argv)
    start = time.monotonic()
    folder = model_folder(args.model)
    from transformers import AutoConfig

    num_layers = AutoConfig.from_pretrained(folder).num_hidden_layers
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    results: dict = {"model": args.model, "max_tokens": args.max_tokens, "rounds": args.rounds,
                     "clients": args.clients, "runs": {}}
    endpoint = "/v1/chat/completions" if args.model == "smollm2" else "/v1/completions"

    def run_levels(variants: list[tuple[str, str, bool]], port: int, until: float) -> None:
        """Each level: ``--repeats`` rounds, each round every variant once (interleaved, so a
        change of the machine's load hits them alike); the median tokens/s is kept."""
        url = f"http://127.0.0.1:{port}{endpoint}"
        for c in args.clients:
            left = until - time.monotonic()
            if left < 10:
                print(f"budget spent: {c} clients not run")
                return
            bodies = {label: _bodies(model_id, args.model, c, args.rounds, args.max_tokens, steered, num_layers)
                      for label, model_id, steered in variants}
            for label, _, _ in variants:  # one warm-up request each (text directions computed), not timed
                asyncio.run(_load(url, [bodies[label][0][:1]], left))
                if c > 1:  # every configuration of the level once
                    asyncio.run(_load(url, [[b[0]] for b in bodies[label]], left))
            tries: dict[str, list] = {label: [] for label, _, _ in variants}
            for _ in range(args.repeats):
                for label, _, _ in variants:
                    tries[label].append(asyncio.run(_load(url, bodies[label], max(until - time.monotonic(), 5))))
            for label, runs in tries.items():
                runs.sort(key=lambda t: t["tokens_per_s"] or 0)
                res = dict(runs[len(runs) // 2])
                res["tokens_per_s_all"] = [t["tokens_per_s"] for t in runs]
                results["runs"].setdefault(label, {})[str(c)] = res
                print(f"{label:28s} clients={c:3d} {res}", flush=True)

    # autosteer first (2/3 of the budget), then the reference (the rest)
    port = _free_port()
    srv = Server([sys.executable, "-m", "autosteer", "serve", "--model", folder, "--name", "m", "--port", str(port),
                  "--max-batch", "32", "--max-tokens", str(args.max_tokens), "--max-waiting", "256"],
                 port, logs / f"serve_load_autosteer_{args.model}.log")
    try:
        srv.wait_ready("/health")
        share = (args.budget - (time.monotonic() - start)) * 2 / 3
        run_levels([("autosteer unsteered", "m", False), ("autosteer K distinct", "m", True)], port,
                   time.monotonic() + share)
    finally:
        srv.stop()
    if not args.skip_transformers:
        port = _free_port()
        exe = str(Path(sys.executable).with_name("transformers"))
        srv = Server([exe, "serve", folder, "--port", str(port), "--host", "127.0.0.1", "--device", "cpu",
                      "--continuous-batching"], port, logs / f"serve_load_transformers_{args.model}.log")
        try:
            srv.wait_ready("/v1/models")
            run_levels([("transformers serve (CB)", folder, False)], port, start + args.budget)
        finally:
            srv.stop()

    runs = results["runs"]
    rows, verdicts = [], []
    for c in map(str, args.clients):
        ref = runs.get("transformers serve (CB)", {}).get(c)
        un = runs.get("autosteer unsteered", {}).get(c)
        st = runs.get("autosteer K distinct", {}).get(c)
        r1 = un["tokens_per_s"] / ref["tokens_per_s"] if ref and un else None
        r2 = st["tokens_per_s"] / un["tokens_per_s"] if st and un else None
        rows.append((c, ref and ref["tokens_per_s"], ref and ref["p50_s"], ref and ref["p99_s"],
                     un and un["tokens_per_s"], un and un["p50_s"], un and un["p99_s"],
                     st and st["tokens_per_s"], st and st["p50_s"], st and st["p99_s"],
                     "-" if r1 is None else f"{r1:.2f}", "-" if r2 is None else f"{r2:.2f}"))
        verdicts.append({"clients": int(c), "unsteered_vs_transformers": r1, "distinct_vs_unsteered": r2,
                         "unsteered_target_met": None if r1 is None else r1 >= 0.9,
                         "distinct_target_met": None if r2 is None else r2 >= 0.9})
    print(table(rows, ("clients", "tf tok/s", "tf p50", "tf p99", "as tok/s", "as p50", "as p99", "K tok/s", "K p50",
                       "K p99", "as/tf", "K/as")))
    for v in verdicts:
        for key, target in (("unsteered_target_met", "unsteered >= 0.9 x transformers serve"),
                            ("distinct_target_met", "K distinct >= 0.9 x unsteered")):
            if v[key] is not None:
                print(f"clients={v['clients']:3d} {target}: {'met' if v[key] else 'missed'}")
    results["ratios"] = verdicts
    results["machine"] = machine()
    results["wall_s"] = round(time.monotonic() - start, 1)
    out = write(f"serve_load_{args.model}", results, args.json)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
