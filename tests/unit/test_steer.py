"""Steer against the independent plain-torch reference (tests/reference.py) on
every supported architecture, plus restore, composition, autograd and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tiny_models
import torch
from reference import ReferenceSteer, reference_direction

from autosteer import (
    AutoSteerError,
    CosineSchedule,
    DecaySchedule,
    InvalidArgumentError,
    LayerIndexError,
    ScheduleError,
    Steer,
    UnsupportedModelError,
    VectorShapeError,
    WarmupSchedule,
)

PROMPTS = ["the cat sees a small red ball", "my friend likes"]


def vectors_for(n_layers):
    """Three vectors: two on one layer (with schedules), a negative one elsewhere."""
    a, b = 0, n_layers - 1
    return [
        (a, 0.8, "the robot is happy", DecaySchedule(0.7, 0.2, 0)),
        (a, 0.3, "a quiet friend", CosineSchedule(3, 0.1)),
        (b, -0.6, "the dog runs slowly", WarmupSchedule(2, 0.25)),
    ]


def steer_with(model, tok, vecs):
    s = Steer(model, tok)
    for layer, coeff, text, sched in vecs:
        s.add(layer_idx=layer, coeff=coeff, text=text, coeff_schedule=sched)
    return s


def generate_logits(model, tok, **kw):
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(
            **enc, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id, **kw,
        )
    return out.sequences, torch.stack(out.logits)


@pytest.mark.parametrize("arch", tiny_models.ARCHITECTURES)
def test_generate_matches_reference_every_arch(arch, left_tokenizer):
    """Prefill and each decode step, left-padded batch of 2: same logits as the reference."""
    model = tiny_models.make_model(arch)
    layers = tiny_models.layers_of(model, arch)
    vecs = vectors_for(len(layers))
    base_seq, base_logits = generate_logits(model, left_tokenizer)

    with steer_with(model, left_tokenizer, vecs) as s:
        assert s.layers_path == tiny_models.LAYER_PATHS[arch]
        seq, logits = generate_logits(model, left_tokenizer)
    with ReferenceSteer(model, left_tokenizer, layers, vecs, directions_from="clean") as ref:
        ref_seq, ref_logits = generate_logits(model, left_tokenizer)
        assert ref.steps[-4:] == [0, 1, 2, 3]  # the first entries are capture passes
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(seq, ref_seq)
    assert not torch.allclose(logits, base_logits, atol=1e-3)  # steering did something
    # restored: bit-identical to the unsteered run
    again_seq, again_logits = generate_logits(model, left_tokenizer)
    assert torch.equal(again_logits, base_logits) and torch.equal(again_seq, base_seq)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "falcon", "gemma3_vlm", "llama_peft"])
def test_right_padding_uses_last_real_token(arch, tokenizer):
    """A right-padded prefill (perplexity scoring) takes the rms at each row's last real token."""
    model = tiny_models.make_model(arch)
    layers = tiny_models.layers_of(model, arch)
    vecs = [(1, 1.5, "the teacher", None)]
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert (enc["attention_mask"][1] == 0).any()
    with steer_with(model, tokenizer, vecs), torch.no_grad():
        got = model(**enc).logits
    with ReferenceSteer(model, tokenizer, layers, vecs, directions_from="clean"), torch.no_grad():
        want = model(**enc).logits
    mask = enc["attention_mask"].bool()
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-4, atol=1e-4)


def test_beams_and_num_return_sequences_match_reference(left_tokenizer):
    model = tiny_models.make_model("llama")
    layers = tiny_models.layers_of(model, "llama")
    vecs = vectors_for(len(layers))
    kw = dict(num_beams=3, num_return_sequences=2)
    with steer_with(model, left_tokenizer, vecs):
        seq, logits = generate_logits(model, left_tokenizer, **kw)
    with ReferenceSteer(model, left_tokenizer, layers, vecs, directions_from="clean"):
        ref_seq, ref_logits = generate_logits(model, left_tokenizer, **kw)
    assert torch.equal(seq, ref_seq)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)


def test_step_restarts_with_every_generate(left_tokenizer):
    model = tiny_models.make_model("qwen2")
    seen = []
    s = Steer(model, left_tokenizer)
    s.add(1, 0.5, "the cat", coeff_schedule=lambda k: (seen.append(k), 1.0)[1])
    for _ in range(2):
        generate_logits(model, left_tokenizer)
    assert seen == [0, 1, 2, 3, 0, 1, 2, 3]
    s.reset_all()


def test_output_hidden_states_show_the_steered_state(tokenizer):
    model = tiny_models.make_model("llama")
    layers = tiny_models.layers_of(model, "llama")
    enc = tokenizer(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        plain = model(**enc, output_hidden_states=True).hidden_states
    direction = reference_direction(model, tokenizer, layers, 2, "a dog")
    with Steer(model, tokenizer) as s, torch.no_grad():
        s.add(2, 0.9, "a dog")
        steered = model(**enc, output_hidden_states=True).hidden_states
    h = plain[2]
    r = h[:, -1].float().pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    expected = h + 0.9 * direction * r[:, None, :]
    torch.testing.assert_close(steered[2], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(steered[1], plain[1], rtol=0, atol=0)


def test_coeff_zero_and_reset_are_bit_identical_and_weights_untouched(tokenizer):
    model = tiny_models.make_model("mistral")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        base = model(**enc).logits
    s = Steer(model, tokenizer)
    s.add(1, 0.0, "the cat")
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, base)
    s.add(0, 2.0, "the cat")
    s.add(2, -1.0, vector=torch.randn(tiny_models.HIDDEN_SIZE))
    with torch.no_grad():
        assert not torch.equal(model(**enc).logits, base)
    s.reset(0)
    s.reset(2)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, base)
    s.add(1, 3.0, "the dog")
    s.reset_all()
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, base)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not layer._forward_pre_hooks for layer in tiny_models.layers_of(model, "mistral"))


def test_get_all_and_reset(tokenizer):
    model = tiny_models.make_model("llama")
    s = Steer(model, tokenizer)
    s.add(0, 0.5, "the cat", coeff_schedule=DecaySchedule(0.9, 0.1))
    s.add(2, -0.25, "a dog")
    assert s.get_all() == [
        {"layer_idx": 0, "text": "the cat", "coeff": 0.5,
         "coeff_schedule": {"type": "decay", "rate": 0.9, "min_multiplier": 0.1, "times_restart": 0}},
        {"layer_idx": 2, "text": "a dog", "coeff": -0.25, "coeff_schedule": None},
    ]
    s.reset(0)
    assert [v["layer_idx"] for v in s.get_all()] == [2]
    s.reset_all()
    assert s.get_all() == []


