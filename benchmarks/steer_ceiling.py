#!/usr/bin/env python
"""How far can one steering vector go on held-out requests at all?  An oracle sweep on SmolLM2.

    python benchmarks/steer_ceiling.py [--concepts weddings,music,castles] [--seed 0]
                                       [--multiples 1,1.5,2,3] [--modes all,answer] [--report]

No search: every (layer, strength, mode) of a fixed grid is scored directly on the held-out
requests of ``search_real.py``'s split for ``--seed``, with the same measures (concept
pattern, the independent judge, stuck, fluency excess, judged success).  The best cell is
therefore an upper bound (chosen on the test set itself) for what a search over that grid could
hand back, and it tells whether a miss of the 50% judged-success target is the search's fault
or the space's.

Layers are the five that ``concept_space`` calibrates (every third of 25%-65% of the model);
the strength is a multiple of each layer's calibrated coefficient (the one that moves the
next-token distribution by KL 0.5 on neutral prompts).  Modes:

``all``     constant steering at every position, the request's tokens included (llm_steer's
            semantics and the library's default);
``answer``  the same vector on the generated tokens only: ``WarmupSchedule(steps=1, start=0)``
            gives multiplier 0 at the prefill and 1 from the first decode step, so the request
            is read unsteered and only the answer is pushed.

``--prompts`` adds prompting cells, no steering: ``system`` (search_real's system message,
"Whatever the question, work a mention of X into your answer.") and ``user`` (the same
sentence after the request, in the user's turn), and ``user`` + each steering cell named in
``--with-user`` (e.g. ``L13x1all``).  Every answer is judged against the plain request.

``--rescore`` adds to every cell a second fluency measure, from the answers already recorded:
the excess NLL of the answers under the unsteered model given the request WITH the user-turn
instruction, over the NLL of the model's own answers to that instructed request.  The first
measure (the objective's) conditions on the plain request, so it also charges an answer for
being about the concept at all; this one asks how unlikely the answer is for a model that was
asked to mention the concept.  Plain torch, teacher-forced, the answers' texts re-tokenised.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT, machine, table

LAYERS = (7, 10, 13, 16, 19)


def cell_key(name, layer, mult, mode):
    return f"{name}|L{layer}|x{mult:g}|{mode}"


def run(args):
    import search_real

    from autosteer import SteerCandidate, SteerVector
    from autosteer.steering.schedules import WarmupSchedule

    path = Path(args.json)
    data = json.loads(path.read_text()) if path.exists() else {"cells": {}}
    data["machine"] = machine()
    data["config"] = {k: getattr(args, k) for k in ("concepts", "seed", "multiples", "modes", "holdout",
                                                    "max_new_tokens")}
    sargs = argparse.Namespace(search_prompts=8, holdout=args.holdout, max_new_tokens=args.max_new_tokens)
    bench = search_real.Bench(sargs)
    bench.data = {}
    _, held = bench.split(args.seed)
    data["holdout"] = held
    t_start = time.perf_counter()
    for name in args.concepts.split(","):
        concept = bench.concepts[name][0]
        _space, cal, _s = bench.space_of(name)
        coeff = {int(k): v for k, v in cal["coeff"].items()}
        if name + "|none" not in data["cells"]:
            h = bench.judge_held(name, held, {"candidate": None})
            data["cells"][name + "|none"] = {"concept": name, "layer": None, "mult": 0, "mode": "none", "held": h}
        for mode in args.modes.split(","):
            for layer in LAYERS:
                for mult in (float(x) for x in args.multiples.split(",")):
                    key = cell_key(name, layer, mult, mode)
                    if key in data["cells"]:
                        continue
                    if time.perf_counter() - t_start > 60 * args.max_minutes:
                        print(f"stopping after {args.max_minutes} minutes; run again to continue", flush=True)
                        return data
                    sched = WarmupSchedule(1, 0.0) if mode == "answer" else None
                    c = round(mult * coeff[layer], 4)
                    cand = SteerCandidate((SteerVector(layer, c, concept, schedule=sched),))
                    t0 = time.perf_counter()
                    h = bench.judge_held(name, held, {"candidate": cand.to_dict()})
                    data["cells"][key] = {"concept": name, "layer": layer, "mult": mult, "coeff": c, "mode": mode,
                                          "held": h, "seconds": time.perf_counter() - t0}
                    RESULTS.mkdir(exist_ok=True)
                    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
                    print(f"{key}: concept {100 * h['concept_rate']:.0f}%, judge {100 * h['judge_on_request']:.0f}%, "
                          f"fluency {h['fluency_excess']:+.2f}, stuck {100 * h['stuck']:.0f}%, "
                          f"success {100 * h['judged_success']:.0f}% ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.prompts:
        prompt_cells(args, bench, held, data, path)
    return data


def user_conv(name, prompts):
    """The instruction after the request, in the user's turn (search_real puts it in a system message)."""
    import search_real

    return [[{"role": "user", "content": f"{p}\n\n{search_real.SYSTEM[name]}"}] for p in prompts]


