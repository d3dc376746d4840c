"""Turning pydantic validation errors into one-line :class:`ConfigError` messages.

Used by every place that validates user-written settings (study files, ``--set``, dataset options,
model knobs), so that a typo reads the same everywhere: the full key, what is wrong, and the closest
known key.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from polyculture.errors import ConfigError


def field_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            found = field_model(arg)
            if found:
                return found
    if typing.get_origin(annotation) is list:
        return field_model(typing.get_args(annotation)[0])
    return None


def holds_dict(annotation: Any) -> bool:
    """True for ``dict[...]`` and unions containing one (free-form tables)."""
    if typing.get_origin(annotation) is dict:
        return True
    return any(holds_dict(arg) for arg in typing.get_args(annotation))


def model_at(model: type[BaseModel] | None, path: list[str]) -> type[BaseModel] | None:
    """The pydantic model reached by following ``path`` from ``model`` (list indices skipped)."""
    for part in path:
        if model is None:
            return None
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        model = field_model(field.annotation) if field else None
    return model


def unknown_key_hint(key: str, known: list[str]) -> str:
    """``did you mean 'x'?`` or the list of known keys."""
    close = difflib.get_close_matches(key, known, n=1)
    return f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known) or '(none)'}"


def as_config_error(
    err: ValidationError, model: type[BaseModel], prefix: str = "", origin: str = ""
) -> ConfigError:
    """One :class:`ConfigError` for ``err``, raised while validating ``model``.

    Unknown keys are reported first (a typo usually causes the other errors too).

    Examples
    --------
    >>> from pydantic import ConfigDict
    >>> class Knobs(BaseModel):
    ...     model_config = ConfigDict(extra="forbid")
    ...     width: int = 1
    >>> try:
    ...     Knobs.model_validate({"widht": 3})
    ... except ValidationError as err:
    ...     print(as_config_error(err, Knobs, prefix="params."))
    unknown key 'params.widht'; did you mean 'width'?
    """
    problems = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = problems[0]
    loc = [str(part) for part in first["loc"]]
    where = prefix + (".".join(loc) or "(top level)")
    lead = f"{origin}: " if origin else ""
    if first["type"] == "extra_forbidden":
        inner = model_at(model, loc[:-1])
        known = list(inner.model_fields) if inner else []
        return ConfigError(f"{lead}unknown key '{where}'", hint=unknown_key_hint(loc[-1], known))
    if first["type"] == "missing":
        return ConfigError(f"{lead}required key '{where}' is missing", hint="add it")
    return ConfigError(f"{lead}{where}: {first['msg']}", hint="fix this value")
