"""Options declared once, on the object that uses them.

A metric, a strategy and a keep rule each carry their own options, declared
as a tuple of :class:`Option` on the class and validated in the constructor
(as scikit-learn's estimators and Optuna's samplers do).  The same
declarations give the class its call signature, its ``repr``, the fingerprint
that identifies a run, and the flags of ``autosteer search``: adding an option
is one :class:`Option` line.

::

    class LocalSearch(Strategy):
        name = "local"
        options = (Option("patience", 5, "non-keeps in a row before ...", check=positive_int),)

    LocalSearch(patience=3)            # validated here
    LocalSearch(patiense=3)            # InvalidArgumentError: unknown option, with the list of known ones

Nothing here imports torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from autosteer._checks import check_int, check_real
from autosteer._checks import describe as _describe
from autosteer.errors import InvalidArgumentError

__all__ = [
    "REQUIRED",
    "Configurable",
    "Option",
    "level",
    "make",
    "non_negative_int",
    "non_negative_real",
    "one_of",
    "positive_int",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of an option that has none: the constructor then needs it.
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Option:
    """One option of a metric, a strategy or a keep rule.

    ``name``: the keyword (and, with ``-`` for ``_``, the command-line flag
    unless ``flag`` is given).  ``default``: its value when not given
    (:data:`REQUIRED`: none).  ``help``: one line for the docs and ``--help``.
    ``check(name, value)``: returns the cleaned value or raises
    :class:`~autosteer.errors.InvalidArgumentError`.  ``parse``: turns the
    command-line text into a value (None: the option has no flag, e.g. a
    callable).  ``metavar`` and ``choices``: for the flag.  ``fingerprint``:
    turns the value into what the run's fingerprint records (None: the value
    itself; ``False``: left out, e.g. a function).
    """

    name: str
    default: Any
    help: str
    check: Callable[[str, Any], Any]
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None
    flag: str | None = None
    fingerprint: Callable[[Any], Any] | bool | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


# -- checks for Option.check -----------------------------------------------------------


def positive_int(name: str, value: Any) -> int:
    return check_int(name, value, minimum=1)


def non_negative_int(name: str, value: Any) -> int:
    return check_int(name, value, minimum=0)


def non_negative_real(name: str, value: Any) -> float:
    return check_real(name, value, minimum=0.0)


def level(name: str, value: Any) -> float:
    """A significance level strictly between 0 and 1."""
    value = check_real(name, value)
    if not 0.0 < value < 1.0:
        raise InvalidArgumentError(f"{name} must be a level strictly between 0 and 1, got {value!r}")
    return value


def one_of(*choices: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise InvalidArgumentError(f"{name} must be one of {', '.join(map(repr, choices))}, got {_describe(value)}")
        return value

    check.choices = choices  # type: ignore[attr-defined]
    return check


# -- the base class ------------------------------------------------------------------------


class Configurable:
    """A class whose keyword options are declared in :attr:`options`.

    Subclasses set :attr:`name` (the name users type, e.g. ``"local"``) and
    :attr:`options`; ``Configurable.__init__(**given)`` checks ``given``
    against the declarations (an unknown option or a missing required one is
    an :class:`~autosteer.errors.InvalidArgumentError`) and stores each
    option as an attribute of the same name.  A subclass that does not write
    its own ``__init__`` gets a signature made of its options.
    """

    #: What the object is, for messages ("metric", "strategy", "keep rule").
    kind: ClassVar[str] = "object"
    name: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            params += [
                inspect.Parameter(
                    o.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=inspect.Parameter.empty if o.default is REQUIRED else o.default,
                )
                for o in cls.options
            ]
            cls.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]

    def __init__(self, **given: Any) -> None:
        self._set_options(given)

    def _set_options(self, given: dict[str, Any]) -> None:
        known = {o.name: o for o in self.options}
        unknown = [k for k in given if k not in known]
        if unknown:
            takes = f"its options are {', '.join(known)}" if known else "it takes no option"
            raise InvalidArgumentError(f"{self.kind} {self.name!r} has no option {unknown[0]!r}; {takes}")
        for o in self.options:
            value = given.get(o.name, o.default)
            if value is REQUIRED:
                raise InvalidArgumentError(f"{self.kind} {self.name!r} needs the option {o.name!r}: {o.help}")
            setattr(self, o.name, o.check(f"{type(self).__name__}.{o.name}", value))

    def get_options(self) -> dict[str, Any]:
        """The options as given to the constructor (after its checks)."""
        return {o.name: getattr(self, o.name) for o in self.options}

    def fingerprint(self) -> dict[str, Any]:
        """The options that identify a run, as JSON-able values."""
        out = {}
        for o in self.options:
            if o.fingerprint is False:
                continue
            value = getattr(self, o.name)
            out[o.name] = value if o.fingerprint is None or o.fingerprint is True else o.fingerprint(value)
        return out

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.get_options().items())
        return f"{type(self).__name__}({given})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.get_options() == other.get_options()

    __hash__ = None  # type: ignore[assignment]


_C = TypeVar("_C", bound=type)


def registrar(kind: str, registry: dict[str, Any], check: Callable[[Any], None] | None = None) -> Callable[[_C], _C]:
    """A class decorator that adds a subclass to ``registry`` under its ``name`` (new and
    non-empty; ``check(cls)`` may refuse it too): the ``register`` of the metrics, the
    strategies and the keep rules."""

    def register(cls: _C) -> _C:
        name = getattr(cls, "name", None)
        if not name or name in registry:
            raise InvalidArgumentError(f"a {kind} named {name!r} is already registered or the name is empty")
        if check is not None:
            check(cls)
        registry[name] = cls
        return cls

    register.__doc__ = f"Class decorator: add a {kind} class to the registry under its name (which must be new)."
    return register


def make(
    kind: str, registry: Mapping[str, type[Configurable]], base: type, value: Any, default: str | None = None
) -> Any:
    """``value`` as an object of ``base``: an instance as it is, a registered name with its defaults."""
    if value is None and default is not None:
        value = default
    if isinstance(value, base):
        return value
    if isinstance(value, type) and issubclass(value, base):
        raise InvalidArgumentError(
            f"{kind} must be an instance, got the class {value.__name__}; call it: {value.__name__}()"
        )
    if isinstance(value, str) and value in registry:
        cls = registry[value]
        needed = [o for o in cls.options if o.default is REQUIRED]
        if needed:
            o = needed[0]
            raise InvalidArgumentError(
                f"{kind} {value!r} needs the option {o.name!r} ({o.help}): give "
                f"{cls.__name__}({o.name}=...) instead of the name"
            )
        return cls()
    raise InvalidArgumentError(
        f"unknown {kind} {_describe(value)}; expected one of {', '.join(map(repr, registry))} "
        f"or a {base.__name__} object"
    )
