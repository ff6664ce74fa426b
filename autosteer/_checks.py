"""Argument checks shared by every module: one definition of "an int", "a real number", ...

Each ``check_*`` returns the cleaned value or raises
:class:`~autosteer.errors.InvalidArgumentError` with a message that names the
argument, what was expected and what arrived.  Nothing here imports torch.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

from autosteer.errors import InvalidArgumentError

__all__ = [
    "is_int",
    "is_real",
    "describe",
    "check_int",
    "check_real",
    "read_text",
]


def is_int(x: Any) -> bool:
    """An integer that is not a bool (``int``, NumPy integers, any ``numbers.Integral``)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x: Any) -> bool:
    """A real number that is not a bool (ints, floats, NumPy scalars; never complex)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def describe(value: Any, limit: int = 80) -> str:
    """``type: repr`` of a value, the repr cut to ``limit`` characters, for error messages."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool) within ``[minimum, maximum]``; returns it as a Python int."""
    if not is_int(value):
        raise InvalidArgumentError(f"{name} must be an integer, got {describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgumentError(f"{name} must be an integer <= {maximum}, got {value}")
    return value


def check_real(name: str, value: Any, *, minimum: float | None = None, finite: bool = True) -> float:
    """A real number (not a bool, not complex), finite unless ``finite=False``; returns a float."""
    if not is_real(value):
        raise InvalidArgumentError(f"{name} must be a real number, got {describe(value)}")
    try:
        out = float(value)
    except OverflowError:
        raise InvalidArgumentError(f"{name} is too large for a float, got {describe(value)}") from None
    if finite and not math.isfinite(out):
        raise InvalidArgumentError(f"{name} must be finite, got {out!r}")
    if minimum is not None and out < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {out!r}")
    return out


def read_text(path: Any, what: str = "file") -> str:
    """The text of an input file the user wrote: UTF-8, a leading byte-order mark dropped.

    A file that is not UTF-8 (e.g. saved as Latin-1) raises
    :class:`~autosteer.errors.InvalidArgumentError` naming ``what``, the file,
    the line and column of the first bad byte, and what to do; a file that
    cannot be read names the file and the OS's reason.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the {what} {path!r}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidArgumentError(
            f"the {what} {path!r} is not UTF-8 text: line {line} column {column} has the byte "
            f"0x{data[exc.start]:02x} ({exc.reason}); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text
