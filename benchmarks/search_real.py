#!/usr/bin/env python
"""Concept search on a real model, five methods side by side in one interleaved run.

    python benchmarks/search_real.py [--concepts weddings,music,castles] [--seeds 0-9] [--budget 16]
                                     [--population 8] [--search-prompts 12] [--holdout 20]
                                     [--max-new-tokens 40] [--methods prev,new,random,grid,prompt]
                                     [--json PATH] [--continue] [--report] [--rejudge]

Methods, per (concept, seed), in an order rotated by the seed:

``prev``    the previous default: ``SteerSearchSpace(texts=[concept])`` and ``steered_concept``
            (the concept rate with a soft fluency penalty), local search, ``--budget`` candidates;
``new``     the new default: :func:`autosteer.search.calibrate.concept_space` (calibrated
            coefficients, pre-screened layers) and ``steered_answer``, local search, same budget;
``random``  random search in the new default's space, ``steered_answer``, same budget;
``grid``    a 20-point hand grid (layers 8, 11, 14, 17, 20 x coefficients 0.2, 0.35, 0.5, 0.75),
            the best feasible by ``steered_answer`` on the search prompts;
``prompt``  no steering: a system prompt asking for the concept.
``new+prompt`` the new default run on the requests WITH that system prompt: its baseline is
            prompting alone, so it keeps only steering that beats prompting on the objective.
``user``    no steering: the same instruction after the request, in the user's turn.  SmolLM2-135M
            ignores system messages but partly follows this (benchmarks/steer_ceiling.py), so it
            is the stronger prompting baseline.
``new+user`` the new default run on the requests WITH that user-turn instruction (its baseline is
            ``user``), the answers judged against the plain requests.
``new+user+ans`` ``new+user`` steering the generated tokens only (``WarmupSchedule(steps=1,
            start=0)``: the request is read unsteered) with coefficients up to 2x the calibrated
            ones (answer-only steering costs about half the fluency at equal strength).
``new+usr`` ``new+sys`` with ``prompt_role="user"``: the library's prompt dimension putting the
            instruction after the request in the user's turn.
``new+usr+ans`` ``new+usr`` steering the generated tokens only (as ``new+user+ans``).
``new+topic`` the new default with ``SteeredAnswer(topic_request="Tell me about <concept>.")``: its
            relevance is also taken against that request (docs/metrics.md); held-out answers are
            scored by the plain objective like every other method's.
``new+sys`` the new default with the system prompt as a search dimension of the library
            (``SteerSearchSpace(system_prompts=[...])``): it tries the prompt alone, steering
            alone and both, judged against the plain requests, same budget.
``new+sys+warm`` ``new+sys`` with every vector on a warmup schedule (the coefficient rises from 0
            over the first 12-32 tokens, so the answer starts unsteered, on its request) and
            coefficients 1-3 times the calibrated ones, same budget.

Each method's choice is judged on held-out requests it never saw (greedy answers): the concept
pattern, relevance (PMI, nat/token), fluency excess over the unsteered model, the stuck share, the
combined score of docs/metrics.md, and an independent judge the search never sees (a
sentence-embedding model, benchmarks/_judge.py) deciding whether each answer addresses its
request, in two readings (benchmarks/_judge.py): loose (retrieval among the held-out requests)
and strict (also closer to its request than to any of the concept's texts, for the whole answer
and its second half).  "success" = on-concept (pattern) AND on-request (judge) AND not stuck;
the targets use the strict judge.  ``--rejudge`` recomputes both verdicts of every stored unit
from its recorded answers (no generation), e.g. after a change of the judge.

Every finished (concept, seed) is appended to the JSON at once, so a run cut by a time limit
continues with ``--continue``.  ``--report`` prints the tables and targets from the JSON alone.
The search prompts and held-out prompts of a seed are a seeded draw from the demo's 24 and 40.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT, machine, table

METHODS = ("prev", "new", "new+topic", "random", "grid", "prompt", "user", "new+prompt", "new+user", "new+user+ans", "new+usr",
           "new+usr+ans", "new+sys", "new+sys+warm")
GRID_LAYERS = (8, 11, 14, 17, 20)
GRID_COEFFS = (0.2, 0.35, 0.5, 0.75)
SYSTEM = {
    "weddings": "Whatever the question, work a mention of weddings into your answer.",
    "music": "Whatever the question, work a mention of music into your answer.",
    "castles": "Whatever the question, work a mention of castles and knights into your answer.",
}
MARGIN = 1.0


def load_concepts():
    from autosteer.demo import load_concept_demo
    from autosteer.steering.concept import Concept

    wed, wed_pattern, search, held = load_concept_demo()
    out = {"weddings": (wed, wed_pattern)}
    data = json.loads((Path(__file__).parent / "data" / "bench_concepts.json").read_text())
    for c in data["concepts"]:
        out[c["name"]] = (Concept.from_dict({k: v for k, v in c.items() if k != "pattern"}), c["pattern"])
    return out, search, held


def answer_only(space):
    """The calibrated space steering the generated tokens only, with the top coefficient 2x the largest
    calibrated one instead of 1.5x: what ``concept_space(positions="answer")`` builds, from the cached space."""
    lo, hi = space.coeff_range  # 0.5x the smallest .. 1.5x the largest calibrated coefficient
    return space.replace(coeff_range=(lo, round(hi * 4 / 3, 4)), schedules=["warmup"],
                         schedule_ranges={"warmup": {"steps": 1, "start": 0.0}})


def _trace(res, extra):
    """(seconds since the search started, search concept rate) at the baseline and each keep."""
    return [(r.elapsed_s + extra, r.details.get("concept_rate")) for r in res["history"]
            if r.status in ("baseline", "keep") and r.details]


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in text.split(",")]


class Bench:
    def __init__(self, args):
        from autosteer import load_model
        from autosteer.steering.steer import Steer

        self.args = args
        self.model, self.tok = load_model("smollm2", progress=False)
        self.steer = Steer(self.model, self.tok)
        self.concepts, self.search_pool, self.held_pool = load_concepts()
        self.spaces = {}
        self.judge = None
        self.held_ev = {}  # held-out evaluators by concept, their unsteered references cached

    def split(self, seed):
        rng = random.Random(1000 + seed)
        s = rng.sample(self.search_pool, self.args.search_prompts)
        h = rng.sample(self.held_pool, self.args.holdout)
        return s, h

    def space_of(self, name):
        """The new default's space, calibrated once per concept (its time is charged to new and random)."""
        saved = self.data.setdefault("spaces", {})
        if name not in self.spaces and name in saved:  # calibrated in an earlier session of this run
            from autosteer import SteerSearchSpace

            space = SteerSearchSpace.from_dict(saved[name]["space"])
            self.spaces[name] = (space, saved[name]["calibration"], saved[name]["seconds"])
        if name not in self.spaces:
            from autosteer.search.calibrate import concept_space

            t = time.perf_counter()
            space, cal = concept_space(self.model, self.tok, self.concepts[name][0])
            self.spaces[name] = (space, cal.to_dict(), time.perf_counter() - t)
            saved[name] = {"space": space.to_dict(), "calibration": cal.to_dict(), "seconds": self.spaces[name][2]}
        return self.spaces[name]

    @staticmethod
    def metric(pattern):
        from autosteer.search.metrics import SteeredAnswer

        return SteeredAnswer(pattern=pattern, fluency_margin=MARGIN)

    def conv(self, name, prompts, placement="system"):
        """The requests with the concept's instruction: a system message, or after the request in the user's turn."""
        if placement == "user":
            return [[{"role": "user", "content": f"{p}\n\n{SYSTEM[name]}"}] for p in prompts]
        return [[{"role": "system", "content": SYSTEM[name]}, {"role": "user", "content": p}] for p in prompts]

    def runner(self, prompts, space, metric, pattern, strategy, seed, topic=None):
        from autosteer import AutoSteerRunner
        from autosteer.search.metrics import SteeredAnswer, SteeredConcept

        if metric == "steered_answer":
            objective = SteeredAnswer(pattern=pattern, fluency_margin=MARGIN, topic_request=topic)
        else:
            objective = SteeredConcept(pattern=pattern, fluency_margin=MARGIN)
        return AutoSteerRunner(self.model, self.tok, prompts, metric=objective,
                               chat=True, max_new_tokens=self.args.max_new_tokens, search_space=space,
                               log_path=None, seed=seed, strategy=strategy, population=self.args.population)

    def run_method(self, method, name, seed, prompts):
        from autosteer import SteerSearchSpace

        concept, pattern = self.concepts[name]
        t = time.perf_counter()
        extra = 0.0
        info = {}
        if method in ("prompt", "user"):
            return {"candidate": None, "system": SYSTEM[name], "placement": "user" if method == "user" else "system",
                    "evaluations": 0, "wall_s": 0.0}
        system = None
        placement = "user" if method.startswith("new+user") else "system"
        if method in ("new+prompt", "new+user", "new+user+ans"):
            system, prompts = SYSTEM[name], self.conv(name, prompts, placement)
        if method == "grid":
            return self.run_grid(name, prompts, t)
        if method in ("new+sys", "new+sys+warm", "new+usr", "new+usr+ans"):
            space, _cal, extra = self.space_of(name)
            space = space.replace(system_prompts=[SYSTEM[name]],
                                  prompt_role="user" if method.startswith("new+usr") else "system")
            if method == "new+usr+ans":
                space = answer_only(space)
            if method == "new+sys+warm":
                lo, hi = space.coeff_range  # 0.5x the smallest .. 1.5x the largest calibrated coefficient
                space = space.replace(coeff_range=(round(2 * lo, 4), round(2 * hi, 4)), schedules=["warmup"],
                                      schedule_ranges={"warmup": {"steps": (12, 32), "start": 0.0}})
            info = {"space": space.to_dict()["layer_range"], "coeff_range": list(space.coeff_range)}
            runner = self.runner(prompts, space, "steered_answer", pattern, "local", seed)
            res = runner.run(self.args.budget, verbose=False, batch_size=len(prompts))
            best = res["best_candidate"]
            alone = res["prompt_alone"]
            trace = _trace(res, extra)
            return {"candidate": None if best is None else best.to_dict(), "system": None,
                    "search_concept_rate": trace[-1][1] if trace else None, "trace": trace,
                    "evaluations": res["iterations"], "wall_s": time.perf_counter() - t + extra,
                    "calibration_s": extra, "prompt_alone_search": None if alone is None else alone.score,
                    "best_search": res["best_score"], **info}
        if method == "prev":
            runner = self.runner(prompts, SteerSearchSpace(texts=[concept]), "steered_concept", pattern, "local", seed)
        else:
            space, _cal, extra = self.space_of(name)
            if method == "new+user+ans":
                space = answer_only(space)
            info = {"space": space.to_dict()["layer_range"], "coeff_range": list(space.coeff_range)}
            runner = self.runner(prompts, space, "steered_answer", pattern, "random" if method == "random" else "local",
                                 seed, topic=f"Tell me about {name}." if method == "new+topic" else None)
        res = runner.run(self.args.budget, verbose=False, batch_size=len(prompts))
        wall = time.perf_counter() - t + extra
        trace = _trace(res, extra)
        best = res["best_candidate"]
        return {"candidate": None if best is None else best.to_dict(), "system": system, "placement": placement,
                "evaluations": res["iterations"],
                "wall_s": wall, "search_concept_rate": trace[-1][1] if trace else None, "trace": trace,
                "calibration_s": extra, **info}

    def run_grid(self, name, prompts, t):
        from autosteer import SteerCandidate, SteerEvaluator, SteerVector

        concept, pattern = self.concepts[name]
        ev = SteerEvaluator(self.model, self.tok, self.metric(pattern), chat=True,
                            max_new_tokens=self.args.max_new_tokens, batch_size=len(prompts))
        cands = [SteerCandidate((SteerVector(layer, c, concept),)) for layer in GRID_LAYERS for c in GRID_COEFFS]
        results = []
        for i in range(0, len(cands), self.args.population):
            results += ev.evaluate_candidates(self.steer, cands[i:i + self.args.population], prompts)
        feasible = [(r.value, i) for i, r in enumerate(results) if r.details["feasible"] == 1.0]
        best = max(feasible)[1] if feasible else None
        return {"candidate": None if best is None or results[best].value <= 0 else cands[best].to_dict(),
                "evaluations": len(cands), "wall_s": time.perf_counter() - t}

    def judge_held(self, name, held, result):
        """Held-out axes of one method's choice, and the independent judge's verdicts."""
        import torch

        from autosteer import SteerCandidate, SteerEvaluator
        from autosteer.search.metrics import MetricJob, compile_pattern, concept_score
        from autosteer.search.objective import answer_scores

        concept, pattern = self.concepts[name]
        pattern = compile_pattern(pattern)
        ev = self.held_ev.get(name)
        if ev is None or ev.held != held:  # one evaluator per held-out set: its unsteered references are cached
            ev = SteerEvaluator(self.model, self.tok, self.metric(pattern), chat=True,
                                max_new_tokens=self.args.max_new_tokens, batch_size=len(held))
            ev.held = held
            self.held_ev[name] = ev
        cand = SteerCandidate.from_dict(result["candidate"] or [], [concept])
        # a candidate with its own system prompt adds it itself (new+sys); the others get the prompt here
        if result.get("system") and cand.system is None:
            prompts = self.conv(name, held, result.get("placement", "system"))
        else:
            prompts = held
        with ev.eval_mode(), torch.inference_mode():
            texts, ids = ev.generate_with_ids(MetricJob(prompts, None, [cand], self.steer), early_stop=False)
            (s,) = answer_scores(ev, held, texts, ids, concept=lambda t: concept_score(pattern, t), margin=MARGIN)
        tx = [" ".join(a.split()) for a in texts[0]]
        on_concept_not_stuck = [c >= 0.5 and not st for c, st in zip(s.concept, s.stuck)]
        d = s.details()
        out = {**{k: d[k] for k in ("concept_rate", "relevance", "on_request", "fluency_excess", "stuck",
                                    "combined", "success", "feasible")},
               "per_prompt_combined": list(s.combined), "per_prompt_concept_ok": [float(x) for x in on_concept_not_stuck],
               "answers": tx}
        if self.judge is None:
            from _judge import Judge

            self.judge = Judge()
        return judge_record(self.judge, concept, held, out)


