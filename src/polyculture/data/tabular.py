"""Tabular classification data from CSV files (numeric and categorical columns).

One file split into train/test by ``test_fraction``, or a train file plus ``test_path``. Numeric
columns are standardized and categorical columns one-hot encoded, both with statistics of the
training rows only. Group columns (e.g. sex, race) are kept as per-instance attributes for the
fairness and homogenization measures.

Group columns are checked: a group column with a single value is an error (a fairness audit
compares groups), and groups with fewer test rows than ``min_group_size`` are reported by the
fairness audit (flagged "n < min", left out of the between-group differences), or are an error
with ``small_groups = "error"``.

The ``adult`` dataset reads the UCI Adult folder (``adult.data`` + ``adult.test``) with these
options preset (sex and race as group attributes).

Cleaning is counted, never silent: empty rows, rows without a label, and labels outside an explicit
``classes`` list are dropped and logged. Missing feature values (empty cells or ``na_values``)
become
NaN and follow the study's ``data.nonfinite`` policy (error by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from polyculture.data.builders import RawData, dataset, seeded_split
from polyculture.data.task import CleaningStep, join_groups
from polyculture.errors import DataError


class CsvOptions(BaseModel):
    """Options of the CSV reader.

    Attributes
    ----------
    label
        Name of the label column.
    test_path
        A separate test file; without it ``test_fraction`` of the rows are held out (stratified).
    groups
        Columns holding group attributes (kept as features unless ``groups_as_features`` is false).
    columns
        Column names for files without a header row.
    test_header
        With ``columns`` set: the test file does have a header row; skip it and use ``columns``.
    categorical
        Columns to one-hot encode; default: every non-numeric column.
    drop_columns
        Columns to ignore.
    classes
        Allowed labels; rows with any other label are dropped and counted.
    na_values
        Extra cell values that mean "missing" (e.g. ``"?"``).
    label_strip
        Characters stripped from both ends of labels (``"."`` for Adult's test file).
    min_group_size
        Groups (of each attribute and of their intersection) with fewer test rows than this are
        "small": reported with a flag and left out of between-group differences.
    small_groups
        ``report`` (default): small groups are shown, flagged; ``error``: a small group stops the
        build with a one-line error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    test_path: str | None = None
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0, lt=2**32)
    groups: list[str] = []
    groups_as_features: bool = True
    columns: list[str] | None = None
    test_header: bool = False
    categorical: list[str] | None = None
    drop_columns: list[str] = []
    classes: list[str] | None = None
    na_values: list[str] = []
    label_strip: str = ""
    sep: str = ","
    comment: str | None = None
    encoding: str = "utf-8"
    min_group_size: int = Field(30, ge=1)
    small_groups: Literal["report", "error"] = "report"


def _read(
    path: Path, options: CsvOptions, cleaning: list[CleaningStep], split: str
) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"CSV file '{path}' does not exist", hint="check data.path / test_path")
    try:
        frame = pd.read_csv(
            path,
            sep=options.sep,
            header=None if options.columns else "infer",
            skiprows=1 if options.columns and options.test_header and split == "test" else 0,
            names=options.columns,
            na_values=options.na_values,
            skipinitialspace=True,
            skip_blank_lines=False,
            comment=options.comment,
            encoding=options.encoding,
            dtype=str,
            keep_default_na=True,
        )
    except (pd.errors.ParserError, UnicodeError, LookupError, pd.errors.EmptyDataError) as err:
        raise DataError(
            f"cannot parse '{path}': {err}".splitlines()[0],
            hint="check the separator (data.options.sep), encoding and header",
        ) from None
    if options.columns is not None:
        _check_field_count(path, options, split)
    if options.label not in frame.columns:
        raise DataError(
            f"'{path}' has no label column '{options.label}' "
            f"(columns: {', '.join(map(str, frame.columns))})",
            hint="set data.options.label to the column holding the class",
        )
    missing = [c for c in [*options.groups, *options.drop_columns] if c not in frame.columns]
    if missing:
        raise DataError(f"'{path}' has no column(s) {', '.join(missing)}", hint="check the names")
    frame = frame.drop(columns=options.drop_columns)
    frame["__row__"] = np.arange(len(frame))
    empty = frame.drop(columns="__row__").isna().all(axis=1)
    if empty.any():
        cleaning.append(CleaningStep(split, "empty rows", int(empty.sum())))
    frame = frame.loc[~empty]
    labels = frame[options.label].str.strip(options.label_strip + " ")
    no_label = labels.isna() | (labels == "")
    if no_label.any():
        cleaning.append(CleaningStep(split, "missing label", int(no_label.sum())))
    frame = frame.loc[~no_label].assign(**{options.label: labels[~no_label]})
    if options.classes is not None:
        unknown = ~frame[options.label].isin(options.classes)
        if unknown.any():
            values = ", ".join(sorted(frame.loc[unknown, options.label].unique())[:5])
            cleaning.append(CleaningStep(split, "unknown label", int(unknown.sum()), values))
        frame = frame.loc[~unknown]
    return frame.reset_index(drop=True)