def test_two_instances_compose_and_remove_only_their_own(tokenizer):
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        base = model(**enc).logits
    a, b = Steer(model, tokenizer), Steer(model, tokenizer)
    a.add(1, 1.0, "the cat")
    with torch.no_grad():
        only_a = model(**enc).logits
    b.add(2, -1.0, "a dog")
    with torch.no_grad():
        both = model(**enc).logits
    assert not torch.equal(both, only_a)
    b.reset_all()
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, only_a)
    assert a.get_all() and not b.get_all()
    a.reset_all()
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, base)


def test_same_text_on_many_layers_runs_the_model_once(tokenizer):
    model = tiny_models.make_model("llama")
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    s = Steer(model, tokenizer)
    for layer in range(3):
        s.add(layer, 0.2, "the teacher")
    handle.remove()
    assert len(calls) == 1
    s.reset_all()


def test_vector_argument_equals_text_direction(tokenizer):
    model = tiny_models.make_model("gemma")
    layers = tiny_models.layers_of(model, "gemma")
    enc = tokenizer(PROMPTS[:1], return_tensors="pt")
    with Steer(model, tokenizer) as s, torch.no_grad():
        s.add(1, 0.7, "the robot")
        by_text = model(**enc).logits
    direction = reference_direction(model, tokenizer, layers, 1, "the robot")
    with Steer(model, tokenizer) as s, torch.no_grad():
        s.add(1, 0.7, vector=direction.numpy())
        by_vector = model(**enc).logits
    torch.testing.assert_close(by_vector, by_text, rtol=1e-5, atol=1e-5)


def test_steering_method_replaces_the_formula(tokenizer):
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS[:1], return_tensors="pt")
    calls = []
    shift = torch.linspace(-1, 1, tiny_models.HIDDEN_SIZE)

    def method(elem, step, layer_idx):
        calls.append((tuple(elem.shape), step, layer_idx))
        return shift

    # oracle: a plain pre-hook that adds the same shift to layer 1's input
    layer = tiny_models.layers_of(model, "llama")[1]
    handle = layer.register_forward_pre_hook(lambda m, args: (args[0] + shift,) + args[1:])
    with torch.no_grad():
        want = model(**enc).logits
    handle.remove()
    with Steer(model, tokenizer) as s, torch.no_grad():
        s.add(1, 1.0, "the cat", steering_method=method)
        got = model(**enc).logits
    assert calls == [((1, enc["input_ids"].shape[1], tiny_models.HIDDEN_SIZE), 0, 1)]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_inference_mode_and_autograd(tokenizer):
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS[:1], return_tensors="pt")
    s = Steer(model, tokenizer)
    s.add(1, 0.8, "the cat")
    with torch.no_grad():
        want = model(**enc).logits
    with torch.inference_mode():
        torch.testing.assert_close(model(**enc).logits, want, rtol=0, atol=0)
    out = model(**enc).logits  # gradients enabled: the input is replaced, not written
    torch.testing.assert_close(out.detach(), want, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    s.reset_all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_matches_reference(dtype, left_tokenizer):
    model = tiny_models.make_model("llama").to(dtype)
    layers = tiny_models.layers_of(model, "llama")
    vecs = vectors_for(len(layers))
    enc = left_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with steer_with(model, left_tokenizer, vecs), torch.no_grad():
        got = model(**enc).logits.float()
    with ReferenceSteer(model, left_tokenizer, layers, vecs, directions_from="clean"), torch.no_grad():
        want = model(**enc).logits.float()
    with torch.no_grad():
        base = model(**enc).logits.float()
    # bf16 rounds each residual add: compare the steering effect, not bits
    err = (got - want).abs().max().item()
    effect = (want - base).abs().max().item()
    assert err < 0.1 * effect, (err, effect)


def test_copy_model_leaves_the_original_alone(tokenizer):
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        base = model(**enc).logits
    s = Steer(model, tokenizer, copyModel=True)
    s.add(1, 2.0, "the cat")
    assert s.model is not model
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, base)
        assert not torch.equal(s.model(**enc).logits, base)


def test_from_pretrained_roundtrip(tmp_path, tokenizer):
    model = tiny_models.save_and_reload(tiny_models.make_model("llama"), tmp_path / "m")
    with Steer(model, tokenizer) as s:
        s.add(0, 0.5, "the cat")
        assert s.num_layers == tiny_models.NUM_LAYERS


def test_layers_override(tokenizer):
    model = tiny_models.make_model("llama")
    s = Steer(model, tokenizer, layers="model.layers")
    s.add(2, 0.5, "the cat")
    s.reset_all()
    s = Steer(model, tokenizer, layers=list(model.model.layers)[:2])
    with pytest.raises(LayerIndexError):
        s.add(2, 0.5, "the cat")


