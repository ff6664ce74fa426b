"""Canonical JSON and the short content hashes built on it (one definition for every module).

``canonical_json`` is the one string form of a JSON value: sorted keys, no
spaces, no NaN/Infinity, UTF-8 kept as is.  ``digest`` is the first
``length`` hex digits of its SHA-256: what the log uses for run ids, what
candidates use for the content hash of a concept's texts.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "digest"]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no spaces, no NaN: equal values give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(obj: Any, length: int = 16) -> str:
    """Hex SHA-256 of ``canonical_json(obj)``, cut to ``length`` digits."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]
