"""RunResults: a run directory loaded back as tables (from ``run_study`` and ``load_run``)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyculture.errors import RunStoreError
from polyculture.run.store import RunStore


@dataclass
class RunResults:
    """The tables of one run directory.

    Attributes
    ----------
    root
        The run directory.
    study
        The resolved study (``study.toml``) as a dict, with package versions.
    task
        Data sizes, classes, cleaning log and published references (``task.json``).
    members
        One row per member: spec fields, status, cost and ``<split>_<metric>`` columns.
    """

    root: Path
    study: dict[str, Any]
    task: dict[str, Any]
    members: pd.DataFrame

    @classmethod
    def load(cls, root: str | Path) -> RunResults:
        """Load a finished run directory.

        Raises
        ------
        RunStoreError
            When ``root`` is not a run directory or its tables are missing.
        """
        root = Path(root)
        if not (root / "study.toml").is_file():
            raise RunStoreError(
                f"'{root}' is not a run directory (no study.toml)",
                hint="pass the folder `polyculture run` wrote, e.g. runs/mnist1d",
            )
        store = RunStore(root)
        try:
            study = tomllib.loads((root / "study.toml").read_text())
            task = json.loads((root / "task.json").read_text())
        except (OSError, ValueError) as err:  # missing task.json, corrupt TOML or JSON
            raise RunStoreError(
                f"'{root}' is an incomplete run directory ({err})",
                hint="rerun the study (or the audit) that wrote it",
            ) from None
        return cls(root=root, study=study, task=task, members=store.table("members"))

    @property
    def store(self) -> RunStore:
        """The run store behind these results."""
        return RunStore(self.root)

    def predictions(self) -> pd.DataFrame:
        """One row per (member, split, instance): label, prediction, p_true, correct."""
        return self.store.table("predictions")

    def history(self) -> pd.DataFrame:
        """One row per (member, evaluated epoch)."""
        return self.store.table("history")

    def probabilities(self, member_id: str) -> dict[str, np.ndarray]:
        """Class probabilities ``(n, classes)`` of one member per evaluation split."""
        return self.store.probabilities(member_id)

    def representations(self, member_id: str) -> dict[str, np.ndarray]:
        """Probe-set representations ``(probe, d)`` of one member per layer."""
        return self.store.representations(member_id)

    def headline(self, split: str = "test") -> dict[str, Any]:
        """The homogenization headline of the run (empty when it was not analysed).

        Keys: ``systemic_ratio`` with ``systemic_ratio_ci`` (whole zoo), ``systemic_observed``
        with its CI, ``systemic_expected``, ``members``, and the mean error consistency within a
        family and across families (``error_consistency_within``/``_across``).
        """
        store = self.store
        if not (store.tables_dir / "homogenization.parquet").is_file():
            return {}
        table = store.table("homogenization")
        if table.empty:  # fewer than two usable members: nothing to compare
            return {}
        zoo = table[(table["scope"] == "zoo") & (table["split"] == split)]
        if zoo.empty:
            return {}
        row = zoo.iloc[0]
        within, across = _mean_pairwise(
            store.table("agreement"), self.members, "error_consistency", split
        )
        return {
            "split": split,
            "members": int(row["members"]),
            "systemic_observed": float(row["systemic_observed"]),
            "systemic_observed_ci": (
                float(row["systemic_observed_ci_low"]),
                float(row["systemic_observed_ci_high"]),
            ),
            "systemic_expected": float(row["systemic_expected"]),
            "systemic_ratio": float(row["systemic_ratio"]),
            "systemic_ratio_ci": (
                float(row["systemic_ratio_ci_low"]),
                float(row["systemic_ratio_ci_high"]),
            ),
            "error_consistency_within": within,
            "error_consistency_across": across,
            "note": str(row["note"]),
        }

    def summary(self, split: str = "test") -> pd.DataFrame:
        """Per model (family and knobs): mean and std over seeds of the main metrics.

        Columns: ``name``, ``family``, ``members``, ``failed``, ``accuracy_mean``, ``accuracy_std``
        (NaN for one member), ``accuracy_ci_low``/``_high`` (one member: its bootstrap CI),
        ``macro_f1_mean``, ``nll_mean``, ``ece_mean``, one ``<shifted>_accuracy_mean`` per shifted
        test set, ``n_parameters``, ``train_seconds_mean`` and ``published`` (NaN where none).
        """
        members = self.members
        references = self.task.get("reference_accuracy", {})
        shifted = sorted(
            column.removesuffix("_accuracy")
            for column in members.columns
            if column.startswith("test_")
            and column.endswith("_accuracy")
            and column != "test_accuracy"
        )
        rows = []
        for name, group in members.groupby("name", sort=False):
            ok = group[group["status"] == "ok"]
            row: dict[str, Any] = {
                "name": name,
                "family": group["family"].iloc[0],
                "members": len(group),
                "failed": int((group["status"] != "ok").sum()),
            }
            for metric in ("accuracy", "macro_f1", "nll", "ece"):
                column = f"{split}_{metric}"
                values = ok[column] if column in ok else pd.Series(dtype=float)
                row[f"{metric}_mean"] = values.mean()
                if metric == "accuracy":  # undefined (NaN) with fewer than two seeds
                    row["accuracy_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
                    # one member: its bootstrap CI over instances says how sure the number is
                    for bound in ("ci_low", "ci_high"):
                        column = f"{split}_accuracy_{bound}"
                        single = len(ok) == 1 and column in ok
                        row[f"accuracy_{bound}"] = ok[column].iloc[0] if single else np.nan
            for shift in shifted:
                row[f"{shift}_accuracy_mean"] = ok[f"{shift}_accuracy"].mean()
            row["n_parameters"] = group["n_parameters"].median()  # NaN for audited models
            row["train_seconds_mean"] = ok["train_seconds"].mean()
            row["published"] = references.get(row["family"], np.nan)
            rows.append(row)
        return pd.DataFrame(rows)


def _mean_pairwise(
    agreement: pd.DataFrame, members: pd.DataFrame, measure: str, split: str
) -> tuple[float, float]:
    """Mean of an agreement measure over pairs within one family and over pairs across families."""
    rows = agreement[(agreement["measure"] == measure) & (agreement["split"] == split)]
    rows = rows[rows["member_a"] != rows["member_b"]]
    family = members.set_index("member_id")["family"]
    same = rows["member_a"].map(family).to_numpy() == rows["member_b"].map(family).to_numpy()
    return float(rows.loc[same, "value"].mean()), float(rows.loc[~same, "value"].mean())


def load_run(root: str | Path) -> RunResults:
    """Load a run directory written by ``polyculture run``.

    Examples
    --------
    >>> load_run("/nonexistent")
    Traceback (most recent call last):
    ...
    polyculture.errors.RunStoreError: '/nonexistent' is not a run directory (no study.toml); ...
    """
    return RunResults.load(root)