# ---------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def steer_llama():
    tok = tiny_models.make_tokenizer()
    return Steer(tiny_models.make_model("stablelm"), tok)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(layer_idx=40, coeff=1.0, text="x"), LayerIndexError,
         r"layer_idx 40 is out of range: StableLmForCausalLM has 3 decoder layers \(0\.\.2\)"),
        (dict(layer_idx=-1, coeff=1.0, text="x"), LayerIndexError, "out of range"),
        (dict(layer_idx=1.5, coeff=1.0, text="x"), InvalidArgumentError, "layer_idx must be an int"),
        (dict(layer_idx=0, coeff=1.0, text=""), InvalidArgumentError, "non-whitespace"),
        (dict(layer_idx=0, coeff=1.0, text="   \n"), InvalidArgumentError, "non-whitespace"),
        (dict(layer_idx=0, coeff=float("nan"), text="x"), InvalidArgumentError, "finite"),
        (dict(layer_idx=0, coeff=float("inf"), text="x"), InvalidArgumentError, "finite"),
        (dict(layer_idx=0, coeff="1", text="x"), InvalidArgumentError, "real number"),
        (dict(layer_idx=0, coeff=1.0), InvalidArgumentError, "neither"),
        (dict(layer_idx=0, coeff=1.0, text="x", vector=np.zeros(32)), InvalidArgumentError, "both"),
        (dict(layer_idx=0, coeff=1.0, vector=np.zeros(31)), VectorShapeError, r"\(32,\).*\(31,\)"),
        (dict(layer_idx=0, coeff=1.0, vector=[0.0] * 32), InvalidArgumentError, "tensor or a NumPy"),
        (dict(layer_idx=0, coeff=1.0, vector=torch.full((32,), float("nan"))), InvalidArgumentError, "NaN"),
        (dict(layer_idx=0, coeff=1.0, text="x", coeff_schedule=3), ScheduleError, "coeff_schedule must be"),
        (dict(layer_idx=0, coeff=1.0, text="x", coeff_schedule={"type": "nope"}), ScheduleError, "unknown"),
        (dict(layer_idx=0, coeff=1.0, text="x", steering_method=5), InvalidArgumentError, "callable"),
        # finite in float64, not in float32 (the kernel's weights); complex; bools like their twins
        (dict(layer_idx=0, coeff=1e308, text="x"), InvalidArgumentError, r"coeff must be finite in float32.*1e\+308"),
        (dict(layer_idx=0, coeff=-3.5e38, text="x"), InvalidArgumentError, r"coeff must be finite in float32.*3.5e\+38"),
        (dict(layer_idx=0, coeff=10**400, text="x"), InvalidArgumentError, "coeff is too large"),
        (dict(layer_idx=0, coeff=0.5 + 1j, text="x"), InvalidArgumentError, r"coeff must be a real number, got complex"),
        (dict(layer_idx=0, coeff=np.complex64(1), text="x"), InvalidArgumentError, "coeff must be a real number"),
        (dict(layer_idx=0, coeff=True, text="x"), InvalidArgumentError, "coeff must be a real number, got bool"),
        (dict(layer_idx=0, coeff=np.bool_(True), text="x"), InvalidArgumentError, "coeff must be a real number"),
        (dict(layer_idx=0, coeff=torch.tensor(True), text="x"), InvalidArgumentError, r"coeff .*torch.bool tensor"),
        (dict(layer_idx=0, coeff=torch.tensor(1j), text="x"), InvalidArgumentError, r"coeff .*complex"),
        (dict(layer_idx=0, coeff=torch.tensor(1e39, dtype=torch.float64), text="x"), InvalidArgumentError, "float32"),
        (dict(layer_idx=0, coeff=torch.ones(2), text="x"), InvalidArgumentError, r"coeff .*shape \(2,\)"),
        # vectors: what arrived is named
        (dict(layer_idx=0, coeff=1.0, vector=np.ones(32, dtype=np.complex64)), InvalidArgumentError, "complex64"),
        (dict(layer_idx=0, coeff=1.0, vector=torch.ones(32, dtype=torch.complex64)), InvalidArgumentError, "complex64"),
        (dict(layer_idx=0, coeff=1.0, vector=np.ones(32, dtype=bool)), InvalidArgumentError, "dtype bool"),
        (dict(layer_idx=0, coeff=1.0, vector=torch.ones(32, dtype=torch.bool)), InvalidArgumentError, "torch.bool"),
        (dict(layer_idx=0, coeff=1.0, vector=np.array(["1"] * 32)), InvalidArgumentError, "dtype <U1"),
        (dict(layer_idx=0, coeff=1.0, vector=np.array([1.0] * 32, dtype=object)), InvalidArgumentError, "dtype object"),
        (dict(layer_idx=0, coeff=1.0, vector=torch.ones(32, device="meta")), InvalidArgumentError, "meta-device"),
        (dict(layer_idx=0, coeff=1.0, vector=np.full(32, np.nan)), InvalidArgumentError, "NaN"),
        (dict(layer_idx=0, coeff=1.0, vector=np.full(32, 1e39)), InvalidArgumentError, "float32"),
        # per-row groups
        (dict(layer_idx=0, coeff=1.0, text="x", group=-1), InvalidArgumentError, "group must be an integer >= 0"),
        (dict(layer_idx=0, coeff=1.0, text="x", group=1.0), InvalidArgumentError, "group must be an integer"),
        (dict(layer_idx=0, coeff=1.0, text="x", group=True), InvalidArgumentError, "group must be an integer"),
    ],
)
def test_bad_input_is_refused_before_any_work(steer_llama, kwargs, exc, match):
    calls = []
    handle = steer_llama.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(exc, match=match) as info:
            steer_llama.add(**kwargs)
    finally:
        handle.remove()
    assert isinstance(info.value, AutoSteerError)
    assert calls == [] and steer_llama.get_all() == []


def test_unsupported_model_names_class_and_override(tokenizer):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    with pytest.raises(UnsupportedModelError, match="Tiny") as info:
        Steer(Tiny(), tokenizer)
    assert "layers=" in str(info.value) and isinstance(info.value, TypeError)
    with pytest.raises(InvalidArgumentError):
        Steer("not a model", tokenizer)


# ---------------------------------------------------------------- review findings
class _FakeCache:
    def __init__(self, n):
        self.n = n

    def get_seq_length(self):
        return self.n


def make_tracker():
    """A C StepTracker with transformers' forward convention, as Steer makes it."""
    from autosteer import _C
    from autosteer.steering import _torch_hook
    from autosteer.steering.layers import TRANSFORMERS_CONVENTION

    return _C.StepTracker(**TRANSFORMERS_CONVENTION.tracker_kwargs(), last_index_fn=_torch_hook.last_token_index)


def make_hook(tracker, layer_idx, dirs, coeffs, schedules=None, methods=None, membership=None):
    """A C SteerHook over the direction matrix ``dirs``, as Steer makes it for a CPU layer."""
    from autosteer import _C
    from autosteer.steering import _torch_hook

    n = len(coeffs)
    weights = _C.SteerWeights(layer_idx=layer_idx, coeffs=coeffs, schedules=schedules or [None] * n,
                              methods=methods or [None] * n, membership=membership)
    return _C.SteerHook(tracker=tracker, weights=weights, directions=dirs, fallback=_torch_hook.steer,
                        grad_enabled=torch.is_grad_enabled, hidden_states_kwarg="hidden_states")


def test_step_on_reused_and_prefix_caches():
    def steps(calls):
        tracker = make_tracker()
        out = []
        for cache_len, T in calls:
            tracker(None, (), {"cache": _FakeCache(cache_len), "input_ids": torch.zeros(1, T, dtype=torch.long)})
            out.append(tracker.step)
        return out

    # prefill, two decode steps, then a new turn on the same cache, one decode step
    assert steps([(0, 5), (5, 1), (6, 1), (7, 4), (11, 1)]) == [0, 1, 2, 0, 1]
    # a prefix cache of 100 tokens given by the user
    assert steps([(100, 5), (105, 1), (106, 1)]) == [0, 1, 2]


def test_expanded_hidden_states_are_not_written_in_place():
    from autosteer import _C

    base = torch.ones(1, 1, 4)
    h = base.expand(2, 3, 4)  # every element shares memory
    dirs = torch.eye(4)[:1].contiguous()
    with pytest.raises(ValueError):
        _C.apply_delta(h, dirs, torch.ones(1))
    tracker = make_tracker()
    hook = make_hook(tracker, 0, dirs, [1.0])
    with torch.no_grad():
        (new_h, *_), _ = hook(None, (h,), {})
    assert torch.equal(base, torch.ones(1, 1, 4))  # untouched
    torch.testing.assert_close(new_h[:, :, 0], torch.full((2, 3), 2.0))


