"""Study files: a TOML description of a zoo experiment, validated with pydantic.

A study names the task (``[data]``), default training settings (``[train]``), the seeds, the zoo
(``[[zoo]]`` entries: a family, its knobs, an optional grid of knob values and per-entry training
overrides), sweeps, ecosystems, evaluation settings, and the plugins it needs (modules or files
that register datasets, families and metrics; loaded first). :func:`load_study` reads a built-in
study by name or a file, applies ``--set key=value`` overrides, loads the plugins, and validates
everything before anything runs: unknown keys,
unknown families, bad knob values and families that cannot take the task's modality are errors.
:func:`expand` turns a study into its members, each with a stable id.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import polyculture.data
import polyculture.zoo  # noqa: F401  (registers families)
from polyculture.data.builders import DATASETS, DataSpec, validate_options
from polyculture.errors import ConfigError
from polyculture.plugins import load_entry_point_plugins, load_plugins
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


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class BackboneSpec(BaseModel):
    """One ``[[backbones]]`` entry: a backbone trained (or loaded) once and shared by members.

    Attributes
    ----------
    name
        How zoo entries refer to it (``backbone = "simclr"``).
    family, params
        The zoo family and knobs of the backbone network.
    method
        ``contrastive``: self-supervised on the task's unlabeled training inputs (see
        :mod:`polyculture.train.pretrain`); ``supervised``: trained on a source task (``source``,
        default the study's own task) with ``train`` overrides; ``pretrained``: the family's weights
        as built, e.g. the published weights of ``minilm`` (nothing is trained).
    pretrain
        Settings of contrastive pretraining (``PretrainSpec`` fields).
    train
        Overrides of the study's ``[train]`` table for supervised pretraining.
    source
        Source task of supervised pretraining (a ``[data]``-like table).
    seed
        Seed of the backbone's initialisation and pretraining.
    layer
        Representation used as the features (default: the last one before the output).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    family: str
    params: dict[str, Any] = {}
    method: Literal["contrastive", "supervised", "pretrained"]
    pretrain: dict[str, Any] = {}
    train: dict[str, Any] = {}
    source: DataSpec | None = None
    seed: int = Field(0, ge=0, lt=2**32)
    layer: str | None = None


class ZooEntry(BaseModel):
    """One ``[[zoo]]`` entry: a family, its knobs, an optional grid and training overrides.

    ``name`` is the display name of the entry's models (default: family and knobs, e.g.
    ``mlp(width=64)``); two entries whose models would share a name must set one.
    ``grid`` maps knob names to lists of values; the entry expands to their cartesian product.
    A grid key may also be ``train.<setting>`` (e.g. ``train.epochs``: one member per value) or
    ``data_fraction``. ``data_fraction`` trains on that share of the training split (a seeded,
    stratified subset; smaller fractions are subsets of larger ones, so a data sweep is nested).
    ``train`` overrides keys of the study's ``[train]`` table for this entry only.
    ``backbone`` names a ``[[backbones]]`` entry: the family is then a head on the backbone's
    features, adapted by ``probe`` (frozen features, cached once per backbone) or ``finetune``
    (backbone and head trained together; ``finetune_layers`` = how many of the backbone's last
    blocks train, default all). ``seeds`` replaces the study's seeds for this entry; ``shards``
    trains one member per disjoint, seeded, stratified shard of the training data.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str
    name: str | None = None
    params: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    train: dict[str, Any] = {}
    backbone: str | None = None
    adapt: Literal["probe", "finetune"] = "probe"
    finetune_layers: int | None = Field(None, ge=1)
    seeds: list[int] | None = Field(None, min_length=1)
    shards: int | None = Field(None, ge=2)
    data_fraction: float = Field(1.0, gt=0.0, le=1.0)

    @property
    def entry_name(self) -> str:
        """How sweeps and messages name the entry: its ``name``, else its family."""
        return self.name or self.family

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for knob, values in grid.items():
            if not values:
                raise ValueError(f"grid '{knob}' has no values")
        return grid

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        return None if seeds is None else _check_seeds(seeds)


class EcosystemSpec(BaseModel):
    """One ``[[ecosystems]]`` entry: a named set of models compared as a deployed ecosystem.

    ``models`` lists display names of zoo models (every seed and shard of each belongs to the
    ecosystem). The analysis reports, per ecosystem, the systemic-failure ratio, the mean error
    consistency and the mean CKA of the members' final representations, with intervals, and
    compares the ecosystems pairwise on the same test instances.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    models: list[str] = Field(min_length=1)
    description: str = ""


SWEEP_AXES = ("params", "data", "steps", "flops")
"""Scale axes of a sweep: trainable parameters, training rows, optimizer steps, training FLOPs."""

MIN_SWEEP_POINTS = 4
"""Distinct scale points a sweep needs (the sigmoid has 4 parameters; the broken power law 6)."""


class SweepSpec(BaseModel):
    """One ``[[sweeps]]`` entry: a scaling sweep analysed for emergence.

    The members of zoo entry ``zoo`` (one per grid point and seed) are placed on the scale
    ``axis``: ``params`` (trainable parameters), ``data`` (training rows), ``steps`` (optimizer
    steps) or ``flops`` (training FLOPs: 3 x forward FLOPs per example x examples seen). Each of
    ``metrics`` (test-split metrics: ``accuracy``, ``nll``, ``brier``, ``exact_match``,
    ``answer_log_likelihood``, ``edit_distance``, ...) is fitted against the axis (power law,
    sigmoid, broken power law). ``swap`` names a discontinuous and a continuous metric for the
    metric-swap test of Schaeffer et al. (2023).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    zoo: str
    axis: Literal["params", "data", "steps", "flops"] = "params"
    metrics: list[str] = Field(default=["accuracy"], min_length=1)
    swap: tuple[str, str] | None = None
    description: str = ""

    @field_validator("swap")
    @classmethod
    def _two_metrics(cls, swap: tuple[str, str] | None) -> tuple[str, str] | None:
        if swap is not None and swap[0] == swap[1]:
            raise ValueError("swap needs two different metrics (discontinuous, continuous)")
        return swap


class EvaluateSpec(BaseModel):
    """How members are evaluated.

    ``probe_size``: representations are stored for the first ``probe_size`` test instances.
    ``robust_epsilon``: L-infinity radius of the PGD attack behind every torch member's robust
    accuracy, in units of the standard deviation of the (embedded) training inputs; ``0``
    disables it. ``robust_steps`` PGD steps on the first ``robust_size`` test instances.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    probe_size: int = Field(1000, ge=2)
    bootstrap_seed: int = 0
    robust_epsilon: float = Field(0.1, ge=0.0)
    robust_steps: int = Field(10, ge=1)
    robust_size: int = Field(500, ge=1)


class ExecutionSpec(BaseModel):
    """Where members run; does not change their ids or (on CPU) their numbers.

    ``workers``: worker processes (0 = one per CPU core, at most one per member).
    ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda[:i]``.
    ``engine``: how several workers run: ``auto`` (a local Dask cluster when
    ``polyculture[dist]`` is installed, else a process pool), ``dask`` or ``processes``.
    ``scheduler``: address of an existing Dask scheduler to run on instead (``tcp://host:8786``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(0, ge=0)
    device: str = "auto"
    engine: Literal["auto", "dask", "processes"] = "auto"
    scheduler: str | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError("device must be 'auto', 'cpu' or 'cuda[:index]'")
        return device


class Study(BaseModel):
    """A whole study (what a study file holds).

    ``plugins`` lists modules (``my_package.my_module``) or Python files (relative to the study
    file) imported before the study is validated, so that it can use the datasets, families and
    metrics they register (see :mod:`polyculture.plugins`).

    Examples
    --------
    >>> study = Study(name="tiny", data=DataSpec(name="digits"), zoo=[ZooEntry(family="logreg")])
    >>> [m.label for m in expand(study)]
    ['logreg', 'logreg', 'logreg']
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    plugins: list[str] = []
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1)
    data: DataSpec
    train: TrainSpec = TrainSpec()
    backbones: list[BackboneSpec] = []
    zoo: list[ZooEntry] = Field(min_length=1)
    ecosystems: list[EcosystemSpec] = []
    sweeps: list[SweepSpec] = []
    evaluate: EvaluateSpec = EvaluateSpec()
    execution: ExecutionSpec = ExecutionSpec()

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        return _check_seeds(seeds)


