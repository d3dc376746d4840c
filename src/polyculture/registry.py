"""A strict name -> object registry, filled by decorators.

One registry exists per kind (datasets, model families); each is an instance of :class:`Registry`.
A duplicate name is an error, and an unknown name lists the closest registered names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from polyculture.errors import RegistryError

T = TypeVar("T")


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

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that adds its target under ``name``."""

        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        """Add ``entry`` under ``name``; a name already taken is an error."""
        if name in self._entries:
            raise RegistryError(
                f"duplicate {self.kind} name '{name}'", hint="choose a name that is not registered"
            )
        self._entries[name] = entry

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

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
