"""Decoder-layer discovery, the tiny-model factory, and the sanity of the reference oracle."""

from __future__ import annotations

import functools
import operator

import pytest
import reference
import tiny_models as tm
import torch
from torch import nn

from autosteer.errors import InvalidArgumentError, UnsupportedModelError
from autosteer.steering.layers import (
    DecoderLayers,
    find_decoder_layers,
    first_layernorm_eps,
    hidden_size_of,
)


@functools.cache
def _model(name: str) -> nn.Module:
    """One shared instance per architecture; tests that hook it must unhook it."""
    return tm.make_model(name)


def _hook_ids(model: nn.Module) -> list:
    """Every forward (pre-)hook id on the model.

    Not simply "no hooks": transformers 5.x installs permanent output-capturing
    forward hooks on the layers the first time output_hidden_states is asked for.
    """
    return [
        (name, tuple(m._forward_pre_hooks), tuple(m._forward_hooks))
        for name, m in model.named_modules()
    ]


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", tm.ARCHITECTURES)
def test_discovery_finds_the_layer_list(name):
    model = _model(name)
    found = find_decoder_layers(model)
    assert isinstance(found, DecoderLayers)
    assert found.layers is tm.layers_of(model, name)
    assert found.path == tm.LAYER_PATHS[name]
    assert operator.attrgetter(found.path)(model) is found.layers
    assert len(found) == tm.NUM_LAYERS
    assert "Peft" not in found.model_class  # PEFT is unwrapped
    with pytest.raises(Exception):
        found.path = "x"  # frozen


def test_discovery_unwraps_peft_to_the_transformers_class():
    found = find_decoder_layers(_model("llama_peft"))
    assert found.model_class == "LlamaForCausalLM"
    assert found.path.startswith("base_model.model.")


def test_vlm_discovery_picks_the_text_layers_not_the_vision_tower():
    model = _model("gemma3_vlm")
    found = find_decoder_layers(model)
    assert found.layers is model.model.language_model.layers
    assert found.model_class == "Gemma3ForConditionalGeneration"


class _Wrapper(nn.Module):
    """A model the known paths miss: the decoder lives at ``core``."""

    def __init__(self, inner: nn.Module, decoy: bool = False):
        super().__init__()
        self.config = inner.config
        self.core = inner.model
        if decoy:  # a shallower ModuleList named "layers" of the wrong length
            self.blocks = nn.ModuleList([nn.Linear(2, 2)])

    def get_decoder(self):
        return self.core


@pytest.mark.parametrize("decoy", [False, True])
def test_generic_fallback_uses_get_decoder_and_layer_count(decoy):
    inner = tm.make_model("llama")
    wrapper = _Wrapper(inner, decoy=decoy)
    found = find_decoder_layers(wrapper)
    assert found.layers is inner.model.layers
    assert found.path == "core.layers"
    assert found.model_class == "_Wrapper"


def test_generic_fallback_needs_the_layer_count():
    inner = tm.make_model("llama")
    wrapper = _Wrapper(inner)
    wrapper.core.layers = nn.ModuleList(list(wrapper.core.layers)[:2])  # 2 != 3
    with pytest.raises(UnsupportedModelError):
        find_decoder_layers(wrapper)


# ---------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------


def test_override_modulelist_list_tuple_and_string():
    model = tm.make_model("llama")
    real = model.model.layers

    got = find_decoder_layers(model, layers=real)
    assert got.layers is real and got.path == "<override>"

    subset = [real[0], real[2]]
    got = find_decoder_layers(model, layers=subset)
    assert list(got.layers) == subset and got.path == "<override>" and len(got) == 2

    got = find_decoder_layers(model, layers=tuple(subset))
    assert list(got.layers) == subset

    got = find_decoder_layers(model, layers="model.layers")
    assert got.layers is real and got.path == "model.layers"
    assert got.model_class == "LlamaForCausalLM"
    assert find_decoder_layers(model, layers=got) is got


def test_override_string_on_peft_accepts_outer_and_inner_paths():
    model = _model("llama_peft")
    real = tm.layers_of(model, "llama_peft")
    outer = find_decoder_layers(model, layers="base_model.model.model.layers")
    inner = find_decoder_layers(model, layers="model.layers")
    assert outer.layers is real and inner.layers is real
    assert inner.path == outer.path == "base_model.model.model.layers"


def test_autosteer_layers_attribute_is_honoured():
    model = tm.make_model("gpt2")
    chosen = nn.ModuleList([model.transformer.h[1]])
    model.autosteer_layers = chosen
    got = find_decoder_layers(model)
    assert got.layers is chosen and got.path == "<override>"

    model2 = tm.make_model("gpt2")
    model2.autosteer_layers = "transformer.h"
    got = find_decoder_layers(model2)
    assert got.layers is model2.transformer.h and got.path == "transformer.h"

    # the explicit argument wins over the attribute
    got = find_decoder_layers(model, layers="transformer.h")
    assert got.layers is model.transformer.h


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (42, "int"),
        ("model.nope.layers", "model.nope.layers"),
        ("model.embed_tokens", "Embedding"),
        ([], "empty"),
        ([nn.Linear(2, 2), "x"], "str"),
    ],
)
def test_bad_override_is_rejected(bad, fragment):
    model = _model("llama")
    with pytest.raises(InvalidArgumentError) as info:
        find_decoder_layers(model, layers=bad)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.stack = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))

    def forward(self, x):
        return self.stack(x)


