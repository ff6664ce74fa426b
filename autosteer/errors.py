"""Exceptions raised by AutoSteer.

Every error derives from :class:`AutoSteerError` and also from the builtin
exception a user would naturally catch, so ``except ValueError`` keeps working
for code written against ``llm_steer``.
"""

from __future__ import annotations

__all__ = [
    "AutoSteerError",
    "InvalidArgumentError",
    "LayerIndexError",
    "ScheduleError",
    "UnsupportedModelError",
    "VectorShapeError",
    "SearchSpaceError",
    "LogFormatError",
]


class AutoSteerError(Exception):
    """Base class of every error AutoSteer raises on purpose."""


class InvalidArgumentError(AutoSteerError, ValueError):
    """An argument has the wrong value (empty text, non-finite coefficient, ...)."""


class LayerIndexError(AutoSteerError, IndexError):
    """A layer index is outside the model's decoder layers."""


class ScheduleError(AutoSteerError, ValueError):
    """A coefficient schedule got parameters outside their domain."""


class UnsupportedModelError(AutoSteerError, TypeError):
    """The decoder layers of a model could not be found."""


class VectorShapeError(AutoSteerError, ValueError):
    """A steering vector does not match the model's hidden size."""


class SearchSpaceError(AutoSteerError, ValueError):
    """A search space does not fit the model or is empty."""


class LogFormatError(AutoSteerError, ValueError):
    """A results log is corrupt or belongs to another run."""
