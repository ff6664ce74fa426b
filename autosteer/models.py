"""Loading a model by name: ``autosteer.load_model(name_or_path) -> (model, tokenizer)``.

Every entry point (each CLI command's ``--model``, the demo, the notebook)
loads through :func:`load_model`:

``"organism"``     the embedded model organism (:mod:`autosteer.organism`);
a local folder     ``from_pretrained`` on it;
any other string   a Hugging Face hub id, through ``from_pretrained`` (the hub
                   works where the network does; a model in the local cache
                   loads offline).

A name that is neither a known name, a local folder, a cached model nor
reachable on the hub fails at once (no retries against an unreachable hub)
with an error that suggests the nearest known name.
"""

from __future__ import annotations

import difflib
import os
import socket
import sys
from typing import Any

from autosteer.errors import InvalidArgumentError

__all__ = ["load_model", "KNOWN_MODELS", "resolve_device", "ModelNotFoundError"]

#: Names load_model knows besides paths and hub ids: name -> what it is.
KNOWN_MODELS: dict[str, str] = {
    "organism": "the embedded model organism (a small Llama trained on an arithmetic world)",
}


class ModelNotFoundError(InvalidArgumentError):
    """The model name is no known name, no local folder, and not on a reachable hub."""


def _looks_local(name: str) -> bool:
    """A path rather than a hub id ("org/name" or "name")."""
    if name.startswith((".", "/", "~")) or (os.altsep and os.altsep in name) or os.path.isabs(name):
        return True
    return name.count("/") > 1 or name.endswith(".gguf")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a transformers dependency
        return False
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return False
    return isinstance(found, str)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip() in ("1", "true", "True", "YES", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _not_found(name: str, why: str) -> ModelNotFoundError:
    near = difflib.get_close_matches(name, list(KNOWN_MODELS), n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    known = ", ".join(KNOWN_MODELS)
    return ModelNotFoundError(f"model {name!r} {why} (known names: {known}; or give a model folder){hint}")



def resolve_device(device: str | None):
    """A ``torch.device`` for ``device`` (None: CUDA when available, else the CPU); an unusable
    device is an InvalidArgumentError before any model loads."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"device {device!r} is not a torch device ({exc}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r}: this torch build has no usable CUDA device; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidArgumentError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidArgumentError(f"device {device!r}: MPS is not available here; use cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InvalidArgumentError(f"device {device!r}: expected cpu, cuda or mps")
    return dev


def load_model(name_or_path: str, *, device: str | None = None, dtype: Any = None,
               progress: bool | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a known name, a local folder or a hub id; the model in eval mode.

    ``device``: ``"cpu"``, ``"cuda"``, ... (None: CUDA when available).
    ``dtype``: passed to ``from_pretrained`` (default: the stored dtype).
    ``progress``: show loading progress bars (None: only on a terminal).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InvalidArgumentError(f"the model must be a name or a path, got {type(name_or_path).__name__}")
    name = os.fspath(name_or_path)
    if not name.strip():
        raise InvalidArgumentError("the model name is empty")
    dev = resolve_device(device)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    _progress_bars(show)
    kwargs = {} if dtype is None else {"dtype": dtype}
    if name == "organism":
        from autosteer.organism import load_organism

        model, tokenizer = load_organism(**kwargs)
    else:
        path = os.path.expanduser(name)
        if os.path.isdir(path):
            source = path
        elif _looks_local(name):
            raise _not_found(name, "names no such directory")
        elif not _in_hub_cache(name) and not _hub_reachable():
            raise _not_found(name, "is not a known name, not a local folder, not in the Hugging Face cache, "
                                   "and the hub is unreachable (offline)")
        else:
            source = name
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    model = model.to(dev)
    model.eval()
    return model, tokenizer


def _progress_bars(show: bool) -> None:
    """transformers' loading bars on a terminal only (none in logs and pipes)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        return
    if show:
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()