def _check_seeds(seeds: list[int]) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be distinct")
    if any(not 0 <= seed < 2**32 for seed in seeds):
        raise ValueError("seeds must lie in [0, 2**32)")
    return seeds


@dataclass(frozen=True)
class BackbonePlan:
    """One backbone to pretrain (or load): its spec, validated settings and id."""

    backbone_id: str
    spec: BackboneSpec
    model: ModelSpec
    train: TrainSpec | None
    """Training settings of supervised pretraining (``None`` for the other methods)."""

    def describe(self) -> str:
        """How messages name this job."""
        return f"backbone '{self.spec.name}'"


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
    backbone: BackbonePlan | None = None
    adapt: str = "probe"
    finetune_layers: int | None = None
    shard: tuple[int, int] | None = None
    """``(index, count)``: the member trains on shard ``index`` of ``count`` of the train split."""
    entry: str = ""
    """Name of the zoo entry the member comes from (see :attr:`ZooEntry.entry_name`)."""
    data_fraction: float = 1.0
    """Share of the training split the member trains on."""

    def describe(self) -> str:
        """How messages name this job."""
        return f"{self.label} seed {self.seed}"


BUILTIN_STUDIES = (
    "mnist1d",
    "fashion-mnist",
    "seed-recipe",
    "sharing",
    "sharing-text",
    "phrasebank",
    "banking77",
    "emergence-modular-addition",
    "emergence-addition",
    "emergence-parity",
    "emergence-mnist1d",
    "adult",
)


