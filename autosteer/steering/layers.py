"""Find the decoder layers of a causal language model.

Steering adds a vector to the hidden states entering a decoder layer, so the
first thing AutoSteer needs is the model's list of decoder layers.  Models
keep that list in different places (``model.layers``, ``transformer.h``,
``gpt_neox.layers``, ``model.language_model.layers`` inside vision-language
models, ...).  :func:`find_decoder_layers` tries, in order:

1. an explicit ``layers=`` argument (a ``ModuleList``, a list of modules, or a
   dotted path such as ``"model.layers"``);
2. a ``model.autosteer_layers`` attribute set by the user (same forms);
3. the known paths of the common architectures (after unwrapping PEFT);
4. a generic search below ``model.get_decoder()`` for a ``ModuleList`` named
   ``layers``/``h``/``blocks``/``block``/``layer`` whose length is the text
   config's ``num_hidden_layers``.

It raises :class:`~autosteer.errors.UnsupportedModelError` when all fail.

:class:`ForwardConvention` holds everything else AutoSteer assumes about how
transformers calls a model and its decoder layers (keyword names, the KV
cache's length method); the C core gets these names as plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from autosteer.errors import InvalidArgumentError, UnsupportedModelError

__all__ = [
    "TRANSFORMERS_CONVENTION",
    "DecoderLayers",
    "ForwardConvention",
    "cache_argument",
    "find_decoder_layers",
    "first_layernorm_eps",
    "hidden_size_of",
]

OVERRIDE_PATH = "<override>"

# Dotted paths from the (PEFT-unwrapped) model, tried in this order.
_KNOWN_PATHS = (
    "model.layers",  # Llama, Mistral, Mixtral, Qwen2/3, Gemma 1-3, Phi, Phi3, StableLM, OLMo, ...
    "model.language_model.layers",  # Gemma3, Llava, Qwen2-VL, ... (VLM in transformers 5.x)
    "model.model.layers",  # wrappers holding a CausalLM in `.model`
    "model.model.language_model.layers",
    "language_model.model.layers",  # older VLM layout
    "transformer.h",  # GPT-2, GPT-J, Falcon, BLOOM, GPT-BigCode
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
    "transformer.layers",
    "language_model.layers",
    "decoder.layers",
    "layers",  # a bare decoder model (LlamaModel, ...)
    "h",  # a bare GPT2Model, ...
)

_LAYER_LIST_NAMES = ("layers", "h", "blocks", "block", "layer")


@dataclass(frozen=True)
class ForwardConvention:
    """How a causal LM's forward passes the things AutoSteer reads (transformers 5.x).

    The module that owns the decoder layers is called with keyword arguments:
    the KV cache under the first of ``cache_kwargs`` that is present (older
    releases call it ``past_key_values``; transformers 5.2x renamed it
    ``cache``), whose ``cache_length_method()`` is the number of cached
    positions (0 at the prefill); the 2-D attention mask under ``mask_kwarg``;
    the input under ``input_ids_kwarg`` or ``inputs_embeds_kwarg``.  A decoder
    layer gets its hidden states as the first positional argument or under
    ``hidden_states_kwarg``.
    """

    cache_kwargs: tuple[str, ...] = ("past_key_values", "cache")
    cache_length_method: str = "get_seq_length"
    mask_kwarg: str = "attention_mask"
    input_ids_kwarg: str = "input_ids"
    inputs_embeds_kwarg: str = "inputs_embeds"
    hidden_states_kwarg: str = "hidden_states"

    def tracker_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``autosteer._C.StepTracker`` for this convention."""
        return {
            "cache_kwargs": self.cache_kwargs,
            "cache_length_method": self.cache_length_method,
            "mask_kwarg": self.mask_kwarg,
            "input_ids_kwarg": self.input_ids_kwarg,
            "inputs_embeds_kwarg": self.inputs_embeds_kwarg,
        }


#: The convention of transformers 5.x (the only one AutoSteer knows today).
TRANSFORMERS_CONVENTION = ForwardConvention()


@dataclass(frozen=True)
class DecoderLayers:
    """The decoder layers of a model and where they were found.

    ``layers``: the ``nn.ModuleList`` (or the list of modules given as an override).
    ``path``: dotted attribute path from the model passed to
    :func:`find_decoder_layers` (so ``operator.attrgetter(path)(model) is layers``),
    or ``"<override>"`` when the layers were given as objects.
    ``model_class``: class name of the model (of the wrapped model for PEFT).
    """

    layers: Any
    path: str
    model_class: str

    def __len__(self) -> int:
        return len(self.layers)