def prompt_cells(args, bench, held, data, path):
    import search_real

    from autosteer import SteerCandidate, SteerVector
    from autosteer.steering.schedules import WarmupSchedule

    system_conv = bench.conv
    for name in args.concepts.split(","):
        concept = bench.concepts[name][0]
        coeff = {int(k): v for k, v in bench.space_of(name)[1]["coeff"].items()}
        cells = [("system", None), ("user", None)]
        for spec in filter(None, args.with_user.split(",")):
            layer, rest = spec[1:].split("x")
            mode = "answer" if rest.endswith("answer") else "all"
            cells.append(("user+steer", (int(layer), float(rest[: -len(mode)]), mode)))
        for kind, steer in cells:
            key = f"{name}|{kind}" + ("" if steer is None else f"|L{steer[0]}|x{steer[1]:g}|{steer[2]}")
            if key in data["cells"]:
                continue
            bench.conv = system_conv if kind == "system" else user_conv
            cand = None
            if steer is not None:
                sched = WarmupSchedule(1, 0.0) if steer[2] == "answer" else None
                c = round(steer[1] * coeff[steer[0]], 4)
                cand = SteerCandidate((SteerVector(steer[0], c, concept, schedule=sched),)).to_dict()
            h = bench.judge_held(name, held, {"candidate": cand, "system": search_real.SYSTEM[name]})
            bench.conv = system_conv
            data["cells"][key] = {"concept": name, "layer": None if steer is None else steer[0],
                                  "mult": 0 if steer is None else steer[1], "mode": kind if steer is None else
                                  f"user+{steer[2]}", "held": h}
            path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
            print(f"{key}: concept {100 * h['concept_rate']:.0f}%, judge {100 * h['judge_on_request']:.0f}%, "
                  f"fluency {h['fluency_excess']:+.2f}, success {100 * h['judged_success']:.0f}%", flush=True)


