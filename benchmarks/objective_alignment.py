#!/usr/bin/env python
"""Does the search's objective tell an answer that answers from one that drifts to the topic?

    python benchmarks/objective_alignment.py [--json PATH]

Reads the held-out answers recorded by ``benchmarks/search_real.py`` (no generation) and keeps
the on-concept, not-stuck ones: an on-concept answer is what the strict judge
(``benchmarks/_judge.py``) and the loose judge disagree about most.  Each falls in one of three
classes: on-request by the strict judge; on-request by the loose judge only (it retrieves its
request, but it is closer to the concept's texts: it drifted to the topic); off-request by both.

For each answer, under the unsteered SmolLM2 with the chat template, the mean per-token
log-probability of the answer given its own request, given another request of the same held-out
set (the next one), and given a plain request for the topic ("Tell me about <concept name>.").
Then, how well each measure separates the strict judge's on-request answers from the other two
classes (area under the ROC curve: 0.5 is chance, 1 is perfect):

``combined``   the objective's per-answer combined score as recorded (``steered_answer``);
``rel other``  own minus other request: the objective's relevance (a pointwise mutual information);
``rel topic``  own minus the topic request: is the answer more about its request than about the topic?

This measures the objective against the judge answer by answer; it does not run a search with a
changed objective.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT, machine, table


def auc(pos, neg):
    """P(a random ``pos`` value > a random ``neg`` value), ties counting half."""
    if not pos or not neg:
        return float("nan")
    return sum((x > y) + 0.5 * (x == y) for x in pos for y in neg) / (len(pos) * len(neg))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(RESULTS / "search_real.json"))
    p.add_argument("--json", default=str(RESULTS / "objective_alignment.json"))
    a = p.parse_args(argv)
    import torch

    from autosteer import load_model

    torch.set_num_threads(1)
    model, tok = load_model("smollm2", progress=False)
    model.eval()
    data = json.loads(Path(a.source).read_text())
    rows = []
    for u in data["units"].values():
        h = u["held"]
        for i, ans in enumerate(h["answers"]):
            if not h["per_prompt_concept_ok"][i] or not ans.strip():
                continue
            cls = "strict" if h["per_prompt_success_strict"][i] else "loose only" if h["per_prompt_success"][i] else "off"
            rows.append({"concept": u["concept"], "method": u["method"], "request": u["holdout"][i],
                         "other": u["holdout"][(i + 1) % len(u["holdout"])], "answer": ans, "class": cls,
                         "combined": h["per_prompt_combined"][i]})

    @torch.inference_mode()
    def logp(request, answer):
        prompt = tok.apply_chat_template([{"role": "user", "content": request}], add_generation_prompt=True,
                                         tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(answer, add_special_tokens=False)["input_ids"]
        logits = model(torch.tensor([p_ids + a_ids])).logits[0, len(p_ids) - 1:-1].float()
        return torch.log_softmax(logits, -1).gather(1, torch.tensor(a_ids)[:, None]).mean().item()

    t = time.perf_counter()
    for k, r in enumerate(rows):
        own = logp(r["request"], r["answer"])
        r["rel_other"] = own - logp(r["other"], r["answer"])
        r["rel_topic"] = own - logp(f"Tell me about {r['concept']}.", r["answer"])
        if k % 100 == 0:
            print(f"{k}/{len(rows)} answers, {time.perf_counter() - t:.0f} s", flush=True)
    measures = {"combined": "combined", "rel other": "rel_other", "rel topic": "rel_topic"}
    result = {"machine": machine(), "source_units": len(data["units"]),
              "counts": {c: sum(r["class"] == c for r in rows) for c in ("strict", "loose only", "off")},
              "auc": {}, "rows": rows}
    out = []
    for name, key in measures.items():
        val = {c: [r[key] for r in rows if r["class"] == c] for c in ("strict", "loose only", "off")}
        result["auc"][name] = {"strict vs loose only": auc(val["strict"], val["loose only"]),
                               "strict vs off": auc(val["strict"], val["off"]),
                               "strict vs rest": auc(val["strict"], val["loose only"] + val["off"])}
        out.append((name, *(f"{v:.3f}" for v in result["auc"][name].values())))
    print(f"{len(rows)} on-concept, not-stuck held-out answers of {len(data['units'])} units: {result['counts']}")
    print(table(out, ("measure", "AUC strict vs loose only", "AUC strict vs off", "AUC strict vs rest")))
    Path(a.json).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
