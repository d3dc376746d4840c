"""Scheduled re-evaluation: score every member of a run on new data, test drift and degradation.

:func:`reevaluate` rebuilds the run's task with the new file as its test data (the study's data
spec with ``options.test_path`` set to it, so the new rows are encoded with the training
statistics of the run), scores every member on it with
:func:`polyculture.run.predictor.load_predictor`, and writes
``RUN_DIR/reevaluations/<name>/``:

* ``performance.parquet|.csv``: per member the accuracy on the run's test split and on the new
  data with bootstrap CIs, the change with a Wald CI, the one-sided test of a drop larger than
  ``tolerance`` (z-test of two independent proportions), its Holm-adjusted p-value over the
  members, and ``flagged``;
* ``drift.parquet|.csv``: per input feature (tabular and sequence tasks) or per principal
  direction of the first member's final representation (images, text): PSI and the
  Kolmogorov-Smirnov test of the new data against the training data
  (:func:`polyculture.measure.drift.feature_drift`);
* ``retrained.parquet|.csv`` (with ``retrain``): each flagged member trained again on the old
  training data plus half of the new data, compared with the old member on the other half
  (McNemar's test and a paired bootstrap CI); the new members are stored under ``members/``;
* ``summary.json``: the alert, the verdict sentence and the rule.

The alert rule: a member is flagged when its accuracy dropped by more than ``tolerance`` with a
Holm-adjusted one-sided p-value below ``alpha``; the alert fires when any member is flagged.
Drift alone is reported but does not fire the alert (inputs may move without hurting
predictions); it explains a degradation when there is one.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from polyculture.data.builders import DATASETS, DataSpec, build_task, seeded_split
from polyculture.data.task import Split, Task
from polyculture.errors import ConfigError, DataError
from polyculture.measure.drift import feature_drift, holm, principal_components
from polyculture.measure.paired import mcnemar, paired_bootstrap
from polyculture.measure.statistics import bootstrap_mean_ci
from polyculture.run.results import RunResults, load_run
from polyculture.run.store import RunStore, write_table, write_text

REEVALUATIONS_DIR = "reevaluations"
DRIFT_SAMPLE = 5000
"""Most training rows (seeded sample) compared with the new data for drift."""


@dataclass
class Reevaluation:
    """What :func:`reevaluate` found and wrote.

    Attributes
    ----------
    folder
        ``RUN_DIR/reevaluations/<name>``.
    performance
        One row per member (see the module docstring).
    drift
        One row per feature or representation direction.
    retrained
        One row per retrained member, or ``None`` without ``retrain``.
    alert
        Whether any member degraded significantly (the CLI then exits with code 3).
    summary
        The content of ``summary.json``.
    """

    folder: Path
    performance: pd.DataFrame
    drift: pd.DataFrame
    retrained: pd.DataFrame | None
    alert: bool
    summary: dict[str, Any]


def new_data_task(results: RunResults, data: str | Path) -> Task:
    """The run's task with ``data`` as its test split (encoded with the run's training data).

    Raises
    ------
    ConfigError
        The run is an audit, or its dataset cannot read a separate test file.
    DataError
        ``data`` is missing, or its columns differ from the training data's.
    """
    spec = results.study.get("data")
    if results.study.get("kind") == "audit" or not spec:
        raise ConfigError(
            f"'{results.root}' is an audit of stored predictions: there are no members to score",
            hint="re-evaluate a run written by `polyculture run`",
        )
    path = Path(data).expanduser()
    if not path.is_file():
        raise DataError(f"new data file '{path}' does not exist", hint="pass --data FILE")
    builder = DATASETS.get(str(spec["name"]))
    if "test_path" not in builder.options.model_fields:
        raise ConfigError(
            f"dataset '{spec['name']}' cannot read new data from a file",
            hint="re-evaluation works for datasets with a test_path option (csv, adult, text_csv)",
        )
    options = dict(spec.get("options") or {})
    if options.get("test_path") is None and "test_fraction" in builder.options.model_fields:
        # The run held out test_fraction of one file: pointing test_path at the new data would
        # make the whole file the training split (other statistics, vocabulary, refits).
        raise ConfigError(
            "the run's test split was held out of one file (data.options.test_fraction), so "
            "its training split cannot be rebuilt beside new data",
            hint="re-evaluate runs whose study reads a separate test file "
            "(data.options.test_path), or rerun the study with one",
        )
    options["test_path"] = str(path.resolve())
    # New data may hold one group only (this month's applicants from one region): group
    # attributes are not needed to score members, so their checks are turned off by not keeping
    # them; columns that were no model input stay out of the features.
    validated = builder.options.model_validate(options)
    groups = list(getattr(validated, "groups", []) or [])
    if groups:
        options["groups"] = []
        if not getattr(validated, "groups_as_features", True):
            options["drop_columns"] = [*getattr(validated, "drop_columns", []), *groups]
    return build_task(DataSpec.model_validate({**spec, "options": options}))


def _drift(results: RunResults, task: Task, members: list[str], seed: int) -> pd.DataFrame:
    """Drift of the new test inputs against (a sample of) the training inputs."""
    rng = np.random.default_rng(seed)
    train = task.train
    if len(train) > DRIFT_SAMPLE:
        rows = np.sort(rng.choice(len(train), DRIFT_SAMPLE, replace=False))
        train = train.subset(torch.from_numpy(rows))
    if task.modality in ("tabular", "sequence"):
        names = list(task.feature_names) or None
        reference = train.x.reshape(len(train), -1).numpy()  # (n, d)
        current = task.test.x.reshape(len(task.test), -1).numpy()  # (m, d)
        if names is None or len(names) != reference.shape[1]:
            names = [f"x{j}" for j in range(reference.shape[1])]
        return feature_drift(reference, current, names)
    from polyculture.run.predictor import load_predictor

    predictor = load_predictor(results, members[0], task=task)
    reference, current = principal_components(
        predictor.represent(train), predictor.represent(task.test), k=10
    )
    names = [f"{predictor.name} representation pc{j + 1}" for j in range(reference.shape[1])]
    return feature_drift(reference, current, names)


def _old_correct(results: RunResults, member_id: str) -> np.ndarray:
    predictions = results.predictions()
    rows = predictions[(predictions["member_id"] == member_id) & (predictions["split"] == "test")]
    return rows["correct"].to_numpy(bool)


def _change_test(
    old: np.ndarray, new: np.ndarray, tolerance: float, confidence: float
) -> dict[str, float]:
    """Accuracy change (new - old) with a Wald CI and the one-sided test of a drop > tolerance."""
    from scipy.stats import norm

    p_old, p_new = float(old.mean()), float(new.mean())
    se = float(np.sqrt(p_old * (1 - p_old) / len(old) + p_new * (1 - p_new) / len(new)))
    z_crit = float(norm.ppf(0.5 + confidence / 2))
    drop = p_old - p_new
    if se > 0:
        p_value = float(norm.sf((drop - tolerance) / se))
    else:  # both perfect (or both always wrong): a drop is certain or impossible
        p_value = 0.0 if drop > tolerance else 1.0
    change = p_new - p_old
    return {
        "change": change,
        "change_ci_low": change - z_crit * se,
        "change_ci_high": change + z_crit * se,
        "p_value": p_value,
    }


def reevaluate(
    run_dir: str | Path | RunResults,
    data: str | Path,
    *,
    alpha: float = 0.05,
    tolerance: float = 0.01,
    retrain: bool = False,
    name: str | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Reevaluation:
    """Score every member of a run on new data; test drift and degradation; optionally retrain.

    Parameters
    ----------
    run_dir
        A run directory written by ``polyculture run``.
    data
        New labelled data in the format of the study's test file (same columns).
    alpha
        Family-wise level of the degradation tests (Holm over members).
    tolerance
        Accuracy drop (absolute, e.g. 0.01 = one point) tolerated before a member counts as
        degraded: the test is of ``old - new > tolerance``.
    retrain
        Train every flagged member again on the old training data plus half of the new data
        (seeded, stratified), and compare it with the old member on the other half.
    name
        Folder name under ``RUN_DIR/reevaluations/`` (default: the UTC time,
        ``YYYYmmddTHHMMSSZ``).
    n_resamples, confidence, seed
        Bootstrap CIs of the accuracies; seed of the drift sample and of the retraining split.

    Returns
    -------
    Reevaluation
        The tables, the alert and the summary (also written to disk).

    Raises
    ------
    ConfigError
        Bad ``alpha`` / ``tolerance`` / ``name``, an audit run, a dataset without new-data
        support, a run without members that trained.
    DataError
        Missing new data, or columns that differ from the training data's (named).
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha {alpha} is outside (0, 1)", hint="use e.g. 0.05")
    if not 0 <= tolerance < 1:
        raise ConfigError(f"--tolerance {tolerance} is outside [0, 1)", hint="use e.g. 0.01")
    if name is not None and (not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", "..")):
        raise ConfigError(
            f"re-evaluation name {name!r} is not a plain folder name",
            hint="use letters, digits, '_', '-' and '.'",
        )
    results = run_dir if isinstance(run_dir, RunResults) else load_run(run_dir)
    members = results.members[results.members["status"] == "ok"]
    if members.empty:
        raise ConfigError("the run has no member that trained", hint="rerun the study first")
    task = new_data_task(results, data)

    from polyculture.run.predictor import load_predictor

    rows = []
    new_correct: dict[str, np.ndarray] = {}
    y = task.test.y.numpy()
    for member_id in members["member_id"].astype(str):
        predictor = load_predictor(results, member_id, task=task)
        proba = predictor.predict_proba(task.test)  # (m, classes)
        correct = proba.argmax(axis=1) == y
        new_correct[member_id] = correct
        old = _old_correct(results, member_id)
        old_ci = bootstrap_mean_ci(old.astype(float), n_resamples, confidence, seed)
        new_ci = bootstrap_mean_ci(correct.astype(float), n_resamples, confidence, seed)
        rows.append(
            {
                "member_id": member_id,
                "name": predictor.name,
                "seed": predictor.seed,
                "old_instances": len(old),
                "old_accuracy": float(old.mean()),
                "old_ci_low": old_ci[0],
                "old_ci_high": old_ci[1],
                "new_instances": len(correct),
                "new_accuracy": float(correct.mean()),
                "new_ci_low": new_ci[0],
                "new_ci_high": new_ci[1],
                **_change_test(old, correct, tolerance, confidence),
            }
        )
    performance = pd.DataFrame(rows)
    performance["p_holm"] = holm(performance["p_value"].to_numpy())
    performance["flagged"] = performance["p_holm"] < alpha
    drift = _drift(results, task, list(new_correct), seed)

    stamp = name or datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = results.root / REEVALUATIONS_DIR / stamp
    write_table(performance, folder / "performance.parquet", csv=True)
    write_table(drift, folder / "drift.parquet", csv=True)
    retrained = None
    flagged_ids = performance.loc[performance["flagged"], "member_id"].tolist()
    if retrain and flagged_ids:
        retrained = _retrain(results, task, flagged_ids, new_correct, folder, seed, n_resamples)
        write_table(retrained, folder / "retrained.parquet", csv=True)
    else:
        for suffix in (".parquet", ".csv"):
            (folder / f"retrained{suffix}").unlink(missing_ok=True)

    alert = bool(len(flagged_ids))
    drifted = drift.loc[drift["drifted"], "feature"].astype(str).tolist()
    summary = {
        "name": stamp,
        "data_name": Path(data).name,
        "instances": len(y),
        "alpha": alpha,
        "tolerance": tolerance,
        "alert": alert,
        "flagged": [
            f"{n} seed {s}"
            for n, s in zip(
                performance.loc[performance["flagged"], "name"],
                performance.loc[performance["flagged"], "seed"],
                strict=True,
            )
        ],
        "drifted_features": drifted,
        "rule": (
            f"alert when a member's accuracy dropped by more than {tolerance:g} with a one-sided "
            f"Holm-adjusted p < {alpha:g} over {len(performance)} members; drift: PSI >= 0.25, "
            "or a Holm-significant KS test with PSI >= 0.1"
        ),
        "verdict": _verdict(performance, drifted, alert),
        "retrained": retrained is not None,
    }
    write_text(folder / "summary.json", json.dumps(summary, indent=2))
    return Reevaluation(folder, performance, drift, retrained, alert, summary)


def _verdict(performance: pd.DataFrame, drifted: list[str], alert: bool) -> str:
    shown = ", ".join(drifted[:5]) + (f" and {len(drifted) - 5} more" if len(drifted) > 5 else "")
    drift_text = f"inputs drifted: {shown}" if drifted else "no input drifted"
    if alert:
        worst = performance.sort_values("change").iloc[0]
        return (
            f"ALERT: {int(performance['flagged'].sum())} of {len(performance)} member(s) "
            f"degraded significantly (largest drop: {worst['name']} seed {worst['seed']}, "
            f"{100 * worst['old_accuracy']:.1f}% -> {100 * worst['new_accuracy']:.1f}%); "
            f"{drift_text}. Retrain or replace the flagged members."
        )
    return f"No member degraded significantly on the new data; {drift_text}."


def _retrain(
    results: RunResults,
    task: Task,
    member_ids: list[str],
    new_correct: dict[str, np.ndarray],
    folder: Path,
    seed: int,
    n_resamples: int,
) -> pd.DataFrame:
    """Train flagged members on old + half the new data; compare on the other half."""
    from polyculture.train.member import train_member
    from polyculture.train.spec import TrainSpec
    from polyculture.zoo.base import ModelSpec

    fit_rows, held_rows = seeded_split(task.test.y.numpy(), 0.5, seed)
    new_part = task.test.subset(torch.from_numpy(fit_rows))
    held = task.test.subset(torch.from_numpy(held_rows))
    train = _concat(task.train, new_part)
    combined = Task(
        name=task.name,
        modality=task.modality,
        class_names=task.class_names,
        train=train,
        val=task.val,
        test=held,
        feature_names=task.feature_names,
        vocabulary=task.vocabulary,
    )
    store = RunStore(folder)
    rows = []
    for member_id in member_ids:
        record = results.store.member_record(member_id)
        row: dict[str, Any] = {"member_id": member_id, "name": record["name"]}
        if record.get("backbone"):
            rows.append(row | {"status": "skipped", "reason": "members on a backbone"})
            continue
        params = record["params"]
        if isinstance(params, str):
            params = json.loads(params)
        spec = ModelSpec(family=record["family"], params=params)
        train_spec = TrainSpec.model_validate(record["train"] or {})
        result = train_member(combined, spec, train_spec, int(record["seed"]), device="cpu")
        new_id = f"{member_id}-retrained"
        store.write_member(
            new_id,
            {
                # What the member is (its spec) comes from the old record; what happened now
                # (data, time, size) from this training.
                **{k: record.get(k) for k in ("name", "family", "params", "kind", "seed", "train")},
                "member_id": new_id,
                "retrained_from": member_id,
                "status": result.status,
                "reason": result.reason,
                "train_rows": result.train_rows,
                "train_seconds": result.train_seconds,
                "steps": result.steps,
                "n_parameters": result.n_parameters,
                "held_out_new_rows": len(held_rows),
            },
            probabilities=result.probabilities,
            representations={},
            weights=result.weights,
            history=result.history,
            error_detail=result.error_detail,
        )
        if result.status != "ok":
            rows.append(row | {"status": "failed", "reason": result.reason})
            continue
        y = held.y.numpy()
        retrained_correct = result.probabilities["test"].argmax(axis=1) == y
        old_correct = new_correct[member_id][held_rows]
        paired = paired_bootstrap(
            retrained_correct, old_correct, n_resamples=n_resamples, seed=seed
        )
        rows.append(
            row
            | {
                "status": "ok",
                "reason": "",
                "retrained_id": new_id,
                "instances": len(y),
                "old_accuracy": float(old_correct.mean()),
                "retrained_accuracy": float(retrained_correct.mean()),
                "difference": paired.difference,
                "difference_ci_low": paired.ci_low,
                "difference_ci_high": paired.ci_high,
                "mcnemar_p": mcnemar(retrained_correct, old_correct).p_value,
            }
        )
    return pd.DataFrame(rows)


def _concat(first: Split, second: Split) -> Split:
    """Two splits as one (ids of the second offset past the first's, so they stay unique)."""
    groups = None
    if first.groups is not None and second.groups is not None:
        groups = pd.concat([first.groups, second.groups], ignore_index=True)
    texts = None
    if first.texts is not None and second.texts is not None:
        texts = first.texts + second.texts
    offset = int(first.instance_ids().max()) + 1 if len(first) else 0
    return Split(
        torch.cat([first.x, second.x]),
        torch.cat([first.y, second.y]),
        groups,
        torch.cat([first.instance_ids(), second.instance_ids() + offset]),
        texts,
    )