def rescore(args):
    """Add ``fluency_instructed`` to every cell of the JSON (see the module docstring)."""
    import search_real
    import torch

    from autosteer import load_model

    path = Path(args.json)
    data = json.loads(path.read_text())
    model, tok = load_model("smollm2", progress=False)
    held = data["holdout"]

    def ids_of(messages):
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False)["input_ids"]

    def nll(prompt_ids, answer):
        a = tok(answer, add_special_tokens=False)["input_ids"]
        if not a:
            return None
        x = torch.tensor([prompt_ids + a])
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
        n = len(prompt_ids)
        return -sum(float(logp[n + i - 1, t]) for i, t in enumerate(a)) / len(a)

    for name in sorted({c["concept"] for c in data["cells"].values()}):
        ctx = [ids_of([{"role": "user", "content": f"{p}\n\n{search_real.SYSTEM[name]}"}]) for p in held]
        ref_answers = data["cells"][f"{name}|user"]["held"]["answers"]
        ref = [nll(c, a) for c, a in zip(ctx, ref_answers)]
        ref_mean = sum(x for x in ref if x is not None) / sum(1 for x in ref if x is not None)
        for key, cell in data["cells"].items():
            if cell["concept"] != name or "fluency_instructed" in cell["held"]:
                continue
            vals = [nll(c, a) for c, a in zip(ctx, cell["held"]["answers"])]
            vals = [x for x in vals if x is not None]
            # None: every answer of the cell is empty (the concept's strongest cells can end at once)
            cell["held"]["fluency_instructed"] = sum(vals) / len(vals) - ref_mean if vals else None
            print(f"{key}: fluency {cell['held']['fluency_excess']:+.2f}, instructed "
                  f"{cell['held']['fluency_instructed']}", flush=True)
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def report(data, budget=1.0):
    cells = list(data["cells"].values())
    for name in sorted({c["concept"] for c in cells}):
        rows = []
        mine = [c for c in cells if c["concept"] == name]
        mine.sort(key=lambda c: (c["mode"], c["layer"] or 0, c["mult"]))
        for c in mine:
            h = c["held"]
            rows.append((c["mode"], c["layer"] if c["layer"] is not None else "-", f"{c['mult']:g}",
                         f"{100 * h['concept_rate']:.0f}%", f"{100 * h['judge_on_request']:.0f}%",
                         f"{h['fluency_excess']:+.2f}", f"{100 * h['stuck']:.0f}%", f"{h['combined']:.3f}",
                         f"{100 * h['judged_success']:.0f}%", f"{100 * h['judged_success_strict']:.0f}%"))
        print(f"\n{name} (held-out requests of seed {data['config']['seed']}, {len(data['holdout'])} of them):")
        print(table(rows, ("mode", "layer", "x calibrated", "concept", "judge on-request", "fluency", "stuck",
                           "combined", "success (judged)", "success (strict)")))
        for mode in sorted({c["mode"] for c in mine} - {"none"}):
            ok = [c for c in mine if c["mode"] == mode and c["held"]["fluency_excess"] <= budget]
            for key, judge in (("judged_success", "judge"), ("judged_success_strict", "strict judge")):
                if ok:
                    b = max(ok, key=lambda c, key=key: c["held"][key])
                    print(f"  best {mode} within the fluency budget by the {judge}: L{b['layer']} x{b['mult']:g}: "
                          f"success {100 * b['held'][key]:.0f}%")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concepts", default="weddings,music,castles")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--multiples", default="1,1.5,2,3")
    p.add_argument("--modes", default="all,answer")
    p.add_argument("--holdout", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--max-minutes", type=float, default=9.0)
    p.add_argument("--json", default=str(RESULTS / "steer_ceiling.json"))
    p.add_argument("--prompts", action="store_true", help="add the prompting cells (see above)")
    p.add_argument("--with-user", default="", help="steering cells to add to the user-turn prompt, e.g. L13x1all")
    p.add_argument("--rescore", action="store_true", help="add the instructed fluency measure (see above)")
    p.add_argument("--report", action="store_true")
    p.add_argument("--rejudge", action="store_true",
                   help="recompute the judge's verdicts of every cell from its recorded answers, then report")
    args = p.parse_args(argv)
    if args.rescore:
        rescore(args)
    data = json.loads(Path(args.json).read_text()) if args.report or args.rescore or args.rejudge else run(args)
    if args.rejudge or any("judged_success_strict" not in c["held"] for c in data["cells"].values()):
        import search_real

        changed = search_real.rejudge((c["concept"], data["holdout"], c["held"]) for c in data["cells"].values())
        print(f"re-judged {len(data['cells'])} cells from their recorded answers; {changed} loose verdicts changed")
        Path(args.json).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    report(data)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
