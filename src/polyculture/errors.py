"""The one exception hierarchy of polyculture.

The library raises these; the CLI turns each into one line (the message, then the hint) and exit
code 2. Anything else that escapes is a bug and is shown with its traceback.
"""

from __future__ import annotations


class PolycultureError(Exception):
    """Base class of every error a user can cause and fix.

    Parameters
    ----------
    message
        What is wrong, naming the offending file, key or value.
    hint
        How to fix it, in one short sentence.

    Examples
    --------
    >>> err = ConfigError("unknown key 'trian'", hint="did you mean 'train'?")
    >>> str(err)
    "unknown key 'trian'; did you mean 'train'?"
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class ConfigError(PolycultureError):
    """A study file, a ``--set`` override or a spec has a bad key or value."""


class DataError(PolycultureError):
    """A data file or folder is missing, malformed, or holds values we cannot train on."""


class RegistryError(PolycultureError):
    """An unknown or duplicate name in one of the registries."""


class RunStoreError(PolycultureError):
    """A run directory is missing, incomplete or was written by an incompatible study."""


class ExecutionError(PolycultureError):
    """Training could not go on (a worker process died); the run directory stays resumable."""


class MeasureInputError(PolycultureError, ValueError):
    """Arrays given to a measure have the wrong shape, dtype or values (NaN/inf, too few rows).

    Also a :class:`ValueError`, so code that treats measures like NumPy functions can catch it.
    """


class PluginError(PolycultureError):
    """A plugin (a module, a file or an entry point) failed to import or to register."""


class ConformanceError(PolycultureError):
    """A dataset, model family or metric breaks a rule every one of them must follow
    (see :mod:`polyculture.testing`)."""


class ExportError(PolycultureError):
    """An exported model failed a check (ONNX checker, parity with PyTorch)."""