def test_schedule_subclass_call_is_honoured(tokenizer):
    class Off(DecaySchedule):
        def __call__(self, step):
            return 0.0

    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        base = model(**enc).logits
    with Steer(model, tokenizer) as s, torch.no_grad():
        s.add(1, 2.0, "the cat", coeff_schedule=Off(0.9))
        assert torch.equal(model(**enc).logits, base)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int16, torch.bool])
def test_any_mask_dtype_finds_the_last_real_token(dtype, tokenizer):
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with Steer(model, tokenizer) as s, torch.no_grad():
        s.add(1, 1.5, "the teacher")
        want = model(**enc).logits
        got = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"].to(dtype)).logits
    mask = enc["attention_mask"].bool()
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-4, atol=1e-4)


def test_failed_add_leaves_the_previous_steering(tokenizer, monkeypatch):
    import autosteer.steering.steer as steer_module

    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS[:1], return_tensors="pt")
    s = Steer(model, tokenizer)
    s.add(1, 1.0, "the cat")
    with torch.no_grad():
        before = model(**enc).logits

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    # the weights of a layer's new vector set cannot be built (its hook would
    # be reconfigured in place), then a newly steered layer's hook cannot be
    for name, layer in (("SteerWeights", 1), ("SteerHook", 2)):
        monkeypatch.setattr(steer_module._C, name, broken)
        with pytest.raises(RuntimeError):
            s.add(layer, 0.5, "a dog")
        assert [v["text"] for v in s.get_all()] == ["the cat"]
        with torch.no_grad():
            assert torch.equal(model(**enc).logits, before)
        fresh = Steer(model, tokenizer)
        with pytest.raises(RuntimeError):
            fresh.add(0, 0.5, "a dog")
        assert fresh.get_all() == [] and not fresh._tracker_handles
        monkeypatch.undo()
    s.reset_all()


# ---------------------------------------------------------------- one path per device
def test_cpu_layers_get_the_c_hook_and_the_torch_path_computes_the_same(tokenizer, monkeypatch):
    import autosteer.steering.steer as steer_module
    from autosteer import _C
    from autosteer.steering._torch_hook import TorchHook

    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    vecs = vectors_for(tiny_models.NUM_LAYERS)
    with steer_with(model, tokenizer, vecs) as s, torch.no_grad():
        assert all(type(hook) is _C.SteerHook for _, hook in s._hooks.values())
        by_kernel = model(**enc).logits
        assert all(hook.kernel_calls == 1 for _, hook in s._hooks.values())
    monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    with steer_with(model, tokenizer, vecs) as s, torch.no_grad():
        assert all(type(hook) is TorchHook for _, hook in s._hooks.values())
        by_torch = model(**enc).logits
        assert all(hook.calls == 1 and hook.kernel_calls == 0 for _, hook in s._hooks.values())
    torch.testing.assert_close(by_torch, by_kernel, rtol=1e-5, atol=1e-5)


def test_each_direction_is_stored_once(tokenizer):
    """The layer's float32 [J, D] matrix is the only copy: the C hook holds it, the vectors are its rows."""
    model = tiny_models.make_model("llama")
    s = Steer(model, tokenizer)
    s.add(1, 0.5, "the cat")
    s.add(1, -0.2, vector=torch.randn(tiny_models.HIDDEN_SIZE))
    s.add(2, 0.3, "a dog")

    def check():
        for layer, (_, hook) in s._hooks.items():
            matrix = s._directions[layer]
            assert hook.directions is matrix and matrix.dtype == torch.float32 and matrix.is_contiguous()
            rows = [v for v in s._vectors if v.layer_idx == layer]
            assert matrix.shape == (len(rows), tiny_models.HIDDEN_SIZE)
            for j, v in enumerate(rows):
                assert v.direction.data_ptr() == matrix[j].data_ptr()

    check()
    first = s._directions[1]
    hook = s._hooks[1][1]
    s.add(1, 0.1, "my friend")  # the layer's matrix is rebuilt, the hook keeps its place
    assert s._directions[1] is not first and s._hooks[1][1] is hook
    check()
    s.reset(2)
    check()
    s.reset_all()


def test_tracker_and_hooks_know_no_transformers_names():
    """The forward convention comes from autosteer.steering.layers as plain strings."""
    from autosteer import _C
    from autosteer.steering.layers import ForwardConvention

    conv = ForwardConvention(cache_kwargs=("kv",), cache_length_method="length", mask_kwarg="m",
                             input_ids_kwarg="tokens", inputs_embeds_kwarg="embeds")
    tracker = _C.StepTracker(**conv.tracker_kwargs())

    class Cache:
        def __init__(self, n):
            self.n = n

        def length(self):
            return self.n

    tracker(None, (), {"kv": Cache(0), "tokens": torch.zeros(1, 5)})
    tracker(None, (), {"kv": Cache(5), "tokens": torch.zeros(1, 1), "m": torch.ones(1, 6)})
    assert tracker.step == 1 and tracker.mask is not None
    tracker(None, (), {"past_key_values": Cache(6), "input_ids": torch.zeros(1, 1)})  # not this convention's names
    assert tracker.step == 0
    with pytest.raises(TypeError, match="missing required keyword argument"):
        _C.StepTracker()
    with pytest.raises(TypeError):
        _C.StepTracker(("past_key_values",), "get_seq_length", "attention_mask", "input_ids", "inputs_embeds")


# ---------------------------------------------------------------- per-row steering
class Config:
    """What the search's SteerCandidate offers Steer.applied: ``apply(steer, group=None)``."""

    def __init__(self, vecs):
        self.vecs = vecs

    def apply(self, steer, group=None):
        for layer, coeff, text, sched in self.vecs:
            steer.add(layer, coeff, text, coeff_schedule=sched, group=group)


ROW_PROMPTS = ["the cat sees a small red ball", "my friend likes", "a dog", "we read the book again", "she is kind"]
ROW_GROUPS = [1, 0, 2, 1, 0]


def group_configs(n_layers):
    """Three groups (the last one without vectors) and a vector shared by every row."""
    shared = (1, 0.4, "my friend", None)
    configs = [
        [(0, 0.8, "the robot is happy", DecaySchedule(0.7, 0.2, 0))],
        [(n_layers - 1, -0.6, "the dog runs slowly", WarmupSchedule(2, 0.25)),
         (0, 0.3, "a quiet friend", CosineSchedule(3, 0.1))],
        [],
    ]
    return shared, configs


def _gen(model, tok, prompts, **kw):
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=4, min_new_tokens=4, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=tok.pad_token_id, **kw)
    return out.sequences[:, enc["input_ids"].shape[1]:], torch.stack(out.logits)


