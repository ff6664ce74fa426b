"""Contrastive concepts: a direction from texts that show a concept and texts that do not.

``Concept(name, positive, negative, method="mean_diff", position="mean")``:

* ``positive`` / ``negative``: lists of texts, or of chat conversations (lists
  of ``{"role", "content"}`` messages, rendered with the tokenizer's chat
  template).  Plain texts are tokenized without special tokens, as the text
  directions of ``Steer.add(text=...)`` are.
* ``method="mean_diff"``: the mean layer input over the positive texts minus
  the mean over the negative ones (CAA / ActAdd); the two lists may differ in
  length.  ``method="pca"``: the first principal direction of the paired
  differences ``positive[i] - negative[i]`` (so the lists pair up one to one),
  taken without centring (centring would remove the shared shift that *is*
  the concept) as the first right singular vector, its sign aligned with the
  mean difference.
* ``position="mean"``: a text's activation is the mean of the layer input over
  its tokens with the first position excluded (the attention sink dominates it
  in real models; a text of one token keeps it); ``position="last"``: the last
  token only.

Directions are normalised exactly like text directions (LayerNorm-style with
the model's LayerNorm eps if it has one, else to unit RMS), so one coefficient
scale serves both.  One batched capture pass (:func:`capture`) records every
layer for all texts of a concept; ``Steer`` caches the result per concept, so
a concept on many layers costs one pass.

A concept is a value: equal texts and settings give equal concepts and the
same :attr:`Concept.hash` (a content hash), which is how candidates and logs
name it; :meth:`Concept.to_dict` carries its texts so a result reproduces on
another machine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autosteer import _C
from autosteer._canonical import digest
from autosteer._checks import check_list
from autosteer._checks import describe as _describe
from autosteer.errors import InvalidArgumentError

__all__ = [
    "METHODS",
    "MIN_SEPARATION",
    "POSITIONS",
    "ROLES",
    "Concept",
    "check_conversation",
    "load_concepts",
    "normalise",
    "text_ids",
]

#: A concept whose two sides differ by less than this share of their activations' size at a
#: layer has no direction there (identical or near-identical texts): it is refused.
MIN_SEPARATION = 1e-3

METHODS = ("mean_diff", "pca")
POSITIONS = ("mean", "last")
#: Roles a chat message may have.
ROLES = ("system", "user", "assistant", "tool")


def check_conversation(conv: Any, where: str) -> tuple[tuple[str, str], ...]:
    """A chat conversation as a tuple of (role, content) pairs, or an error naming ``where``."""
    if not isinstance(conv, (list, tuple)) or not conv:
        raise InvalidArgumentError(f"{where} must be a text or a non-empty list of messages, got {_describe(conv)}")
    out: list[tuple[str, str]] = []
    for j, msg in enumerate(conv):
        if not isinstance(msg, Mapping) or set(msg) - {"role", "content"} or "role" not in msg or "content" not in msg:
            raise InvalidArgumentError(
                f"{where}[{j}] must be a message {{\"role\": ..., \"content\": ...}}, got {_describe(msg)}"
            )
        role, content = msg["role"], msg["content"]
        if role not in ROLES:
            raise InvalidArgumentError(
                f"{where}[{j}] has the unknown role {role!r}; expected one of {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise InvalidArgumentError(f"{where}[{j}] content must be a string, got {_describe(content)}")
        out.append((role, content))
    return tuple(out)


def _norm_items(name: str, items: Any, where: str) -> tuple:
    out: list[Any] = []  # texts and conversations
    for i, item in enumerate(check_list(f"{where}: {name}", items, "texts or conversations")):
        if isinstance(item, str):
            if not item.strip():
                raise InvalidArgumentError(f"{where}: {name}[{i}] is empty; every text needs at least one word")
            out.append(item)
        else:
            out.append(check_conversation(item, f"{where}: {name}[{i}]"))
    if not out:
        raise InvalidArgumentError(f"{where}: {name} is empty; a concept needs texts on both sides")
    return tuple(out)


def _item_json(item) -> Any:
    return item if isinstance(item, str) else [{"role": r, "content": c} for r, c in item]


@dataclass(frozen=True)
class Concept:
    """A contrastive concept (see the module docstring)."""

    name: str
    positive: tuple
    negative: tuple
    method: str = "mean_diff"
    position: str = "mean"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidArgumentError(f"a concept needs a non-empty name, got {_describe(self.name)}")
        where = f"concept {self.name!r}"
        pos = _norm_items("positive", self.positive, where)
        neg = _norm_items("negative", self.negative, where)
        if self.method not in METHODS:
            raise InvalidArgumentError(f"{where}: method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.position not in POSITIONS:
            raise InvalidArgumentError(
                f"{where}: position must be one of {', '.join(POSITIONS)}, got {self.position!r}"
            )
        if self.method == "pca" and len(pos) != len(neg):
            raise InvalidArgumentError(
                f"{where}: method 'pca' takes paired texts, but positive has {len(pos)} and negative {len(neg)}"
            )
        if self.method == "pca" and len(pos) < 2:
            raise InvalidArgumentError(f"{where}: method 'pca' needs at least 2 pairs, got {len(pos)}")
        object.__setattr__(self, "positive", pos)
        object.__setattr__(self, "negative", neg)

    # -- identity -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "positive", "negative", "method", "position"}``, plain JSON values."""
        return {
            "name": self.name,
            "positive": [_item_json(x) for x in self.positive],
            "negative": [_item_json(x) for x in self.negative],
            "method": self.method,
            "position": self.position,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Concept:
        if not isinstance(d, Mapping):
            raise InvalidArgumentError(f"a concept must be a JSON object, got {_describe(d)}")
        unknown = sorted(set(d) - {"name", "positive", "negative", "method", "position"})
        if unknown:
            raise InvalidArgumentError(f"a concept has unknown key(s) {', '.join(unknown)}")
        missing = [k for k in ("name", "positive", "negative") if k not in d]
        if missing:
            raise InvalidArgumentError(f"a concept needs {', '.join(missing)}; got keys {sorted(d)}")
        return cls(d["name"], d["positive"], d["negative"], d.get("method", "mean_diff"), d.get("position", "mean"))

    @property
    def hash(self) -> str:
        """A content hash (12 hex digits) of the texts and settings; the name is not part of it."""
        d = self.to_dict()
        d.pop("name")
        return digest(d, 12)

    def ref(self) -> dict[str, str]:
        """How a candidate names the concept: ``{"name", "hash"}``."""
        return {"name": self.name, "hash": self.hash}

    def __hash__(self) -> int:
        return hash((self.name, self.hash))

    def __repr__(self) -> str:
        return (
            f"Concept({self.name!r}, {len(self.positive)} positive, {len(self.negative)} negative, "
            f"method={self.method!r}, position={self.position!r}, hash={self.hash!r})"
        )

    # -- directions -----------------------------------------------------------------

    def separation(self, positive, negative):
        """How far apart the two sides are at each layer: float32 [L], the size of what the
        direction is made from (the mean difference; for ``pca`` the rms of the paired
        differences) over the mean size of the activations.  0 for identical sides."""
        import torch

        if self.method == "mean_diff":
            gap = (positive.mean(dim=1) - negative.mean(dim=1)).norm(dim=-1)
        else:
            gap = (positive - negative).norm(dim=-1).pow(2).mean(dim=1).sqrt()
        scale = torch.cat([positive, negative], dim=1).norm(dim=-1).mean(dim=1)
        return gap / scale.clamp_min(torch.finfo(torch.float32).tiny)

    def directions(self, positive, negative, ln_eps: float | None):
        """Normalised directions [L, D] from the captured activations [L, N, D] of each side."""
        import torch

        if self.method == "mean_diff":
            raw = positive.mean(dim=1) - negative.mean(dim=1)  # [L, D]
        else:
            diffs = positive - negative  # [L, N, D]
            mean = diffs.mean(dim=1)
            _, _, vh = torch.linalg.svd(diffs.double(), full_matrices=False)
            raw = vh[:, 0, :].float()  # first right singular vector per layer
            sign = torch.sign((raw * mean).sum(dim=-1, keepdim=True))
            raw = raw * torch.where(sign == 0, torch.ones_like(sign), sign)
        return torch.stack([normalise(r, ln_eps) for r in raw])


def load_concepts(path: str | os.PathLike) -> list[Concept]:
    """Concepts from a file: a JSON object (one concept), a JSON list of them, or JSONL (one per line).

    The file must be UTF-8 (a leading byte-order mark is dropped).  Errors
    name the file and, for JSONL or an encoding error, the line.
    """
    from autosteer._checks import read_text

    path = os.fspath(path)
    text = read_text(path, "concept file")  # UTF-8 (a byte-order mark dropped), else an error naming the line
    stripped = text.strip()
    if not stripped:
        raise InvalidArgumentError(f"the concept file {path!r} is empty")
    wheres: list[str]
    try:
        data = json.loads(stripped)
        items = data if isinstance(data, list) else [data]
        wheres = [f"{path} item {i}" for i in range(len(items))] if isinstance(data, list) else [path]
    except json.JSONDecodeError:
        items, wheres = [], []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidArgumentError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
            wheres.append(f"{path} line {lineno}")
    except RecursionError:
        raise InvalidArgumentError(f"{path}: JSON nested too deeply") from None
    out = []
    for item, where in zip(items, wheres):
        try:
            out.append(Concept.from_dict(item))
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{where}: {exc}") from None
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidArgumentError(f"{path}: concept name(s) {', '.join(dup)} appear more than once")
    return out


def normalise(x, ln_eps: float | None):
    """llm_steer's normalisation of a mean activation, in float32: LayerNorm-style
    ``(x - mean) / sqrt(var + eps)`` with the model's LayerNorm eps, else to unit RMS."""
    import torch

    x = x.float()
    if ln_eps is not None:
        mean = x.mean()
        var = x.var(unbiased=False)
        return (x - mean) / torch.sqrt(var + ln_eps)
    return x / (torch.sqrt(x.pow(2).mean() + _C.RMS_EPS) + _C.RMS_EPS)


def text_ids(tokenizer, text: str, where: str) -> list[int]:
    """The token ids of a steering text (no special tokens), or an error naming ``where``:
    a text that gives no token, or only the tokenizer's unknown token (words outside its
    vocabulary: the direction would be that of ``<unk>``, the same for every such word),
    or holds one word that alone maps only to the unknown token (``"precise careful"`` on
    the organism names ``'careful'``)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise InvalidArgumentError(f"{where} {text!r} produces no tokens with this tokenizer")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and all(i == unk for i in ids):
        unknown = getattr(tokenizer, "unk_token", None) or f"id {unk}"
        raise InvalidArgumentError(
            f"{where} {text!r}: the tokenizer knows no word of it (every token is the unknown token "
            f"{unknown}), so it would steer along the embedding of {unknown}, the same for any unknown word; "
            "use words in the tokenizer's vocabulary"
        )
    if unk is not None and unk in ids:  # only then: tokenize each word alone to find the unknown one
        for word in text.split():
            word_ids = list(tokenizer(word, add_special_tokens=False)["input_ids"])
            if word_ids and all(i == unk for i in word_ids):
                unknown = getattr(tokenizer, "unk_token", None) or f"id {unk}"
                raise InvalidArgumentError(
                    f"{where} {text!r}: the tokenizer does not know the word {word!r} (it maps only to the "
                    f"unknown token {unknown}), so that word would steer along the embedding of {unknown}; "
                    "drop it or use a word in the tokenizer's vocabulary"
                )
    return ids


def render(item, tokenizer, where: str) -> list[int]:
    """Token ids of one concept text (no special tokens) or conversation (the chat template)."""
    if isinstance(item, str):
        return text_ids(tokenizer, item, where)
    else:
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidArgumentError(
                f"{where} is a chat conversation, but {type(tokenizer).__name__} has no chat template"
            )
        text = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in item], tokenize=False)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise InvalidArgumentError(f"{where} produces no tokens with this tokenizer")
    return ids


def positions_of(n_tokens: int, position: str) -> Sequence[int]:
    """The positions of a text of ``n_tokens`` tokens that make its activation."""
    if position == "last":
        return [n_tokens - 1]
    return range(1, n_tokens) if n_tokens > 1 else [0]
