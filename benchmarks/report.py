#!/usr/bin/env python
"""Write the measured sections of the docs and the README from benchmarks/results/*.json
(no figure is typed by hand).

    python benchmarks/report.py            # rewrite the sections in place
    python benchmarks/report.py --check    # exit 1 if a page differs from what the files give

A section sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers in one of
PAGES (README.md and docs/*.md); every section must appear at least once:
``headline`` (the README's few numbers, with links), ``performance`` (steering overhead,
evaluation throughput, population, search wall time, memory), ``real-model`` (the earlier SmolLM2
demo's held-out targets and the llm_steer recipe beside it), ``real-demo-output`` (what that
demo printed), ``demo-smollm2`` (the current SmolLM2 demo: its time, output and judged answers),
``demo-smollm2-output`` (what it printed),
``reasoning`` (the seed example on SmolLM2), ``llamacpp`` (the exported
control vector in llama.cpp), ``search-quality`` (the strategies and keep rules side by side)
``organism-targets`` (the embedded model's targets), ``search-real`` (the concept search on
a real model, method by method), ``steer-ceiling`` (one vector's best cells),
``objective-alignment`` (the objective's measures against the judge) and ``serve-load``
(``autosteer serve`` under concurrent clients).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(m) -> str:
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    return (f"{m['cpu']}, {m['cores']} cores{gpu}; torch {m['torch']}, transformers {m['transformers']}, "
            f"Python {m['python']}; measured {m['date']}"
            + (f", 1-minute load average {m['load_average']:.1f}" if m.get("load_average") is not None else ""))


def _md(rows, header) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _share(x) -> str:
    return "noise" if x is None else f"{x:.2f}"


def performance() -> str:
    parts = []
    ov = _load("steer_overhead")
    if ov:
        rows = []
        for run in ov["runs"]:
            r = run["ratio_vs_unsteered"]
            tps = run["tokens_per_s"]
            ls2 = r.get("llm_steer, 2 layers (cosine)")
            lsall = r.get("llm_steer, every layer")
            rows.append((f"{run['model']} ({run['layers']} layers, hidden {run['hidden']})", run["batch"],
                         f"{tps['unsteered']:.1f}",
                         f"{r['autosteer, 2 layers (cosine)']:.3f} / {r['autosteer, every layer']:.3f}",
                         f"{r['python hook, 2 layers (cosine)']:.3f} / {r['python hook, every layer']:.3f}",
                         "-" if ls2 is None else f"{ls2:.3f} / {lsall:.3f}",
                         " / ".join(_share(run[f"overhead_share_of_python_hook, {w}"])
                                    for w in ("2 layers (cosine)", "every layer"))))
        parts.append(
            f"**Steering overhead** (`benchmarks/steer_overhead.py`; greedy `generate()` of {ov['new_tokens']} new "
            f"tokens after {ov['prompt_tokens']}; medians of {ov['repeats']} interleaved runs; {_machine(ov['machine'])}). "
            "Throughput steered / unsteered with 2 vectors on 2 layers (cosine schedule) / 1 vector on every layer, "
            "and AutoSteer's overhead as a share of the plain-Python hook's (targets: >= 0.98 / >= 0.95 and "
            "<= 0.25):\n\n"
            + _md(rows, ("model", "batch", "unsteered tokens/s", "AutoSteer", "Python hook (llm_steer's recipe)",
                         "llm_steer 2.0.1", "AutoSteer overhead / Python hook overhead")))
        parts.append("\"noise\": the plain-Python hook's own overhead is under 1% there, below the run-to-run noise of "
                     "`generate()` on this CPU, so no share can be taken; a ratio above 1.000 is noise too.")
        if ov.get("micro"):
            rows = []
            for m in ov["micro"]:
                for c in m["cases"]:
                    rows.append((m["model"], f"{c['batch']} x {c['tokens']}", f"{c['autosteer_us']:.1f}",
                                 f"{c['python_hook_us']:.1f}", f"{c['ratio_python_over_autosteer']:.1f}x",
                                 f"{c['forward_per_layer_us']:.0f}",
                                 f"{100 * c['autosteer_us'] / c['forward_per_layer_us']:.1f}%"))
            parts.append("Per call, where the difference is measurable (the same script: each layer's pre-hook called "
                         "directly on a hidden state of that shape, 1000 calls, medians of interleaved repeats):\n\n"
                         + _md(rows, ("model", "batch x tokens", "AutoSteer hook (us)", "Python hook (us)",
                                      "Python / AutoSteer", "unsteered forward per layer (us)",
                                      "AutoSteer hook / layer forward")))
    th = _load("eval_throughput")
    if th:
        parts.append(
            f"**Evaluation throughput** (`benchmarks/eval_throughput.py`; {th['candidates']} candidates x "
            f"{th['prompts']} prompts on the {th['model']}, task accuracy; medians of {th['repeats']} interleaved "
            f"runs; {_machine(th['machine'])}): a naive loop (a fresh `Steer` per candidate, so every direction is "
            f"captured again, one prompt per `generate()`) evaluates {th['candidates_per_min']['naive']:.0f} "
            f"candidates/min, AutoSteer's evaluator (cached directions, population {th['population']}, early "
            f"stopping) {th['candidates_per_min']['autosteer']:.0f}: **{th['ratio']:.1f}x** (target >= 5x), with "
            f"{'the same' if th['same_scores'] else 'DIFFERENT'} scores.")
    pops = [p for p in (_load("population_organism"), _load("population_smollm2")) if p]
    if pops:
        rows = []
        for pop in pops:
            for run in pop["runs"]:
                ks = sorted(run["round_s"], key=int)
                rows.append((run["model"], run["metric"], run["prompts"],
                             " / ".join(f"{run['time_vs_k1'][k]:.2f}" for k in ks),
                             " / ".join(f"{run['candidates_per_min'][k]:.0f}" for k in ks),
                             " / ".join(ks)))
        parts.append(
            f"**Population** (`benchmarks/population.py`; one round of K candidates in one batched pass; medians of "
            f"interleaved runs; {_machine(pops[0]['machine'])}). Targets: K = 8 at most 3x the time of K = 1 on the "
            "organism; on SmolLM2 at least 3x the candidates per minute of K = 1:\n\n"
            + _md(rows, ("model", "metric", "prompts", "round time vs K = 1", "candidates/min", "K")))
    sw = _load("search_walltime")
    if sw:
        rows = [(r["model"], r["population"], r["candidates"], f"{r['search_s']:.0f}",
                 f"{r['baseline_holdout']:.3f} -> {r['best_holdout']:.3f}",
                 "-" if r["best_reached_at_s"] is None else f"{r['best_reached_at_s']:.0f}") for r in sw["runs"]]
        parts.append(f"**Search wall time** (`benchmarks/search_walltime.py`; the demo's searches, same budget of "
                     f"candidates; {_machine(sw['machine'])}):\n\n"
                     + _md(rows, ("model", "population", "candidates", "search (s)", "held-out score",
                                  "best held-out reached at (s)")))
    sp = _load("shared_prefill")
    if sp:
        parts.append(
            f"**Shared prefill, not built** (`benchmarks/shared_prefill.py`; SmolLM2, the demo's {sp['prompts']} chat "
            f"prompts, K = {sp['k']}, {sp['new_tokens']} new tokens; medians of {sp['repeats']} interleaved runs; "
            f"{_machine(sp['machine'])}): a round takes {sp['round_s']:.1f} s; the prefill through the layers below "
            f"the demo's lowest steerable layer ({sp['lowest_layer']} of {sp['layers']}) takes {sp['lower_full_s']:.2f} s "
            f"for the K x P rows and {sp['lower_shared_s']:.2f} s for P rows, so computing it once per prompt could "
            f"save at most **{100 * sp['max_saving']:.1f}%** of a round, before the cost of copying the shared "
            "states and caches into every row. Not worth its complexity on a CPU; the decode steps, where the rows "
            "differ, are the cost.")
    ps = _load("shared_prefix_scoring")
    if ps:
        parts.append(
            f"**Shared prompt prefix in scoring** (`benchmarks/shared_prefix_scoring.py`; SmolLM2, one round of "
            f"the answer objective: {ps['candidates']} candidates x {ps['prompts']} chat prompts, "
            f"{ps['max_new_tokens']} new tokens, generation and scoring; medians of {ps['repeats']} interleaved runs; "
            f"{_machine(ps['machine'])}): each answer is scored under the unsteered model after its own request "
            f"and two others, so every prompt heads 3 x K rows. Running each prompt once and the rows' own tokens "
            f"on a copy of its key/value cache takes a round from {ps['median_s']['full passes']:.1f} s to "
            f"{ps['median_s']['shared prefix']:.1f} s: **{ps['ratio']:.2f}x**, with "
            f"{'the same' if ps['same_scores'] else 'DIFFERENT'} per-prompt scores (largest difference in fluency "
            f"or relevance {ps['max_abs_diff']:.1e} nat/token).")
    me = _load("memory")
    if me:
        parts.append(f"**Memory** (`benchmarks/memory.py`; a {me['trials']}-trial search on the organism; "
                     f"{_machine(me['machine'])}): RSS {me['rss_kib_after_warmup'] / 1024:.1f} MiB after 50 trials, "
                     f"{me['rss_kib_end'] / 1024:.1f} MiB after {me['trials']}, peak {me['rss_kib_peak'] / 1024:.1f} MiB; "
                     f"growth {me['growth_kib_per_trial']:.2f} KiB per trial (least squares over trials 50..{me['trials']}).")
    return "\n\n".join(parts) if parts else "No benchmark results yet: run the scripts in `benchmarks/`."


def real_model() -> str:
    d = _load("real_model_demo")
    if not d:
        return "Not measured yet: `python benchmarks/real_model_demo.py`."
    u, b = d["heldout_unsteered"], d["heldout_best"]
    rows = [("unsteered", f"{100 * u['concept_rate']:.0f}%", f"{u['fluency']:.3f}", "+0.00"),
            (f"the demo's configuration (`{d['best']}`)", f"{100 * b['concept_rate']:.0f}%", f"{b['fluency']:.3f}",
             f"{b['fluency'] - u['fluency']:+.2f}")]
    if d.get("llm_steer_recipe"):
        top = max(d["llm_steer_recipe"], key=lambda r: (r["concept_rate"], -r["fluency"]))
        rates = sorted({r["concept_rate"] for r in d["llm_steer_recipe"]})
        rows.append((f"llm_steer's recipe, the text \"wedding\" (best of {len(d['llm_steer_recipe'])}: layer "
                     f"{top['layer']}, coeff {top['coeff']}; layers 4/12/20/28 x coeffs 0.5/1/2; rates seen: "
                     f"{', '.join(f'{100 * x:.0f}%' for x in rates)})",
                     f"{100 * top['concept_rate']:.0f}%", f"{top['fluency']:.3f}", f"{top['fluency'] - u['fluency']:+.2f}"))
    met = d["targets_met"]
    return (f"Measured by `benchmarks/real_model_demo.py` with the earlier demo configuration (`steered_concept`, "
            f"{d['iterations']} candidates, population {d['population']}, seed {d['seed']}; {_machine(d['machine'])}; "
            "the current demo is on [Search on a real model](search-real.md#the-real-model-demo)); that demo took "
            f"**{d['demo_s']:.0f} s** (target 10 minutes{'' if met['demo_within_10_min'] else ': NOT met'}). On the "
            "40 held-out requests (fluency: the continuations' NLL under the unsteered model):\n\n"
            + _md(rows, ("held-out, 40 requests", "concept rate", "fluency (nat/token)", "vs unsteered"))
            + "\n\nTargets: unsteered concept rate <= 10% "
            + ("met" if met["unsteered_rate_at_most_10pct"] else "NOT met") + "; steered >= 60% "
            + ("met" if met["steered_rate_at_least_60pct"] else "NOT met") + "; fluency within +1 nat/token "
            + ("met" if met["fluency_within_1_nat"] else "NOT met")
            + ". `tests/integration/test_smollm2.py` re-checks the three on the configuration in "
              "`benchmarks/results/real_model_demo.json`.")


def llamacpp() -> str:
    d = _load("llamacpp_check")
    if not d:
        return "Not measured yet: `python benchmarks/llamacpp_check.py` (needs llama-cpp-python)."
    rows = [(c["comparison"], f"{c['identical']}/{len(d['prompts'])}", f"{c['mean_common_prefix']:.1f}",
             f"{c['concept_left']}/{c['concept_right']}") for c in d["comparisons"]]
    return (f"Checked in the real client by `benchmarks/llamacpp_check.py` (llama-cpp-python "
            f"{d['llama_cpp_python']} built from source; SmolLM2's Q4_1 GGUF; the real-model demo's "
            f"configuration `{d['candidate']}` exported as a control vector; {d['tokens']} greedy tokens on "
            f"{len(d['prompts'])} held-out chat prompts; {_machine(d['machine'])}):\n\n"
            + _md(rows, ("greedy continuations", "identical", "mean common prefix (tokens)",
                         "on the concept (left / right)"))
            + "\n\nllama.cpp computes with the quantized weights, so even unsteered they part ways on some prompts; "
              "with the vector, llama.cpp and AutoSteer's import of the file agree closely and both talk about "
              "weddings, while AutoSteer's own steering (its per-row, per-step rms) differs from the constant "
              "approximation, as expected.")


def real_demo_output() -> str:
    d = _load("real_model_demo")
    if not d or not d.get("demo_output"):
        return "Not measured yet: `python benchmarks/real_model_demo.py`."
    return (f"What `benchmarks/real_model_demo.py` recorded ({_machine(d['machine'])}); its first line names "
            "the settings of that run:\n\n```\n" + d["demo_output"] + "\n```")


def reasoning() -> str:
    d = _load("real_model_reasoning")
    if not d:
        return "Not measured yet: `python benchmarks/real_model_reasoning.py`."
    n = len(d["steered"])
    rows = [(f"`{' '.join(u.split())[:70]}`", f"`{' '.join(s.split())[:70]}`")
            for u, s in zip(d["unsteered"], d["steered"])]
    found = (f"found at iteration {d['best_iteration']}" if d["best_iteration"] else "nothing beat the baseline")
    return (f"task accuracy {d['baseline_score']:.4f} -> {d['best_score']:.4f} on the {n} prompts ({found}, "
            f"{d['keeps']} keep(s) in {d['iterations']} trials, {d['elapsed_s']:.0f} s; {_machine(d['machine'])}); "
            f"best `{d['best']}`. Three prompts are a tiny search set, so one answer is a third of the score, and "
            "what the search finds on them says little beyond them. The greedy answers, unsteered and steered:\n\n"
            + _md(rows, ("unsteered", "steered")))


def _q(q, digits=3):
    lo, med, hi = q
    return "-" if med is None else f"{med:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def search_quality() -> str:
    files = [d for d in (_load("search_quality_organism"), _load("search_quality_smollm2")) if d]
    if not files:
        return "Not measured yet: `python benchmarks/search_quality.py`."
    parts = []
    for d in files:
        parts.extend(_search_quality(d, names_of()))
    return "\n\n".join(parts)


def names_of():
    return {"organism": "the organism (task accuracy, 16 search prompts, 200 held-out)",
            "smollm2": "SmolLM2's concept task (steered_concept, reduced to 12 search prompts, 20 held-out, 32 "
                       "tokens, population 4)"}


def _search_quality(d, names):
    parts = []
    for task, t in d["tasks"].items():
        seeds = t["cells"][0]["seeds"]
        rows = []
        for c in t["cells"]:
            rows.append((c["strategy"], c["rule"], c["budget"], _q(c["best_holdout"]),
                         f"{_q(c['candidates_to_90'], 0)} ({c['reached_90']}/{c['seeds']})",
                         f"{c['keeps_per_run']:.1f}",
                         "-" if c["false_keep_share"] is None else f"{100 * c['false_keep_share']:.0f}%"))
        parts.append(
            f"On {names.get(task, task)}: {seeds} seeds per strategy and rule; held-out baseline "
            f"{t['baseline_holdout']:.3f}, best any run reached {t['best_seen']:.3f}, so the 90% target is "
            f"{t['target_90']:.3f}; {t['wall_s']:.0f} s in all ({_machine(d['machine'])}):\n\n"
            + _md(rows, ("strategy", "keep rule", "budget", "best held-out: median [IQR]",
                         "candidates to 90%: median [IQR] (runs that got there)", "keeps per run",
                         "keeps worse on held-out than the previous best")))
        same = _same_procedure(t["cells"], seeds)
        if same:
            parts.append(same)
    return parts


def _same_procedure(cells, seeds) -> str:
    """Where local and random are one procedure (local explores its first N_INIT candidates),
    the gap between their medians is the noise of the number of seeds: say how large it is."""
    from autosteer.search.strategies.local import N_INIT

    at = {(c["strategy"], c["rule"], c["budget"]): c for c in cells}
    gaps = []
    for (strategy, rule, budget), c in sorted(at.items(), key=lambda kv: kv[0][2]):
        other = at.get(("random", rule, budget))
        if strategy == "local" and budget <= N_INIT and other:
            gaps.append(f"{c['best_holdout'][1]:.3f} vs {other['best_holdout'][1]:.3f} at budget "
                        f"{budget} ({rule})")
    if not gaps:
        return ""
    return (f"Up to {N_INIT} candidates the default draws random samples, exactly as `random` does (with other "
            f"draws), so the two are the same procedure there and their medians differ only by the noise of "
            f"{seeds} seeds: " + "; ".join(gaps) + ". Differences between strategies smaller than that are noise.")


def organism_targets() -> str:
    d = _load("organism_targets")
    if not d:
        return "Not measured yet: `python benchmarks/organism_targets.py`."
    acc, ppl, whole = d["accuracy"], d["perplexity_answer_given_question"], d["perplexity_whole_text"]
    gains = d["layer_sweep"]["gains"]
    best_layer = max(range(len(gains)), key=gains.__getitem__)
    worst_layer = min(range(len(gains)), key=gains.__getitem__)
    rows = [("baseline greedy accuracy <= 60%",
             f"{100 * acc['baseline_heldout']:.1f}% (search prompts: {100 * acc['search_baseline']:.0f}%)"),
            ("the demo's configuration >= 90% held-out", f"{100 * acc['best_heldout']:.1f}% (`{acc['best']}`)"),
            ("a perplexity search lowers held-out perplexity on correct answers by >= 10%",
             f"{100 * ppl['change']:+.1f}% ({ppl['baseline_heldout']:.3f} -> {ppl['best_heldout']:.3f}), perplexity "
             "of the correct answer given the question"),
            ("the accuracy gain at the best layer >= 2x the gain at the worst",
             f"layer {best_layer}: {gains[best_layer]:+.2f}; worst, layer {worst_layer}: {gains[worst_layer]:+.2f} "
             "(texts logical/precise/analytical x 7 coefficients per layer)")]
    per_layer = ", ".join(f"{b[0]:.3g}" for b in d["layer_sweep"]["best_per_layer"])
    return (f"Measured on 200 held-out prompts by `benchmarks/organism_targets.py` ({d['elapsed_s']:.0f} s) and "
            "asserted by `tests/integration/test_organism.py` on the shipped weights:\n\n"
            + _md(rows, ("target", "measured"))
            + f"\n\nOn whole texts (question and answer) the same perplexity search lowers held-out perplexity by "
              f"{-100 * whole['change']:.1f}% ({whole['baseline_heldout']:.3f} -> {whole['best_heldout']:.3f}). Best "
              f"accuracy per layer (best of 3 positive texts x 7 coefficients): {per_layer} for layers "
              f"0..{len(gains) - 1}.")


def serve_load() -> str:
    files = sorted(RESULTS.glob("serve_load_*.json"))
    if not files:
        return "Not measured yet: `python benchmarks/serve_load.py`."
    parts = []
    for path in files:
        d = json.loads(path.read_text())
        runs = d["runs"]
        ref, un, st = (runs.get(k, {}) for k in ("transformers serve (CB)", "autosteer unsteered",
                                                 "autosteer K distinct"))
        rows = []
        for c in d["clients"]:
            r, u, s_ = (x.get(str(c)) for x in (ref, un, st))
            tps = [None if x is None else x["tokens_per_s"] for x in (r, u, s_)]
            rows.append((c, "-" if tps[0] is None else f"{tps[0]:.1f} tok/s",
                         "-" if tps[1] is None else f"{tps[1]:.1f} tok/s"
                         + (f" ({tps[1] / tps[0]:.2f}x)" if tps[0] and tps[1] else ""),
                         "-" if tps[2] is None else f"{tps[2]:.1f} tok/s"
                         + (f" ({tps[2] / tps[1]:.2f}x unsteered)" if tps[1] and tps[2] else "")))
        n = max(len(x.get("tokens_per_s_all", [])) for v in runs.values() for x in v.values())
        kind = "chat requests" if d["model"] == "smollm2" else "completions"
        rounds = d.get("rounds", 1)
        per_client = "one request per client" if rounds == 1 else f"{rounds} requests per client"
        parts.append(f"`benchmarks/results/{path.name}`: {d['model']}, greedy {kind} of up to {d['max_tokens']} new "
                     f"tokens, {per_client}, the upper median of {n} timed runs per level "
                     f"({_machine(d['machine'])}):\n\n"
                     + _md(rows, ("clients", "transformers serve --continuous-batching", "autosteer unsteered",
                                  "autosteer, each client its own configuration")))
    return "\n\n".join(parts)


SEARCH_REAL_METHODS = {
    "prev": "previous default (`SteerSearchSpace(texts=[concept])`, `steered_concept`)",
    "new": "new default (calibrated space, `steered_answer`)",
    "new+topic": "the new default with `steered_answer(topic_request=\"Tell me about <concept>.\")` (relevance against the topic too)",
    "random": "random search in the new default's space (steering only), `steered_answer`, same budget",
    "grid": "20-point hand grid (layers 8-20 x coefficients 0.2-0.75, steering only), best feasible by `steered_answer`",
    "prompt": "prompting alone (a system prompt)",
    "user": "prompting alone (the instruction in the user's turn)",
    "new+prompt": "the system prompt + new default",
    "new+user": "the user-turn instruction + new default",
    "new+user+ans": "`new+user` steering the answer's tokens only, coefficients up to 2x calibrated",
    "new+usr": "`new+sys` with `prompt_role=\"user\"` (the library's prompt in the user's turn)",
    "new+usr+ans": "`new+usr` steering the answer's tokens only, coefficients up to 2x calibrated",
    "new+sys": "new default with the system prompt as a search dimension (`system_prompts`)",
    "new+sys+warm": "`new+sys` with warmup schedules, coefficients 1-3x calibrated",
}


def search_real() -> str:
    d = _load("search_real")
    if not d:
        return "Not measured yet: `python benchmarks/search_real.py`."
    order = list(SEARCH_REAL_METHODS)
    units = sorted(d["units"].values(),
                   key=lambda u: (u["concept"], u["seed"], order.index(u["method"]) if u["method"] in order else 99))
    rows = []
    for u in units:
        h = u["held"]
        vecs = (u.get("candidate") or {}).get("vectors", []) if isinstance(u.get("candidate"), dict) else []
        choice = " + ".join(f"L{v['layer_idx']} {v['coeff']:+.3g}" for v in vecs) or "no steering"
        system = u.get("system") or (u.get("candidate") or {}).get("system")
        rows.append((u["concept"], u["seed"], f"`{u['method']}`",
                     choice + ((" + user-turn instruction" if "user" in (u.get("placement"), (u.get("candidate") or {}).get("prompt_role"))
                                else " + system prompt")
                               if system else ""),
                     f"{100 * h['concept_rate']:.0f}%", f"{h['relevance']:.2f}", f"{100 * h['judge_on_request']:.0f}%",
                     f"{h['fluency_excess']:+.2f}", f"{100 * h['stuck']:.0f}%", f"{h['combined']:.3f}",
                     f"{100 * h['judged_success']:.0f}%", f"{100 * h['judged_success_strict']:.0f}%",
                     u["evaluations"], f"{u['wall_s']:.0f}"))
    c = d["config"]
    measured = {u["method"] for u in units}
    missing = [SEARCH_REAL_METHODS.get(m, m) for m in c["methods"].split(",") if m not in measured]
    legend = "\n".join(f"- `{m}`: {text}" for m, text in SEARCH_REAL_METHODS.items() if m in measured)
    return ("Methods:\n\n" + legend + "\n\n"
            f"`benchmarks/results/search_real.json` ({_machine(d['machine'])}): {len(units)} units measured, each one "
            f"method on one concept and seed; {c['search_prompts']} search requests, {c['holdout']} held-out requests, "
            f"{c['max_new_tokens']}-token greedy answers, {c['budget']} candidates per search in rounds of "
            f"{c['population']}. Held-out answers:\n\n"
            + _md(rows, ("concept", "seed", "method", "choice", "concept rate", "relevance (nat/token)",
                         "judge: on-request", "fluency excess", "stuck", "combined", "success (judged)",
                         "success (strict judge)", "evaluations", "search wall s"))
            + (f"\n\nNot measured: {'; '.join(missing)}." if missing else "")
            + _search_real_medians(d))


def _search_real_medians(d) -> str:
    """Per method, medians over the (concept, seed) runs where it ran; then the paired comparisons
    of the leading methods with each other method, over the runs where both ran."""
    import statistics

    from search_real import paired_scores, runs_of

    from autosteer.search.stats import paired_p

    measured = runs_of(d)
    runs = [r["methods"] for r in measured]
    methods = [m for m in SEARCH_REAL_METHODS if sum(m in r for r in runs) >= 2]
    if not methods:
        return ""
    rows = []
    for m in methods:
        mine = [r for r in runs if m in r]
        h = [r[m]["held"] for r in mine]
        med = lambda k, h=h: statistics.median(x[k] for x in h)  # noqa: E731
        rows.append((f"`{m}`", len(mine), f"{100 * med('concept_rate'):.0f}%",
                     f"{100 * med('judge_on_request'):.0f}%", f"{med('fluency_excess'):+.2f}",
                     f"{100 * med('stuck'):.0f}%", f"{med('combined'):.3f}", f"{100 * med('judged_success'):.0f}%",
                     f"{sum(x['judged_success'] for x in h) / len(h) * 100:.0f}%",
                     f"{100 * med('judge_on_request_strict'):.0f}%", f"{100 * med('judged_success_strict'):.0f}%",
                     f"{sum(x['judged_success_strict'] for x in h) / len(h) * 100:.0f}%",
                     f"{sum(x['feasible'] for x in h):.0f}/{len(h)}",
                     f"{statistics.median(r[m]['wall_s'] for r in mine):.0f}"))
    out = ("\n\nPer method, medians over the (concept, seed) runs where it ran (not every method ran in every run; "
           "the comparisons below pair runs):\n\n"
           + _md(rows, ("method", "runs", "concept rate", "judge: on-request", "fluency excess", "stuck", "combined",
                        "success (judged), median", "success (judged), mean", "strict judge: on-request",
                        "success (strict), median", "success (strict), mean", "within budget", "search wall s")))
    pairs, strict = [], []
    for lead in ("new+usr+ans", "new", "new+topic"):
        if lead not in methods:
            continue
        for other in methods:
            both = [r for r in runs if lead in r and other in r]
            if other == lead or len(both) < 2:
                continue
            cells = [f"`{lead}`", f"`{other}`", len(both)]
            for gated in (False, True):
                a, b = paired_scores(measured, lead, other, gated)
                cells += [f"{statistics.median(a):.3f} vs {statistics.median(b):.3f}",
                          f"{sum(x > y for x, y in zip(a, b))} / {sum(x < y for x, y in zip(a, b))}",
                          f"{paired_p(a, b, False, 'wilcoxon'):.3g} / {paired_p(b, a, False, 'wilcoxon'):.3g}"]
            pairs.append(tuple(cells))
            sa, sb = paired_scores(measured, lead, other, key="judged_success_strict")
            strict.append((f"`{lead}`", f"`{other}`", len(both),
                           f"{100 * statistics.mean(sa):.0f}% vs {100 * statistics.mean(sb):.0f}%",
                           f"{sum(x > y for x, y in zip(sa, sb))} / {sum(x < y for x, y in zip(sa, sb))}",
                           f"{paired_p(sa, sb, False, 'wilcoxon'):.3g} / {paired_p(sb, sa, False, 'wilcoxon'):.3g}"))
    if pairs:
        out += ("\n\nPaired over the runs where both methods ran: the held-out combined score as measured, and "
                "gated (a run whose held-out answers are over the fluency budget scores 0, as the objective treats "
                "an infeasible candidate); one-sided Wilcoxon signed-rank p that the method is higher / that the "
                "other is higher:\n\n"
                + _md(pairs, ("method", "vs", "runs", "medians", "higher / lower", "p", "gated medians",
                              "gated higher / lower", "gated p")))
        out += ("\n\nThe same pairs by the share of held-out answers that succeed by the strict judge (on-concept, "
                "on-request by the strict reading, not stuck), which no method optimises; means over the runs, "
                "one-sided Wilcoxon p that the method is higher / that the other is higher:\n\n"
                + _md(strict, ("method", "vs", "runs", "success (strict), means", "higher / lower", "p")))
    return out


def steer_ceiling() -> str:
    """The oracle sweep: every (layer, strength, mode) scored on held-out requests, and prompting."""
    d = _load("steer_ceiling")
    if not d:
        return "Not measured yet: `python benchmarks/steer_ceiling.py --prompts`."
    cells = list(d["cells"].values())
    n = len(d["holdout"])
    out = [f"`benchmarks/results/steer_ceiling.json` ({_machine(d['machine'])}): the {n} held-out requests of "
           f"seed {d['config']['seed']}, {d['config']['max_new_tokens']}-token greedy answers, one vector of the "
           "concept; strength as a multiple of the layer's calibrated coefficient. Each cell: judged success "
           "(on-concept AND on-request by the judge AND not stuck) by the judge / by its strict reading, then "
           "the fluency excess in nat/token "
           "(budget +1; **bold** within it)."]
    fmt = lambda h: (f"{100 * h['judged_success']:.0f}% / {100 * h['judged_success_strict']:.0f}% "  # noqa: E731
                     + (f"**{h['fluency_excess']:+.2f}**"
                     if h["fluency_excess"] <= 1.0 else f"{h['fluency_excess']:+.2f}"))
    summary = []
    for name in sorted({c["concept"] for c in cells}):
        mine = [c for c in cells if c["concept"] == name]
        grid = [c for c in mine if c["mode"] in ("all", "answer")]
        mults = sorted({c["mult"] for c in grid})
        rows = []
        for mode in ("all", "answer"):
            for layer in sorted({c["layer"] for c in grid if c["mode"] == mode}):
                by = {c["mult"]: c for c in grid if c["mode"] == mode and c["layer"] == layer}
                rows.append((mode, layer, *(fmt(by[m]["held"]) if m in by else "" for m in mults)))
        out.append(f"**{name}**:\n\n" + _md(rows, ("steered positions", "layer", *(f"x{m:g}" for m in mults))))

        def best(pred, budget=True, mine=mine, mode=False, key="fluency_excess", by="judged_success"):
            ok = [c for c in mine if pred(c) and (not budget or (c["held"].get(key) is not None
                                                                 and c["held"][key] <= 1.0))]
            if not ok:
                return "-"
            b = max(ok, key=lambda c: (c["held"][by], -c["held"]["fluency_excess"]))
            where = "" if b["layer"] is None else f" ({b['mode'] + ' ' if mode else ''}L{b['layer']} x{b['mult']:g})"
            return f"{100 * b['held'][by]:.0f}%{where}"

        one = lambda kind: next((c["held"] for c in mine if c["mode"] == kind), None)  # noqa: E731
        sysh, userh, none = one("system"), one("user"), one("none")
        summary.append((name, f"{100 * none['judged_success']:.0f}%" if none else "-",
                        f"{100 * sysh['judged_success']:.0f}%" if sysh else "-",
                        f"{100 * userh['judged_success']:.0f}% ({userh['fluency_excess']:+.2f})" if userh else "-",
                        best(lambda c: c["mode"] == "all"), best(lambda c: c["mode"] == "answer"),
                        best(lambda c: c["mode"].startswith("user+")),
                        best(lambda c: c["mode"] in ("all", "answer") or c["mode"].startswith("user+"), budget=False,
                             mode=True),
                        best(lambda c: c["mode"] in ("all", "answer") or c["mode"].startswith("user+"), mode=True,
                             key="fluency_instructed"),
                        best(lambda c: c["mode"] in ("all", "answer") or c["mode"].startswith("user+"), mode=True,
                             by="judged_success_strict"),
                        f"{100 * userh['judged_success_strict']:.0f}%" if userh else "-"))
    out.append("Best per concept (chosen on these held-out requests, so an upper bound for a search over the same "
               "cells):\n\n" + _md(summary, (
                   "concept", "unsteered", "system prompt", "user-turn prompt (fluency)",
                   "steering, all positions, within budget", "steering, answer only, within budget",
                   "user-turn prompt + steering, within budget", "any steering, any fluency",
                   "any steering, within budget by the instructed fluency",
                   "any steering, within budget, by the strict judge", "user-turn prompt, by the strict judge")))
    out.append("The instructed fluency (`--rescore`): the answers' excess NLL under the unsteered model given the "
               "request WITH the user-turn instruction, over the model's own answers to that instructed request "
               "(the objective's measure conditions on the plain request).")
    return "\n\n".join(out)


def objective_alignment() -> str:
    """How well the objective's measures separate the strict judge's on-request answers (AUC)."""
    d = _load("objective_alignment")
    if not d:
        return "Not measured yet: `python benchmarks/objective_alignment.py`."
    c = d["counts"]
    rows = [(f"`{name}`", *(f"{v:.3f}" for v in aucs.values())) for name, aucs in d["auc"].items()]
    return (f"`benchmarks/results/objective_alignment.json` ({_machine(d['machine'])}): the "
            f"{sum(c.values())} on-concept, not-stuck held-out answers of {d['source_units']} units of "
            f"`search_real.json`: {c['strict']} on-request by the strict judge, {c['loose only']} by the loose "
            f"judge only (drifted to the topic), {c['off']} off-request by both. Area under the ROC curve of each "
            "measure for telling the strict judge's on-request answers from the others (0.5 = chance):\n\n"
            + _md(rows, ("measure", "vs loose only", "vs off-request", "vs both")))


JUDGED_ORDER = ["unsteered", "prompt alone", "demo's choice"]


def demo_smollm2_output() -> str:
    """What the current real-model demo printed (for the getting-started page)."""
    d = _load("demo_smollm2")
    if not d or d.get("smaller_settings"):
        return "Not measured yet: `python benchmarks/demo_smollm2.py`."
    return (f"What `benchmarks/demo_smollm2.py` recorded ({_machine(d['machine'])}; one run, "
            f"{d['demo_s']:.0f} s):\n\n```text\n" + d["demo_output"] + "\n```")


def demo_smollm2() -> str:
    """The current real-model demo as ``benchmarks/demo_smollm2.py`` ran it: time, output, judged answers."""
    d = _load("demo_smollm2")
    if not d:
        return "Not measured yet: `python benchmarks/demo_smollm2.py`."
    if d.get("smaller_settings"):
        return f"Only a smaller run is recorded ({d['smaller_settings']}): run `python benchmarks/demo_smollm2.py`."
    met = "met" if d["demo_s"] <= d["target_s"] else "**missed**"
    threads = "the demo's default" if d["threads_asked"] is None else f"`--threads {d['threads_asked']}`"
    rows = [(k, f"{100 * v['concept_rate']:.0f}%", f"{100 * v['judge_on_request']:.0f}% / "
             f"{100 * v['judge_on_request_strict']:.0f}%", f"{v['fluency_excess']:+.2f}", f"{100 * v['stuck']:.0f}%",
             f"{100 * v['judged_success']:.0f}% / {100 * v['judged_success_strict']:.0f}%")
            for k, v in sorted(d["judged"].items(), key=lambda kv: JUDGED_ORDER.index(kv[0]))]
    cell = lambda t: " ".join(t.split()).replace("|", "\\|")  # noqa: E731
    examples = [(cell(e["prompt"]), cell(e["before"]), cell(e.get("prompt_alone", e["after"])), cell(e["after"]))
                for e in d["examples"]]
    return (f"`benchmarks/demo_smollm2.py` ({_machine(d['machine'])}; threads: {threads}, load average "
            f"{d['load_average_at_start']:.2f} when it started; one run): **{d['demo_s']:.0f} s** by the demo's "
            f"clock (target {d['target_s']:.0f} s: {met}), {d['cpu_s']:.0f} s of CPU, {d['peak_gb']:.2f} GB peak "
            "memory. What it printed:\n\n```text\n" + d["demo_output"] + "\n```\n\n"
            f"The {len(d['held_requests'])} held-out requests answered again after the demo and judged as "
            "`benchmarks/search_real.py` judges a method's choice (judge: loose / strict reading; success = on the "
            "concept AND on request by the judge AND not stuck):\n\n"
            + _md(rows, ("held-out answers", "concept", "judge on-request", "fluency (nat/token)", "stuck",
                         "success"))
            + "\n\nThe demo's examples in full (40 greedy tokens each), to read as a user would:\n\n"
            + _md(examples, ("request", "unsteered", "prompting alone", "the demo's choice")))


def _issue_targets(sr) -> str:
    """One README line: the search targets of issue 18 that were met and missed, with their numbers."""
    import contextlib
    import io

    from search_real import METHODS, _targets, paired_scores, runs_of

    from autosteer.search.stats import paired_p

    runs = runs_of(sr)
    methods = [m for m in METHODS if any(m in r["methods"] for r in runs)]
    parts, strict, targets = [], [], {}
    for lead, what in (("new", "the steering-only default"), ("new+usr+ans", "instruction + answer-only steering")):
        with contextlib.redirect_stdout(io.StringIO()):
            targets[lead] = _targets(runs, methods, lead, paired_p)
        ps = []
        for other in ("user", "grid", "random"):
            both = [r for r in runs if lead in r["methods"] and other in r["methods"]]
            ps.append(f"{other} p = {paired_p(*paired_scores(both, lead, other), False, 'wilcoxon'):.3g}")
        ok = all(v["met"] for k, v in targets[lead].items()
                 if any(k.startswith(f"combined: {lead} beats {o} ") for o in ("user", "grid", "random")))
        both = [r for r in runs if lead in r["methods"] and "user" in r["methods"]]
        a, b = paired_scores(both, lead, "user", key="judged_success_strict")
        strict.append(paired_p(a, b, False, "wilcoxon") < 0.05)
        parts.append(f"{what} {'beats' if ok else 'does not beat'} the user-turn prompt, the grid and random search "
                     f"on the combined score ({', '.join(ps)})")
    (wall,) = [v for k, v in targets["new"].items() if "wall time" in k]
    return ("- Issue 18's other targets, same runs: " + "; ".join(parts)
            + ("" if any(strict) else " (by the judge's strict reading neither beats the instruction alone, p >= 0.05)")
            + "; the new default reaching the "
            f"previous default's concept rate in 1/4 of its wall time: {'met' if wall['met'] else 'missed'} "
            f"({wall['detail']}) ([targets](docs/search-real.md#targets)).")


def headline() -> str:
    """The README's few numbers, each with the page that has the rest."""
    lines = []
    o = _load("organism_targets")
    if o:
        a = o["accuracy"]
        lines.append(f"- The embedded model: held-out task accuracy {100 * a['baseline_heldout']:.0f}% -> "
                     f"{100 * a['best_heldout']:.0f}% on 200 prompts the search never saw, with the configuration "
                     "`autosteer demo` finds in seconds ([the organism](docs/organism.md)).")
    d = _load("demo_smollm2")
    if d and not d.get("smaller_settings"):
        j = d["judged"]
        choice = j.get("demo's choice", j["unsteered"])
        alone = j.get("prompt alone")
        lines.append(f"- `autosteer demo --model smollm2` (SmolLM2-135M-Instruct, concept *weddings*, default "
                     f"settings): {d['demo_s']:.0f} s on {d['machine']['cores']} CPU cores (target "
                     f"{d['target_s']:.0f} s); of its {len(d['held_requests'])} held-out answers, on the concept AND "
                     "on their request by an independent judge's strict reading AND not stuck: "
                     f"{100 * j['unsteered']['judged_success_strict']:.0f}% unsteered, "
                     + (f"{100 * alone['judged_success_strict']:.0f}% with its prompt alone, " if alone else "")
                     + f"{100 * choice['judged_success_strict']:.0f}% with its choice "
                     "([the demo](docs/search-real.md#the-real-model-demo)).")
    sr = _load("search_real")
    if sr and sr.get("units"):
        import statistics

        by = {}
        for u in sr["units"].values():
            by.setdefault(u["method"], []).append(u["held"])
        shown = [(m, what) for m, what in (("new", "the steering-only default"),
                                           ("new+usr+ans", "the instruction after the request + answer-only steering"),
                                           ("user", "that instruction alone, no steering")) if m in by]
        if shown:
            from search_real import paired_scores, runs_of

            from autosteer.search.stats import paired_p

            mean = lambda m, k: 100 * statistics.mean(h[k] for h in by[m])  # noqa: E731
            parts = [f"{what} {mean(m, 'judged_success'):.0f}% ({mean(m, 'judged_success_strict'):.0f}%)"
                     for m, what in shown]
            line = (f"- The same model under the default objective `steered_answer`, {len(by[shown[0][0]])} "
                    "runs (concept x seed) over 3 concepts: the mean share of held-out answers on the concept AND "
                    "on their request by an independent judge AND not stuck (in brackets: by the judge's strict "
                    "reading) is " + "; ".join(parts))
            a, b = paired_scores(runs_of(sr), "new+usr+ans", "user", key="judged_success_strict")
            if len(a) >= 2:
                line += (f". By the strict judge, instruction + steering beats the instruction alone in "
                         f"{sum(x > y for x, y in zip(a, b))} of {len(a)} runs (lower in "
                         f"{sum(x < y for x, y in zip(a, b))}; p = {paired_p(a, b, False, 'wilcoxon'):.2g})")
            lines.append(line + ". The target was 50%: missed ([measured](docs/search-real.md)).")
            lines.append(_issue_targets(sr))
    th = _load("eval_throughput")
    if th:
        lines.append(f"- Scoring candidates: {th['ratio']:.1f}x the candidates per minute of a naive loop, with "
                     f"{'the same' if th['same_scores'] else 'DIFFERENT'} scores "
                     "([benchmarks](docs/benchmarks.md#performance)).")
    ov = _load("steer_overhead")
    if ov and ov.get("micro"):
        cases = [(m["model"], c) for m in ov["micro"] for c in m["cases"] if c["tokens"] == 1]
        share = max(100 * c["autosteer_us"] / c["forward_per_layer_us"] for _, c in cases)
        lo = min(c["ratio_python_over_autosteer"] for _, c in cases)
        hi = max(c["ratio_python_over_autosteer"] for _, c in cases)
        lines.append(f"- The C hook: at most {share:.1f}% of a decoder layer's forward per decode step, "
                     f"{lo:.1f}-{hi:.1f}x faster than a plain-Python hook "
                     "([benchmarks](docs/benchmarks.md#performance)).")
    me = _load("memory")
    if me:
        lines.append(f"- A {me['trials']}-trial search grows by {me['growth_kib_per_trial']:.2f} KiB per trial "
                     "([benchmarks](docs/benchmarks.md#performance)).")
    return "\n".join(lines) if lines else "No benchmark results yet: run the scripts in `benchmarks/`."