def judge_record(judge, concept, held, out):
    """``out`` (a unit's held-out record, with its answers and per-answer on-concept-and-not-stuck
    flags) with the judge's verdicts on its answers in both readings, and the successes by each."""
    loose, strict = judge.verdicts(held, out["answers"], concept_texts(concept))
    ok = out["per_prompt_concept_ok"]
    for suffix, verdict in (("", loose), ("_strict", strict)):
        success = [bool(c) and j for c, j in zip(ok, verdict)]
        out.update({f"judge_on_request{suffix}": sum(verdict) / len(verdict),
                    f"judged_success{suffix}": sum(success) / len(success),
                    f"per_prompt_judge{suffix}": [float(x) for x in verdict],
                    f"per_prompt_success{suffix}": [float(x) for x in success]})
    return out


def concept_texts(concept):
    """What the strict judge compares an answer with: the concept's positive examples."""
    return list(concept.positive)


def rejudge(records):
    """Both judge verdicts again for ``(concept name, held-out requests, held-out record)`` triples
    (a stored unit here, a cell of steer_ceiling.py), from the recorded answers (no generation).

    A unit recorded before the strict reading existed has no per-answer on-concept-and-not-stuck
    flags; they are recovered from its loose successes and verdicts (a loose success is on-concept,
    not stuck and on-request) and, where the loose judge said off-request, from the concept
    pattern on the recorded answer (a stuck answer among those counts as not stuck; it cannot
    succeed unless the judge changes its mind on the same text).  Returns how many loose verdicts
    changed, which should be none.
    """
    from _judge import Judge

    from autosteer.search.metrics import compile_pattern, concept_score

    concepts = load_concepts()[0]
    judge = Judge()
    changed = 0
    for name, holdout, h in records:
        concept, pattern = concepts[name]
        if "per_prompt_concept_ok" not in h:
            pattern = compile_pattern(pattern)
            h["per_prompt_concept_ok"] = [
                float(s) if j else float(concept_score(pattern, a) >= 0.5)
                for s, j, a in zip(h["per_prompt_success"], h["per_prompt_judge"], h["answers"])]
        before = list(h["per_prompt_judge"])
        judge_record(judge, concept, holdout, h)
        changed += sum(a != b for a, b in zip(before, h["per_prompt_judge"]))
    return changed


