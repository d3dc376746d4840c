"""The fairness audit of a run directory: per-group tables written beside the other tables.

:func:`audit_fairness` reads ``tables/predictions`` (test split), ``tables/groups`` and the
members table, and for every group attribute of the task (e.g. ``sex``, ``race``) and their
intersection (``sex x race``) writes

* ``tables/fairness_groups.parquet|.csv``: one row per (member, attribute, group): ``n``,
  ``positives``, ``negatives``, ``small``, accuracy, selection rate, TPR and FPR with bootstrap
  CIs (:func:`polyculture.measure.fairness.group_metrics`); attribute ``(all)`` holds the whole
  test split;
* ``tables/fairness_disparities.parquet|.csv``: one row per (member, attribute, measure):
  demographic parity and equalized odds differences and ratios, best minus worst group accuracy,
  with CIs, plus the worst and best group;
* ``tables/fairness_systemic.parquet|.csv``: one row per (attribute, group): the share of the
  group's instances that every member fails, with CIs, against its independent-errors value;
* ``tables/fairness_homogenization.parquet|.csv``: one row per attribute: H_avg, H_unif, H_worst
  of the zoo's failures over that grouping;
* ``tables/fairness.json``: the policy (positive class, minimum group size, bootstrap settings).

Runs without group attributes are left untouched (and any stale fairness tables removed).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyculture.data.task import join_groups
from polyculture.errors import ConfigError
from polyculture.measure.fairness import group_metrics, group_systemic_failure
from polyculture.run.results import RunResults, load_run
from polyculture.run.store import write_table, write_text

SPLIT = "test"
ALL = "(all)"
"""Attribute and group name of the rows that cover the whole test split."""
DEFAULT_MIN_GROUP_SIZE = 30
FAIRNESS_TABLES = (
    "fairness_groups",
    "fairness_disparities",
    "fairness_systemic",
    "fairness_homogenization",
)


def attribute_labels(groups: pd.DataFrame) -> dict[str, np.ndarray]:
    """Group label per instance for each attribute and, with two or more, their intersection.

    Examples
    --------
    >>> frame = pd.DataFrame({"sex": ["f", "m"], "race": ["a", "b"]})
    >>> {k: v.tolist() for k, v in attribute_labels(frame).items()}
    {'sex': ['f', 'm'], 'race': ['a', 'b'], 'sex x race': ['f x a', 'm x b']}
    """
    labels = {column: groups[column].astype(str).to_numpy() for column in groups.columns}
    if len(groups.columns) > 1:
        labels[" x ".join(map(str, groups.columns))] = join_groups(groups).to_numpy()
    return labels


def _test_groups(results: RunResults) -> pd.DataFrame | None:
    path = results.store.tables_dir / "groups.parquet"
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    frame = frame[frame["split"] == SPLIT].drop(columns="split")
    return frame.set_index("instance")


def positive_class(results: RunResults, positive: str | None = None) -> tuple[int, str]:
    """Index and name of the positive decision: ``positive`` if given, else the second class.

    Raises
    ------
    ConfigError
        ``positive`` is not a class of the task.
    """
    classes = [str(c) for c in results.task.get("classes", [])]
    if positive is None:
        index = 1 if len(classes) > 1 else 0
        return index, classes[index] if classes else str(index)
    if positive not in classes:
        raise ConfigError(
            f"unknown positive class '{positive}'",
            hint=f"choose one of the task's classes: {', '.join(classes)}",
        )
    return classes.index(positive), positive


def min_group_size_of(results: RunResults) -> int:
    """The study's ``data.options.min_group_size`` (default 30)."""
    options = results.study.get("data", {}).get("options", {}) or {}
    return int(options.get("min_group_size", DEFAULT_MIN_GROUP_SIZE))