SECTIONS = {"headline": headline, "performance": performance, "real-model": real_model, "llamacpp": llamacpp,
            "search-quality": search_quality, "real-demo-output": real_demo_output, "reasoning": reasoning,
            "organism-targets": organism_targets, "search-real": search_real, "steer-ceiling": steer_ceiling,
            "serve-load": serve_load, "objective-alignment": objective_alignment,
            "demo-smollm2": demo_smollm2, "demo-smollm2-output": demo_smollm2_output}


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- {name}:begin -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)


def render(text: str) -> str:
    """``text`` with every section it has markers for regenerated."""
    for name, fn in SECTIONS.items():
        pattern = _pattern(name)
        if pattern.search(text):
            text = pattern.sub(lambda m, fn=fn: m.group(1) + fn() + "\n" + m.group(2), text)
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    missing = [name for name in SECTIONS
               if not any(_pattern(name).search(page.read_text(encoding="utf-8")) for page in PAGES)]
    if missing:
        print(f"no page has a <!-- NAME:begin --> ... <!-- NAME:end --> section for: {', '.join(missing)}")
        return 1
    stale = []
    for page in PAGES:
        old = page.read_text(encoding="utf-8")
        new = render(old)
        if new == old:
            continue
        stale.append(page.relative_to(ROOT).as_posix())
        if not a.check:
            page.write_text(new, encoding="utf-8")
    if a.check:
        if stale:
            print(f"{', '.join(stale)}: the measured sections differ from benchmarks/results: "
                  "run python benchmarks/report.py")
            return 1
        return 0
    print(f"updated: {', '.join(stale) if stale else 'nothing (every page was up to date)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