BUILTIN_SUITES = ("emergence",)
"""Built-in suites: several studies run one after the other, with one combined report."""


def builtin_study_text(name: str) -> str:
    """The TOML text of a built-in study or suite."""
    return (resources.files("polyculture") / "studies" / f"{name}.toml").read_text()


class Suite(BaseModel):
    """A suite file: several studies (one task each) run into one folder, with one report.

    ``studies`` lists built-in study names or study files (relative to the suite file). Each
    runs into ``OUT/<suite name>/<study name>/``, a complete run directory of its own.

    Examples
    --------
    >>> Suite(name="pair", studies=["mnist1d", "seed-recipe"]).studies[1]
    'seed-recipe'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    studies: list[str] = Field(min_length=1)


def load_suite(source: str | Path) -> tuple[Suite, list[str | Path]] | None:
    """The suite at ``source`` and its studies' sources, or ``None`` when it is a study.

    A file is a suite when it has a ``studies`` list (and so no ``[data]`` table). Each
    study source is a built-in study name or a path resolved against the suite file's folder.

    Examples
    --------
    >>> suite, parts = load_suite("emergence")
    >>> suite.name, parts[0]
    ('emergence', 'emergence-modular-addition')
    >>> load_suite("mnist1d") is None
    True
    """
    if isinstance(source, Study | dict):
        return None
    path = Path(source)
    builtin = isinstance(source, str) and not path.exists()
    if builtin and source not in BUILTIN_SUITES:
        return None
    if not builtin and not path.is_file():
        return None
    raw = _raw_study(source) if not builtin else tomllib.loads(builtin_study_text(str(source)))
    if "studies" not in raw:
        return None
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as err:
        raise as_config_error(err, Suite, origin=str(source)) from None
    folder = None if builtin else path.parent
    parts: list[str | Path] = []
    for part in suite.studies:
        if folder is not None and (folder / part).is_file():
            parts.append(folder / part)
        elif part in BUILTIN_STUDIES or Path(part).is_file():
            parts.append(part)
        else:
            raise ConfigError(
                f"suite '{suite.name}' lists study '{part}', which is neither a built-in study "
                "nor a file",
                hint="give a built-in name or a path relative to the suite file",
            )
    return suite, parts


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
    load_entry_point_plugins()
    raw = _raw_study(source)
    origin = str(source) if isinstance(source, str | Path) else "study"
    if "studies" in raw and "data" not in raw:
        raise ConfigError(
            f"'{origin}' is a suite of studies, not one study",
            hint="run it with `polyculture run` or polyculture.run.run_suite",
        )
    for item in overrides:
        apply_override(raw, item)
    plugins = raw.get("plugins", [])
    if plugins:
        if not isinstance(plugins, list):
            raise ConfigError(
                f"{origin}: plugins must be a list of module names or file paths",
                hint='write plugins = ["my_package.my_module", "path/to/file.py"]',
            )
        base = Path(source).parent if isinstance(source, str | Path) else None
        # Stored resolved (absolute file paths), so worker processes load the same files.
        raw["plugins"] = load_plugins(plugins, base)
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
    if (
        isinstance(source, str)
        and source in (*BUILTIN_STUDIES, *BUILTIN_SUITES)
        and (not path.exists())
    ):
        text = builtin_study_text(source)
    elif path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"'{source}' is not UTF-8 text", hint="save it as UTF-8") from None
    else:
        raise ConfigError(
            f"no study file or built-in study named '{source}'",
            hint=f"give a .toml path or one of: {', '.join((*BUILTIN_STUDIES, *BUILTIN_SUITES))}",
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


def apply_override(raw: dict[str, Any], item: str, schema: type[BaseModel] | None = None) -> None:
    """Apply one ``key.path=value`` override to a raw study dict, checking the key exists.

    ``schema`` is the pydantic model the dict validates against (default :class:`Study`); keys
    are checked against its fields down to free-form tables (``data.options``, ``params``).

    Examples
    --------
    >>> raw = {"train": {"epochs": 3}}
    >>> apply_override(raw, "train.epochs=5")
    >>> raw
    {'train': {'epochs': 5}}
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set '{item}' is not key=value", hint="write e.g. train.epochs=5")
    parts = key.strip().split(".")
    value = _parse_value(text.strip())
    node: Any = raw
    model: type[BaseModel] | None = Study if schema is None else schema
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
    return _merged_train(study.train, entry.train, f"zoo '{entry.family}' train.")