def audit_fairness(
    run_dir: str | Path | RunResults,
    *,
    positive: str | None = None,
    min_group_size: int | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Compute and write the fairness tables of a run (see the module docstring).

    Parameters
    ----------
    run_dir
        A run directory (or its loaded results).
    positive
        Name of the class that is the positive decision; default the task's second class.
    min_group_size
        Groups with fewer test instances are reported, flagged, and not compared; default the
        study's ``data.options.min_group_size`` (30 when unset).
    n_resamples, confidence, seed
        The percentile bootstrap over test instances (the same resamples for every member).

    Returns
    -------
    dict[str, pandas.DataFrame]
        The tables by name; empty when the run has no group attributes or no usable member.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from polyculture.run.audit import load_predictions, write_audit_run
    >>> folder = Path(tempfile.mkdtemp())
    >>> rows = [f"{i},{i % 2},{i % 2},{(i // 3) % 2},{'fm'[i % 3 == 0]}" for i in range(60)]
    >>> _ = (folder / "p.csv").write_text("instance,label,a,b,sex\\n" + "\\n".join(rows))
    >>> store = write_audit_run(load_predictions(folder / "p.csv", group_cols=["sex"]),
    ...                         folder / "demo")
    >>> tables = audit_fairness(folder / "demo", min_group_size=10, n_resamples=50)
    >>> sorted(tables["fairness_groups"]["group"].unique())
    ['(all)', 'f', 'm']
    """
    results = run_dir if isinstance(run_dir, RunResults) else load_run(run_dir)
    tables_dir = results.store.tables_dir
    groups = _test_groups(results)
    members = results.members[results.members["status"] == "ok"]
    if groups is None or members.empty:
        for name in FAIRNESS_TABLES:
            for suffix in (".parquet", ".csv"):
                (tables_dir / f"{name}{suffix}").unlink(missing_ok=True)
        (tables_dir / "fairness.json").unlink(missing_ok=True)
        return {}
    minimum = min_group_size if min_group_size is not None else min_group_size_of(results)
    positive_index, positive_name = positive_class(results, positive)
    predictions = results.predictions()
    predictions = predictions[predictions["split"] == SPLIT]
    ids = [str(i) for i in members["member_id"]]
    wide = predictions.pivot(index="instance", columns="member_id", values="prediction")[ids]
    labels = predictions.drop_duplicates("instance").set_index("instance")["label"]
    labels = labels.loc[wide.index].to_numpy(np.int64)  # (n,)
    predicted = wide.to_numpy(np.int64)  # (n, m)
    attributes = attribute_labels(groups.loc[wide.index])
    settings: dict[str, Any] = {
        "n_resamples": n_resamples,
        "confidence": confidence,
        "seed": seed,
    }

    group_rows: list[pd.DataFrame] = []
    disparity_rows: list[dict[str, Any]] = []
    for j, member_id in enumerate(ids):
        overall_added = False
        for attribute, values in attributes.items():
            result = group_metrics(
                labels,
                predicted[:, j],
                values,
                positive=positive_index,
                min_group_size=minimum,
                **settings,
            )
            if not overall_added:
                positives = int((labels == positive_index).sum())
                overall: dict[str, Any] = {"group": ALL, "small": False, **result.overall}
                overall["n"] = len(labels)
                overall["positives"] = positives
                overall["negatives"] = len(labels) - positives
                group_rows.append(
                    pd.DataFrame([overall]).assign(member_id=member_id, attribute=ALL)
                )
                overall_added = True
            group_rows.append(result.by_group.assign(member_id=member_id, attribute=attribute))
            accuracy = result.by_group.set_index("group")["accuracy"]
            for row in result.disparities.to_dict("records"):
                disparity_rows.append(
                    {
                        "member_id": member_id,
                        "attribute": attribute,
                        **row,
                        "groups_compared": int((~result.by_group["small"]).sum()),
                        "worst_group": result.worst_group,
                        "worst_group_accuracy": accuracy.get(result.worst_group, np.nan),
                        "best_group": result.best_group,
                        "best_group_accuracy": accuracy.get(result.best_group, np.nan),
                        "note": result.note,
                    }
                )
    by_group = pd.concat(group_rows, ignore_index=True)
    leading = ["member_id", "attribute"]
    by_group = by_group[leading + [c for c in by_group.columns if c not in leading]]

    correct = predicted == labels[:, None]  # (n, m)
    systemic_rows, homogenization_rows = [], []
    for attribute, values in attributes.items():
        table, grouped = group_systemic_failure(correct, values, min_group_size=minimum, **settings)
        systemic_rows.append(table.assign(attribute=attribute, members=len(ids)))
        compared = table[~table["small"]]
        worst = ""
        if len(compared) and compared["relative"].notna().any():
            worst = str(compared.loc[compared["relative"].idxmax(), "group"])
        homogenization_rows.append(
            {
                "attribute": attribute,
                "groups": len(table),
                "members": len(ids),
                "h_avg": grouped.h_avg,
                "h_unif": grouped.h_unif,
                "h_worst": grouped.h_worst,
                "most_concentrated_group": worst,
                "note": grouped.note,
            }
        )
    systemic = pd.concat(systemic_rows, ignore_index=True)
    systemic = systemic[["attribute", *[c for c in systemic.columns if c != "attribute"]]]
    tables = {
        "fairness_groups": by_group,
        "fairness_disparities": pd.DataFrame(disparity_rows),
        "fairness_systemic": systemic,
        "fairness_homogenization": pd.DataFrame(homogenization_rows),
    }
    for name, frame in tables.items():
        write_table(frame, tables_dir / f"{name}.parquet", csv=True)
    policy = {
        "split": SPLIT,
        "positive_class": positive_name,
        "positive_index": positive_index,
        "min_group_size": minimum,
        "attributes": list(attributes),
        "members": len(ids),
        "instances": len(labels),
        **settings,
        "small_groups": "reported with their CIs, flagged small; left out of differences, "
        "ratios and the choice of the worst group",
    }
    write_text(tables_dir / "fairness.json", json.dumps(policy, indent=2))
    return tables


def load_fairness(results: RunResults) -> dict[str, Any] | None:
    """The fairness tables and policy of a run (``None`` when it has none)."""
    tables_dir = results.store.tables_dir
    if not (tables_dir / "fairness.json").is_file():
        return None
    loaded: dict[str, Any] = {"policy": json.loads((tables_dir / "fairness.json").read_text())}
    for name in FAIRNESS_TABLES:
        path = tables_dir / f"{name}.parquet"
        if not path.is_file():
            return None
        loaded[name] = pd.read_parquet(path)
    return loaded


def fairness_after_run(run_dir: str | Path, *, seed: int = 0) -> None:
    """After a study: the fairness tables and a model card per member, when the task has groups.

    Runs without group attributes return at once (their directory is left as it is, apart from
    fairness tables a previous run with groups left behind).
    """
    root = Path(run_dir)
    if not (root / "tables" / "groups.parquet").is_file():
        if (root / "tables" / "fairness.json").is_file():
            audit_fairness(root, seed=seed)  # removes the stale tables
        return
    from polyculture.run.cards import write_cards

    try:
        import fairlearn  # noqa: F401
    except ImportError:  # the study trained fine: say what is missing instead of failing now
        warnings.warn(
            "fairness audit and model cards skipped: they need polyculture[fair] "
            "(pip install 'polyculture[fair]'), then run `polyculture cards RUN_DIR`",
            stacklevel=2,
        )
        return
    results = load_run(root)
    audit_fairness(results, seed=seed)
    write_cards(results)
