"""Argument checks shared by every module: one definition of "an int", "a real number", ...

Each ``check_*`` returns the cleaned value or raises
:class:`~autosteer.errors.InvalidArgumentError` with a message that names the
argument, what was expected and what arrived; a value of the wrong type raises
its subclass :class:`~autosteer.errors.ArgumentTypeError` (also a ``TypeError``).
Nothing here imports torch.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Literal, overload

from autosteer.errors import ArgumentTypeError, InvalidArgumentError

__all__ = [
    "check_bool",
    "check_int",
    "check_list",
    "check_real",
    "check_str_list",
    "describe",
    "is_int",
    "is_real",
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
        raise ArgumentTypeError(f"{name} must be an integer, got {describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgumentError(f"{name} must be an integer <= {maximum}, got {value}")
    return value


def check_real(name: str, value: Any, *, minimum: float | None = None, finite: bool = True) -> float:
    """A real number (not a bool, not complex), finite unless ``finite=False``; returns a float."""
    if not is_real(value):
        raise ArgumentTypeError(f"{name} must be a real number, got {describe(value)}")
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


@overload
def check_bool(name: str, value: Any, *, allow_none: Literal[False] = False) -> bool: ...
@overload
def check_bool(name: str, value: Any, *, allow_none: bool) -> bool | None: ...
def check_bool(name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """``True`` or ``False`` (NumPy's bool too); ``None`` as well with ``allow_none``.

    Anything else, ``"no"`` or ``0`` included, is an :class:`ArgumentTypeError`: a flag
    is never read by truthiness, where ``"no"`` would mean yes.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):  # np.bool_
        return bool(value)
    expected = "True, False or None" if allow_none else "True or False"
    raise ArgumentTypeError(f"{name} must be {expected}, got {describe(value)}")


def check_list(name: str, value: Any, what: str = "strings") -> list:
    """The items of a list-like ``value`` (list, tuple, generator, array, ...) as a list.

    Refused with an :class:`ArgumentTypeError` naming ``name``: a single ``str`` or
    ``bytes`` (iterating it would give characters), a ``dict``/``Mapping`` (its keys),
    a set (no order), and anything that is not iterable.  ``what`` names the items
    expected, for the message.
    """
    if isinstance(value, (str, bytes, bytearray)):
        raise ArgumentTypeError(
            f"{name} must be a list of {what}, got a single {'string' if isinstance(value, str) else 'bytes object'} "
            f"{describe(value).split(' ', 1)[1]}; wrap it in a list"
        )
    if isinstance(value, Mapping):
        raise ArgumentTypeError(
            f"{name} must be a list of {what}, got a {type(value).__name__} (iterating it would give its keys); "
            "pass a list"
        )
    if isinstance(value, AbstractSet):
        raise ArgumentTypeError(f"{name} must be a list of {what}, got a {type(value).__name__}, which has no order")
    if value is None or not isinstance(value, Iterable):
        raise ArgumentTypeError(f"{name} must be a list of {what}, got {describe(value)}")
    return list(value)


def check_str_list(name: str, value: Any, *, allow_empty: bool = True) -> list[str]:
    """A list of strings (see :func:`check_list` for the containers refused); an item that is
    not a ``str`` is named as ``name[i]``.  ``allow_empty=False`` refuses an empty list."""
    items = check_list(name, value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ArgumentTypeError(f"{name}[{i}] must be a string, got {describe(item)}")
    if not allow_empty and not items:
        raise InvalidArgumentError(f"{name} is empty; give at least one string")
    return items