def _prefill(model, tok, prompts, grad=False):
    enc = tok(prompts, return_tensors="pt", padding=True)
    # positions from the mask, as generate() computes them, so that a row's
    # logits do not depend on how much left padding its batch needs
    positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.set_grad_enabled(grad):
        logits = model(**enc, position_ids=positions).logits.detach()
    return logits, enc["attention_mask"].bool()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "falcon", "qwen3"])
@pytest.mark.parametrize("path", ["kernel", "torch", "grad"])
def test_per_row_steering_equals_each_group_alone(arch, path, left_tokenizer, monkeypatch):
    """Rows of group g in one batch get exactly what group g's steering alone gives them
    (plain-torch reference), at the prefill and every decode step, left-padded."""
    import autosteer.steering.steer as steer_module
    from autosteer.steering._torch_hook import TorchHook

    if path == "torch":
        monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    model = tiny_models.make_model(arch)
    layers = tiny_models.layers_of(model, arch)
    shared, configs = group_configs(len(layers))
    s = Steer(model, left_tokenizer)
    s.add(*shared[:3], coeff_schedule=shared[3])
    with s.applied([Config(c) for c in configs]), s.rows(ROW_GROUPS):
        assert s.num_groups == 3  # the last config adds nothing but is a group
        with s.rows(ROW_GROUPS):  # nested rows() restore the outer ones
            pass
        assert torch.equal(s.tracker.row_groups, torch.tensor(ROW_GROUPS))
        prefill, mask = _prefill(model, left_tokenizer, ROW_PROMPTS, grad=path == "grad")
        if path != "grad":
            seq, logits = _gen(model, left_tokenizer, ROW_PROMPTS)
        hooks = [hook for _, hook in s._hooks.values()]
        if path == "torch":
            assert all(type(h) is TorchHook for h in hooks)
        elif path == "kernel":
            assert all(h.kernel_calls > 0 for h in hooks)
        else:
            assert all(h.kernel_calls == 0 and h.calls == 1 for h in hooks)
    assert s.tracker.row_groups is None and len(s.get_all()) == 1
    s.reset_all()
    for g in range(len(configs)):
        idx = [i for i, gg in enumerate(ROW_GROUPS) if gg == g]
        sub = [ROW_PROMPTS[i] for i in idx]
        with ReferenceSteer(model, left_tokenizer, layers, [shared] + configs[g], directions_from="clean"):
            want_prefill, want_mask = _prefill(model, left_tokenizer, sub)
            if path != "grad":
                want_seq, want_logits = _gen(model, left_tokenizer, sub)
        # left padding: the sub-batch's positions are the batch's last ones
        got = prefill[idx][:, -want_prefill.shape[1]:]
        torch.testing.assert_close(got[want_mask], want_prefill[want_mask], rtol=1e-4, atol=1e-4)
        if path != "grad":
            torch.testing.assert_close(logits[:, idx], want_logits, rtol=1e-4, atol=1e-4)
            assert torch.equal(seq[idx], want_seq)


@pytest.mark.parametrize("path", ["kernel", "torch"])
def test_per_row_steering_with_beams_and_return_sequences(path, left_tokenizer, monkeypatch):
    """generate() repeats rows (repeat_interleave): row b of m * R rows belongs to groups[b // m]."""
    import autosteer.steering.steer as steer_module

    if path == "torch":
        monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    model = tiny_models.make_model("llama")
    layers = tiny_models.layers_of(model, "llama")
    shared, configs = group_configs(len(layers))
    kw = dict(num_beams=3, num_return_sequences=2)
    prompts, groups = ROW_PROMPTS[:2], [1, 0]
    s = Steer(model, left_tokenizer)
    with s.applied([Config(c) for c in configs[:2]]), s.rows(groups):
        seq, logits = _gen(model, left_tokenizer, prompts, **kw)
    for g in (0, 1):
        i = groups.index(g)
        with ReferenceSteer(model, left_tokenizer, layers, configs[g], directions_from="clean"):
            want_seq, want_logits = _gen(model, left_tokenizer, prompts[i:i + 1], **kw)
        assert torch.equal(seq[2 * i:2 * i + 2], want_seq)
        torch.testing.assert_close(logits[:, 3 * i:3 * i + 3], want_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path", ["kernel", "torch"])
def test_row_groups_that_do_not_fit_are_clear_errors(path, tokenizer, monkeypatch):
    import autosteer.steering.steer as steer_module

    if path == "torch":
        monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS + PROMPTS, return_tensors="pt", padding=True)  # 4 rows
    s = Steer(model, tokenizer)
    s.add(1, 0.5, "the cat", group=1)
    s.add(2, 0.5, "a dog")
    with torch.no_grad():
        with pytest.raises(InvalidArgumentError, match=r"layer 1 has vectors added with group=.*steer.rows"):
            model(**enc)
        with s.rows([0, 1, 1]), pytest.raises(InvalidArgumentError, match="4 batch rows.*3 rows.*multiple of 3"):
            model(**enc)
        with s.rows([0, 2]), pytest.raises(InvalidArgumentError, match="group 2.*groups 0..1"):
            model(**enc)
        with s.rows([0, 1]):  # 4 = 2 * 2 rows
            model(**enc)
    for bad, match in [([], "at least one"), ([0, -1], r">= 0"), ([0.5], "integer"), ("01", "sequence of ints"),
                       (torch.tensor([[0, 1]]), "1-D"), (np.array([0.0, 1.0]), "ints")]:
        with pytest.raises(InvalidArgumentError, match=match):
            with s.rows(bad):
                pass
    assert s.tracker.row_groups is None
    s.reset_all()


def test_applied_restores_the_previous_steering_exactly(tokenizer):
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    s = Steer(model, tokenizer)
    s.add(1, 0.5, "the cat", coeff_schedule=DecaySchedule(0.9, 0.1))
    s.add(2, -0.25, "a dog")
    before_all = s.get_all()
    hook1 = s._hooks[1][1]
    with torch.no_grad():
        before = model(**enc).logits
    config = Config([(0, 1.0, "the robot", None), (1, -0.3, "my friend", CosineSchedule(4))])
    with s.applied(config) as same:
        assert same is s and len(s.get_all()) == 4
        with torch.no_grad():
            assert not torch.equal(model(**enc).logits, before)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, before)
    assert s.get_all() == before_all and s._hooks[1][1] is hook1 and 0 not in s._hooks
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with s.applied(config):
                raise exc
        with torch.no_grad():
            assert torch.equal(model(**enc).logits, before)
    # a config that fails half way leaves nothing behind either
    broken = Config([(0, 1.0, "the robot", None), (1, 1.0, "", None)])
    with pytest.raises(InvalidArgumentError):
        with s.applied(broken):
            pass
    assert s.get_all() == before_all
    with pytest.raises(InvalidArgumentError, match="apply"):
        with s.applied([config, "not a config"]):
            pass
    s.reset_all()
    with s.applied(config), torch.no_grad():
        model(**enc)
    assert s.get_all() == [] and not s._hooks and not s._tracker_handles


