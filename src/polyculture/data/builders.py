"""The dataset registry and :func:`build_task`, which turns a :class:`DataSpec` into a Task.

A dataset builder only reads its source and returns :class:`RawData` (train and test arrays, class
names, groups, what it cleaned). Everything common happens once, here: the non-finite check, exact
duplicate removal, the check that every test class was seen in training, the seeded stratified
validation split and the shifted test sets.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sklearn.model_selection import train_test_split

from polyculture.data.augment import DEFAULT_SHIFTS, Perturbation, perturb
from polyculture.data.task import MODALITIES, CleaningStep, Modality, Split, Task
from polyculture.errors import ConfigError, DataError, RegistryError
from polyculture.registry import Registry
from polyculture.validation import as_config_error


class DataSpec(BaseModel):
    """Which dataset to build and how (the ``[data]`` table of a study file).

    Attributes
    ----------
    name
        Registered dataset name (``polyculture datasets`` lists them).
    path
        File or folder for datasets read from disk.
    options
        Dataset-specific options (validated by the dataset's own option model).
    val_fraction
        Share of the training data held out for validation (stratified, seeded).
    seed
        Seed of the validation split and of the shifted test sets.
    nonfinite
        ``error`` (default): NaN/inf in features stop the run; ``drop``: such rows are removed and
        counted in the cleaning log.
    drop_duplicates
        Remove exact duplicate rows (same features and label) within each split, counted.
    unknown_test_classes
        ``error`` (default) when a test label never occurs in training; ``drop`` removes those rows.
    shifts
        Shifted test sets by name; ``None`` uses the modality's defaults, ``{}`` builds none.

    Examples
    --------
    >>> DataSpec(name="mnist1d").val_fraction
    0.1
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    path: str | None = None
    options: dict[str, Any] = {}
    val_fraction: float = Field(0.1, gt=0.0, lt=0.9)
    seed: int = Field(0, ge=0, lt=2**32)
    nonfinite: Literal["error", "drop"] = "error"
    drop_duplicates: bool = True
    unknown_test_classes: Literal["error", "drop"] = "error"
    shifts: dict[str, Perturbation] | None = None

    @field_validator("shifts")
    @classmethod
    def _shift_names(cls, shifts: dict[str, Perturbation] | None) -> dict[str, Perturbation] | None:
        for name in shifts or {}:
            if not name.startswith("test_"):
                raise ValueError(f"shifted test set '{name}' must be named test_<something>")
        return shifts


@dataclass
class RawData:
    """What a dataset builder returns: train and test arrays before the common steps.

    ``x_*`` are float arrays ``(n, *input_shape)`` (int64 token ids ``(n, max_length)`` for
    text, with the raw strings in ``texts_*`` and the tokens in ``vocabulary``); ``y_*`` are int64
    class indices into ``class_names``. ``index_*`` are the rows' positions in the source (default
    ``0..n-1``). ``answer_length > 1`` makes a task whose answers span several rows (the digits of
    a sum): row ``i`` is position ``index % answer_length`` (0 = first) of problem
    ``index // answer_length``, and the validation split keeps each problem whole.
    """

    modality: Modality
    class_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    groups_train: pd.DataFrame | None = None
    groups_test: pd.DataFrame | None = None
    index_train: np.ndarray | None = None
    index_test: np.ndarray | None = None
    cleaning: list[CleaningStep] = field(default_factory=list)
    feature_names: tuple[str, ...] = ()
    reference_accuracy: dict[str, float] = field(default_factory=dict)
    reference_source: str = ""
    texts_train: tuple[str, ...] | None = None
    texts_test: tuple[str, ...] | None = None
    vocabulary: tuple[str, ...] = ()
    answer_length: int = 1


BuildFunction = Callable[[Path | None, Any], RawData]


@dataclass(frozen=True)
class DatasetBuilder:
    """A registered dataset: its build function, option model and what it needs."""

    name: str
    build: BuildFunction
    options: type[BaseModel]
    description: str
    modality: str
    needs_path: bool


DATASETS: Registry[DatasetBuilder] = Registry("dataset")


class NoOptions(BaseModel):
    """Option model of datasets without options."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def dataset(
    name: str,
    *,
    description: str,
    modality: str,
    options: type[BaseModel] = NoOptions,
    needs_path: bool = False,
) -> Callable[[BuildFunction], BuildFunction]:
    """Register ``build(path, options) -> RawData`` as dataset ``name``.

    Examples
    --------
    >>> @dataset("doc_tiny", description="doc example", modality="tabular")
    ... def build_tiny(path, options):
    ...     x = np.eye(4, dtype=np.float32)
    ...     y = np.array([0, 1, 0, 1])
    ...     return RawData("tabular", ("a", "b"), x, y, x, y)
    >>> "doc_tiny" in DATASETS
    True
    """

    if modality not in MODALITIES:
        raise RegistryError(
            f"dataset '{name}': modality must be one of {', '.join(MODALITIES)}, got {modality!r}"
        )
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise RegistryError(
            f"dataset '{name}': options must be a pydantic model class, got {options!r}",
            hint="subclass pydantic.BaseModel with model_config = ConfigDict(extra='forbid')",
        )

    def add(build: BuildFunction) -> BuildFunction:
        if not callable(build):
            raise RegistryError(f"dataset '{name}': the decorated object is not callable")
        DATASETS.add(name, DatasetBuilder(name, build, options, description, modality, needs_path))
        return build

    return add


def validate_options(builder: DatasetBuilder, options: dict[str, Any]) -> BaseModel:
    """Validate ``options`` with the dataset's option model; errors name the key and the fix."""
    try:
        return builder.options.model_validate(options)
    except ValidationError as err:
        raise as_config_error(err, builder.options, "data.options.") from None


def build_task(spec: DataSpec) -> Task:
    """Build the :class:`Task` described by ``spec``.

    Raises
    ------
    ConfigError
        Unknown dataset name, bad options, a missing ``path``.
    DataError
        Missing or malformed files, non-finite values, classes seen only in the test split.

    Examples
    --------
    >>> import polyculture.data
    >>> task = build_task(DataSpec(name="digits"))
    >>> task.input_shape, task.num_classes
    ((1, 8, 8), 10)
    """
    builder = DATASETS.get(spec.name)
    options = validate_options(builder, spec.options)
    path: Path | None = None
    if builder.needs_path:
        if spec.path is None:
            raise ConfigError(
                f"dataset '{spec.name}' reads files but no data path was given",
                hint="pass --data-dir PATH or --set data.path=PATH",
            )
        path = Path(spec.path).expanduser()
        if not path.exists():
            raise DataError(
                f"data path '{path}' does not exist",
                hint="pass an existing file or folder with --data-dir or --set data.path=...",
            )
    raw = builder.build(path, options)
    return _finish(spec, raw)


def _finish(spec: DataSpec, raw: RawData) -> Task:
    """The steps common to every dataset, from raw arrays to a Task."""
    cleaning = list(raw.cleaning)
    splits = {}
    for split_name, x, y, groups, index, texts in (
        ("train", raw.x_train, raw.y_train, raw.groups_train, raw.index_train, raw.texts_train),
        ("test", raw.x_test, raw.y_test, raw.groups_test, raw.index_test, raw.texts_test),
    ):
        x = np.asarray(x, dtype=np.int64 if raw.modality == "text" else np.float32)
        y = np.asarray(y, dtype=np.int64)
        index = np.arange(len(y)) if index is None else np.asarray(index, dtype=np.int64)
        if len(x) != len(y):
            raise DataError(f"{split_name} split has {len(x)} examples but {len(y)} labels")
        if len(y) == 0:
            raise DataError(
                f"the {split_name} split is empty after loading",
                hint="check the file and the cleaning options (classes, label column)",
            )
        if texts is not None and len(texts) != len(y):
            raise DataError(f"{split_name} split has {len(texts)} texts but {len(y)} labels")
        keep = _finite_rows(spec, split_name, x, index, cleaning, raw.feature_names)
        if spec.drop_duplicates:
            # Text rows are compared by their raw strings: two texts can share token ids.
            keys = x if texts is None else np.array([hash_text(t) for t in texts])
            keep &= _first_occurrences(keys, y, split_name, cleaning, keep)
        splits[split_name] = _select(x, y, groups, index, keep, texts)
    class_names = _check_labels(spec, tuple(raw.class_names), splits, cleaning)
    if len(splits["train"][1]) == 0 or len(splits["test"][1]) == 0:
        raise DataError("no examples left after cleaning", hint="check the cleaning log and data")

    train_full = _to_split(*splits["train"])
    test = _to_split(*splits["test"])
    if raw.answer_length < 1:
        raise DataError(f"answer_length must be at least 1, got {raw.answer_length}")
    train, val = _carve_validation(train_full, spec, raw.answer_length)
    shifted = _shifted_sets(test, raw.modality, spec)
    return Task(
        name=spec.name,
        modality=raw.modality,
        class_names=class_names,
        train=train,
        val=val,
        test=test,
        shifted=shifted,
        cleaning=tuple(cleaning),
        feature_names=raw.feature_names,
        reference_accuracy=dict(raw.reference_accuracy),
        reference_source=raw.reference_source,
        vocabulary=tuple(raw.vocabulary),
        answer_length=raw.answer_length,
    )


Columns = tuple[np.ndarray, np.ndarray, pd.DataFrame | None, np.ndarray, tuple[str, ...] | None]


def hash_text(text: str) -> np.uint64:
    """A 64-bit hash of a string (stable across processes, unlike ``hash``)."""
    return np.frombuffer(hashlib.blake2b(text.encode(), digest_size=8).digest(), np.uint64)[0]


def _select(
    x: np.ndarray,
    y: np.ndarray,
    groups: pd.DataFrame | None,
    index: np.ndarray,
    keep: np.ndarray,
    texts: tuple[str, ...] | None = None,
) -> Columns:
    kept_groups = None if groups is None else groups.loc[keep].reset_index(drop=True)
    kept_texts = None if texts is None else tuple(t for t, k in zip(texts, keep, strict=True) if k)
    return x[keep], y[keep], kept_groups, index[keep], kept_texts


def _finite_rows(
    spec: DataSpec,
    split: str,
    x: np.ndarray,
    index: np.ndarray,
    cleaning: list[CleaningStep],
    feature_names: tuple[str, ...],
) -> np.ndarray:
    flat_finite = np.isfinite(x.reshape(len(x), -1))  # (n, features)
    finite = flat_finite.all(axis=1)
    bad = int((~finite).sum())
    if bad and spec.nonfinite == "error":
        rows = ", ".join(str(i) for i in index[~finite][:5])
        where = ""
        if feature_names and len(feature_names) == flat_finite.shape[1]:
            columns = [feature_names[j] for j in np.flatnonzero(~flat_finite.all(axis=0))[:5]]
            where = f" in column(s) {', '.join(columns)}"
        raise DataError(
            f"{bad} {split} row(s) have missing, NaN or infinite values{where} (rows {rows}"
            f"{', ...' if bad > 5 else ''})",
            hint="fix the data, or set data.nonfinite='drop' to drop those rows",
        )
    if bad:
        cleaning.append(CleaningStep(split, "non-finite features", bad))
    return finite


def _first_occurrences(
    x: np.ndarray, y: np.ndarray, split: str, cleaning: list[CleaningStep], keep: np.ndarray
) -> np.ndarray:
    """Mask of rows that are not an exact repeat (features and label) of an earlier kept row."""
    rows = np.concatenate(
        [x.reshape(len(x), -1).view(np.uint8).reshape(len(x), -1), y.reshape(-1, 1).view(np.uint8)],
        axis=1,
    )
    seen: set[bytes] = set()
    first = np.ones(len(x), dtype=bool)
    for i in np.flatnonzero(keep):
        key = rows[i].tobytes()
        if key in seen:
            first[i] = False
        seen.add(key)
    removed = int((~first).sum())
    if removed:
        cleaning.append(CleaningStep(split, "exact duplicate rows", removed))
    return first


def _check_labels(
    spec: DataSpec,
    class_names: tuple[str, ...],
    splits: dict[str, Columns],
    cleaning: list[CleaningStep],
) -> tuple[str, ...]:
    """Check label ranges and that every test class occurs in training; returns the classes."""
    num_classes = len(class_names)
    for split_name, (_, y, _, _, _) in splits.items():
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(
                f"{split_name} labels fall outside the {num_classes} known classes",
                hint="the dataset builder must map labels to class indices",
            )
    seen_in_train = set(np.unique(splits["train"][1]).tolist())
    test_y = splits["test"][1]
    unseen = sorted(set(np.unique(test_y).tolist()) - seen_in_train)
    if not unseen:
        return class_names
    names = ", ".join(repr(class_names[c]) for c in unseen)
    if spec.unknown_test_classes == "error":
        count = int(np.isin(test_y, unseen).sum())
        raise DataError(
            f"class {names} appears only in the test split ({count} test rows)",
            hint="add training examples of it, or set data.unknown_test_classes='drop'",
        )
    keep = ~np.isin(test_y, unseen)
    cleaning.append(CleaningStep("test", "class unseen in training", int((~keep).sum()), names))
    x, y, groups, index, texts = splits["test"]
    splits["test"] = _select(x, y, groups, index, keep, texts)
    # Trailing classes known only from dropped test rows are not classes of the task.
    kept = list(class_names)
    while kept and len(kept) - 1 in unseen:
        kept.pop()
    return tuple(kept)


def _to_split(
    x: np.ndarray,
    y: np.ndarray,
    groups: pd.DataFrame | None,
    index: np.ndarray,
    texts: tuple[str, ...] | None,
) -> Split:
    return Split(
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.from_numpy(y),
        groups,
        torch.from_numpy(index),
        texts,
    )


def seeded_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row positions of a seeded split holding out ``fraction`` of the rows.

    Stratified by label when the data allow it (every class twice, enough held-out rows for
    every class), else a plain seeded random split.

    Examples
    --------
    >>> kept, held = seeded_split(np.array([0, 0, 1, 1, 0, 1, 0, 1]), 0.25, seed=0)
    >>> len(kept), len(held), sorted(np.array([0, 0, 1, 1, 0, 1, 0, 1])[held].tolist())
    (6, 2, [0, 1])
    """
    n_held = max(1, math.ceil(len(labels) * fraction))  # as scikit-learn rounds test_size
    if n_held >= len(labels):
        raise DataError(
            f"only {len(labels)} rows: too few to hold out {fraction:.0%} of them",
            hint="provide more data or hold out a smaller fraction",
        )
    positions = np.arange(len(labels))
    try:
        kept, held = train_test_split(
            positions, test_size=n_held, random_state=seed, stratify=labels
        )
    except ValueError:  # a class with one row, or fewer held-out rows than classes
        kept, held = train_test_split(positions, test_size=n_held, random_state=seed)
    return np.sort(kept), np.sort(held)


def stratified_shards(labels: np.ndarray, count: int, seed: int = 0) -> list[np.ndarray]:
    """Split row positions into ``count`` disjoint shards with the label mix of the whole.

    Each class's rows are shuffled with ``seed`` and dealt round-robin, so shard sizes differ by
    at most one per class. Every member trained on a shard of the same data gets the same
    partition (the seed does not depend on the member).

    Examples
    --------
    >>> shards = stratified_shards(np.array([0, 0, 0, 0, 1, 1]), 2)
    >>> [sorted(np.array([0, 0, 0, 0, 1, 1])[s].tolist()) for s in shards]
    [[0, 0, 1], [0, 0, 1]]
    """
    if count < 1 or count > len(labels):
        raise DataError(
            f"cannot cut {len(labels)} training rows into {count} shards",
            hint="use fewer shards",
        )
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(count)]
    offset = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        for position, row in enumerate(rows):
            parts[(position + offset) % count].append(int(row))
        offset += len(rows)  # continue dealing where the last class stopped
    return [np.sort(np.array(part, dtype=np.int64)) for part in parts]


def nested_fraction(
    labels: np.ndarray, fraction: float, seed: int = 0, problems: np.ndarray | None = None
) -> np.ndarray:
    """Sorted row positions of a seeded, stratified ``fraction`` of the rows; nested in fraction.

    Rows are ordered once by a seeded key (within each class, a random rank divided by the class
    size, so every prefix keeps the label mix) and the first ``ceil(fraction * n)`` are kept:
    the subset for a smaller fraction lies inside the subset for a larger one, as a data-scaling
    sweep needs. With ``problems`` (one id per row), whole problems are kept instead.

    Examples
    --------
    >>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    >>> small, large = nested_fraction(labels, 0.25), nested_fraction(labels, 0.5)
    >>> sorted(labels[small].tolist()), bool(np.isin(small, large).all())
    ([0, 1], True)
    """
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"fraction {fraction} is outside (0, 1]", hint="use e.g. 0.1 or 0.5")
    rng = np.random.default_rng(seed)
    if problems is not None:
        unique = rng.permutation(np.unique(problems))
        kept = unique[: max(1, math.ceil(fraction * len(unique)))]
        return np.flatnonzero(np.isin(problems, kept))
    # Rank r of n_c rows of a class gets key (r + 1/2) / n_c (Webster's divisor method, which
    # never takes a row away from a class as the fraction grows); a tiny seeded jitter breaks
    # ties between classes of equal size at random.
    key = np.empty(len(labels))
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        key[rows] = (rng.permutation(len(rows)) + 0.5) / len(rows)
    key += rng.random(len(labels)) * 1e-9
    order = np.argsort(key, kind="stable")
    return np.sort(order[: max(1, math.ceil(fraction * len(labels)))])


def _carve_validation(train: Split, spec: DataSpec, answer_length: int = 1) -> tuple[Split, Split]:
    """Seeded validation split, stratified by label where possible; whole problems when
    answers span several rows."""
    if answer_length == 1:
        fit_rows, val_rows = seeded_split(train.y.numpy(), spec.val_fraction, spec.seed)
    else:
        fit_rows, val_rows = problem_split(
            train.instance_ids().numpy(), answer_length, spec.val_fraction, spec.seed
        )
    return train.subset(torch.from_numpy(fit_rows)), train.subset(torch.from_numpy(val_rows))


def problem_split(
    index: np.ndarray, answer_length: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`seeded_split`, but holding out whole problems (``index // answer_length``).

    Examples
    --------
    >>> kept, held = problem_split(np.arange(8), 2, 0.25, seed=0)  # 4 problems of 2 rows
    >>> len(kept), len(held), bool((held[1::2] - held[::2] == 1).all())
    (6, 2, True)
    """
    problems = index // answer_length
    unique = np.unique(problems)
    _, held = seeded_split(np.zeros(len(unique), dtype=np.int64), fraction, seed)
    held_rows = np.isin(problems, unique[held])
    return np.flatnonzero(~held_rows), np.flatnonzero(held_rows)


def _shifted_sets(test: Split, modality: Modality, spec: DataSpec) -> dict[str, Split]:
    shifts = DEFAULT_SHIFTS[modality] if spec.shifts is None else spec.shifts
    generator = torch.Generator().manual_seed(spec.seed)
    shifted = {}
    for name, strength in sorted(shifts.items()):
        x = perturb(test.x, modality, strength, generator)
        shifted[name] = Split(x.contiguous(), test.y, test.groups, test.index, test.texts)
    return shifted