def test_unsupported_model_names_class_and_override():
    with pytest.raises(UnsupportedModelError) as info:
        find_decoder_layers(_Custom())
    msg = str(info.value)
    assert "_Custom" in msg
    assert "layers=" in msg and "Steer(model, tokenizer" in msg
    assert "model.autosteer_layers" in msg
    assert isinstance(info.value, TypeError)

    # ...and the suggested override does work
    got = find_decoder_layers(_Custom(), layers="stack")
    assert len(got) == 2


def test_non_module_is_unsupported():
    with pytest.raises(UnsupportedModelError, match="str"):
        find_decoder_layers("gpt2")


# ---------------------------------------------------------------------------
# hidden_size_of / first_layernorm_eps
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", tm.ARCHITECTURES)
def test_hidden_size_of(name):
    assert hidden_size_of(_model(name)) == tm.HIDDEN_SIZE


def test_hidden_size_from_embedding_when_config_is_missing():
    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 12)

        def get_input_embeddings(self):
            return self.emb

    assert hidden_size_of(Bare()) == 12
    with pytest.raises(UnsupportedModelError, match="_Custom"):
        hidden_size_of(_Custom())


@pytest.mark.parametrize(
    "name, eps",
    [("llama", None), ("qwen3", None), ("gemma2", None), ("gpt2", 1e-5), ("opt", 1e-5),
     ("phi", 1e-5), ("llama_peft", None),
     # the first nn.LayerNorm of Gemma3's VLM sits in its SigLIP vision tower
     ("gemma3_vlm", 1e-6)],
)
def test_first_layernorm_eps(name, eps):
    assert first_layernorm_eps(_model(name)) == eps


# ---------------------------------------------------------------------------
# The tiny models themselves
# ---------------------------------------------------------------------------


def test_tokenizer(tokenizer):
    assert type(tokenizer).__name__ != "" and len(tokenizer) == 384
    with_special = tokenizer("a logical answer").input_ids
    plain = tokenizer("a logical answer", add_special_tokens=False).input_ids
    assert with_special == [tokenizer.bos_token_id] + plain
    assert tokenizer.decode(plain) == "a logical answer"
    for tid in (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id):
        assert tid is not None and 0 <= tid < len(tokenizer)
    assert tokenizer.padding_side == "right"


@pytest.mark.parametrize("name", tm.ARCHITECTURES)
def test_tiny_model_forward_generate_and_layer_output(name, left_tokenizer):
    model = _model(name)
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config.get_text_config(decoder=True).vocab_size == len(left_tokenizer)
    batch = left_tokenizer(["the cat is happy", "a dog"], return_tensors="pt", padding=True)

    outputs = []
    hook = tm.layers_of(model, name)[1].register_forward_hook(
        lambda mod, args, out: outputs.append(out)
    )
    try:
        with torch.no_grad():
            logits = model(**batch).logits
        generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    finally:
        hook.remove()
    assert logits.shape == (2, batch["input_ids"].shape[1], len(left_tokenizer))
    assert torch.isfinite(logits).all()
    assert generated.shape == (2, batch["input_ids"].shape[1] + 3)
    assert isinstance(outputs[0], tuple) == tm.LAYER_RETURNS_TUPLE[name]


