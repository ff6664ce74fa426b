#!/usr/bin/env python
"""Measure the model organism's targets on held-out prompts.

    python benchmarks/organism_targets.py [--model DIR] [--json OUT.json]

Reports: baseline held-out accuracy, a framed-prompt ceiling, a layer x coeff x
text sweep of single steering vectors, a small automatic search (seed 0, 30
iterations, 16 search prompts) and the held-out accuracy / perplexity of what
it finds, and the layer-gain ratio.

Steering uses ``autosteer.Steer`` when it is importable, else the reference
hook below, which implements the llm_steer semantics of the project brief:
direction = RMS-normalised mean of the layer-input hidden states over the
text's tokens (no special tokens); at every forward,
``coeff * direction * rms(h[b, last real token])`` is added to every position
of the layer input.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from autosteer.organism import world  # noqa: E402


# ----------------------------------------------------------------------------- steering
class RefSteer:
    """A minimal reference implementation of llm_steer's add() semantics."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.layers = model.model.layers
        self.vectors: dict[int, list[tuple[float, torch.Tensor]]] = {}
        self.handles = []

    @torch.no_grad()
    def direction(self, layer_idx: int, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        hs = self.model(input_ids=ids, output_hidden_states=True).hidden_states[layer_idx]
        x = hs[0].float().mean(0)
        return x / (torch.sqrt(x.pow(2).mean() + 1e-6) + 1e-6)

    def add(self, layer_idx: int, coeff: float, text: str):
        d = self.direction(layer_idx, text)
        if layer_idx not in self.vectors:
            self.vectors[layer_idx] = []
            self.handles.append(self.layers[layer_idx].register_forward_pre_hook(
                self._hook(layer_idx), with_kwargs=True))
        self.vectors[layer_idx].append((coeff, d))
        return self

    def _hook(self, layer_idx):
        def hook(module, args, kwargs):
            h = args[0]
            last = h[:, -1, :].float()
            rms = torch.sqrt(last.pow(2).mean(-1, keepdim=True) + 1e-6)  # (B, 1), from unsteered state
            delta = sum(c * d for c, d in self.vectors[layer_idx])
            h = h + (rms * delta).unsqueeze(1).to(h.dtype)
            return (h, *args[1:]), kwargs
        return hook

    def reset_all(self):
        for h in reversed(self.handles):
            h.remove()
        self.handles, self.vectors = [], {}


def make_steer(model, tokenizer, use_lib: bool):
    if use_lib:
        import autosteer
        return autosteer.Steer(model, tokenizer)
    return RefSteer(model, tokenizer)


# ----------------------------------------------------------------------------- metrics
@torch.no_grad()
def accuracy(model, tokenizer, prompts, expected, max_new_tokens=3, batch_size=256, return_outputs=False):
    hits, outs = 0, []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for t, e in zip(texts, expected[i:i + batch_size]):
            hits += " ".join(e.lower().split()) in " ".join(t.lower().split())
        outs += texts
    acc = hits / len(prompts)
    return (acc, outs) if return_outputs else acc


@torch.no_grad()
def perplexity(model, tokenizer, texts, batch_size=256):
    """exp(mean NLL over every predicted token of every text), left padding."""
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True)
        logits = model(**enc).logits.float()
        tgt = enc["input_ids"][:, 1:]
        m = enc["attention_mask"][:, 1:].bool() & enc["attention_mask"][:, :-1].bool()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tgt, reduction="none")
        total += float(nll[m].sum())
        count += int(m.sum())
    return math.exp(total / count)


def steered_score(model, tokenizer, vectors, fn, use_lib=False):
    s = make_steer(model, tokenizer, use_lib)
    try:
        for layer, coeff, text in vectors:
            s.add(layer, coeff, text=text)
        return fn()
    finally:
        s.reset_all()


# ----------------------------------------------------------------------------- search
def simple_search(model, tokenizer, score_fn, layers, coeffs, texts, neg_texts, iterations, seed, higher=True):
    """A small random-plus-perturbation search (stand-in until autosteer's search exists)."""
    rng = random.Random(seed)

    def rand_vec():
        if rng.random() < 0.75:
            return (rng.randint(*layers), round(rng.uniform(*coeffs), 3), rng.choice(texts))
        return (rng.randint(*layers), -round(rng.uniform(*coeffs), 3), rng.choice(neg_texts))

    def perturb(cand):
        cand = list(cand)
        i = rng.randrange(len(cand))
        layer, coeff, text = cand[i]
        r = rng.random()
        if r < 0.35:
            layer = min(max(layer + rng.choice([-1, 1]), layers[0]), layers[1])
        elif r < 0.75:
            coeff = round(coeff * rng.uniform(0.6, 1.5), 3)
        elif r < 0.9:
            text = rng.choice(texts if coeff > 0 else neg_texts)
        elif len(cand) < 2:
            cand.append(rand_vec())
            return tuple(cand)
        else:
            cand.pop(i)
            return tuple(cand)
        cand[i] = (layer, coeff, text)
        return tuple(cand)

    history = []
    best = ((), score_fn(()))
    history.append(("baseline", (), best[1]))
    fails = 0
    for _ in range(iterations):
        cand = (rand_vec(),) if (not best[0] or fails >= 5) else perturb(best[0])
        sc = score_fn(cand)
        better = sc > best[1] if higher else sc < best[1]
        history.append(("keep" if better else "discard", cand, sc))
        if better:
            best, fails = (cand, sc), 0
        else:
            fails += 1
    return best, history