def _check_field_count(path: Path, options: CsvOptions, split: str) -> None:
    """A header-less file must have one field per name in ``columns`` (pandas would shift)."""
    skip = 1 if options.test_header and split == "test" else 0
    with path.open(encoding=options.encoding, errors="replace") as handle:
        for number, line in enumerate(handle):
            if number < skip or not line.strip():
                continue
            if options.comment and line.lstrip().startswith(options.comment):
                continue
            fields = len(line.rstrip("\r\n").split(options.sep))
            if fields != len(options.columns or []):
                raise DataError(
                    f"'{path}' has {fields} fields per row but the study names "
                    f"{len(options.columns or [])} columns ({', '.join(options.columns or [])})",
                    hint="give the file the same columns as the training data, in the same order",
                )
            return


def _check_same_columns(train: pd.DataFrame, test: pd.DataFrame, test_path: Path) -> None:
    """The test file must have the training file's columns (names, any order)."""
    missing = [c for c in train.columns if c not in test.columns]
    extra = [c for c in test.columns if c not in train.columns]
    if missing or extra:
        parts = [f"missing {', '.join(map(str, missing))}" if missing else ""]
        parts.append(f"extra {', '.join(map(str, extra))}" if extra else "")
        raise DataError(
            f"the columns of '{test_path}' differ from the training data's: "
            + "; ".join(p for p in parts if p),
            hint="give the new data the training file's columns (same names)",
        )


def check_groups(
    train: pd.DataFrame | None, test: pd.DataFrame | None, options: CsvOptions
) -> None:
    """Check group attributes: two or more values each; small test groups per ``small_groups``.

    Raises
    ------
    DataError
        A group column with a single value in the training or test rows, or (with
        ``small_groups="error"``) a group, or intersection of groups, with fewer test rows than
        ``min_group_size``.

    Examples
    --------
    >>> groups = pd.DataFrame({"sex": ["f", "m"] * 20})
    >>> check_groups(groups, groups, CsvOptions(label="y", groups=["sex"]))
    >>> check_groups(groups[groups.sex == "f"], groups, CsvOptions(label="y", groups=["sex"]))
    Traceback (most recent call last):
    ...
    polyculture.errors.DataError: group column 'sex' has a single value ('f') in the train rows; ...
    """
    if train is None or test is None:
        return
    for split, frame in (("train", train), ("test", test)):
        if len(frame) == 0:
            raise DataError(
                f"the {split} split has no rows left after loading",
                hint="see the cleaning log: labels outside data.options.classes, missing values, "
                "or duplicates removed every row",
            )
        for column in frame.columns:
            values = frame[column].unique()
            if len(values) < 2:
                raise DataError(
                    f"group column '{column}' has a single value ({values[0]!r}) in the "
                    f"{split} rows",
                    hint="a fairness audit compares groups: drop it from data.options.groups "
                    "or use data with at least two groups",
                )
    if options.small_groups != "error":
        return
    attributes = [[c] for c in test.columns]
    if len(test.columns) > 1:
        attributes.append(list(test.columns))
    for columns in attributes:
        sizes = join_groups(test[columns]).value_counts()
        small = sizes[sizes < options.min_group_size]
        if len(small):
            listed = ", ".join(f"{name!r} ({count} rows)" for name, count in small.items())
            raise DataError(
                f"group(s) of {' x '.join(columns)} with fewer than {options.min_group_size} "
                f"test rows: {listed}",
                hint="lower data.options.min_group_size, or set data.options.small_groups="
                "'report' to show small groups flagged",
            )


