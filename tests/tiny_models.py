"""Tiny random-weight causal language models, built offline, for the tests.

Nothing here touches the network: the tokenizer is trained on generated
sentences with the ``tokenizers`` library, and every model is created from a
hand-made configuration with deterministic, seeded weights.

Public helpers
--------------
``ARCHITECTURES``              names accepted by :func:`make_model`.
``LAYER_PATHS``                dotted path of the decoder-layer list, from the model object.
``LAYER_RETURNS_TUPLE``        whether a decoder layer returns a tuple (else a tensor).
``SEED``                       the default seed of every model.
``make_tokenizer(padding_side="right")``   a fresh ``PreTrainedTokenizerFast`` (cached training).
``make_config(name)``          the tiny configuration of a plain architecture.
``make_model(name, seed=SEED, attn_implementation=None)``  a tiny model in eval mode, float32.
``layers_of(model, name)``     the decoder-layer ``ModuleList`` found through ``LAYER_PATHS``.
``save_and_reload(model, directory)``      ``save_pretrained`` then
                               ``AutoModelForCausalLM.from_pretrained`` (the real loading path).
``sample_sentences(n, seed)``  English-ish sentences from the tokenizer's world.
"""

from __future__ import annotations

import atexit
import functools
import operator
import os
import random
import shutil
import tempfile
import warnings
from typing import Any

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "PLAIN_ARCHITECTURES",
    "LAYER_PATHS",
    "LAYER_RETURNS_TUPLE",
    "SEED",
    "NUM_LAYERS",
    "HIDDEN_SIZE",
    "make_tokenizer",
    "make_config",
    "make_model",
    "layers_of",
    "save_and_reload",
    "sample_sentences",
]

SEED = 20251125
NUM_LAYERS = 3
HIDDEN_SIZE = 32
_HEADS = 4
_KV_HEADS = 2
_HEAD_DIM = HIDDEN_SIZE // _HEADS
_FFN = 64
_MAX_POS = 256

# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<boi>", "<eoi>"]
_VOCAB_SIZE = 384

_SUBJECTS = [
    "the cat", "a dog", "my friend", "the teacher", "our team", "the robot",
    "a child", "the old man", "she", "he", "they", "we", "the scientist",
]
_VERBS = [
    "likes", "hates", "sees", "finds", "builds", "writes", "reads", "loves",
    "explains", "answers", "solves", "paints", "carries", "forgets",
]
_OBJECTS = [
    "the book", "a letter", "the answer", "a question", "the house", "music",
    "the problem", "a story", "the garden", "an idea", "the river", "a song",
]
_ADJECTIVES = [
    "happy", "sad", "calm", "angry", "logical", "precise", "confused", "kind",
    "wild", "quiet", "bright", "dark", "careful", "silly", "honest", "polite",
]
_TAILS = ["today", "again", "at night", "in the morning", "slowly", "with care", "now"]


