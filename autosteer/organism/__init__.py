"""The AutoSteer model organism: a small Llama trained on a synthetic world.

``load_organism()`` returns the shipped model and tokenizer, loaded through the
ordinary ``from_pretrained`` path. ``autosteer.organism.world`` generates the
world's prompts, expected answers and concept texts.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["load_organism", "organism_path"]


def organism_path() -> Path:
    """The folder holding the shipped model files (config.json, model.safetensors, tokenizer)."""
    return Path(__file__).resolve().parent / "model"


def load_organism(dtype=None):
    """Load the model organism; returns ``(model, tokenizer)``, the model in eval mode.

    ``dtype`` is passed to ``from_pretrained`` (default: the stored float32).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = organism_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the model organism is missing at {path}; "
            "rebuild it with `python scripts/train_organism.py --out {path}`"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    kwargs = {} if dtype is None else {"dtype": dtype}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.eval()
    return model, tokenizer