def _merged_train(base: TrainSpec, overrides: dict[str, Any], where: str) -> TrainSpec:
    merged = base.model_dump()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    try:
        return TrainSpec.model_validate(merged)
    except ValidationError as err:
        raise as_config_error(err, TrainSpec, where) from None


def _data_key(study: Study, data: DataSpec | None = None) -> str:
    """Hash of a validated data spec (the member ids' data key before the task is built)."""
    data = study.data if data is None else data
    builder = DATASETS.get(data.name)
    options = validate_options(builder, data.options).model_dump(mode="json")
    return stable_hash(data.model_dump(mode="json") | {"options": options})


def expand_backbones(study: Study, data_key: str | None = None) -> dict[str, BackbonePlan]:
    """The study's backbones by name, validated, with stable ids.

    A backbone id hashes the data it learns from (the task, or the source task of supervised
    pretraining), its family and knobs, the method and its settings, and the seed.
    """
    data_key = _data_key(study) if data_key is None else data_key
    modality = DATASETS.get(study.data.name).modality
    plans: dict[str, BackbonePlan] = {}
    for spec in study.backbones:
        if spec.name in plans:
            raise ConfigError(
                f"two backbones are named '{spec.name}'", hint="give each backbone its own name"
            )
        model = ModelSpec(family=spec.family, params=spec.params)
        source_modality = (
            modality if spec.source is None else DATASETS.get(spec.source.name).modality
        )
        if source_modality != modality:
            raise ConfigError(
                f"backbone '{spec.name}': its source task is {source_modality} data but the "
                f"study's task is {modality}",
                hint="pretrain on a source task of the same modality",
            )
        if FAMILIES.get(spec.family).kind != "torch":
            raise ConfigError(
                f"backbone '{spec.name}' uses '{spec.family}', a scikit-learn family",
                hint="a backbone must be a torch family (cnn, gru, transformer, minilm, ...)",
            )
        knobs = resolve_knobs(model, modality)  # type: ignore[arg-type]
        settings: dict[str, Any] = {}
        train: TrainSpec | None = None
        if spec.method == "contrastive":
            # Imported here: only studies with contrastive backbones need the pretraining module.
            from polyculture.train.pretrain import PretrainSpec

            try:
                pretrain = PretrainSpec.model_validate(spec.pretrain)
            except ValidationError as err:
                raise as_config_error(
                    err, PretrainSpec, f"backbone '{spec.name}' pretrain."
                ) from None
            settings = pretrain.model_dump(mode="json")
        elif spec.pretrain:
            raise ConfigError(
                f"backbone '{spec.name}': 'pretrain' settings apply to method 'contrastive' only",
                hint="remove the pretrain table or set method = 'contrastive'",
            )
        if spec.method == "supervised":
            train = _merged_train(study.train, spec.train, f"backbone '{spec.name}' train.")
            settings = train.model_dump(mode="json")
        elif spec.train:
            raise ConfigError(
                f"backbone '{spec.name}': 'train' settings apply to method 'supervised' only",
                hint="remove the train table or set method = 'supervised'",
            )
        if spec.source is not None and spec.method != "supervised":
            raise ConfigError(
                f"backbone '{spec.name}': a source task applies to method 'supervised' only",
                hint="remove source or set method = 'supervised'",
            )
        source_key = data_key if spec.source is None else _data_key(study, spec.source)
        backbone_id = stable_hash(
            {
                "schema": MEMBER_SCHEMA,
                "data": source_key,
                "model": {"family": spec.family, "params": knobs.model_dump(mode="json")},
                "method": spec.method,
                "settings": settings,
                "seed": spec.seed,
                "layer": spec.layer,
            }
        )
        plans[spec.name] = BackbonePlan(backbone_id, spec, model, train)
    return plans