# ---------------------------------------------------------------- errors during a forward
@pytest.mark.parametrize("path", ["kernel", "torch"])
@pytest.mark.parametrize("returned,shown", [("x", "str 'x'"), (None, "NoneType None"), (1j, "complex 1j"),
                                            (float("nan"), "float nan"), (float("inf"), "float inf"),
                                            (np.complex128(2), "complex128")])
def test_bad_schedule_returns_name_the_layer_and_the_vector(path, returned, shown, left_tokenizer, monkeypatch):
    import autosteer.steering.steer as steer_module

    if path == "torch":
        monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    model = tiny_models.make_model("llama")
    s = Steer(model, left_tokenizer)
    s.add(0, 0.5, "the cat")
    s.add(2, 0.5, "a dog", coeff_schedule=lambda k: 1.0 if k < 2 else returned)
    with pytest.raises(InvalidArgumentError) as info:
        _gen(model, left_tokenizer, PROMPTS)
    msg = str(info.value)
    assert "vector 1 (layer 2)" in msg and shown in msg and "at step 2" in msg, msg
    s.reset(0)  # the vector's place in get_all() moves, and so does the message
    with pytest.raises(InvalidArgumentError, match=r"vector 0 \(layer 2\)"):
        _gen(model, left_tokenizer, PROMPTS)
    s.reset_all()


@pytest.mark.parametrize("path", ["kernel", "torch"])
@pytest.mark.parametrize("returned,shown", [
    ("x", "str 'x'"),
    (None, "NoneType None"),
    (1j, "complex 1j"),
    (torch.zeros(5), r"torch.float32 tensor of shape \(5,\)"),
    (torch.zeros(2, 7, tiny_models.HIDDEN_SIZE), "broadcastable"),
    (torch.full((tiny_models.HIDDEN_SIZE,), float("nan")), "NaN"),
    (torch.zeros(tiny_models.HIDDEN_SIZE, dtype=torch.complex64), "complex64"),
])
def test_bad_steering_method_returns_name_the_layer_and_the_vector(path, returned, shown, left_tokenizer,
                                                                   monkeypatch):
    import autosteer.steering.steer as steer_module

    if path == "torch":
        monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    model = tiny_models.make_model("llama")
    s = Steer(model, left_tokenizer)
    s.add(0, 0.5, "the cat")
    s.add(1, 0.5, "a dog", steering_method=lambda elem, step, layer: elem[:, :1] * 0 if step < 1 else returned)
    with pytest.raises(InvalidArgumentError, match=rf"steering_method of vector 1 \(layer 1\) returned .*{shown}"):
        _gen(model, left_tokenizer, PROMPTS)
    s.reset_all()


@pytest.mark.parametrize("path", ["kernel", "torch"])
@pytest.mark.parametrize("dtype,coeff,multiplier", [(torch.float16, 0.5, 1e20), (torch.float32, 1.0, 1e300),
                                                    (torch.float16, 1e5, 1.0), (torch.bfloat16, 1.0, 3.4e38)])
def test_weights_beyond_the_storage_range_are_refused(path, dtype, coeff, multiplier, tokenizer, monkeypatch):
    """coeff * multiplier is checked where it is formed, against the hidden states' dtype: never inf/NaN."""
    import autosteer.steering.steer as steer_module

    if path == "torch":
        monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    model = tiny_models.make_model("llama").to(dtype)
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    s = Steer(model, tokenizer)
    s.add(0, 0.1, "the cat")
    if multiplier == 1.0:  # the coefficient alone is beyond the dtype: refused at add() already
        with pytest.raises(InvalidArgumentError, match=r"coeff 100000.0 cannot give finite activations .*float16"):
            s.add(1, coeff, "a dog", coeff_schedule=lambda k: multiplier)
        s.reset_all()
        return
    s.add(1, coeff, "a dog", coeff_schedule=lambda k: multiplier)
    with torch.no_grad(), pytest.raises(InvalidArgumentError) as info:
        model(**enc)
    msg = str(info.value)
    name = str(dtype).replace("torch.", "")
    assert "vector 1 on layer 1" in msg and repr(float(coeff)) in msg and repr(float(multiplier)) in msg, msg
    assert name in msg, msg
    s.reset_all()


def test_empty_input_is_a_clear_error(tokenizer):
    model = tiny_models.make_model("llama")
    with Steer(model, tokenizer) as s, torch.no_grad():
        s.add(1, 0.5, "the cat")
        with pytest.raises(InvalidArgumentError, match="empty input.*input_ids has 0 positions"):
            model(input_ids=torch.zeros(1, 0, dtype=torch.long))


def test_tokenizer_is_needed_for_text_only(tokenizer):
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS[:1], return_tensors="pt")
    direction = reference_direction(model, tokenizer, tiny_models.layers_of(model, "llama"), 1, "the cat")
    with Steer(model) as s, torch.no_grad():
        s.add(1, 0.7, vector=direction)
        by_vector = model(**enc).logits
        with pytest.raises(InvalidArgumentError, match="tokenizer=None"):
            s.add(1, 0.7, "the cat")
    with Steer(model, tokenizer) as s, torch.no_grad():
        s.add(1, 0.7, "the cat")
        torch.testing.assert_close(model(**enc).logits, by_vector, rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidArgumentError, match=r"tokenizer must be a callable tokenizer.*int 5"):
        Steer(model, 5)


# ---------------------------------------------------------------- copies and pickles
@pytest.mark.parametrize("path", ["kernel", "torch"])
def test_deepcopy_of_a_steered_model_is_steered_the_same(path, left_tokenizer, monkeypatch):
    import copy

    import autosteer.steering.steer as steer_module

    if path == "torch":
        monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    model = tiny_models.make_model("gemma3_vlm")  # a relay tracker on the outer model too
    layers = tiny_models.layers_of(model, "gemma3_vlm")
    s = steer_with(model, left_tokenizer, vectors_for(len(layers)))
    s.add(1, 0.6, "my friend", group=0)
    s.add(2, -0.4, "the robot", group=1)
    with s.rows([0, 1]):
        seq, logits = _gen(model, left_tokenizer, PROMPTS)
        twin = copy.deepcopy(model)
    s.reset_all()
    base_seq, base_logits = _gen(model, left_tokenizer, PROMPTS)
    assert not torch.equal(base_logits, logits)
    # the copy steers on its own, with its own tracker and row groups
    twin_seq, twin_logits = _gen(twin, left_tokenizer, PROMPTS)
    assert torch.equal(twin_logits, logits) and torch.equal(twin_seq, seq)
    hooks = [h for m in twin.modules() for h in m._forward_pre_hooks.values()]
    trackers = [h for h in hooks if type(h).__name__ == "StepTracker"]
    assert len(trackers) == 2 and (trackers[0].relay_to is trackers[1] or trackers[1].relay_to is trackers[0])
    assert all(t is not s.tracker for t in trackers)


