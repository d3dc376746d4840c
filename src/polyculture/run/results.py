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
        return cls(
            root=root,
            study=tomllib.loads((root / "study.toml").read_text()),
            task=json.loads((root / "task.json").read_text()),
            members=store.table("members"),
        )

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

    def summary(self, split: str = "test") -> pd.DataFrame:
        """Per model (family and knobs): mean and std over seeds of the main metrics.

        Columns: ``name``, ``family``, ``members``, ``failed``, ``accuracy_mean``, ``accuracy_std``,
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
            for shift in shifted:
                row[f"{shift}_accuracy_mean"] = ok[f"{shift}_accuracy"].mean()
            row["n_parameters"] = group["n_parameters"].median()  # NaN for audited models
            row["train_seconds_mean"] = ok["train_seconds"].mean()
            row["published"] = references.get(row["family"], np.nan)
            rows.append(row)
        return pd.DataFrame(rows)


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