def expand(study: Study, data_key: str | None = None) -> list[MemberPlan]:
    """All members of a study: entries x grid points x shards x seeds, validated, with stable ids.

    The member id hashes the data (``data_key``: the task's fingerprint once the task is built,
    else the validated data spec), the validated knob values, the training spec (torch members
    only), the seed and the evaluation settings, and where set the backbone (its id and how it is
    adapted) and the shard: a change to any of them makes a new member, and spelling out a default
    knob value does not.
    """
    builder = DATASETS.get(study.data.name)
    data_key = _data_key(study) if data_key is None else data_key
    backbones = expand_backbones(study, data_key)
    evaluate_key = study.evaluate.model_dump(mode="json")
    plans: list[MemberPlan] = []
    owners: dict[str, int] = {}  # display name -> index of the zoo entry that uses it
    for index, entry in enumerate(study.zoo):
        family = FAMILIES.get(entry.family)
        backbone = _entry_backbone(entry, backbones, family.kind)
        modality = "tabular" if backbone is not None else builder.modality
        entry_train = resolved_train(study, entry)
        grid_keys = list(entry.grid)
        for values in itertools.product(*(entry.grid[k] for k in grid_keys)):
            point = dict(zip(grid_keys, values, strict=True))
            knob_values, extras = _split_grid_point(entry, point, family.kind)
            train = entry_train
            train_overrides = {k.removeprefix("train."): v for k, v in extras.items() if "." in k}
            if train_overrides:
                train = _merged_train(
                    entry_train, train_overrides, f"zoo '{entry.entry_name}' grid train."
                )
            data_fraction = float(extras.get("data_fraction", entry.data_fraction))
            if not 0.0 < data_fraction <= 1.0:
                raise ConfigError(
                    f"zoo '{entry.entry_name}': data_fraction {data_fraction} is outside (0, 1]",
                    hint="use a share of the training split such as 0.1, 0.5 or 1",
                )
            train_key = train.model_dump(mode="json") if family.kind == "torch" else None
            model = ModelSpec(family=entry.family, params={**entry.params, **knob_values})
            knobs = resolve_knobs(model, modality)  # type: ignore[arg-type]
            label = _label(entry, model, extras)
            if owners.setdefault(label, index) != index:
                raise ConfigError(
                    f"zoo entries {owners[label]} and {index} both make models named '{label}'",
                    hint="give one of them a distinct name = '...'",
                )
            model_key = {"family": model.family, "params": knobs.model_dump(mode="json")}
            shards = (
                [None] if entry.shards is None else [(i, entry.shards) for i in range(entry.shards)]
            )
            for shard in shards:
                for seed in entry.seeds or study.seeds:
                    identity: dict[str, Any] = {
                        "schema": MEMBER_SCHEMA,
                        "data": data_key,
                        "model": model_key,
                        "train": train_key,
                        "seed": seed,
                        "evaluate": evaluate_key,
                    }
                    # Keys only where set, so that members without them keep their ids.
                    if backbone is not None:
                        identity["backbone"] = {
                            "id": backbone.backbone_id,
                            "adapt": entry.adapt,
                            "finetune_layers": entry.finetune_layers,
                        }
                    if shard is not None:
                        identity["shard"] = list(shard)
                    if data_fraction != 1.0:
                        identity["data_fraction"] = data_fraction
                    plans.append(
                        MemberPlan(
                            stable_hash(identity),
                            model,
                            train,
                            seed,
                            family.kind,
                            label,
                            backbone,
                            entry.adapt,
                            entry.finetune_layers,
                            shard,
                            entry.entry_name,
                            data_fraction,
                        )
                    )
    ids = [p.member_id for p in plans]
    if len(set(ids)) != len(ids):
        raise ConfigError(
            "the zoo lists the same model twice (same family, knob values and training)",
            hint="remove the repeated entry",
        )
    _check_ecosystems(study, plans)
    _check_sweeps(study)
    return plans


