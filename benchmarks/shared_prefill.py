#!/usr/bin/env python
"""Would sharing the unsteered prefill pay?  An upper bound, measured on SmolLM2.

    python benchmarks/shared_prefill.py [--k 8] [--prompts 16] [--new 48] [--lowest 12] [--repeats 3]

In a population round, the K candidates' rows of one prompt are identical below the lowest
steered layer during the prefill (decode steps differ from the first steered token on).  Sharing
that part would compute the layers below ``--lowest`` once per prompt (P rows) instead of once
per row (K x P).  This times, interleaved, (a) the whole round's greedy generation of K x P rows
(``--new`` tokens, the demo's chat prompts), (b) the prefill of K x P rows through the layers
below ``--lowest`` only, (c) the same for P rows; the most sharing could save is (b - c) / a.
The demo's space starts at layer 12 of 30.  Writes benchmarks/results/shared_prefill.json.
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import interleaved, machine, median, write


class _Stop(Exception):
    pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--new", type=int, default=48)
    p.add_argument("--lowest", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from autosteer import load_model
    from autosteer.demo import load_concept_demo
    from autosteer.search._threads import auto_threads

    model, tok = load_model("smollm2", progress=False)
    torch.set_num_threads(auto_threads(model))
    _, _, prompts, _ = load_concept_demo()
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in prompts[: a.prompts]]
    tok.padding_side = "left"
    one = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    full = {k: v.repeat(a.k, 1) for k, v in one.items()}

    def stop(module, args, kwargs):
        raise _Stop

    def lower(enc):
        def run():
            h = model.model.layers[a.lowest].register_forward_pre_hook(stop, with_kwargs=True)
            try:
                with torch.inference_mode():
                    model(**enc, use_cache=False)
            except _Stop:
                pass
            finally:
                h.remove()
        return run

    def generate():
        with torch.inference_mode():
            model.generate(**full, max_new_tokens=a.new, do_sample=False, pad_token_id=tok.pad_token_id)

    times = interleaved({"round": generate, "lower, K x P rows": lower(full), "lower, P rows": lower(one)},
                        a.repeats)
    t_round, t_full, t_one = (median(times[k]) for k in ("round", "lower, K x P rows", "lower, P rows"))
    saving = (t_full - t_one) / t_round
    print(f"round of {a.k} x {len(texts)} rows, {a.new} new tokens: {t_round:.2f} s; prefill below layer {a.lowest}: "
          f"{t_full:.3f} s for K x P rows, {t_one:.3f} s for P rows; sharing could save at most "
          f"{100 * saving:.1f}% of the round")
    out = {"machine": machine(), "k": a.k, "prompts": len(texts), "new_tokens": a.new, "lowest_layer": a.lowest,
           "layers": len(model.model.layers), "prompt_tokens": int(one["input_ids"].shape[1]), "repeats": a.repeats,
           "round_s": t_round, "lower_full_s": t_full, "lower_shared_s": t_one, "max_saving": saving}
    print("wrote", write("shared_prefill", out, a.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