def test_pickling_a_steered_model_says_what_to_do(tokenizer, tmp_path):
    import pickle

    from autosteer import SteerStateError

    model = tiny_models.make_model("llama")
    s = Steer(model, tokenizer)
    s.add(1, 0.5, "the cat")
    for dump in (pickle.dumps, lambda m: torch.save(m, tmp_path / "m.pt")):
        with pytest.raises(SteerStateError, match=r"reset_all\(\).*state_dict") as info:
            dump(model)
        assert isinstance(info.value, TypeError)
    s.reset_all()
    torch.save(model, tmp_path / "m.pt")
    assert pickle.loads(pickle.dumps(DecaySchedule(0.9, 0.1))) == DecaySchedule(0.9, 0.1)


def test_copy_model_copies_without_any_steering(tokenizer):
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        base = model(**enc).logits
    other = Steer(model, tokenizer)
    other.add(1, 2.0, "the cat")
    with torch.no_grad():
        steered = model(**enc).logits
    s = Steer(model, tokenizer, copy_model=True)
    assert s.model is not model
    assert not any(m._forward_pre_hooks for m in s.model.modules())
    with torch.no_grad():
        assert torch.equal(s.model(**enc).logits, base)
        s.add(2, 1.0, "a dog")
        assert not torch.equal(s.model(**enc).logits, base)
        assert torch.equal(model(**enc).logits, steered)
    other.reset_all()


# ---------------------------------------------------------------- threads (issue 17 item 1)
def _in_threads(fns):
    """Run each fn in its own thread; returns [(result, exception)] in order."""
    import threading

    out = [None] * len(fns)

    def run(i):
        try:
            out[i] = (fns[i](), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out[i] = (None, exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


@pytest.mark.parametrize("path", ["c", "torch"])
def test_two_threads_in_one_forward_raise_instead_of_sharing_the_step(path, left_tokenizer, monkeypatch):
    """Both threads pass the step tracker before either reaches the steered layer (a barrier
    forces it): the steering state is the last thread's, so the other one must not steer with
    it. Exactly one thread raises SteerStateError; the other equals a sequential run."""
    import threading

    from autosteer import SteerStateError
    from autosteer.steering import steer as steer_module

    if path == "torch":
        monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    model = tiny_models.make_model("llama")
    s = Steer(model, left_tokenizer)
    s.add(0, 0.5, "the cat", coeff_schedule=DecaySchedule(rate=0.5))
    expected = generate_logits(model, left_tokenizer)
    barrier = threading.Barrier(2, timeout=20)
    waited = set()

    def rendezvous(module, args):
        me = threading.get_ident()
        if me not in waited:
            waited.add(me)
            barrier.wait()

    handle = s._layers[0].register_forward_pre_hook(rendezvous, prepend=True)
    try:
        results = _in_threads([lambda: generate_logits(model, left_tokenizer)] * 2)
    finally:
        handle.remove()
    errors = [e for _, e in results if e is not None]
    assert len(errors) == 1, results
    assert isinstance(errors[0], SteerStateError) and "two threads" in str(errors[0])
    (seq, logits), = [r for r, e in results if e is None]
    assert torch.equal(seq, expected[0]) and torch.equal(logits, expected[1])
    # the model is usable afterwards, from any thread, with the same results
    (again, err), = _in_threads([lambda: generate_logits(model, left_tokenizer)])
    assert err is None and torch.equal(again[1], expected[1])
    s.reset_all()


def test_a_decode_step_after_another_threads_prefill_raises(left_tokenizer):
    """Thread A prefills, thread B prefills, thread A decodes on its own cache: A's step would
    count from B's prefill. Refused. (Two live threads, one task at a time: no overlap within
    a forward, only between the forwards of two generations.)"""
    import inspect
    from concurrent.futures import ThreadPoolExecutor

    from autosteer import SteerStateError

    model = tiny_models.make_model("llama")
    s = Steer(model, left_tokenizer)
    s.add(0, 0.5, "the cat", coeff_schedule=DecaySchedule(rate=0.5))
    enc = left_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def prefill():
        with torch.no_grad():
            return model(**enc, use_cache=True)

    with ThreadPoolExecutor(1) as thread_a, ThreadPoolExecutor(1) as thread_b:
        a = thread_a.submit(prefill).result()
        thread_b.submit(prefill).result()
        nxt = a.logits[:, -1:].argmax(-1)
        mask = torch.cat([enc["attention_mask"], torch.ones_like(nxt)], dim=1)

        def decode():
            with torch.no_grad():
                return model(input_ids=nxt, attention_mask=mask, use_cache=True, **{name: a.past_key_values})

        with pytest.raises(SteerStateError, match="two threads ran forwards of one steered model"):
            thread_a.submit(decode).result()
        # a new generation in either thread is fine
        thread_b.submit(prefill).result()
    s.reset_all()


def test_a_deep_copy_steering_is_removed_by_a_new_steer_as_the_pickle_error_says(tokenizer, tmp_path):
    """Issue 17 item 15: a deep copy of a steered model is steered by hooks no Steer owns;
    Steer(copy).reset_all() makes it compute as the unsteered model, the original keeps its
    steering, and the advice in the pickle error works as written."""
    import copy
    import pickle

    from autosteer import SteerStateError
    from autosteer.steering.steer import active_steering

    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        base = model(**enc).logits
    s = Steer(model, tokenizer)
    s.add(1, 0.8, "the cat", coeff_schedule=DecaySchedule(0.9))
    with torch.no_grad():
        steered = model(**enc).logits
    twin = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(twin(**enc).logits, steered)
    with pytest.raises(SteerStateError, match=r"Steer\(model\)\.reset_all\(\)") as info:
        pickle.dumps(twin)
    assert "copy.deepcopy(model) keeps" not in str(info.value)
    from autosteer.steering.steer import UnownedSteeringWarning

    # the new Steer's get_all() lists only its own vectors (it was [] silently): it warns, naming them
    with pytest.warns(UnownedSteeringWarning, match=r"LlamaForCausalLM already carries AutoSteer steering that no "
                                                    r"live Steer owns \(layer 1: 1 vector\(s\), coeff 0\.8 "
                                                    r"\(no Steer owns them\)\).*get_all\(\).*reset_all\(\)"):
        other = Steer(twin, tokenizer)
    assert other.get_all() == [] and any("no Steer owns" in line for line in active_steering(twin))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Steer(model, tokenizer)  # steering a live Steer owns: no warning
    other.reset_all()
    assert active_steering(twin) == []
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in twin.modules())
    with torch.no_grad():
        assert torch.equal(twin(**enc).logits, base)
        assert torch.equal(model(**enc).logits, steered)  # the original is untouched
    pickle.dumps(twin)
    torch.save(twin, tmp_path / "twin.pt")
    s.reset_all()


@pytest.mark.parametrize("path", ["kernel", "torch"])
def test_disabled_scores_unsteered_and_restores_exactly(path, tokenizer, monkeypatch):
    import autosteer.steering.steer as steer_module
    from autosteer import SteerStateError

    if path == "torch":
        monkeypatch.setattr(steer_module, "_use_c_hook", lambda device: False)
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        base = model(**enc).logits
    other = Steer(model, tokenizer)
    other.add(2, 0.3, "a dog")
    with torch.no_grad():
        only_other = model(**enc).logits
    s = Steer(model, tokenizer)
    s.add(1, 0.8, "the cat")
    s.add_output(0, torch.ones(tiny_models.HIDDEN_SIZE), 0.1)
    order = [(m, list(m._forward_pre_hooks.items()), list(m._forward_hooks.items())) for m in model.modules()]
    with torch.no_grad():
        both = model(**enc).logits
        with s.disabled():
            assert torch.equal(model(**enc).logits, only_other)  # the other instance still steers
            with pytest.raises(SteerStateError, match="inside `with steer.disabled"):
                s.add(0, 0.1, "the cat")
        assert torch.equal(model(**enc).logits, both)
        with pytest.raises(RuntimeError, match="boom"), s.disabled():
            raise RuntimeError("boom")
        assert torch.equal(model(**enc).logits, both)
    assert [(m, list(m._forward_pre_hooks.items()), list(m._forward_hooks.items())) for m in model.modules()] == order
    s.reset_all()
    other.reset_all()
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, base)


