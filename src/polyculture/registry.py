"""A strict name -> object registry, filled by decorators.

One registry exists per kind (datasets, model families, metrics); each is an instance of
:class:`Registry`. A duplicate name is an error, and an unknown name lists the closest registered
names. Every entry remembers its origin: ``polyculture`` for the built-ins, the plugin that was
loading when it registered (see :mod:`polyculture.plugins`), or else the module of the registering
code, so listings can say where each entry comes from.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from polyculture.errors import RegistryError

T = TypeVar("T")

BUILTIN_ORIGIN = "polyculture"

NAME_RULE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
"""Registered names: a letter, then letters, digits, ``_``, ``.`` or ``-`` (usable in TOML and
on the command line)."""

_loading: list[str] = []  # origins of the plugins being imported, innermost last


@contextlib.contextmanager
def registering_as(origin: str) -> Iterator[None]:
    """Attribute every entry registered inside the block to ``origin`` (a plugin's name).

    Examples
    --------
    >>> numbers: Registry[int] = Registry("number")
    >>> with registering_as("my_plugin"):
    ...     numbers.add("one", 1)
    >>> numbers.origin("one")
    'my_plugin'
    """
    _loading.append(origin)
    try:
        yield
    finally:
        _loading.pop()


def _origin_of(entry: object) -> str:
    if _loading:
        return _loading[-1]
    module = getattr(entry, "__module__", None) or ""
    if not module or module == BUILTIN_ORIGIN or module.startswith(f"{BUILTIN_ORIGIN}."):
        return BUILTIN_ORIGIN
    return module


class Registry(Generic[T]):
    """Names mapped to entries of one kind.

    Parameters
    ----------
    kind
        What the entries are, used in messages ("dataset", "model family").

    Examples
    --------
    >>> shapes: Registry[int] = Registry("shape")
    >>> @shapes.register("square")
    ... def _square() -> int:
    ...     return 4
    >>> shapes.get("square")() if callable(shapes.get("square")) else None
    4
    >>> shapes.get("sqare")
    Traceback (most recent call last):
    ...
    polyculture.errors.RegistryError: unknown shape 'sqare'; did you mean 'square'? ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that adds its target under ``name``."""

        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T, origin: str | None = None) -> None:
        """Add ``entry`` under ``name``; a name already taken or malformed is an error.

        ``origin`` defaults to the plugin being loaded, else the module that defines ``entry``
        (or its build function), else ``polyculture``.
        """
        if not isinstance(name, str) or not NAME_RULE.match(name):
            raise RegistryError(
                f"{self.kind} name {name!r} is not a valid name",
                hint="start with a letter; use letters, digits, '_', '.' or '-'",
            )
        if name in self._entries:
            raise RegistryError(
                f"duplicate {self.kind} name '{name}' (already registered by "
                f"{self._origins[name]})",
                hint="choose a name that is not registered",
            )
        self._entries[name] = entry
        target = getattr(entry, "build", None) or getattr(entry, "compute", None) or entry
        self._origins[name] = origin or _origin_of(target)

    def origin(self, name: str) -> str:
        """Where the entry ``name`` comes from (``polyculture`` for the built-ins)."""
        self.get(name)
        return self._origins[name]

    def get(self, name: str) -> T:
        """Return the entry registered as ``name``, or raise with close matches."""
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(f"unknown {self.kind} '{name}'", hint=self.suggest(name)) from None

    def suggest(self, name: str) -> str:
        """A hint naming the closest registered names, then all of them."""
        close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
        known = ", ".join(sorted(self._entries))
        if close:
            return f"did you mean {' or '.join(repr(c) for c in close)}? (known: {known})"
        return f"known {self.kind} names: {known}"

    def names_in_order(self) -> list[str]:
        """All registered names, in registration order."""
        return list(self._entries)

    def remove(self, name: str) -> None:
        """Unregister ``name`` (tests and examples use it to leave the registry as found)."""
        self.get(name)
        del self._entries[name], self._origins[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