def _peft_unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """Unwrap PEFT wrappers without importing peft; return (inner model, dotted prefix)."""
    prefix: list[str] = []
    for _ in range(8):
        mod = type(model).__module__ or ""
        if mod.split(".", 1)[0] != "peft":
            break
        children = getattr(model, "_modules", {}) or {}
        # PeftModel keeps the tuner in `base_model`; a tuner (LoraModel, ...) keeps the
        # transformers model in `model`.  Use the registered children: both classes
        # forward unknown attributes, so getattr alone would find the wrong objects.
        if isinstance(children.get("base_model"), nn.Module):
            prefix.append("base_model")
            model = children["base_model"]
        elif isinstance(children.get("model"), nn.Module):
            prefix.append("model")
            model = children["model"]
        else:
            break
    return model, ".".join(prefix)


def cache_argument(model: nn.Module) -> str:
    """The forward keyword a key/value cache is passed under: ``cache`` where the (PEFT-unwrapped)
    model's forward names it (transformers 5.2x renamed it), else ``past_key_values``."""
    import inspect

    inner, _ = _peft_unwrap(model)
    try:
        params = inspect.signature(inner.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _join(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if prefix else path


def _resolve_path(root: Any, path: str) -> Any:
    """Follow a dotted path; integer parts index into containers. Raises AttributeError."""
    obj = root
    for part in path.split("."):
        if part.isdigit() and isinstance(obj, (nn.ModuleList, nn.Sequential, list, tuple)):
            try:
                obj = obj[int(part)]
            except IndexError:
                raise AttributeError(part) from None
        else:
            if not part.isidentifier():
                raise AttributeError(part)
            obj = getattr(obj, part)
    return obj


def _as_layer_list(value: Any, where: str) -> Any:
    """Validate an override: a non-empty ModuleList/Sequential or list/tuple of modules."""
    if isinstance(value, (nn.ModuleList, nn.Sequential)):
        items = list(value)
        result: nn.ModuleList | nn.Sequential | list[Any] = value
    elif isinstance(value, (list, tuple)):
        items = list(value)
        result = items
    else:
        raise InvalidArgumentError(
            f"{where} must be an nn.ModuleList, a list of nn.Module, or a dotted path string; "
            f"got {type(value).__name__}"
        )
    if not items:
        raise InvalidArgumentError(f"{where} is empty: expected at least one decoder layer")
    for i, item in enumerate(items):
        if not isinstance(item, nn.Module):
            raise InvalidArgumentError(
                f"{where}[{i}] is a {type(item).__name__}, expected an nn.Module (a decoder layer)"
            )
    return result


def _from_override(model: nn.Module, inner: nn.Module, prefix: str, value: Any, where: str, cls: str):
    if isinstance(value, str):
        path = value.strip()
        for root, root_prefix in ((model, ""), (inner, prefix)):
            try:
                found = _resolve_path(root, path)
            except AttributeError:
                continue
            except Exception:  # a property that raises: treat as not found
                continue
            layers = _as_layer_list(found, f"{where} path {path!r}")
            return DecoderLayers(layers, _join(root_prefix, path), cls)
        raise InvalidArgumentError(
            f"{where} path {path!r} does not exist on {cls}: expected a dotted attribute path such as 'model.layers'"
        )
    return DecoderLayers(_as_layer_list(value, where), OVERRIDE_PATH, cls)


def _text_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        return None
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        for kwargs in ({"decoder": True}, {}):
            try:
                text = get_text(**kwargs)
            except Exception:
                continue
            if text is not None:
                return text
    return config


def _config_int(config: Any, names: tuple[str, ...]) -> int | None:
    """The first of ``names`` that the config holds as a positive int."""
    if config is None:
        return None
    for name in names:
        try:
            value = getattr(config, name, None)
        except Exception:
            value = None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _num_hidden_layers(model: nn.Module) -> int | None:
    return _config_int(_text_config(model), ("num_hidden_layers", "n_layer", "num_layers", "n_layers"))


def _generic_search(inner: nn.Module) -> nn.ModuleList | None:
    """ModuleList named like a layer list below get_decoder() (or the model itself)."""
    expected = _num_hidden_layers(inner)
    roots: list[nn.Module] = []
    get_decoder = getattr(inner, "get_decoder", None)
    if callable(get_decoder):
        try:
            decoder = get_decoder()
        except Exception:
            decoder = None
        if isinstance(decoder, nn.Module):
            roots.append(decoder)
    roots.append(inner)
    for root in roots:
        candidates = []
        for name, module in root.named_modules():
            if not isinstance(module, nn.ModuleList) or len(module) == 0:
                continue
            if name.rsplit(".", 1)[-1] not in _LAYER_LIST_NAMES:
                continue
            candidates.append((name.count("."), name, module))
        candidates.sort(key=lambda c: c[0])  # shallowest first (stable for ties)
        if expected is not None:
            for _, _, module in candidates:
                if len(module) == expected:
                    return module
        elif len(candidates) == 1:
            return candidates[0][2]
    return None


def _path_of(model: nn.Module, target: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


def find_decoder_layers(model: nn.Module, layers: Any = None) -> DecoderLayers:
    """Return the decoder layers of ``model``.

    ``layers`` overrides the discovery: an ``nn.ModuleList``, a list of modules, or a
    dotted attribute path from ``model`` (e.g. ``"model.layers"``).  Without it, a
    ``model.autosteer_layers`` attribute (same forms) is honoured, then the known
    layouts, then a generic search.  PEFT wrappers are unwrapped first.

    Raises ``UnsupportedModelError`` when no decoder-layer list can be found and
    ``InvalidArgumentError`` when an override is malformed.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(
            f"expected a torch.nn.Module (a transformers causal LM), got {type(model).__name__}"
        )
    inner, prefix = _peft_unwrap(model)
    cls = type(inner).__name__

    if isinstance(layers, DecoderLayers):
        return layers
    if layers is not None:
        return _from_override(model, inner, prefix, layers, "layers", cls)

    for obj in (model, inner):
        # Look in __dict__/_modules directly: PEFT forwards getattr, and a Module
        # assigned as an attribute is registered in _modules.
        value = obj.__dict__.get("autosteer_layers", None)
        if value is None:
            value = (getattr(obj, "_modules", None) or {}).get("autosteer_layers")
        if value is not None:
            return _from_override(model, inner, prefix, value, "model.autosteer_layers", cls)

    for path in _KNOWN_PATHS:
        try:
            found = _resolve_path(inner, path)
        except Exception:
            continue
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return DecoderLayers(found, _join(prefix, path), cls)

    found = _generic_search(inner)
    if found is not None:
        found_path = _path_of(model, found)
        return DecoderLayers(found, found_path if found_path is not None else OVERRIDE_PATH, cls)

    raise UnsupportedModelError(
        f"could not find the decoder layers of {cls}: none of the known paths "
        f"({', '.join(_KNOWN_PATHS[:8])}, ...) holds an nn.ModuleList, and no ModuleList named "
        f"{'/'.join(_LAYER_LIST_NAMES)} below get_decoder() has num_hidden_layers entries. "
        f"Pass them explicitly, e.g. Steer(model, tokenizer, layers=model.path.to.layers) "
        f"(or a dotted path string), or set model.autosteer_layers = \"model.path.to.layers\" "
        f"(the string form: assigning a ModuleList would register it twice in the model)"
    )


def hidden_size_of(model: nn.Module) -> int:
    """Width of the residual stream (the decoder layers' hidden size)."""
    inner, _ = _peft_unwrap(model)
    value = _config_int(_text_config(inner), ("hidden_size", "n_embd", "d_model"))
    if value is not None:
        return value
    get_emb = getattr(inner, "get_input_embeddings", None)
    if callable(get_emb):
        try:
            emb = get_emb()
        except Exception:
            emb = None
        weight = getattr(emb, "weight", None)
        if weight is not None and getattr(weight, "ndim", 0) == 2:
            return int(weight.shape[1])
    raise UnsupportedModelError(
        f"could not determine the hidden size of {type(inner).__name__}: its config has no "
        f"hidden_size/n_embd/d_model and it has no input embedding"
    )


def first_layernorm_eps(model: nn.Module) -> float | None:
    """``eps`` of the first ``torch.nn.LayerNorm`` in ``model.modules()``, else None.

    Decides how a steering direction is normalised (LayerNorm-style or RMS-style),
    as llm_steer does.  Note that for a vision-language model this may be a
    LayerNorm of the vision tower.
    """
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            return float(module.eps)
    return None
