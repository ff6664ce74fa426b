"""SteerEvaluator against plain-torch references: greedy generation, perplexity, early stopping."""

import math

import pytest
import torch
from tiny_models import make_model, make_tokenizer

from autosteer import Steer, SteerCandidate, SteerEvaluator

PROMPTS = ["what is 3 plus 4 ?", "the cat likes", "I feel happy because"]


@pytest.fixture(scope="module")
def model():
    return make_model("llama")


def n_hooks(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def greedy_reference(model, tokenizer, prompt, n):
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        for _ in range(n):
            nxt = model(input_ids=ids).logits[0, -1].argmax()
            if nxt.item() == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    start = len(tokenizer(prompt)["input_ids"])
    return tokenizer.decode(ids[0, start:], skip_special_tokens=True)


def test_task_accuracy_matches_unbatched_greedy_reference(model):
    tok = make_tokenizer()  # right padding: the evaluator switches to left and back
    prompts = PROMPTS + ["a dog", "the old man is calm and"]
    refs = [greedy_reference(model, tok, p, 5) for p in prompts]
    ev = SteerEvaluator(model, tok, "task_accuracy", max_new_tokens=5, batch_size=2)
    assert ev.generate(prompts) == refs
    # the expected string is searched in the continuation only, case/whitespace-insensitively
    expected = [" ".join(r.split()[:2]).upper() or "zz" for r in refs[:-1]] + ["the old man"]
    want = sum(" ".join(e.lower().split()) in " ".join(r.lower().split()) for e, r in zip(expected, refs))
    assert ev.evaluate(prompts, expected) == want / len(prompts)
    assert ev.last_outputs == refs
    assert tok.padding_side == "right"


def perplexity_reference(model, tokenizer, prompts, expected=None):
    nll, count = 0.0, 0
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            ids = tokenizer(p)["input_ids"]
            first = 1
            if expected is not None:
                first = len(ids)
                ids = ids + tokenizer(expected[i], add_special_tokens=False)["input_ids"]
            x = torch.tensor([ids])
            logp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
            for t in range(first, len(ids)):
                nll -= float(logp[t - 1, ids[t]])
                count += 1
    return math.exp(nll / count)


def test_perplexity_matches_unpadded_reference(model):
    tok = make_tokenizer("left")
    prompts = PROMPTS + ["a"]
    ev = SteerEvaluator(model, tok, "perplexity", batch_size=2)
    assert ev.evaluate(prompts) == pytest.approx(perplexity_reference(model, tok, prompts), rel=1e-5)
    got = ev.evaluate(PROMPTS, [" 7 .", " the book", " she"])
    assert got == pytest.approx(perplexity_reference(model, tok, PROMPTS, [" 7 .", " the book", " she"]), rel=1e-5)
    assert tok.padding_side == "left"


def test_early_stopping_never_changes_a_score(model):
    tok = make_tokenizer()
    prompts = PROMPTS + ["a dog", "the old man is calm and", "she reads"]
    plain = SteerEvaluator(model, tok, "task_accuracy", max_new_tokens=8, batch_size=3)
    early = SteerEvaluator(model, tok, "task_accuracy", max_new_tokens=8, batch_size=3, early_stop=True)
    refs = plain.generate(prompts)
    # expected strings that appear early, late and never
    expected = [r.split()[0] if r.split() else "zz" for r in refs[:3]] + [r[-3:] or "zz" for r in refs[3:5]] + ["never"]
    steer = Steer(model, tok)
    for cand in (None, SteerCandidate.from_dict([{"layer_idx": 1, "coeff": 0.4, "text": "logical"}])):
        if cand is None:
            a, b = plain.evaluate_result(prompts, expected), early.evaluate_result(prompts, expected)
        else:
            (a,) = plain.evaluate_candidates(steer, [cand], prompts, expected)
            (b,) = early.evaluate_candidates(steer, [cand], prompts, expected)
        assert a.value == b.value and a.per_prompt == b.per_prompt
        assert any(len(x) < len(y) for x, y in zip(b.outputs, a.outputs))  # some rows did stop early
    assert n_hooks(model) == 0


# ---------------------------------------------------------------------------
# many candidates in one batch: the same scores as one by one


def _candidates():
    from autosteer import SteerVector

    return [
        SteerCandidate((SteerVector(0, 0.4, "happy"),)),
        SteerCandidate((SteerVector(1, -0.3, "calm", {"type": "decay", "rate": 0.8, "min_multiplier": 0.2}),
                        SteerVector(2, 0.2, "happy"))),
        SteerCandidate(),  # no steering: its rows stay unsteered
        SteerCandidate((SteerVector(2, 0.6, "the old man"),)),
    ]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "falcon"])