def test_vectors_view_and_add_vector_round_trip(tokenizer):
    from autosteer.steering.steer import SteeringVector

    model = tiny_models.make_model("llama")
    s = Steer(model, tokenizer)
    s.add(1, 0.5, "the cat", coeff_schedule=DecaySchedule(0.9))
    s.add(2, -0.25, vector=torch.arange(tiny_models.HIDDEN_SIZE, dtype=torch.float32), group=1)
    vs = s.vectors
    assert [(v.layer_idx, v.coeff, v.text, v.source, v.group) for v in vs] == [
        (1, 0.5, "the cat", "text", None), (2, -0.25, None, "vector", 1)]
    assert torch.equal(vs[1].direction, torch.arange(tiny_models.HIDDEN_SIZE, dtype=torch.float32))
    vs[0].direction.zero_()  # a copy: the steering does not change
    assert not torch.equal(s.vectors[0].direction, vs[0].direction)
    with pytest.raises(AttributeError):
        vs[0].coeff = 3.0
    t = Steer(tiny_models.make_model("llama"), tokenizer)
    for v in s.vectors:
        t.add_vector(v)
    assert t.get_all() == s.get_all()
    assert all(torch.equal(a.direction, b.direction) for a, b in zip(s.vectors, t.vectors))
    with pytest.raises(InvalidArgumentError, match="SteeringVector"):
        t.add_vector({"layer_idx": 1})
    assert isinstance(vs[0], SteeringVector)
    s.reset_all()
    t.reset_all()


# ---------------------------------------------------------------- strength (issue 17 item 4)
@pytest.mark.parametrize("coeff", [1e20, -1e20, 3e38])
def test_a_coefficient_no_activation_survives_is_refused_at_add(coeff, tokenizer):
    """coeff=1e20 gave all-zero logits and 3e38 NaN logits, silently."""
    model = tiny_models.make_model("llama")
    s = Steer(model, tokenizer)
    with pytest.raises(InvalidArgumentError, match=r"coeff .* cannot give finite activations at layer 1 \(float32"):
        s.add(1, coeff, "the cat")
    assert s.get_all() == []
    # the bound, computed independently: |coeff| * max|direction| <= sqrt(float32 max / hidden size)
    s.add(1, 1.0, "the cat")
    peak = float(s.vectors[0].direction.abs().max())
    bound = (float(np.finfo(np.float32).max) / tiny_models.HIDDEN_SIZE) ** 0.5 / peak
    s.reset_all()
    s.add(1, bound * 0.99, "the cat")  # just inside is accepted
    s.reset_all()
    with pytest.raises(InvalidArgumentError, match="cannot give finite"):
        s.add(1, bound * 1.01, "the cat")
    with pytest.raises(InvalidArgumentError, match=r"scale .* cannot give finite activations"):
        s.add_output(1, torch.ones(tiny_models.HIDDEN_SIZE), 1e30)


def test_a_non_finite_steered_forward_raises_instead_of_emitting(tokenizer):
    """Activations large enough to overflow once steered: the CPU kernel raises, naming the layer,
    rather than letting NaN/inf flow on into the logits."""
    model = tiny_models.make_model("llama")
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    s = Steer(model, tokenizer)
    s.add(1, 1e15, "the cat")  # accepted: finite for activations of rms ~1 ...
    layer0 = s._layers[0]
    boost = layer0.register_forward_hook(lambda m, a, out: (out[0] * 1e30, *out[1:]) if isinstance(out, tuple)
                                         else out * 1e30)  # ... but these reach 1e30
    try:
        with torch.no_grad(), pytest.raises(InvalidArgumentError, match=r"layer 1: the steered hidden states are "
                                                                        r"not finite in float32"):
            model(**enc)
    finally:
        boost.remove()
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()  # ordinary activations still steer
    s.reset_all()


def test_a_non_finite_steered_forward_raises_with_grad_enabled_too(tokenizer):
    """With grad on, the C hook hands the forward to the torch path, which gave all-NaN
    float16 logits silently; it now raises the kernel's error, naming the layer."""
    model = tiny_models.make_model("llama").half()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(3000)  # large activations, still finite in float16
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()  # unsteered: finite
    s = Steer(model, tokenizer)
    s.add(1, 300.0, "the cat")  # accepted at add (finite for rms ~1), overflows float16 here
    message = r"layer 1: the steered hidden states are not finite in float16"
    for grad in (False, True):
        with torch.set_grad_enabled(grad), pytest.raises(InvalidArgumentError, match=message):
            model(**enc)
    s.reset_all()
    s.add(1, 0.5, "the cat")
    logits = model(**enc).logits  # grad on, ordinary coefficient: finite, and it has a graph
    assert torch.isfinite(logits).all() and logits.requires_grad
    s.reset_all()