def test_make_model_is_deterministic_and_keeps_global_rng():
    state = torch.random.get_rng_state()
    a = tm.make_model("qwen3")
    b = tm.make_model("qwen3")
    c = tm.make_model("qwen3", seed=tm.SEED + 1)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_save_and_reload_llama(tmp_path, tokenizer):
    model = _model("llama")
    loaded = tm.save_and_reload(model, tmp_path / "llama")
    assert type(loaded).__name__ == "LlamaForCausalLM"
    batch = tokenizer(["the cat is happy"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    assert find_decoder_layers(loaded).layers is loaded.model.layers


# ---------------------------------------------------------------------------
# Sanity of the reference oracle
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", tm.ARCHITECTURES)
def test_reference_hooks_steer_and_remove_cleanly(name, left_tokenizer):
    model = _model(name)
    layers = tm.layers_of(model, name)
    batch = left_tokenizer(["the cat is happy", "a dog"], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**batch).logits
    hooks_before = _hook_ids(model)
    vectors = [
        (1, 0.8, "a logical answer", None),
        (1, -0.3, "sad", lambda step: 0.5**step),
        (0, 0.5, "calm", None),
    ]
    with reference.ReferenceSteer(model, left_tokenizer, layers, vectors) as ref:
        with torch.no_grad():
            steered = model(**batch).logits
        n_forward_steps = len(ref.steps)
        model.generate(**batch, max_new_tokens=3, do_sample=False)
        assert ref.steps[n_forward_steps:] == [0, 1, 2]
    with torch.no_grad():
        after = model(**batch).logits
    assert (steered - before).abs().max() > 1e-3
    assert torch.equal(before, after)
    assert _hook_ids(model) == hooks_before
    for v in ref.vectors:
        assert v.direction.dtype == torch.float32
        assert v.direction.shape == (tm.HIDDEN_SIZE,)


@pytest.mark.parametrize("name", ["llama", "gpt2"])  # RMS-style and LayerNorm-style
def test_reference_delta_matches_the_formula(name, tokenizer):
    model = _model(name)
    layers = tm.layers_of(model, name)
    text, coeff, idx = "an honest answer", 0.7, 2

    # the direction, by hand
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states[idx][0]  # input of layer idx
    mean = hs.float().mean(0)
    eps = first_layernorm_eps(model)
    if eps is None:
        expected_dir = mean / (torch.sqrt(mean.pow(2).mean() + 1e-6) + 1e-6)
    else:
        expected_dir = (mean - mean.mean()) / torch.sqrt(mean.var(unbiased=False) + eps)

    seen = {}

    def before_steer(mod, args, kwargs):
        seen["in"] = args[0].clone()

    def after_steer(mod, args, kwargs):
        seen["out"] = args[0].clone()

    batch = tokenizer(["the cat is happy", "a dog"], return_tensors="pt", padding=True)
    h1 = layers[idx].register_forward_pre_hook(before_steer, with_kwargs=True)
    try:
        with reference.ReferenceSteer(model, tokenizer, layers, [(idx, coeff, text, None)]) as ref:
            h2 = layers[idx].register_forward_pre_hook(after_steer, with_kwargs=True)
            try:
                with torch.no_grad():
                    model(**batch)
            finally:
                h2.remove()
    finally:
        h1.remove()
    torch.testing.assert_close(ref.vectors[0].direction, expected_dir, rtol=1e-5, atol=1e-5)
    h = seen["in"]
    last = batch["attention_mask"].sum(1) - 1  # right padding: last real token
    r = torch.sqrt(h[torch.arange(2), last].pow(2).mean(-1) + 1e-6)
    expected = h + coeff * expected_dir * r[:, None, None]
    torch.testing.assert_close(seen["out"], expected, rtol=1e-5, atol=1e-5)


def test_reference_padding_rows_match_single_rows(tokenizer):
    """Right padding: each row steered inside a batch equals that row steered alone."""
    model = _model("llama")
    layers = tm.layers_of(model, "llama")
    texts = ["the cat is happy and calm today", "a dog"]
    with reference.ReferenceSteer(model, tokenizer, layers, [(1, 1.5, "angry", None)]):
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            batched = model(**batch).logits
            for row, text in enumerate(texts):
                single = model(**tokenizer([text], return_tensors="pt")).logits[0]
                n = single.shape[0]
                torch.testing.assert_close(batched[row, :n], single, rtol=1e-4, atol=1e-4)


def test_reference_sequential_vs_clean_directions(tokenizer):
    model = _model("llama")
    layers = tm.layers_of(model, "llama")
    vectors = [(0, 2.0, "angry", None), (2, 1.0, "calm", None)]
    hooks_before = _hook_ids(model)
    with reference.ReferenceSteer(model, tokenizer, layers, vectors) as seq:
        pass
    with reference.ReferenceSteer(model, tokenizer, layers, vectors, directions_from="clean") as clean:
        pass
    # the first direction is the same; the second saw layer 0 steered in "sequential" mode
    torch.testing.assert_close(seq.vectors[0].direction, clean.vectors[0].direction)
    assert not torch.allclose(seq.vectors[1].direction, clean.vectors[1].direction)
    assert _hook_ids(model) == hooks_before


# ---------------------------------------------------------------------------
# The forward convention: transformers knowledge lives here, not in C
# ---------------------------------------------------------------------------


def test_forward_convention_is_frozen_and_feeds_the_tracker():
    from autosteer import _C
    from autosteer.steering.layers import TRANSFORMERS_CONVENTION, ForwardConvention

    conv = TRANSFORMERS_CONVENTION
    assert conv == ForwardConvention()
    assert conv.cache_kwargs == ("past_key_values", "cache")  # transformers 5.2x renamed it
    assert (conv.cache_length_method, conv.mask_kwarg, conv.hidden_states_kwarg) == (
        "get_seq_length", "attention_mask", "hidden_states")
    with pytest.raises(Exception):
        conv.mask_kwarg = "mask"
    _C.StepTracker(**conv.tracker_kwargs())


def test_the_c_core_holds_no_transformers_names():
    import pathlib
    import re

    csrc = pathlib.Path(__file__).resolve().parents[2] / "csrc"
    names = ["past_key_values", "cache", "attention_mask", "input_ids", "inputs_embeds", "hidden_states",
             "get_seq_length", "cache_position"]
    for path in sorted(csrc.glob("*.[ch]")):
        literals = set(re.findall(r'"([^"\\\\]*)"', path.read_text()))
        assert not literals & set(names), (path.name, sorted(literals & set(names)))