# ----------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None, help="model folder (default: the shipped organism)")
    p.add_argument("--json", default=None)
    p.add_argument("--n-holdout", type=int, default=200)
    p.add_argument("--coeffs", default="0.1,0.2,0.3,0.4,0.5,0.75,1.0")
    p.add_argument("--texts", default="logical,precise,analytical,a logical answer :,-confused,-irrational,-imprecise")
    p.add_argument("--search-layers", default="0,7")
    p.add_argument("--search-coeffs", default="0.05,1.0")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lib", action="store_true", help="use autosteer.Steer instead of the reference hook")
    p.add_argument("--no-sweep", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from autosteer.organism import organism_path
    path = args.model or organism_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    n_layers = model.config.num_hidden_layers
    res = {"model": str(path)}
    t0 = time.perf_counter()

    hp, he = world.heldout_prompts(args.n_holdout)
    sp, se = world.search_prompts(16)
    ptexts = world.correct_texts(args.n_holdout)
    sptexts = world.correct_texts(16, seed=world.SEARCH_SEED, pool="search")
    base_acc, outs = accuracy(model, tok, hp, he, return_outputs=True)
    res["baseline_heldout_acc"] = base_acc
    res["baseline_search_acc"] = accuracy(model, tok, sp, se)
    res["baseline_heldout_ppl"] = perplexity(model, tok, ptexts)
    res["framed_ceiling"] = {w: accuracy(model, tok, [world.framed_prompt(x, w) for x in hp], he)
                             for w in world.POSITIVE_WORDS + world.NEGATIVE_WORDS + world.NEUTRAL_WORDS}
    res["sample_outputs"] = list(zip(hp[:5], he[:5], outs[:5]))
    print(json.dumps(res, indent=1), flush=True)

    if not args.no_sweep:
        coeffs = [float(c) for c in args.coeffs.split(",")]
        sweep, ppl_sweep = {}, {}
        for t in args.texts.split(","):
            sign, text = (-1.0, t[1:]) if t.startswith("-") else (1.0, t)
            rows, prow = {}, {}
            for layer in range(n_layers):
                rows[layer], prow[layer] = [], []
                for c in coeffs:
                    a, pp = steered_score(model, tok, [(layer, sign * c, text)],
                                          lambda: (accuracy(model, tok, hp, he), perplexity(model, tok, ptexts)),
                                          args.lib)
                    rows[layer].append(a)
                    prow[layer].append(pp)
            sweep[t] = rows
            ppl_sweep[t] = prow
            print(f"\n{t!r} (coeff sign {sign:+.0f})  coeffs {coeffs}  acc | ppl change")
            for layer, r in rows.items():
                print(f"  layer {layer}: " + " ".join(f"{a:.2f}" for a in r) + "  | "
                      + " ".join(f"{pp / res['baseline_heldout_ppl'] - 1:+.3f}" for pp in prow[layer]), flush=True)
        res["sweep"] = {"coeffs": coeffs, "table": sweep, "ppl": ppl_sweep}
        # layer gain ratio: best accuracy per layer over coeffs and texts
        per_layer = [max(max(sweep[t][layer]) for t in sweep) for layer in range(n_layers)]
        gains = [a - base_acc for a in per_layer]
        res["per_layer_best"] = per_layer
        res["layer_gain_best"] = max(gains)
        res["layer_gain_worst"] = min(gains)
        print("per-layer best:", per_layer, flush=True)

    # automatic search on 16 search prompts
    lo, hi = (int(x) for x in args.search_layers.split(","))
    clo, chi = (float(x) for x in args.search_coeffs.split(","))
    texts = world.CONCEPT_TEXTS + world.MULTIWORD_CONCEPT_TEXTS[:1]
    neg = world.NEGATIVE_CONCEPT_TEXTS
    for metric in ("task_accuracy", "perplexity"):
        if metric == "task_accuracy":
            fn = lambda c: steered_score(model, tok, c, lambda: accuracy(model, tok, sp, se), args.lib)  # noqa: E731
            higher = True
        else:
            fn = lambda c: steered_score(model, tok, c, lambda: perplexity(model, tok, sptexts), args.lib)  # noqa: E731
            higher = False
        ts = time.perf_counter()
        best, hist = simple_search(model, tok, fn, (lo, hi), (clo, chi), texts, neg, 30, 0, higher)
        r = {"best": best[0], "best_search_score": best[1], "seconds": time.perf_counter() - ts,
             "heldout_acc": steered_score(model, tok, best[0], lambda: accuracy(model, tok, hp, he), args.lib),
             "heldout_ppl": steered_score(model, tok, best[0], lambda: perplexity(model, tok, ptexts), args.lib),
             "history": hist}
        res["search_" + metric] = r
        print(f"\nsearch {metric}: best {best[0]} search-score {best[1]:.4f} held-out acc {r['heldout_acc']:.3f} "
              f"held-out ppl {r['heldout_ppl']:.4f} (baseline {res['baseline_heldout_ppl']:.4f}) "
              f"in {r['seconds']:.1f}s", flush=True)
    res["seconds"] = time.perf_counter() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
