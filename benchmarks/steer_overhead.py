"""Steering overhead: generate() throughput steered vs unsteered, AutoSteer vs a
pure-Python hook baseline (the llm_steer recipe: direction re-normalised at every
forward, delta built with torch ops in a Python pre-hook).

Prints ratios measured in this one run.  Random-weight Llama built from a
config (no download).  Usage:
    python benchmarks/steer_overhead.py [--device cpu|cuda] [--hidden 512] [--layers 8]
        [--batch 8] [--prompt 32] [--new 32] [--dtype float32|bfloat16|float16] [--repeats 3]
    python benchmarks/steer_overhead.py --micro [--device cpu|cuda] [--hidden 2048] [--dtype ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from autosteer import Steer


class _Tok:
    """Just enough tokenizer for Steer's direction capture (fixed ids)."""

    def __call__(self, text, add_special_tokens=False, return_tensors="pt"):
        n = max(1, len(text.split()))
        return {"input_ids": torch.arange(5, 5 + n)[None, :]}


def python_baseline(model, layer_idx, coeff, direction):
    """llm_steer-style hook in plain Python/torch: re-normalises every call."""

    def hook(module, args, kwargs):
        h = args[0]
        d = direction.float()
        d = d / (d.pow(2).mean().sqrt() + 1e-6)
        r = h[:, -1, :].float().pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
        h = h + (coeff * d * r)[:, None, :].to(h.dtype)
        return (h,) + args[1:], kwargs

    return model.model.layers[layer_idx].register_forward_pre_hook(hook, with_kwargs=True)


def timed_generate(model, ids, new, device, repeats):
    times = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, pad_token_id=0)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # first run is a warm-up


def micro(device: str, dtype, width: int, repeats: int = 2000):
    """Cost of one steered layer forward, without the model: the C hook vs the
    Python baseline hook vs the torch-op path, per call."""
    from autosteer import _C, _torch_ops

    rows = []
    module = torch.nn.Identity()
    direction = torch.randn(width)
    for batch, seq in ((8, 1), (8, 64)):
        h = torch.randn(batch, seq, width, device=device).to(dtype)
        tracker = _C.StepTracker(_torch_ops.last_token_index, None)
        dirs = direction[None, :].contiguous()
        hook = _C.SteerHook(tracker, 0, dirs, [0.3], [None], [None], dirs.to(device), _torch_ops.apply_delta, torch.is_grad_enabled)

        def c_hook():
            hook(module, (h,), {})

        def torch_ops():
            _torch_ops.apply_delta(h, dirs.to(device), (0.3,), None, None)

        d = direction.to(device)

        def python_hook():
            x = h
            dd = d.float()
            dd = dd / (dd.pow(2).mean().sqrt() + 1e-6)
            r = x[:, -1, :].float().pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
            x = x + (0.3 * dd * r)[:, None, :].to(x.dtype)

        for name, fn in (("autosteer C hook", c_hook), ("autosteer torch ops", torch_ops), ("python hook", python_hook)):
            with torch.inference_mode():
                for _ in range(50):
                    fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(repeats):
                    fn()
                if device == "cuda":
                    torch.cuda.synchronize()
            rows.append((f"{name}, h[{batch}, {seq}, {width}]", 1e6 * (time.perf_counter() - t0) / repeats))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--micro", action="store_true", help="time one steered layer call only (no model)")
    a = p.parse_args(argv)
    if a.micro:
        dev = torch.cuda.get_device_name() if a.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
        print(f"per-call cost of steering one layer ({dev}, {a.dtype}, torch {torch.__version__})")
        rows = micro(a.device, getattr(torch, a.dtype), a.hidden)
        for name, us in rows:
            print(f"{name:48s} {us:9.1f} us")
        return
    torch.manual_seed(0)
    dtype = getattr(torch, a.dtype)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=a.hidden, intermediate_size=a.hidden * 3,
                      num_hidden_layers=a.layers, num_attention_heads=max(1, a.hidden // 64),
                      num_key_value_heads=max(1, a.hidden // 64), max_position_embeddings=4096,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).to(device=a.device, dtype=dtype).eval()
    ids = torch.randint(3, 1000, (a.batch, a.prompt), device=a.device)
    tok = _Tok()
    rows = []
    base = timed_generate(model, ids, a.new, a.device, a.repeats)
    rows.append(("unsteered", base))
    for n_layers in (1, a.layers):
        with Steer(model, tok) as s:
            for i in range(n_layers):
                s.add(i, 0.3, "a logical answer")
            t = timed_generate(model, ids, a.new, a.device, a.repeats)
        rows.append((f"autosteer, {n_layers} layer(s)", t))
        direction = torch.randn(a.hidden, device=a.device)
        handles = [python_baseline(model, i, 0.3, direction) for i in range(n_layers)]
        try:
            t = timed_generate(model, ids, a.new, a.device, a.repeats)
        finally:
            for h in reversed(handles):
                h.remove()
        rows.append((f"python hook baseline, {n_layers} layer(s)", t))
    tokens = a.batch * a.new
    dev = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"device={dev} dtype={a.dtype} hidden={a.hidden} layers={a.layers} batch={a.batch} "
          f"prompt={a.prompt} new={a.new} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'configuration':40s} {'s/generate':>11s} {'tok/s':>9s} {'vs unsteered':>13s}")
    for name, t in rows:
        print(f"{name:40s} {t:11.4f} {tokens / t:9.1f} {t / base:12.3f}x")
    for n_layers in (1, a.layers):
        ours = dict(rows)[f"autosteer, {n_layers} layer(s)"]
        py = dict(rows)[f"python hook baseline, {n_layers} layer(s)"]
        print(f"steering overhead, {n_layers} layer(s): autosteer {100 * (ours / base - 1):+.1f}%, "
              f"python baseline {100 * (py / base - 1):+.1f}%")


if __name__ == "__main__":
    main()
