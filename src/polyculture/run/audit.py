"""Audit predictions that come from anywhere: load them, check them, write a run directory.

An auditor often holds only the outputs of deployed systems. :func:`load_predictions` reads a CSV
or Parquet file in one of two layouts and :func:`write_audit_run` writes the same run directory a
trained zoo gets (``study.toml``, ``task.json``, ``tables/members``, ``tables/predictions``,
``tables/groups``), so the measures and ``polyculture show`` work on it unchanged.

Long layout, one row per (instance, model)::

    instance,model,prediction,label[,probability][,group columns...]

Wide layout, one row per instance and one column of predictions per model::

    instance,label,model_a,model_b,...[,group columns...]

``probability`` (optional) is the model's confidence in its prediction, in [0, 1].
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w

from polyculture.errors import ConfigError, DataError
from polyculture.measure.performance import classification_metrics
from polyculture.run.store import (
    RunStore,
    package_versions,
    prediction_frame,
    write_optional_table,
    write_table,
    write_text,
)
from polyculture.zoo.base import stable_hash


@dataclass
class AuditData:
    """Predictions of several models on the same instances, as aligned arrays.

    Attributes
    ----------
    instances
        Instance ids, ``(n,)`` (strings).
    models
        Model names, ``(m,)``.
    classes
        Class names; labels and predictions index this list.
    labels
        True class indices ``(n,)``.
    predictions
        Predicted class indices ``(n, m)``.
    confidence
        Confidence of each prediction ``(n, m)`` in [0, 1], or ``None``.
    groups
        Group attributes per instance (one column each), or ``None``.
    dropped
        Instances dropped by ``intersect`` (not predicted by every model).
    """

    instances: np.ndarray
    models: list[str]
    classes: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    confidence: np.ndarray | None = None
    groups: pd.DataFrame | None = None
    dropped: int = 0
    source: str = ""
    notes: list[str] = field(default_factory=list)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"predictions file '{path}' does not exist", hint="check the path")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            # Same treatment as CSV cells: text, with missing values as empty strings.
            frame = pd.read_parquet(path).astype("string").fillna("").astype(str)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"'{path}' is empty", hint="export the predictions with a header row"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        raise DataError(
            f"cannot read '{path}': {str(err).splitlines()[0]}",
            hint="give a CSV with a header row, or a Parquet file",
        ) from None
    if frame.empty:
        raise DataError(f"'{path}' has a header but no rows", hint="the file holds no predictions")
    return frame


def _require(frame: pd.DataFrame, columns: list[str], path: Path, layout: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"'{path}' ({layout} layout) lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, frame.columns))}",
            hint="rename the columns or pass --instance-col/--label-col/--model-col/"
            "--prediction-col",
        )


def load_predictions(
    path: str | Path,
    *,
    instance_col: str = "instance",
    label_col: str = "label",
    model_col: str = "model",
    prediction_col: str = "prediction",
    probability_col: str = "probability",
    group_cols: list[str] = (),  # type: ignore[assignment]
    intersect: bool = False,
) -> AuditData:
    """Read and check a predictions file (long or wide layout, detected from the columns).

    Parameters
    ----------
    path
        CSV or Parquet file.
    instance_col, label_col, model_col, prediction_col, probability_col
        Column names (long layout: all; wide layout: instance and label, every other column that
        is not a group column is a model).
    group_cols
        Columns with group attributes (constant per instance).
    intersect
        Keep only the instances every model predicted (and count the dropped ones) instead of
        failing when the models' instance sets differ.

    Raises
    ------
    DataError
        Missing columns, an empty file, an instance whose label differs between models, duplicate
        (instance, model) rows, instance sets that differ (without ``intersect``), or a
        probability that is not a number in [0, 1].

    Examples
    --------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "p.csv"
    >>> _ = f.write_text("instance,label,a,b\\n1,x,x,y\\n2,y,y,y\\n")
    >>> data = load_predictions(f)
    >>> data.models, data.predictions.tolist()
    (['a', 'b'], [[0, 1], [1, 1]])
    """
    path = Path(path)
    frame = _read_table(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    group_cols = list(group_cols)
    long = model_col in frame.columns and prediction_col in frame.columns
    if long:
        _require(
            frame, [instance_col, model_col, prediction_col, label_col, *group_cols], path, "long"
        )
    else:
        _require(frame, [instance_col, label_col, *group_cols], path, "wide")
        models = [c for c in frame.columns if c not in (instance_col, label_col, *group_cols)]
        if not models:
            raise DataError(
                f"'{path}' has no model columns",
                hint="wide layout: instance, label, then one column of predictions per model; "
                f"long layout needs '{model_col}' and '{prediction_col}' columns",
            )
        frame = frame.melt(
            id_vars=[instance_col, label_col, *group_cols],
            value_vars=models,
            var_name=model_col,
            value_name=prediction_col,
        )
    for column in (instance_col, model_col, prediction_col, label_col):
        frame[column] = frame[column].astype(str).str.strip()
    empty = frame[[instance_col, model_col, prediction_col, label_col]].eq("").any(axis=1)
    if empty.any():
        first = frame.loc[empty].iloc[0]
        raise DataError(
            f"'{path}' has {int(empty.sum())} empty instance, model, prediction or label cell(s) "
            f"(first: instance {first[instance_col]!r}, model {first[model_col]!r})",
            hint="fill in or remove those rows",
        )
    duplicated = frame.duplicated([instance_col, model_col])
    if duplicated.any():
        first = frame.loc[duplicated].iloc[0]
        raise DataError(
            f"'{path}' has {int(duplicated.sum())} duplicate (instance, model) row(s), e.g. "
            f"instance {first[instance_col]!r} of model {first[model_col]!r}",
            hint="keep one prediction per instance and model",
        )
    labels_per_instance = frame.groupby(instance_col)[label_col].nunique()
    conflicting = labels_per_instance[labels_per_instance > 1]
    if len(conflicting):
        instance = conflicting.index[0]
        seen = sorted(frame.loc[frame[instance_col] == instance, label_col].unique())
        raise DataError(
            f"instance {instance!r} has different labels for different models ({', '.join(seen)})"
            f"; {len(conflicting)} instance(s) are affected",
            hint="every model must be scored against the same true label",
        )

    for column in group_cols:
        varying = frame.groupby(instance_col)[column].nunique()
        if (varying > 1).any():
            raise DataError(
                f"group column '{column}' differs between rows of instance "
                f"{varying[varying > 1].index[0]!r}",
                hint="a group attribute belongs to the instance: give it one value per instance",
            )
    model_names = list(dict.fromkeys(frame[model_col]))
    per_model = frame.groupby(model_col)[instance_col].apply(set)
    common = set.intersection(*per_model.values)
    everything = set.union(*per_model.values)
    dropped = len(everything) - len(common)
    if dropped and not intersect:
        smallest = per_model.map(len).idxmin()
        raise DataError(
            f"the models predicted different instance sets: {dropped} of {len(everything)} "
            f"instances are missing for some model "
            f"(e.g. '{smallest}' has {len(per_model[smallest])})",
            hint="pass --intersect to keep the instances every model predicted",
        )
    if not common:
        raise DataError("no instance was predicted by every model", hint="check the instance ids")
    frame = frame[frame[instance_col].isin(common)]

    instances = np.array(sorted(common, key=_natural_key))
    classes = sorted(set(frame[label_col]) | set(frame[prediction_col]), key=_natural_key)
    lookup = {name: i for i, name in enumerate(classes)}
    wide = frame.pivot(index=instance_col, columns=model_col, values=prediction_col)
    wide = wide.loc[instances, model_names]
    predictions = wide.map(lookup.__getitem__).to_numpy(np.int64)  # (n, m)
    first_rows = frame.drop_duplicates(instance_col).set_index(instance_col).loc[instances]
    labels = first_rows[label_col].map(lookup).to_numpy(np.int64)  # (n,)

    confidence = None
    if long and probability_col in frame.columns:
        values = pd.to_numeric(frame[probability_col], errors="coerce")
        bad = values.isna() | (values < 0) | (values > 1)
        if bad.any():
            example = frame.loc[bad, probability_col].iloc[0]
            raise DataError(
                f"column '{probability_col}' has {int(bad.sum())} value(s) that are not numbers in "
                f"[0, 1], e.g. {example!r}",
                hint="write each model's confidence in its prediction as a number from 0 to 1",
            )
        confidence = (
            frame.assign(**{probability_col: values})
            .pivot(index=instance_col, columns=model_col, values=probability_col)
            .loc[instances, model_names]
            .to_numpy(np.float64)
        )
    groups = None
    if group_cols:
        groups = first_rows[group_cols].astype(str).reset_index(drop=True)
    return AuditData(
        instances=instances,
        models=model_names,
        classes=[str(c) for c in classes],
        labels=labels,
        predictions=predictions,
        confidence=confidence,
        groups=groups,
        dropped=dropped,
        source=str(path),
    )


def _natural_key(value: str) -> tuple[int, float | str]:
    """Sort numbers numerically and before text."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def check_run_name(name: str) -> str:
    """A run directory name must be one plain folder name (no path separators, no leading dot).

    Examples
    --------
    >>> check_run_name("vendors-2026")
    'vendors-2026'
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(
            f"run name '{name}' is not a plain folder name",
            hint="use letters, digits, '_', '-' and '.', e.g. --name vendors",
        )
    return name


def audit_member_id(model: str) -> str:
    """The member id of an audited model (a hash of its name)."""
    return stable_hash({"audit_model": model})


def run_audit(
    path: str | Path, out: str | Path = "runs", name: str | None = None, **options: Any
) -> RunStore:
    """Load a predictions file, write its run directory, measure it and build its report.

    The Python API of ``polyculture audit``; ``options`` go to :func:`load_predictions`.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "p.csv").write_text("instance,label,a,b\\n1,x,x,y\\n2,y,y,y\\n3,x,x,x\\n")
    >>> store = run_audit(folder / "p.csv", folder / "runs")
    >>> sorted(p.name for p in store.root.iterdir())[:3]
    ['report.html', 'report_tables', 'study.toml']
    """
    from polyculture.report import build_report  # the report stage reads run directories
    from polyculture.run.analyze import analyze_run

    path = Path(path)
    data = load_predictions(path, **options)
    store = write_audit_run(data, Path(out) / check_run_name(name or path.stem))
    analyze_run(store)
    build_report(store.root)
    return store


LABEL_METRICS = ("accuracy", "macro_f1")
"""Metrics of hard predictions (with their CIs); NLL, Brier and ECE need probabilities."""


def write_audit_run(data: AuditData, root: Path, *, seed: int = 0) -> RunStore:
    """Write ``data`` as a run directory at ``root`` (tables only; no weights or representations).

    Every model becomes a member of kind ``external``; the instances form the ``test`` split.
    """
    store = RunStore(root)
    n = len(data.labels)
    study = {
        "name": root.name,
        "kind": "audit",
        "source": data.source,
        "seeds": [],
        "versions": package_versions(),
    }
    write_text(store.root / "study.toml", tomli_w.dumps(study))
    task = {
        "name": "audit",
        "modality": "predictions",
        "classes": data.classes,
        "sizes": {"test": n},
        "group_attributes": [] if data.groups is None else list(data.groups.columns),
        "cleaning": (
            [{"split": "test", "step": "instances not predicted by every model",
              "removed": data.dropped, "detail": "--intersect"}]
            if data.dropped else []
        ),
        "reference_accuracy": {},
        "reference_source": "",
    }  # fmt: skip
    write_text(store.root / "task.json", json.dumps(task, indent=2))
    members, predictions = [], []
    for j, model in enumerate(data.models):
        member_id = audit_member_id(model)
        predicted = data.predictions[:, j]
        correct = predicted == data.labels
        onehot = np.eye(len(data.classes))[predicted]  # (n, classes): hard predictions
        # Only the label-based metrics: NLL, Brier and ECE mean nothing for hard predictions.
        metrics = classification_metrics(data.labels, onehot, seed=seed)
        members.append({
            "member_id": member_id, "name": model, "family": "external", "kind": "external",
            "seed": -1, "status": "ok", "reason": "", "n_parameters": np.nan,
            "train_seconds": np.nan,
            **{f"test_{k}": v for k, v in metrics.items() if k.startswith(LABEL_METRICS)},
        })  # fmt: skip
        p_true = correct.astype(float)
        if data.confidence is not None:  # confidence is for the predicted class
            p_true = np.where(correct, data.confidence[:, j], np.nan)
        predictions.append(
            prediction_frame(member_id, "test", data.instances, data.labels, predicted, p_true)
        )
    write_table(pd.DataFrame(members), store.tables_dir / "members.parquet", csv=True)
    write_table(pd.concat(predictions, ignore_index=True), store.tables_dir / "predictions.parquet")
    groups = None
    if data.groups is not None:
        groups = data.groups.assign(split="test", instance=data.instances)
    write_optional_table(groups, store.tables_dir / "groups.parquet")
    return store
