"""Study files: a TOML description of a zoo experiment, validated with pydantic.

A study names the task (``[data]``), default training settings (``[train]``), the seeds, the zoo
(``[[zoo]]`` entries: a family, its knobs, an optional grid of knob values and per-entry training
overrides) and evaluation settings. :func:`load_study` reads a built-in study by name or a file,
applies ``--set key=value`` overrides, and validates everything before anything runs: unknown keys,
unknown families, bad knob values and families that cannot take the task's modality are errors.
:func:`expand` turns a study into its members, each with a stable id.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import polyculture.data
import polyculture.zoo  # noqa: F401  (registers families)
from polyculture.data.builders import DATASETS, DataSpec, validate_options
from polyculture.errors import ConfigError
from polyculture.train.spec import TrainSpec
from polyculture.validation import (
    as_config_error,
    field_model,
    holds_dict,
    unknown_key_hint,
)
from polyculture.zoo.base import FAMILIES, ModelSpec, resolve_knobs, stable_hash

MEMBER_SCHEMA = 1
"""Bumped when the meaning of a member id changes (e.g. what is stored per member)."""


class ZooEntry(BaseModel):
    """One ``[[zoo]]`` entry: a family, its knobs, an optional grid and training overrides.

    ``name`` is the display name of the entry's models (default: family and knobs, e.g.
    ``mlp(width=64)``); two entries whose models would share a name must set one.
    ``grid`` maps knob names to lists of values; the entry expands to their cartesian product.
    ``train`` overrides keys of the study's ``[train]`` table for this entry only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str
    name: str | None = None
    params: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    train: dict[str, Any] = {}

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for knob, values in grid.items():
            if not values:
                raise ValueError(f"grid '{knob}' has no values")
        return grid


class EvaluateSpec(BaseModel):
    """How members are evaluated.

    ``probe_size``: representations are stored for the first ``probe_size`` test instances.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    probe_size: int = Field(1000, ge=2)
    bootstrap_seed: int = 0


class ExecutionSpec(BaseModel):
    """Where members run; does not change their ids or (on CPU) their numbers.

    ``workers``: worker processes (0 = one per CPU core, at most one per member).
    ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:i]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(0, ge=0)
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError("device must be 'auto', 'cpu' or 'cuda[:index]'")
        return device


class Study(BaseModel):
    """A whole study (what a study file holds).

    Examples
    --------
    >>> study = Study(name="tiny", data=DataSpec(name="digits"), zoo=[ZooEntry(family="logreg")])
    >>> [m.label for m in expand(study)]
    ['logreg', 'logreg', 'logreg']
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1)
    data: DataSpec
    train: TrainSpec = TrainSpec()
    zoo: list[ZooEntry] = Field(min_length=1)
    evaluate: EvaluateSpec = EvaluateSpec()
    execution: ExecutionSpec = ExecutionSpec()

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        if any(not 0 <= seed < 2**32 for seed in seeds):
            raise ValueError("seeds must lie in [0, 2**32)")
        return seeds


@dataclass(frozen=True)
class MemberPlan:
    """One member to train: what, how, with which seed, and its id."""

    member_id: str
    model: ModelSpec
    train: TrainSpec
    seed: int
    kind: str
    label: str
    """Display name of the model (without the seed), shared by its seeds."""


BUILTIN_STUDIES = ("mnist1d", "fashion-mnist", "seed-recipe")


def builtin_study_text(name: str) -> str:
    """The TOML text of a built-in study."""
    return (resources.files("polyculture") / "studies" / f"{name}.toml").read_text()


def load_study(source: str | Path | Study | dict[str, Any], overrides: list[str] = ()) -> Study:  # type: ignore[assignment]
    """Load and validate a study from a built-in name, a TOML file, a dict or a Study.

    Parameters
    ----------
    source
        ``"mnist1d"`` (or another built-in name), a path to a ``.toml`` file, a dict with the
        file's structure, or a :class:`Study`.
    overrides
        ``"key.path=value"`` strings; values are TOML (``3``, ``1e-3``, ``[0, 1]``, ``true``) or
        bare strings. ``zoo.0.params.width=64`` indexes the zoo list.

    Examples
    --------
    >>> load_study("mnist1d", ["train.epochs=3"]).train.epochs
    3
    """
    raw = _raw_study(source)
    origin = str(source) if isinstance(source, str | Path) else "study"
    for item in overrides:
        _apply_override(raw, item)
    try:
        study = Study.model_validate(raw)
    except ValidationError as err:
        raise as_config_error(err, Study, origin=origin) from None
    expand(study)  # validates families, knobs, modality and train overrides up front
    return study


def _raw_study(source: str | Path | Study | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, Study):
        return source.model_dump(mode="json")
    if isinstance(source, dict):
        return _deep_copy(source)
    path = Path(source)
    if isinstance(source, str) and source in BUILTIN_STUDIES and not path.exists():
        text = builtin_study_text(source)
    elif path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"'{source}' is not UTF-8 text", hint="save it as UTF-8") from None
    else:
        raise ConfigError(
            f"no study file or built-in study named '{source}'",
            hint=f"give a .toml path or one of: {', '.join(BUILTIN_STUDIES)}",
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"'{source}' is not valid TOML: {err}", hint="fix the syntax") from None


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``key.path=value`` override to the raw study dict, checking the key exists."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set '{item}' is not key=value", hint="write e.g. train.epochs=5")
    parts = key.strip().split(".")
    value = _parse_value(text.strip())
    node: Any = raw
    model: type[BaseModel] | None = Study
    free_form = False  # inside a dict[str, Any] field (data.options, zoo.N.params, ...)
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"--set {key}: '{part}' is not an index of a list with {len(node)} entries",
                    hint=f"use 0..{len(node) - 1}",
                )
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not free_form:
            fields = model.model_fields if model else {}
            if part not in fields:
                prefix = ".".join(parts[:depth]) or "the study"
                hint = unknown_key_hint(part, list(fields))
                raise ConfigError(f"--set {key}: {prefix} has no key '{part}'", hint=hint)
            annotation = fields[part].annotation
            model = field_model(annotation)
            free_form = model is None and holds_dict(annotation)
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[:depth])}' is not a table")
        if last:
            node[part] = value
        else:
            default: list[Any] | dict[str, Any] = [] if part == "zoo" else {}
            node = node.setdefault(part, default)


def _parse_value(text: str) -> Any:
    """A TOML value when it parses as one, else the bare string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def resolved_train(study: Study, entry: ZooEntry) -> TrainSpec:
    """The study's ``[train]`` with the entry's overrides applied (nested tables merged)."""
    merged = study.train.model_dump()
    for key, value in entry.train.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    try:
        return TrainSpec.model_validate(merged)
    except ValidationError as err:
        raise as_config_error(err, TrainSpec, f"zoo '{entry.family}' train.") from None


