"""``SteeringVector``: one active vector of a ``Steer``, as a read-only record.

What :attr:`autosteer.Steer.vectors` returns and :meth:`autosteer.Steer.add_vector`
takes; vector files and servers read and write steering through it, never through
a ``Steer``'s internals.  Imports nothing heavy (no torch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SteeringVector"]


@dataclass(frozen=True)
class SteeringVector:
    """One active vector of a :class:`Steer`, as :attr:`Steer.vectors` shows it (read-only).

    ``layer_idx``; ``coeff``; ``direction``, a float32 CPU copy of the very
    direction the hooks use (shape ``[hidden_size]``; changing it changes
    nothing); ``schedule`` (None for a constant coefficient); its source:
    ``text`` (``add(text=)``), ``concept`` (``add(concept=)``) or neither
    (``add(vector=)``); ``group`` (per-row steering, else None);
    ``steering_method`` (a custom delta function, else None).
    :meth:`Steer.add_vector` adds one back exactly as it is.
    """

    layer_idx: int
    coeff: float
    direction: Any  # torch.Tensor
    schedule: Any = None
    text: str | None = None
    concept: Any = None
    group: int | None = None
    steering_method: Callable | None = None

    @property
    def source(self) -> str:
        """``"text"``, ``"concept"`` or ``"vector"``: where the direction came from."""
        return "concept" if self.concept is not None else "text" if self.text is not None else "vector"
