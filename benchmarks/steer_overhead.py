#!/usr/bin/env python
"""Steering overhead: greedy generate() tokens/s steered vs unsteered, in one process.

    python benchmarks/steer_overhead.py [--models llama,smollm2] [--batches 1,16] [--new 32]
                                        [--repeats 9] [--device cpu] [--json PATH]

For each model and batch size, round-robin over the cases (each repeated
``--repeats`` times after a warm-up, medians reported):

  unsteered
  AutoSteer, 2 vectors on 2 layers with a cosine schedule
  AutoSteer, 1 vector on every layer
  a plain-Python forward pre-hook following llm_steer's recipe (direction
      re-normalised at every call, delta from torch ops), 2 layers / every layer
  llm_steer 2.0.1 itself (pip install llm-steer), 2 layers / every layer, when installed

Then, per model, the per-call cost of one steered layer's hook (AutoSteer's C hook vs the
plain-Python one), called directly at a decode step and a prefill, beside an unsteered
forward's time per layer (``--no-micro`` skips it): on a CPU the end-to-end difference is
within run-to-run noise, the per-call cost is not.

Models: a random-weight Llama (hidden 512, 8 layers, SmolLM2's vocabulary, built
from a config) and SmolLM2-135M-Instruct (``load_model("smollm2")``).  Targets on
the CPU: steered/unsteered >= 0.98 with 2 layers, >= 0.95 with every layer, and
AutoSteer's overhead at most 1/4 of the plain-Python hook's.  Writes
benchmarks/results/steer_overhead.json.
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import interleaved, machine, median, table, write


def python_hooks(model, layers, coeff, direction, schedule):
    """llm_steer's recipe as a plain pre-hook: re-normalise the direction, rms of the last token,
    coeff * schedule(step) * direction * rms added to every position; the step counts calls."""
    handles = []
    for idx in layers:
        state = {"step": 0}

        def hook(module, args, kwargs, state=state):
            h = args[0] if args else kwargs["hidden_states"]
            d = direction.float()
            d = d / (d.pow(2).mean().sqrt() + 1e-6)
            r = h[:, -1, :].float().pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
            m = schedule(state["step"]) if schedule else 1.0
            state["step"] += 1
            h = h + (coeff * m * d * r)[:, None, :].to(h.dtype)
            return ((h,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

        handles.append(model.model.layers[idx].register_forward_pre_hook(hook, with_kwargs=True))
    return handles


def micro(model, tok, direction, repeats, calls=1000):
    """Per-call cost of one steered layer's pre-hook (AutoSteer's C hook vs the plain-Python
    hook), at a decode step (batch 16, 1 token) and a prefill (batch 16, 32 tokens), beside an
    unsteered forward's time per layer.  The hooks are called directly on a hidden state of
    that shape (a tiny coefficient, so the in-place additions never grow it)."""
    import time

    from autosteer import CosineSchedule, Steer

    layers = model.model.layers
    a, b = len(layers) // 3, (2 * len(layers)) // 3
    steer = Steer(model, tok)
    steer.add(a, 1e-4, vector=direction, coeff_schedule=CosineSchedule(16, 0.2))
    handles = python_hooks(model, [b], 1e-4, direction, CosineSchedule(16, 0.2))
    c_hook = next(iter(layers[a]._forward_pre_hooks.values()))
    py_hook = list(layers[b]._forward_pre_hooks.values())[-1]
    out = []
    try:
        with torch.inference_mode():
            for shape in ((16, 1), (16, 32)):
                ids = torch.randint(3, 1000, shape, device=direction.device)
                model(input_ids=ids)  # the tracker's state for this shape
                h = torch.randn(*shape, model.config.hidden_size, device=direction.device)

                def timed(fn, layer, n=calls):
                    t = time.perf_counter()
                    for _ in range(n):
                        fn(layer, (h,), {})
                    return (time.perf_counter() - t) / n

                def forward():
                    t = time.perf_counter()
                    model(input_ids=ids)
                    return time.perf_counter() - t

                cs, ps, fs = [], [], []
                for _ in range(repeats):  # interleaved
                    cs.append(timed(c_hook, layers[a]))
                    ps.append(timed(py_hook, layers[b]))
                    steer.reset_all()
                    fs.append(forward())
                    steer.add(a, 1e-4, vector=direction, coeff_schedule=CosineSchedule(16, 0.2))
                    model(input_ids=ids)
                    c_hook = next(iter(layers[a]._forward_pre_hooks.values()))
                per_layer = median(fs) / len(layers)
                out.append({"batch": shape[0], "tokens": shape[1], "autosteer_us": 1e6 * median(cs),
                            "python_hook_us": 1e6 * median(ps), "forward_per_layer_us": 1e6 * per_layer,
                            "ratio_python_over_autosteer": median(ps) / median(cs)})
    finally:
        for hd in handles:
            hd.remove()
        steer.reset_all()
    return out


def build(name, device):
    from autosteer import load_model

    if name == "smollm2":
        model, tok = load_model("smollm2", device=device, progress=False)
        return model, tok
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tok = load_model("smollm2", device=device, progress=False)  # the vocabulary of a real tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, bos_token_id=1, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg).to(device).eval(), tok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="llama,smollm2")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="default: AutoSteer's policy for each model")
    p.add_argument("--no-micro", action="store_true", help="skip the per-call hook timings")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from autosteer import CosineSchedule, Steer
    from autosteer.search._threads import auto_threads

    try:
        import llm_steer
    except ImportError:
        llm_steer = None
        print("llm_steer is not installed (pip install llm-steer==2.0.1): its own code path is skipped")
    results = {"machine": machine(a.device), "new_tokens": a.new, "prompt_tokens": a.prompt, "repeats": a.repeats,
               "runs": []}
    rows = []
    for name in a.models.split(","):
        model, tok = build(name, a.device)
        threads = a.threads or auto_threads(model)
        torch.set_num_threads(threads)
        n_layers = model.config.num_hidden_layers
        two = [n_layers // 3, (2 * n_layers) // 3]
        every = list(range(n_layers))
        sched = CosineSchedule(16, 0.2)
        direction = torch.randn(model.config.hidden_size, device=a.device)
        for batch in map(int, a.batches.split(",")):
            g = torch.Generator().manual_seed(batch)
            ids = torch.randint(3, min(len(tok), 30000), (batch, a.prompt), generator=g).to(a.device)
            mask = torch.ones_like(ids)

            def gen():
                with torch.inference_mode():
                    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=a.new, min_new_tokens=a.new,
                                   do_sample=False, pad_token_id=tok.pad_token_id)

            steer = Steer(model, tok)
            cases = {"unsteered": gen}

            def autosteer_case(layers, schedule):
                def run():
                    for i, layer in enumerate(layers):
                        steer.add(layer, 0.3 if i % 2 == 0 else -0.2, vector=direction, coeff_schedule=schedule)
                    try:
                        gen()
                    finally:
                        steer.reset_all()
                return run

            def hook_case(layers, schedule):
                def run():
                    handles = python_hooks(model, layers, 0.3, direction, schedule)
                    try:
                        gen()
                    finally:
                        for h in reversed(handles):
                            h.remove()
                return run

            def llm_steer_case(layers, schedule):
                lsteer = llm_steer.Steer(model, tok)
                for i, layer in enumerate(layers):  # directions captured once, outside the timing
                    lsteer.add(layer_idx=layer, coeff=0.3 if i % 2 == 0 else -0.2, text="a happy wedding",
                               coeff_schedule=schedule)
                saved = {k: v for k, v in llm_steer.Steer.steers.items()}
                lsteer.reset_all()

                def run():
                    # re-install the captured steering state (its step counter starts over, as after add())
                    for layer, data in saved.items():
                        data.step = 0
                        llm_steer.Steer.steers[layer] = data
                        lsteer._set_forward_fn(llm_steer.ActivationMode.STEER, layer)
                    try:
                        gen()
                    finally:
                        lsteer.reset_all()
                return run

            cases["autosteer, 2 layers (cosine)"] = autosteer_case(two, sched)
            cases["autosteer, every layer"] = autosteer_case(every, None)
            cases["python hook, 2 layers (cosine)"] = hook_case(two, sched)
            cases["python hook, every layer"] = hook_case(every, None)
            if llm_steer is not None:
                try:
                    cases["llm_steer, 2 layers (cosine)"] = llm_steer_case(two, sched)
                    cases["llm_steer, every layer"] = llm_steer_case(every, None)
                except Exception as exc:  # noqa: BLE001 - its API may differ from 2.0.1
                    print(f"llm_steer could not be driven here ({type(exc).__name__}: {exc})")
            times = interleaved(cases, a.repeats, a.device)
            base = median(times["unsteered"])
            run = {"model": name, "batch": batch, "threads": threads, "layers": n_layers,
                   "hidden": model.config.hidden_size, "median_s": {k: median(v) for k, v in times.items()},
                   "tokens_per_s": {k: batch * a.new / median(v) for k, v in times.items()},
                   "ratio_vs_unsteered": {k: base / median(v) for k, v in times.items()}}
            for which in ("2 layers (cosine)", "every layer"):
                ours = 1 - run["ratio_vs_unsteered"][f"autosteer, {which}"]
                theirs = 1 - run["ratio_vs_unsteered"][f"python hook, {which}"]
                # None: the Python hook's own overhead is within the run-to-run noise, no share to take
                run[f"overhead_share_of_python_hook, {which}"] = ours / theirs if theirs > 0.01 else None
            results["runs"].append(run)
            for k in times:
                rows.append((name, batch, k, f"{run['tokens_per_s'][k]:.1f}", f"{run['ratio_vs_unsteered'][k]:.3f}"))
        if not a.no_micro:
            results.setdefault("micro", []).append({"model": name, "threads": threads,
                                                    "cases": micro(model, tok, direction, a.repeats)})
    print(table(rows, ("model", "batch", "case", "tokens/s", "steered/unsteered")))
    for m in results.get("micro", []):
        for c in m["cases"]:
            print(f"{m['model']} hook per call, batch {c['batch']} x {c['tokens']} tokens: AutoSteer "
                  f"{c['autosteer_us']:.1f} us, Python hook {c['python_hook_us']:.1f} us "
                  f"({c['ratio_python_over_autosteer']:.1f}x); an unsteered forward costs "
                  f"{c['forward_per_layer_us']:.0f} us per layer")
    for run in results["runs"]:
        for which in ("2 layers (cosine)", "every layer"):
            share = run[f"overhead_share_of_python_hook, {which}"]
            print(f"{run['model']} batch {run['batch']}, {which}: AutoSteer's overhead is "
                  + ("within noise (so is the plain-Python hook's)" if share is None
                     else f"{share:.2f} of the plain-Python hook's"))
    print("wrote", write("steer_overhead", results, a.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
