"""The embedded model organism: real loading path, the training script, and the
held-out targets of issue 4 as behaviour tests on the shipped weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autosteer import AutoSteerRunner, Steer, SteerEvaluator, SteerSearchSpace
from autosteer.demo import DEMO_SPACE
from autosteer.organism import load_organism, organism_path, world

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def organism():
    return load_organism()


def test_loads_through_from_pretrained(organism):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = organism
    path = organism_path()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers >= 8
    again = AutoModelForCausalLM.from_pretrained(path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert AutoTokenizer.from_pretrained(path).get_vocab() == tok.get_vocab()
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size <= 20 * 2**20
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (path / f).is_file()


def test_world_pools_are_disjoint_and_answers_unambiguous():
    pools = world.question_pools()
    train, search, hold = (set(pools[k]) for k in ("train", "search", "holdout"))
    assert not (train & search) and not (train & hold) and not (search & hold)
    prompts, expected = world.heldout_prompts(200)
    assert len(set(prompts)) == 200
    for p, e in zip(prompts, expected):
        assert e not in p  # the prompt never contains its answer
    lines = world.training_lines(2000, seed=0)
    texts = {q.text for q in pools["holdout"]}
    assert not any(line.endswith(t) or t in line for line in lines[:200] for t in list(texts)[:50])


@pytest.fixture(scope="module")
def heldout():
    return world.heldout_prompts(200)


def accuracy(model, tok, prompts, expected, steer_fn=None):
    ev = SteerEvaluator(model, tok, "task_accuracy", max_new_tokens=4, batch_size=100)
    with Steer(model, tok) as s, ev.eval_mode():
        if steer_fn:
            steer_fn(s)
        return ev.evaluate(prompts, expected)


def test_baseline_is_at_most_60_percent(organism, heldout):
    model, tok = organism
    assert accuracy(model, tok, *heldout) <= 0.60


def test_demo_search_reaches_90_percent_held_out(organism, heldout):
    """The configuration the demo's search finds (seed 0, 30 iterations, 16 prompts)."""
    model, tok = organism
    prompts, expected = world.search_prompts(16)
    runner = AutoSteerRunner(model, tok, prompts, metric="task_accuracy", expected_outputs=expected,
                             search_space=SteerSearchSpace(**DEMO_SPACE), log_path=None, seed=0, max_new_tokens=4)
    best = runner.run(30, verbose=False, batch_size=16)["best_candidate"]
    assert best is not None
    assert accuracy(model, tok, *heldout, steer_fn=best.apply) >= 0.90


def test_perplexity_search_lowers_held_out_perplexity_by_10_percent(organism, heldout):
    """Perplexity of the correct answer given the question (docs/organism.md has whole texts)."""
    model, tok = organism
    prompts, expected = world.search_prompts(16)
    runner = AutoSteerRunner(model, tok, prompts, metric="perplexity", expected_outputs=expected,
                             search_space=SteerSearchSpace(**DEMO_SPACE), log_path=None, seed=0)
    best = runner.run(30, verbose=False, batch_size=16)["best_candidate"]
    ev = SteerEvaluator(model, tok, "perplexity", batch_size=100)
    with ev.eval_mode():
        before = ev.evaluate(*heldout)
        with Steer(model, tok) as s:
            best.apply(s)
            after = ev.evaluate(*heldout)
    assert after <= 0.9 * before


def test_layer_choice_matters(organism, heldout):
    """Best accuracy gain over texts x coefficients at the best layer >= 2x the gain at the worst."""
    model, tok = organism
    base = accuracy(model, tok, *heldout)
    gains = []
    for layer in range(model.config.num_hidden_layers):
        best = max(
            accuracy(model, tok, *heldout, steer_fn=lambda s: s.add(layer, c, t))
            for t in ("logical", "precise")
            for c in (0.15, 0.25, 0.4)
        )
        gains.append(best - base)
    assert max(gains) >= 2 * min(gains) and max(gains) > 0.2


def test_training_script_runs_and_is_deterministic(tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        subprocess.run([sys.executable, str(ROOT / "scripts" / "train_organism.py"), "--out", str(out), "--steps", "3"],
                       check=True, capture_output=True, text=True, timeout=300)
        outs.append(out)
    from transformers import AutoModelForCausalLM

    a, b = (AutoModelForCausalLM.from_pretrained(o) for o in outs)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