def sample_sentences(n: int = 400, seed: int = 0) -> list[str]:
    """Return ``n`` deterministic English-ish sentences (plus a little arithmetic)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)} ."
        elif kind == 1:
            s = f"{rng.choice(_SUBJECTS)} is {rng.choice(_ADJECTIVES)} and {rng.choice(_ADJECTIVES)} ."
        elif kind == 2:
            a, b = rng.randrange(20), rng.randrange(20)
            mood = rng.choice(["a logical answer", "a confused answer", "an answer"])
            s = f"{mood} : what is {a} plus {b} ? {a + b} ."
        else:
            s = f"I feel {rng.choice(_ADJECTIVES)} because {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} ."
        out.append(s[0].upper() + s[1:] if i % 3 == 0 else s)
    return out


@functools.cache
def _tokenizer_dir() -> str:
    """Train the byte-level BPE once per process and save it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sample_sentences(400, seed=0), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    # Like Llama: a plain call prepends <s>; add_special_tokens=False does not.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=_MAX_POS,
    )
    directory = tempfile.mkdtemp(prefix="autosteer-tok-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    wrapped.save_pretrained(directory)
    return directory


def make_tokenizer(padding_side: str = "right"):
    """A fresh tokenizer loaded with ``AutoTokenizer.from_pretrained`` from a saved directory.

    Each call returns a new object, so a test may change ``padding_side`` freely.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_tokenizer_dir())
    tok.padding_side = padding_side
    return tok


@functools.cache
def _special_ids() -> dict[str, int]:
    tok = make_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    ids["vocab_size"] = len(tok)
    return ids


# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------

PLAIN_ARCHITECTURES = [
    "llama", "mistral", "mixtral", "phi", "phi3", "stablelm", "qwen2", "qwen3",
    "gemma", "gemma2", "gpt2", "gpt_neox", "opt", "falcon", "gptj",
]
ARCHITECTURES = PLAIN_ARCHITECTURES + ["llama_peft", "gemma3_vlm"]

# Dotted path of the decoder-layer ModuleList, from the object make_model returns.
LAYER_PATHS = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "mixtral": "model.layers",
    "phi": "model.layers",
    "phi3": "model.layers",
    "stablelm": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
    "falcon": "transformer.h",
    "gptj": "transformer.h",
    "llama_peft": "base_model.model.model.layers",
    "gemma3_vlm": "model.language_model.layers",
}

# Whether a decoder layer's forward returns a tuple (True) or a bare tensor (False)
# in transformers 5.24; checked by tests/unit/test_layers.py.
LAYER_RETURNS_TUPLE = {name: False for name in ARCHITECTURES}
LAYER_RETURNS_TUPLE["falcon"] = True  # GPT-J returns a tensor in 5.24 (a tuple in older 5.x)


def _common() -> dict[str, Any]:
    ids = _special_ids()
    return dict(
        vocab_size=ids["vocab_size"],
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        tie_word_embeddings=False,
    )


def _llama_like() -> dict[str, Any]:
    return dict(
        hidden_size=HIDDEN_SIZE,
        intermediate_size=_FFN,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=_HEADS,
        num_key_value_heads=_KV_HEADS,
        max_position_embeddings=_MAX_POS,
    )


def make_config(name: str):
    """The tiny configuration of one of ``PLAIN_ARCHITECTURES`` (or ``gemma3_vlm``)."""
    from transformers import AutoConfig

    c = _common()
    ll = _llama_like()
    if name in ("llama", "mistral", "qwen2"):
        kw = {**ll}
        if name == "mistral":
            kw["head_dim"] = _HEAD_DIM
        if name == "qwen2":
            kw["layer_types"] = ["full_attention"] * NUM_LAYERS
    elif name == "mixtral":
        kw = {**ll, "num_local_experts": 4, "num_experts_per_tok": 2}
    elif name == "qwen3":
        kw = {**ll, "head_dim": _HEAD_DIM, "layer_types": ["full_attention"] * NUM_LAYERS}
    elif name == "phi":
        kw = {**ll}
    elif name == "phi3":
        kw = {**ll}
    elif name == "stablelm":
        kw = {**ll}
    elif name == "gemma":
        kw = {**ll, "head_dim": _HEAD_DIM}
    elif name == "gemma2":
        kw = {
            **ll,
            "head_dim": _HEAD_DIM,
            "query_pre_attn_scalar": _HEAD_DIM,
            "sliding_window": 16,
            "layer_types": [
                "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(NUM_LAYERS)
            ],
        }
    elif name in ("gpt2", "gptj"):
        kw = dict(n_embd=HIDDEN_SIZE, n_layer=NUM_LAYERS, n_head=_HEADS, n_inner=_FFN, n_positions=_MAX_POS)
        if name == "gptj":
            kw["rotary_dim"] = _HEAD_DIM // 2
    elif name == "gpt_neox":
        kw = dict(
            hidden_size=HIDDEN_SIZE,
            intermediate_size=_FFN,
            num_hidden_layers=NUM_LAYERS,
            num_attention_heads=_HEADS,
            max_position_embeddings=_MAX_POS,
        )
    elif name == "opt":
        kw = dict(
            hidden_size=HIDDEN_SIZE,
            ffn_dim=_FFN,
            num_hidden_layers=NUM_LAYERS,
            num_attention_heads=_HEADS,
            max_position_embeddings=_MAX_POS,
            word_embed_proj_dim=HIDDEN_SIZE,
        )
    elif name == "falcon":
        kw = dict(
            hidden_size=HIDDEN_SIZE,
            num_hidden_layers=NUM_LAYERS,
            num_attention_heads=_HEADS,
            num_kv_heads=_HEADS,
            ffn_hidden_size=_FFN,
            max_position_embeddings=_MAX_POS,
        )
    elif name == "gemma3_vlm":
        return _gemma3_vlm_config()
    else:
        raise KeyError(f"unknown tiny architecture {name!r}; known: {ARCHITECTURES}")
    return AutoConfig.for_model(name, **c, **kw)


def _gemma3_vlm_config():
    from transformers import AutoConfig

    ids = _special_ids()
    c = _common()
    text = dict(
        **c,
        **_llama_like(),
        head_dim=_HEAD_DIM,
        query_pre_attn_scalar=_HEAD_DIM,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"][:NUM_LAYERS]
        + ["full_attention"] * max(0, NUM_LAYERS - 3),
    )
    text["model_type"] = "gemma3_text"
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=4,
    )
    return AutoConfig.for_model(
        "gemma3",
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=ids["<boi>"],
        eoi_token_index=ids["<eoi>"],
        image_token_index=ids["<image>"],
        tie_word_embeddings=False,
    )


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def make_model(name: str, seed: int = SEED, attn_implementation: str | None = None) -> nn.Module:
    """Build the tiny model ``name`` with weights drawn from ``seed``; eval mode, float32.

    The global torch RNG is left untouched (the build runs under ``fork_rng``).
    """
    from transformers import AutoModelForCausalLM

    base = "llama" if name == "llama_peft" else name
    config = make_config(base)
    kwargs = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, **kwargs)
        if name == "llama_peft":
            model = _wrap_lora(model)
    model.eval()
    return model


def _wrap_lora(model: nn.Module) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft 0.21 probes the deprecated transformers property; not ours to fix.
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        peft_model = get_peft_model(model, cfg)
    # LoRA's B matrices start at zero; give them values so the adapter does something.
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.02)
    return peft_model


def layers_of(model: nn.Module, name: str) -> nn.ModuleList:
    """The decoder-layer list of a tiny model, reached through ``LAYER_PATHS[name]``."""
    return operator.attrgetter(LAYER_PATHS[name])(model)


def save_and_reload(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """``save_pretrained`` into ``directory`` and load back with ``AutoModelForCausalLM``.

    Uses the real loading path (``from_pretrained``), in float32, eval mode.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    directory = os.fspath(directory)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # keep test output clean
    try:
        model.save_pretrained(directory)
        loaded = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    loaded.eval()
    return loaded