def run(args):
    path = Path(args.json)
    data = json.loads(path.read_text()) if args.cont and path.exists() else {"units": {}}
    data["machine"] = machine()
    data["config"] = {k: getattr(args, k) for k in ("concepts", "seeds", "budget", "population", "search_prompts",
                                                    "holdout", "max_new_tokens", "methods")}
    bench = Bench(args)
    bench.data = data
    methods = args.methods.split(",")
    t_start = time.perf_counter()
    for seed in parse_seeds(args.seeds):
        for name in args.concepts.split(","):
            prompts, held = bench.split(seed)
            order = methods[seed % len(methods):] + methods[: seed % len(methods)]  # interleaved
            for m in order:
                key = f"{name}|{seed}|{m}"
                if key in data["units"]:
                    continue
                if time.perf_counter() - t_start > 60 * args.max_minutes:
                    print(f"stopping after {args.max_minutes} minutes; run again with --continue", flush=True)
                    return data
                t0 = time.perf_counter()
                result = bench.run_method(m, name, seed, prompts)
                result["held"] = bench.judge_held(name, held, result)
                result.update(concept=name, seed=seed, method=m, order=order, search_prompts=prompts, holdout=held,
                              unit_s=time.perf_counter() - t0)
                data["units"][key] = result
                RESULTS.mkdir(exist_ok=True)
                path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
                h = result["held"]
                print(f"[{name} seed {seed}] {m}: search {result['wall_s']:.0f} s, {result['evaluations']} evaluations; "
                      f"held-out concept {100 * h['concept_rate']:.0f}%, judged success {100 * h['judged_success']:.0f}%, "
                      f"combined {h['combined']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return data


def runs_of(data):
    """Every (concept, seed) run with the methods measured in it (not every run has every method: a
    comparison uses the runs where both of its methods ran)."""
    by = {}
    for u in data["units"].values():
        by.setdefault((u["concept"], u["seed"]), {})[u["method"]] = u
    return [{"concept": c, "seed": s, "methods": ms} for (c, s), ms in sorted(by.items())]


def paired_scores(runs, lead, other, gated=False, key="combined"):
    """The held-out ``key`` (the combined score, or e.g. ``judged_success_strict``) of ``lead`` and
    of ``other`` over the runs (of :func:`runs_of`) where both ran; ``gated``: a run whose held-out
    answers are over the fluency budget scores 0, as the objective treats an infeasible candidate."""
    both = [r for r in runs if lead in r["methods"] and other in r["methods"]]

    def score(u):
        return u["held"][key] * (u["held"]["feasible"] if gated else 1)

    return [score(r["methods"][lead]) for r in both], [score(r["methods"][other]) for r in both]


def _describe(unit):
    vecs = (unit.get("candidate") or {}).get("vectors", []) if isinstance(unit.get("candidate"), dict) else []
    steer = " + ".join(f"L{v['layer_idx']} {v['coeff']:+.3g}" for v in vecs) or "no steering"
    if not (unit.get("system") or (unit.get("candidate") or {}).get("system")):
        return steer
    return steer + (" + user-turn instruction" if "user" in (unit.get("placement"), (unit.get("candidate") or {}).get("prompt_role"))
                   else " + system prompt")


def _median(held, key):
    return statistics.median(x[key] for x in held)


def report(data):
    from autosteer.search.stats import paired_p

    units = sorted(data["units"].values(), key=lambda u: (u["concept"], u["seed"], METHODS.index(u["method"])))
    print(f"{len(units)} units measured (one method on one concept and seed):")
    print(table([(u["concept"], u["seed"], u["method"], _describe(u), f"{100 * u['held']['concept_rate']:.0f}%",
                  f"{u['held']['relevance']:.2f}", f"{100 * u['held']['judge_on_request']:.0f}%",
                  f"{u['held']['fluency_excess']:+.2f}", f"{100 * u['held']['stuck']:.0f}%",
                  f"{u['held']['combined']:.3f}", f"{100 * u['held']['judged_success']:.0f}%",
                  f"{100 * u['held']['judged_success_strict']:.0f}%",
                  u["evaluations"], f"{u['wall_s']:.0f}") for u in units],
                ("concept", "seed", "method", "choice", "concept", "relevance", "judge on-request", "fluency",
                 "stuck", "combined", "success (judged)", "success (strict)", "evaluations", "wall s")))
    runs = runs_of(data)
    if not runs:
        print("no (concept, seed) run yet: no medians, no paired tests, no targets")
        return
    methods = [m for m in METHODS if any(m in r["methods"] for r in runs)]
    print(f"{len(runs)} (concept, seed) runs; config {data['config']}")
    rows = []
    for m in methods:
        mine = [r for r in runs if m in r["methods"]]
        h = [r["methods"][m]["held"] for r in mine]
        rows.append((m, len(mine), f"{100 * _median(h, 'concept_rate'):.0f}%", f"{_median(h, 'relevance'):.2f}",
                     f"{100 * _median(h, 'judge_on_request'):.0f}%", f"{_median(h, 'fluency_excess'):+.2f}",
                     f"{100 * _median(h, 'stuck'):.0f}%", f"{_median(h, 'combined'):.3f}",
                     f"{100 * _median(h, 'judged_success'):.0f}%",
                     f"{100 * _median(h, 'judge_on_request_strict'):.0f}%",
                     f"{100 * _median(h, 'judged_success_strict'):.0f}%",
                     f"{sum(x['feasible'] for x in h):.0f}/{len(h)}",
                     f"{statistics.median(r['methods'][m]['evaluations'] for r in mine):.0f}",
                     f"{statistics.median(r['methods'][m]['wall_s'] for r in mine):.0f}"))
    print(table(rows, ("method", "runs", "concept", "relevance", "judge on-request", "fluency", "stuck", "combined",
                       "success (judged)", "strict judge on-request", "success (strict)", "within budget",
                       "evaluations", "wall s")))
    print("(medians over the runs of each method, of held-out answers; relevance in nat/token; fluency = excess NLL "
          "over the unsteered model's answers, budget +1; success = on-concept AND on-request by the judge AND not "
          "stuck; strict = the judge's strict reading, also closer to its request than to the concept's texts)")
    data["targets"] = {}
    for lead in ("new", "new+topic", "new+prompt", "new+user", "new+user+ans", "new+usr", "new+usr+ans", "new+sys", "new+sys+warm"):
        if lead in methods:
            data["targets"][lead] = _targets(runs, methods, lead, paired_p)


def _targets(runs, methods, lead, paired_p):
    """The issue's targets for ``lead``, each comparison over the runs where both methods ran."""
    targets = {}
    per_concept = {}
    mine = [r for r in runs if lead in r["methods"]]
    for c in sorted({r["concept"] for r in mine}):
        rs = [r for r in mine if r["concept"] == c]
        per_concept[c] = [sum(1 for r in rs if r["methods"][lead]["held"][key] >= 0.5
                              and r["methods"][lead]["held"]["feasible"] == 1.0)
                          for key in ("judged_success_strict", "judged_success")] + [len(rs)]
    targets["judged success (strict judge) >= 50% within budget in >= 9 of 10 seeds, every concept"] = (
        all(n >= 10 and ok >= math.ceil(0.9 * n) for ok, _loose, n in per_concept.values()),
        "; ".join(f"{c}: {ok}/{n} runs (loose judge: {loose}/{n})" for c, (ok, loose, n) in per_concept.items()))
    for other in methods:
        both = [r for r in mine if other in r["methods"]]
        if other == lead or len(both) < 2:
            continue
        a, b = paired_scores(both, lead, other)
        p = paired_p(a, b, False, "wilcoxon")
        pa = [x for r in both for x in r["methods"][lead]["held"]["per_prompt_combined"]]
        pb = [x for r in both for x in r["methods"][other]["held"]["per_prompt_combined"]]
        p_prompts = paired_p(pa, pb, False, "wilcoxon")
        wins = sum(x > y for x, y in zip(a, b))
        ga, gb = paired_scores(both, lead, other, gated=True)
        sa, sb = paired_scores(both, lead, other, key="judged_success_strict")
        targets[f"combined: {lead} beats {other} (paired over runs, p < 0.05)"] = (
            p < 0.05,
            (f"median {statistics.median(a):.3f} vs {statistics.median(b):.3f}; higher in {wins}/{len(a)} runs; "
             f"p = {p:.3g} over runs, p = {p_prompts:.3g} over {len(pa)} held-out answers; gated by the budget "
             f"(a run over it scores 0): p = {paired_p(ga, gb, False, 'wilcoxon'):.3g}; success by the strict judge "
             f"{100 * statistics.mean(sa):.0f}% vs {100 * statistics.mean(sb):.0f}% (means), "
             f"higher in {sum(x > y for x, y in zip(sa, sb))}/{len(sa)} runs, lower in "
             f"{sum(x < y for x, y in zip(sa, sb))}, p = {paired_p(sa, sb, False, 'wilcoxon'):.3g}"))
    runs = mine
    ratios = []
    for r in runs:
        if "prev" not in r["methods"]:
            continue
        prev, new = r["methods"]["prev"], r["methods"][lead]
        goal = prev.get("search_concept_rate") or 0.0
        hit = next((t for t, rate in new.get("trace", []) if rate is not None and rate >= goal), None)
        ratios.append(None if hit is None else hit / max(prev["wall_s"], 1e-9))
    reached = [x for x in ratios if x is not None]
    targets[f"{lead} reaches prev's search concept rate in <= 1/4 of prev's wall time"] = (
        bool(reached) and len(reached) == len(ratios) and statistics.median(reached) <= 0.25,
        (f"reached in {len(reached)}/{len(ratios)} runs; median time ratio {statistics.median(reached):.2f}"
         if reached else "never reached" if ratios else "prev not measured in these runs"))
    print(f"Targets for {lead}:")
    for k, (met, why) in targets.items():
        print(f"  {'MET   ' if met else 'MISSED'} {k}: {why}")
    return {k: {"met": bool(v[0]), "detail": v[1]} for k, v in targets.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concepts", default="weddings,music,castles")
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--budget", type=int, default=16)
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--search-prompts", type=int, default=12)
    p.add_argument("--holdout", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--json", default=str(RESULTS / "search_real.json"))
    p.add_argument("--continue", dest="cont", action="store_true",
                   help="skip (concept, seed, method) units already in --json")
    p.add_argument("--max-minutes", type=float, default=8.0,
                   help="start no new unit after this many minutes (then run again with --continue)")
    p.add_argument("--report", action="store_true", help="only print the report of --json")
    p.add_argument("--rejudge", action="store_true",
                   help="recompute the judge's verdicts of every stored unit from its answers, then report")
    args = p.parse_args(argv)
    if args.report or args.rejudge:
        data = json.loads(Path(args.json).read_text())
    else:
        data = run(args)
    if args.rejudge or any("judged_success_strict" not in u["held"] for u in data["units"].values()):
        changed = rejudge((u["concept"], u["holdout"], u["held"]) for u in data["units"].values())
        print(f"re-judged {len(data['units'])} units from their recorded answers; {changed} loose verdicts changed")
    report(data)
    Path(args.json).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