@pytest.mark.parametrize("path", ["kernel", "torch"])
@pytest.mark.parametrize("metric", ["task_accuracy", "perplexity"])
def test_a_population_scores_like_its_candidates_one_by_one(arch, path, metric, monkeypatch):
    import autosteer.steering.steer as steer_module

    if path == "torch":  # the torch-op path, as on a GPU (TorchHook), here on the CPU
        monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    model, tok = make_model(arch), make_tokenizer()
    prompts = PROMPTS + ["a dog", "the old man is calm and"]
    expected = ["7", "the", "happy", "dog", "old"] if metric == "task_accuracy" else None
    ev = SteerEvaluator(model, tok, metric, max_new_tokens=6, batch_size=3, early_stop=True)
    steer = Steer(model, tok)
    cands = _candidates()
    together = ev.evaluate_candidates(steer, cands, prompts, expected)
    alone = [ev.evaluate_candidates(steer, [c], prompts, expected)[0] for c in cands]
    for a, b in zip(together, alone):
        assert a.outputs == b.outputs  # the same greedy generations
        if metric == "task_accuracy":
            assert a.per_prompt == b.per_prompt and a.value == b.value
        else:
            assert a.per_prompt == pytest.approx(b.per_prompt, rel=1e-5) and a.value == pytest.approx(b.value, rel=1e-5)
    plain = ev.evaluate_result(prompts, expected)
    assert together[2].outputs == plain.outputs and together[2].per_prompt == pytest.approx(plain.per_prompt, rel=1e-5)
    assert n_hooks(model) == 0


def test_the_cpu_steering_hook_calls_no_torch_op():
    """The steady-state C path: no tensor allocated, no torch op run, no Python loop per row or vector."""
    from torch.profiler import ProfilerActivity, profile

    model, tok = make_model("llama"), make_tokenizer()
    with Steer(model, tok) as s:
        s.add(1, 0.3, text="happy")
        s.add(1, -0.2, text="calm")
        handle, hook = s._hooks[1]
        h = torch.randn(4, 1, model.config.hidden_size)
        with torch.inference_mode():
            hook(model.model.layers[1], (h,), {})  # warm: buffers sized once
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                for _ in range(10):
                    hook(model.model.layers[1], (h,), {})
        assert hook.kernel_calls >= 11
    ops = [e for e in prof.events() if e.name.startswith("aten::")]
    assert ops == [], sorted({e.name for e in ops})


@pytest.mark.parametrize(
    "metric, prompts, expected, match",
    [
        ("task_accuracy", PROMPTS, ["7"], r"prompts and expected_outputs have different lengths \(3 vs 1\)"),
        ("task_accuracy", PROMPTS, None, "needs expected_outputs"),
        ("perplexity", PROMPTS, [" 7", " the"], r"prompts and expected_outputs have different lengths \(3 vs 2\)"),
        ("perplexity", ["a b", 42], None, r"prompts\[1\] must be a string, got int 42"),
        ("task_accuracy", ["a b", "c d"], ["7", 7], r"expected_outputs\[1\] must be a string, got int 7"),
        ("perplexity", [], None, "prompts is empty"),
    ],
)
def test_evaluate_checks_its_inputs_before_any_work(model, metric, prompts, expected, match):
    """3 prompts with 1 expected answer used to score 0.0, mismatched perplexity inputs a number, a
    non-string prompt a transformers error naming no argument: each is refused, naming the argument,
    before the model runs (no forward pass: a forward hook counts them)."""
    from autosteer import InvalidArgumentError

    ev = SteerEvaluator(model, make_tokenizer(), metric, max_new_tokens=2)
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(InvalidArgumentError, match=match):
            ev.evaluate(prompts, expected)
        with pytest.raises(InvalidArgumentError, match=match):
            ev.evaluate_candidates(Steer(model, make_tokenizer()), [SteerCandidate()], prompts, expected)
    finally:
        handle.remove()
    assert calls == []


@pytest.mark.parametrize("metric", ["task_accuracy", "perplexity"])
def test_non_finite_logits_raise_instead_of_scoring(metric):
    from autosteer.search.evaluator import NonFiniteOutputError
    broken = make_model("llama")
    with torch.no_grad():
        broken.lm_head.weight[0, 0] = float("nan")  # every logit row of every prompt becomes NaN
    ev = SteerEvaluator(broken, make_tokenizer(), metric, max_new_tokens=2)
    with pytest.raises(NonFiniteOutputError, match="non-finite logits"):
        ev.evaluate(["a b c", "d e"], ["x", "y"])