def _encode(
    train: pd.DataFrame, test: pd.DataFrame, options: CsvOptions
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Standardize numeric and one-hot encode categorical columns with training statistics."""
    features = [
        c
        for c in train.columns
        if c not in (options.label, "__row__")
        and (options.groups_as_features or c not in options.groups)
    ]
    if not features:
        raise DataError("the CSV has no feature columns besides the label", hint="check the file")
    train_blocks: list[np.ndarray] = []
    test_blocks: list[np.ndarray] = []
    names: list[str] = []
    for column in features:
        numeric_train = pd.to_numeric(train[column], errors="coerce")
        declared = options.categorical is not None and column in options.categorical
        non_numeric = (numeric_train.isna() & train[column].notna()).any()
        if declared or (options.categorical is None and non_numeric):
            categories = sorted(train[column].dropna().unique())
            for frame, blocks in ((train, train_blocks), (test, test_blocks)):
                values = frame[column].to_numpy()
                onehot = values[:, None] == np.array(categories, dtype=object)[None, :]
                onehot = onehot.astype(np.float32)  # (n, categories)
                onehot[pd.isna(values)] = np.nan  # missing stays visible to the NaN policy
                blocks.append(onehot)
            names += [f"{column}={category}" for category in categories]
        else:
            numeric_test = pd.to_numeric(test[column], errors="coerce")
            for split, frame, numeric in (
                ("train", train, numeric_train),
                ("test", test, numeric_test),
            ):
                bad = numeric.isna() & frame[column].notna()
                if bad.any():
                    raise DataError(
                        f"{split} column '{column}' has non-numeric values such as "
                        f"{frame.loc[bad, column].iloc[0]!r}",
                        hint="fix the value or list the column in data.options.categorical",
                    )
            train_values = numeric_train.to_numpy(np.float64)
            finite = train_values[np.isfinite(train_values)]
            mean = finite.mean() if len(finite) else 0.0
            std = finite.std() if len(finite) and finite.std() > 0 else 1.0
            train_blocks.append(((train_values - mean) / std)[:, None])
            test_blocks.append(((numeric_test.to_numpy(np.float64) - mean) / std)[:, None])
            names.append(column)
    return (
        np.concatenate(train_blocks, axis=1).astype(np.float32),
        np.concatenate(test_blocks, axis=1).astype(np.float32),
        tuple(names),
    )


@dataset(
    "csv",
    description="tabular CSV: numeric + categorical columns, a label column, optional groups",
    modality="tabular",
    options=CsvOptions,
    needs_path=True,
)
def build_csv(path: Path | None, options: CsvOptions) -> RawData:
    """Read a tabular CSV task.

    Examples
    --------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = f.write_text("a,b,y\\n" + "".join(f"{i},{'xy'[i % 2]},{i % 2}\\n" for i in range(20)))
    >>> raw = build_csv(f, CsvOptions(label="y"))
    >>> raw.x_train.shape, raw.feature_names
    ((16, 3), ('a', 'b=x', 'b=y'))
    """
    assert path is not None
    cleaning: list[CleaningStep] = []
    if path.is_dir():
        raise DataError(f"'{path}' is a folder", hint="data.path must be the CSV file itself")
    if options.test_path is not None:
        train = _read(path, options, cleaning, "train")
        test_path = Path(options.test_path).expanduser()
        test = _read(test_path, options, cleaning, "test")
        _check_same_columns(train, test, test_path)
    else:
        frame = _read(path, options, cleaning, "train")
        train_rows, test_rows = seeded_split(
            frame[options.label].to_numpy(), options.test_fraction, options.split_seed
        )
        train = frame.iloc[train_rows].reset_index(drop=True)
        test = frame.iloc[test_rows].reset_index(drop=True)
    class_names = tuple(options.classes or sorted(train[options.label].unique()))
    lookup = {name: i for i, name in enumerate(class_names)}
    # A test label missing from the lookup gets index len(classes): the common label check
    # then reports it as a class unseen in training.
    unseen_test = sorted(set(test[options.label]) - set(lookup))
    names = class_names + tuple(unseen_test)
    lookup.update({name: len(class_names) + i for i, name in enumerate(unseen_test)})
    x_train, x_test, feature_names = _encode(train, test, options)

    def groups_of(frame: pd.DataFrame) -> pd.DataFrame | None:
        if not options.groups:
            return None
        return frame[options.groups].fillna("(missing)").astype(str).reset_index(drop=True)

    check_groups(groups_of(train), groups_of(test), options)

    return RawData(
        modality="tabular",
        class_names=names,
        x_train=x_train,
        y_train=train[options.label].map(lookup).to_numpy(np.int64),
        x_test=x_test,
        y_test=test[options.label].map(lookup).to_numpy(np.int64),
        groups_train=groups_of(train),
        groups_test=groups_of(test),
        index_train=train["__row__"].to_numpy(),
        index_test=test["__row__"].to_numpy(),
        cleaning=cleaning,
        feature_names=feature_names,
    )


ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]
"""Columns of the UCI Adult files (they have no header row)."""


class AdultOptions(BaseModel):
    """Options of the ``adult`` dataset (UCI Adult, Kohavi 1996).

    Attributes
    ----------
    groups
        Sensitive attributes kept per instance (default sex and race).
    groups_as_features
        Whether the sensitive attributes are also model inputs (default yes: the models see
        them, as in most published Adult baselines; the model card states the choice).
    test_path
        Test file; default ``adult.test`` beside ``adult.data``. Re-evaluation points it at new
        data in the same format.
    test_header
        Skip the first line of the test file (``adult.test`` starts with a non-data line);
        ``None`` skips it only when it is not a data row.
    drop_columns
        Columns not used (default ``fnlwgt``, a census sampling weight, not a person's trait).
    min_group_size, small_groups
        As in the ``csv`` dataset.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    groups: list[str] = ["sex", "race"]
    groups_as_features: bool = True
    test_path: str | None = None
    test_header: bool | None = None
    drop_columns: list[str] = ["fnlwgt"]
    min_group_size: int = Field(30, ge=1)
    small_groups: Literal["report", "error"] = "report"


def _is_adult_row(path: Path) -> bool:
    """Whether the first line of ``path`` is a data row (15 comma-separated fields)."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    return len(first.split(",")) == len(ADULT_COLUMNS) and first.split(",")[0].strip().isdigit()


@dataset(
    "adult",
    description="UCI Adult census income (>50K or not) with sex and race as group attributes",
    modality="tabular",
    options=AdultOptions,
    needs_path=True,
)
def build_adult(path: Path | None, options: AdultOptions) -> RawData:
    """Read UCI Adult from its folder (``adult.data``, ``adult.test``) or from ``adult.data``.

    Missing values (``?``) become NaN (use ``data.nonfinite = "drop"``); test labels lose their
    trailing ``.``.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> rows = [f"{20 + i}, Private, 1, HS-grad, 9, Never-married, Sales, Own-child, "
    ...         f"{'White' if i % 3 else 'Black'}, {'Male' if i % 2 else 'Female'}, 0, 0, 40, "
    ...         f"United-States, {'>50K' if i % 4 == 0 else '<=50K'}" for i in range(40)]
    >>> _ = (folder / "adult.data").write_text("\\n".join(rows))
    >>> _ = (folder / "adult.test").write_text("|1x3 Cross validator\\n" + ".\\n".join(rows) + ".")
    >>> raw = build_adult(folder, AdultOptions())
    >>> raw.class_names, len(raw.y_test), list(raw.groups_test.columns)
    (('<=50K', '>50K'), 40, ['sex', 'race'])
    """
    assert path is not None
    train_path = path / "adult.data" if path.is_dir() else path
    test_path = (
        Path(options.test_path).expanduser()
        if options.test_path is not None
        else train_path.with_name("adult.test")
    )
    if not test_path.is_file():
        raise DataError(f"Adult test file '{test_path}' does not exist", hint="check the folder")
    header = (
        options.test_header if options.test_header is not None else not _is_adult_row(test_path)
    )
    csv_options = CsvOptions(
        label="income",
        test_path=str(test_path),
        columns=ADULT_COLUMNS,
        test_header=header,
        groups=options.groups,
        groups_as_features=options.groups_as_features,
        drop_columns=options.drop_columns,
        classes=["<=50K", ">50K"],
        na_values=["?"],
        label_strip=".",
        min_group_size=options.min_group_size,
        small_groups=options.small_groups,
    )
    return build_csv(train_path, csv_options)