def expand(study: Study, data_key: str | None = None) -> list[MemberPlan]:
    """All members of a study: entries x grid points x seeds, validated, with stable ids.

    The member id hashes the data (``data_key``: the task's fingerprint once the task is built,
    else the validated data spec), the validated knob values, the training spec (torch members
    only), the seed and the evaluation settings: a change to any of them makes a new member, and
    spelling out a default knob value does not.
    """
    builder = DATASETS.get(study.data.name)
    if data_key is None:
        options = validate_options(builder, study.data.options).model_dump(mode="json")
        data_key = stable_hash(study.data.model_dump(mode="json") | {"options": options})
    evaluate_key = study.evaluate.model_dump(mode="json")
    plans: list[MemberPlan] = []
    owners: dict[str, int] = {}  # display name -> index of the zoo entry that uses it
    for index, entry in enumerate(study.zoo):
        family = FAMILIES.get(entry.family)
        train = resolved_train(study, entry)
        train_key = train.model_dump(mode="json") if family.kind == "torch" else None
        grid_keys = list(entry.grid)
        for values in itertools.product(*(entry.grid[k] for k in grid_keys)):
            model = ModelSpec(
                family=entry.family,
                params={**entry.params, **dict(zip(grid_keys, values, strict=True))},
            )
            knobs = resolve_knobs(model, builder.modality)  # type: ignore[arg-type]
            label = model.label() if entry.name is None else entry.name
            if len(entry.grid) and entry.name is not None:
                label = f"{entry.name}{model.label().removeprefix(model.family)}"
            if owners.setdefault(label, index) != index:
                raise ConfigError(
                    f"zoo entries {owners[label]} and {index} both make models named '{label}'",
                    hint="give one of them a distinct name = '...'",
                )
            model_key = {"family": model.family, "params": knobs.model_dump(mode="json")}
            for seed in study.seeds:
                member_id = stable_hash(
                    {
                        "schema": MEMBER_SCHEMA,
                        "data": data_key,
                        "model": model_key,
                        "train": train_key,
                        "seed": seed,
                        "evaluate": evaluate_key,
                    }
                )
                plans.append(MemberPlan(member_id, model, train, seed, family.kind, label))
    ids = [p.member_id for p in plans]
    if len(set(ids)) != len(ids):
        raise ConfigError(
            "the zoo lists the same model twice (same family, knob values and training)",
            hint="remove the repeated entry",
        )
    return plans
