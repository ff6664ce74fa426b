"""Exceptions raised by AutoSteer.

Every error derives from :class:`AutoSteerError` and also from the builtin
exception a user would naturally catch, so ``except ValueError`` keeps working
for code written against ``llm_steer``.

The four exceptions the C core raises (``AutoSteerError``,
``InvalidArgumentError``, ``ScheduleError``, ``SteerStateError``) are created
in C (``autosteer._C``, which imports nothing from this package) with
``__module__ == "autosteer.errors"``, and re-exported here; the others are
defined here as subclasses of the same ``AutoSteerError``.
"""

from __future__ import annotations

from ._C import AutoSteerError, InvalidArgumentError, ScheduleError, SteerStateError

__all__ = [
    "ArgumentTypeError",
    "AutoSteerError",
    "InterruptReported",
    "InvalidArgumentError",
    "LayerIndexError",
    "LogFormatError",
    "ScheduleError",
    "SearchSpaceError",
    "SteerStateError",
    "UnsupportedModelError",
    "VectorShapeError",
]


class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of the wrong type: a string where a list of strings is expected, ``"no"``
    where ``True``/``False`` is, ...  Both an :class:`InvalidArgumentError` (so a ``ValueError``)
    and a ``TypeError``, so either ``except`` catches it."""


class LayerIndexError(AutoSteerError, IndexError):
    """A layer index is outside the model's decoder layers."""


class UnsupportedModelError(AutoSteerError, TypeError):
    """The decoder layers of a model could not be found."""


class VectorShapeError(AutoSteerError, ValueError):
    """A steering vector does not match the model's hidden size."""


class SearchSpaceError(AutoSteerError, ValueError):
    """A search space does not fit the model or is empty."""


class LogFormatError(AutoSteerError, ValueError):
    """A results log is corrupt or belongs to another run."""


class InterruptReported(KeyboardInterrupt):
    """A Ctrl-C that stopped a search whose caller already said what was kept (``autosteer
    search`` and ``autosteer demo`` print "interrupted after N trial(s); LOG holds every finished
    trial"), so the command line prints the command that resumes it instead of "interrupted".
    Still a ``KeyboardInterrupt``: ``except KeyboardInterrupt`` catches it."""