def _split_grid_point(
    entry: ZooEntry, point: dict[str, Any], kind: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A grid point's model knobs, and its other keys (``train.<setting>``, ``data_fraction``)."""
    knobs: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for key, value in point.items():
        if key == "data_fraction":
            extras[key] = value
        elif key.startswith("train."):
            setting = key.removeprefix("train.")
            if setting not in TrainSpec.model_fields:
                raise ConfigError(
                    f"zoo '{entry.entry_name}' grid key '{key}': [train] has no setting "
                    f"'{setting}'",
                    hint=unknown_key_hint(setting, list(TrainSpec.model_fields)),
                )
            if kind != "torch":
                raise ConfigError(
                    f"zoo '{entry.entry_name}' grid key '{key}': '{entry.family}' is a "
                    "scikit-learn family and ignores training settings",
                    hint="grid over its knobs or data_fraction instead",
                )
            extras[key] = value
        else:
            knobs[key] = value
    return knobs, extras


def _label(entry: ZooEntry, model: ModelSpec, extras: dict[str, Any] | None = None) -> str:
    """Display name: the entry's name (with grid values) or the family and knobs (and backbone).

    Grid values that are not knobs (``data_fraction``, ``train.<setting>``) join the knobs in
    the parentheses, so every grid point has its own name.
    """
    parts = [f"{k}={v}" for k, v in sorted(model.params.items())]
    parts += [f"{k}={v}" for k, v in sorted((extras or {}).items())]
    inner = f"({','.join(parts)})" if parts else ""
    if entry.name is None:
        label = f"{model.family}{inner}"
        if entry.backbone is not None:
            label += f"@{entry.backbone}" + ("-finetune" if entry.adapt == "finetune" else "")
        return label
    if entry.grid:
        return f"{entry.name}{inner}"
    return entry.name


def _check_sweeps(study: Study) -> None:
    """Each sweep names one zoo entry whose grid has enough points, and distinct metrics."""
    names: set[str] = set()
    entries: dict[str, list[ZooEntry]] = {}
    for entry in study.zoo:
        entries.setdefault(entry.entry_name, []).append(entry)
    for sweep in study.sweeps:
        if sweep.name in names:
            raise ConfigError(f"two sweeps are named '{sweep.name}'", hint="give each its own name")
        names.add(sweep.name)
        found = entries.get(sweep.zoo, [])
        if not found:
            raise ConfigError(
                f"sweep '{sweep.name}' names zoo entry '{sweep.zoo}', which the study lacks",
                hint=unknown_key_hint(sweep.zoo, list(entries)),
            )
        if len(found) > 1:
            raise ConfigError(
                f"sweep '{sweep.name}': {len(found)} zoo entries are called '{sweep.zoo}'",
                hint="give the swept entry a distinct name = '...'",
            )
        points = math.prod(len(values) for values in found[0].grid.values())
        if points < MIN_SWEEP_POINTS:
            raise ConfigError(
                f"sweep '{sweep.name}': zoo entry '{sweep.zoo}' has {points} grid point(s); a "
                f"sweep needs at least {MIN_SWEEP_POINTS} (the sigmoid fit has 4 parameters, "
                "the broken power law 6)",
                hint=f"give the entry a grid with {MIN_SWEEP_POINTS} or more values, e.g. "
                "grid = { width = [8, 16, 32, 64, 128, 256] }",
            )
        if len(set(sweep.metrics)) != len(sweep.metrics):
            raise ConfigError(
                f"sweep '{sweep.name}' lists a metric twice", hint="list each metric once"
            )


def _entry_backbone(
    entry: ZooEntry, backbones: dict[str, BackbonePlan], kind: str
) -> BackbonePlan | None:
    """The backbone an entry adapts (checked), or ``None``."""
    if entry.backbone is None:
        if entry.adapt != "probe" or entry.finetune_layers is not None:
            raise ConfigError(
                f"zoo entry '{entry.name or entry.family}' sets adapt/finetune_layers without a "
                "backbone",
                hint="add backbone = '<name of a [[backbones]] entry>' or remove them",
            )
        return None
    if entry.backbone not in backbones:
        known = ", ".join(backbones) or "(none: add a [[backbones]] table)"
        raise ConfigError(
            f"zoo entry '{entry.name or entry.family}' names backbone '{entry.backbone}', "
            "which the study does not define",
            hint=f"backbones defined: {known}",
        )
    if entry.adapt == "finetune" and kind != "torch":
        raise ConfigError(
            f"zoo entry '{entry.name or entry.family}': fine-tuning needs a torch head, "
            f"'{entry.family}' is a scikit-learn family",
            hint="use adapt = 'probe' for it, or a torch head such as linear or mlp",
        )
    if entry.finetune_layers is not None and entry.adapt != "finetune":
        raise ConfigError(
            f"zoo entry '{entry.name or entry.family}': finetune_layers needs adapt = 'finetune'",
            hint="set adapt = 'finetune' or remove finetune_layers",
        )
    return backbones[entry.backbone]


def _check_ecosystems(study: Study, plans: list[MemberPlan]) -> None:
    labels = list(dict.fromkeys(plan.label for plan in plans))
    names: set[str] = set()
    for ecosystem in study.ecosystems:
        if ecosystem.name in names:
            raise ConfigError(
                f"two ecosystems are named '{ecosystem.name}'", hint="give each its own name"
            )
        names.add(ecosystem.name)
        for model in ecosystem.models:
            if model not in labels:
                raise ConfigError(
                    f"ecosystem '{ecosystem.name}' lists model '{model}', which the zoo does not "
                    "make",
                    hint=unknown_key_hint(model, labels),
                )
