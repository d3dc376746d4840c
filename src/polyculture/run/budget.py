"""Compute-budget allocation on a study: successive halving against uniform allocation.

:func:`run_budget` takes a study's models as the candidates (one per zoo entry and grid point,
with the entry's own training overrides; its seeds and shards are averaged), spends a budget on
them by successive halving (:func:`polyculture.select.budget.successive_halving`) and, for
comparison, by uniform allocation, and writes everything into one run directory,
``OUT/<study>-budget/``:

* every member trained, as in any run directory (``members/``, ``tables/members.parquet``,
  ``report.html``). A candidate trained for ``r`` epochs is the study's zoo entry with
  ``train.epochs = r``, named ``"<model> (r epochs)"``; it is trained from scratch, cached by its
  member id and reused by a rerun, by the other allocation and by a later rung that asks for the
  same epochs (its cost is charged once per allocation);
* ``tables/budget.parquet`` (and ``.csv``): one row per (allocation, rung, candidate);
* ``tables/budget.json``: the settings and each allocation's winner and spending.

Training goes through :func:`polyculture.run.runner.run_study` (one call per rung, then one over
every member to assemble the tables and the report), so members are resumable and run on the
study's workers. Budget runs skip the PGD robustness check (``evaluate.robust_epsilon = 0``):
nothing here chooses by it and its time would be charged as training seconds; ``--set
evaluate.robust_epsilon=...`` turns it back on.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from polyculture.errors import ConfigError
from polyculture.run.runner import run_study
from polyculture.run.store import write_table, write_text
from polyculture.run.study import Study, ZooEntry, expand, load_study, resolved_train
from polyculture.select.budget import (
    Allocation,
    Outcome,
    Unit,
    check_settings,
    successive_halving,
    uniform_allocation,
    uniform_epochs,
    uniform_epochs_for_seconds,
)
from polyculture.zoo.base import FAMILIES

__all__ = ["BUDGET_COLUMNS", "BudgetResult", "Candidate", "budget_candidates", "run_budget"]

BUDGET_COLUMNS = [
    "allocation",
    "rung",
    "candidate",
    "kind",
    "epochs",
    "members",
    "val_accuracy",
    "test_accuracy",
    "cost_epochs",
    "cost_seconds",
    "train_examples",
    "charged",
    "kept",
    "winner",
    "model",
    "member_ids",
]
"""Columns of ``tables/budget.parquet``; the cost columns are 0 where ``charged`` is False."""

UniformSpec = Literal["budget", "study"] | int | Mapping[str, int]


@dataclass(frozen=True)
class Candidate:
    """One model of a study competing for the budget.

    Attributes
    ----------
    label
        The model's display name in the study (e.g. ``cnn(depth=3,width=32)``).
    entry
        A zoo entry without a grid that makes exactly this model (its grid point folded in).
    fixed
        True for scikit-learn families: they have no epochs and are fitted once.
    epochs
        The epochs the study itself trains it for (0 when fixed).
    """

    label: str
    entry: ZooEntry
    fixed: bool
    epochs: int

    def model_name(self, epochs: int) -> str:
        """Its name in the budget run directory when trained for ``epochs``."""
        if self.fixed:
            return self.label
        return f"{self.label} ({epochs} epoch{'' if epochs == 1 else 's'})"


def budget_candidates(study: Study) -> list[Candidate]:
    """The study's models as budget candidates: one per zoo entry and grid point.

    Raises
    ------
    ConfigError
        When an entry sweeps ``train.epochs`` or sets ``max_steps`` (the allocation decides how
        long each candidate trains).

    Examples
    --------
    >>> [c.label for c in budget_candidates(load_study("mnist1d"))][:3]
    ['linear', 'mlp(depth=2,dropout=0.2,width=256)', 'cnn(depth=3,width=32)']
    """
    plain = study.model_copy(update={"ecosystems": [], "sweeps": []})
    candidates: list[Candidate] = []
    for entry in study.zoo:
        if "train.epochs" in entry.grid:
            raise ConfigError(
                f"zoo '{entry.entry_name}' sweeps train.epochs; budget allocation decides the "
                "epochs of every candidate",
                hint="remove train.epochs from the entry's grid",
            )
        fixed = FAMILIES.get(entry.family).kind != "torch"
        keys = list(entry.grid)
        for values in itertools.product(*(entry.grid[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            single = entry.model_copy(update={"grid": {k: [v] for k, v in point.items()}})
            label = expand(plain.model_copy(update={"zoo": [single]}))[0].label
            folded = _fold_grid_point(entry, point)
            train = resolved_train(study, folded)
            if train.max_steps is not None and not fixed:
                raise ConfigError(
                    f"zoo '{entry.entry_name}' sets max_steps, which would cut the epochs the "
                    "budget gives it",
                    hint="remove max_steps from the study's [train] or the entry's train",
                )
            candidates.append(Candidate(label, folded, fixed, 0 if fixed else train.epochs))
    return candidates


def _fold_grid_point(entry: ZooEntry, point: dict[str, Any]) -> ZooEntry:
    """The entry with one grid point folded into its knobs, training and data fraction."""
    params = dict(entry.params)
    train = dict(entry.train)
    data_fraction = entry.data_fraction
    for key, value in point.items():
        if key == "data_fraction":
            data_fraction = float(value)
        elif key.startswith("train."):
            setting = key.removeprefix("train.")
            old = train.get(setting)
            # Nested tables (augment) merge, as a grid's train overrides do.
            train[setting] = (
                {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
            )
        else:
            params[key] = value
    return entry.model_copy(
        update={"grid": {}, "params": params, "train": train, "data_fraction": data_fraction}
    )


@dataclass(frozen=True)
class BudgetResult:
    """Successive halving and uniform allocation on one study, side by side.

    Attributes
    ----------
    root
        The budget run directory (``OUT/<study>-budget``).
    halving, uniform
        The two allocations.
    table
        ``tables/budget.parquet`` (columns :data:`BUDGET_COLUMNS`).
    settings
        The budget, unit, eta, epochs limits, uniform rule and candidates.
    """

    root: Path
    halving: Allocation
    uniform: Allocation
    table: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def ratio(self, unit: Unit = "epochs") -> float:
        """Successive halving's spending over uniform allocation's, in ``unit``."""
        uniform = self.uniform.spent(unit)
        return self.halving.spent(unit) / uniform if uniform > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """The content of ``tables/budget.json``."""
        return {
            "settings": self.settings,
            "successive_halving": self.halving.to_dict(),
            "uniform": self.uniform.to_dict(),
            "ratio_epochs": _finite_or_none(self.ratio("epochs")),
            "ratio_seconds": _finite_or_none(self.ratio("seconds")),
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Trainer:
    """Trains (candidate, epochs) pairs through the run store and reads their outcomes."""

    def __init__(
        self,
        study: Study,
        out: Path,
        candidates: Sequence[Candidate],
        run_options: dict[str, Any],
    ) -> None:
        self.study = study.model_copy(
            update={"name": f"{study.name}-budget", "ecosystems": [], "sweeps": []}
        )
        self.out = out
        self.candidates = {c.label: c for c in candidates}
        self.run_options = run_options
        self.rows: dict[tuple[str, int], pd.DataFrame] = {}
        self.root = out / self.study.name

    def entry(self, label: str, epochs: int) -> ZooEntry:
        candidate = self.candidates[label]
        if candidate.fixed:
            return candidate.entry.model_copy(update={"name": candidate.model_name(epochs)})
        train = dict(candidate.entry.train) | {"epochs": epochs}
        spec = resolved_train(self.study, candidate.entry)
        if spec.patience is not None and spec.patience * spec.eval_every > epochs:
            # Early stopping that could never act at this length: the same training as none.
            train["patience"] = None
        return candidate.entry.model_copy(
            update={"name": candidate.model_name(epochs), "train": train}
        )

    def train(self, pairs: Sequence[tuple[str, int]]) -> None:
        """Train the pairs not trained yet (members already in the run directory are reused)."""
        todo = list(dict.fromkeys(pair for pair in pairs if pair not in self.rows))
        if not todo:
            return
        self._run(todo)

    def _run(self, pairs: Sequence[tuple[str, int]]) -> None:
        zoo = [self.entry(label, epochs) for label, epochs in pairs]
        # One report, once the budget tables exist (see run_budget), is enough.
        results = run_study(
            self.study.model_copy(update={"zoo": zoo}), self.out, report=False, **self.run_options
        )
        members = results.members
        for label, epochs in pairs:
            name = self.candidates[label].model_name(epochs)
            self.rows[(label, epochs)] = members[members["name"] == name]

    def evaluate(self, label: str, epochs: int) -> Outcome:
        self.train([(label, epochs)])
        rows = self.rows[(label, epochs)]
        ok = rows[rows["status"] == "ok"]
        return Outcome(
            val_accuracy=float(ok["val_accuracy"].mean()) if len(ok) else math.nan,
            test_accuracy=float(ok["test_accuracy"].mean()) if len(ok) else math.nan,
            # Every member of the candidate trained for the planned epochs (charged in full,
            # even when early stopping ended one sooner).
            cost_epochs=float(epochs * len(rows)),
            cost_seconds=float(rows["train_seconds"].sum()),
        )

    def assemble(self, pairs: Sequence[tuple[str, int]]) -> None:
        """One last run over every member: tables and report of the whole budget run."""
        self._run(list(dict.fromkeys(pairs)))


def run_budget(
    study: Study | str | Path | dict[str, Any],
    budget: float,
    out: str | Path = "runs",
    overrides: Sequence[str] = (),
    *,
    unit: Unit = "epochs",
    eta: int = 2,
    min_epochs: int = 1,
    max_epochs: int | None = None,
    uniform: UniformSpec = "budget",
    seed: int | None = None,
    workers: int | None = None,
    device: str | None = None,
    on_rung: Callable[[list[tuple[str, int]]], None] | None = None,
) -> BudgetResult:
    """Spend ``budget`` on a study's models by successive halving, and uniformly, and compare.

    Parameters
    ----------
    study
        A :class:`~polyculture.run.study.Study`, a built-in study name, a TOML path or a dict.
    budget
        What successive halving may spend, in ``unit``.
    out
        Parent folder; the run directory is ``out / "<study name>-budget"``.
    overrides
        ``key=value`` strings, as ``--set``.
    unit
        ``epochs`` (member-epochs: epochs x seeds x shards) or ``seconds`` (measured).
    eta, min_epochs, max_epochs
        As in :func:`polyculture.select.budget.successive_halving`.
    uniform
        The uniform allocation compared with: ``"budget"`` (the same budget shared evenly:
        ``budget / n`` epochs each, or with a seconds budget an even share of seconds converted
        with each candidate's seconds per epoch measured in rung 0), ``"study"`` (every candidate
        trained for the study's own epochs), or epochs (one number or one per candidate label).
    seed
        Train every candidate with this one seed instead of the study's seeds.
    workers, device
        As in :func:`polyculture.run.runner.run_study`.
    on_rung
        Called with each rung's (candidate, epochs) pairs not trained yet in this call, before
        they train (members already in the run directory are then reused, not retrained).

    Returns
    -------
    BudgetResult
        Both allocations; ``tables/budget.parquet`` and ``tables/budget.json`` are written.

    Examples
    --------
    >>> import tempfile
    >>> result = run_budget("mnist1d", 40, tempfile.mkdtemp(), seed=0)  # doctest: +SKIP
    >>> result.halving.spent_epochs <= 40, result.ratio("epochs") <= 1  # doctest: +SKIP
    (True, True)
    """
    check_settings(budget, unit, eta, min_epochs, max_epochs)
    loaded = load_study(study, ["evaluate.robust_epsilon=0", *overrides])
    if seed is not None:
        loaded = load_study(
            loaded.model_copy(
                update={
                    "seeds": [seed],
                    "zoo": [e.model_copy(update={"seeds": None}) for e in loaded.zoo],
                }
            )
        )
    candidates = budget_candidates(loaded)
    labels = [c.label for c in candidates]
    fixed = [c.label for c in candidates if c.fixed]
    check_settings(budget, unit, eta, min_epochs, max_epochs, trained=len(labels) - len(fixed))
    uniform_plan = _uniform_plan(uniform, candidates, budget, unit)  # checked before training
    options: dict[str, Any] = {"workers": workers, "device": device}
    trainer = _Trainer(loaded, Path(out), candidates, options)

    def prepare(pairs: list[tuple[str, int]]) -> None:
        new = [pair for pair in pairs if pair not in trainer.rows]
        if on_rung is not None and new:
            on_rung(new)
        trainer.train(new)

    halving = successive_halving(
        labels,
        trainer.evaluate,
        budget,
        unit=unit,
        eta=eta,
        min_epochs=min_epochs,
        max_epochs=max_epochs,
        fixed=fixed,
        prepare=prepare,
    )
    if uniform_plan is None:  # an even share of a seconds budget, by measured speed
        uniform_plan = _seconds_share(halving, budget)
    uniform_result = uniform_allocation(
        labels,
        trainer.evaluate,
        uniform_plan,
        fixed=fixed,
        budget=budget if uniform == "budget" else math.nan,
        unit=unit,
        prepare=prepare,
    )
    pairs = [(e.candidate, e.epochs) for a in (halving, uniform_result) for e in a.evaluations]
    trainer.assemble(pairs)
    table = budget_table(halving, uniform_result, trainer)
    settings = {
        "study": loaded.name,
        "budget": budget,
        "unit": unit,
        "eta": eta,
        "min_epochs": min_epochs,
        "max_epochs": max_epochs,
        "uniform": uniform if isinstance(uniform, str | int) else dict(uniform),
        "uniform_epochs": uniform_plan,
        "seeds": list(loaded.seeds) if seed is None else [seed],
        "candidates": labels,
        "fixed_candidates": fixed,
    }
    result = BudgetResult(trainer.root, halving, uniform_result, table, settings)
    tables = trainer.root / "tables"
    write_table(table, tables / "budget.parquet", csv=True)
    write_text(tables / "budget.json", json.dumps(result.to_dict(), indent=2, default=str))
    from polyculture.report import build_report  # the report stage reads the tables just written

    build_report(trainer.root)
    return result


def _uniform_plan(
    uniform: UniformSpec, candidates: Sequence[Candidate], budget: float, unit: Unit
) -> dict[str, int] | None:
    """Epochs per candidate of the uniform allocation (``None``: from measured speeds later)."""
    trained = [c for c in candidates if not c.fixed]
    if uniform == "study":
        return {c.label: c.epochs for c in trained}
    if uniform == "budget":
        if unit == "seconds":
            return None
        each = uniform_epochs(
            budget, [c.label for c in candidates], [c.label for c in candidates if c.fixed]
        )
        return {c.label: each for c in trained}
    if isinstance(uniform, str):
        raise ConfigError(
            f"unknown uniform allocation '{uniform}'",
            hint="use 'budget', 'study', a number of epochs or epochs per candidate",
        )
    if isinstance(uniform, int):
        return {c.label: uniform for c in trained}
    missing = [c.label for c in trained if c.label not in uniform]
    if missing:
        raise ConfigError(
            f"uniform epochs are missing for {', '.join(missing)}",
            hint="give epochs for every trained candidate",
        )
    return {c.label: int(uniform[c.label]) for c in trained}


def _seconds_share(halving: Allocation, budget: float) -> dict[str, int]:
    """Even shares of a seconds budget in epochs, from the speeds halving measured."""
    speeds: dict[str, float] = {}
    fixed_seconds = 0.0
    for evaluation in halving.evaluations:
        if not evaluation.charged:
            continue
        if evaluation.candidate in halving.fixed:
            fixed_seconds += evaluation.outcome.cost_seconds
        else:
            # The longest run measures the speed best (fixed costs such as evaluation amortized).
            speeds[evaluation.candidate] = evaluation.outcome.cost_seconds / evaluation.epochs
    return uniform_epochs_for_seconds(budget, speeds, fixed_seconds)


def budget_table(halving: Allocation, uniform: Allocation, trainer: _Trainer) -> pd.DataFrame:
    """One row per (allocation, rung, candidate) (columns :data:`BUDGET_COLUMNS`)."""
    rows = []
    for allocation in (halving, uniform):
        final = allocation.final
        for e in allocation.evaluations:
            members = trainer.rows[(e.candidate, e.epochs)]
            examples = float((members["train_rows"] * e.epochs).sum())
            rows.append(
                {
                    "allocation": allocation.method,
                    "rung": e.rung,
                    "candidate": e.candidate,
                    "kind": "scikit-learn" if e.candidate in allocation.fixed else "torch",
                    "epochs": e.epochs,
                    "members": len(members),
                    "val_accuracy": e.outcome.val_accuracy,
                    "test_accuracy": e.outcome.test_accuracy,
                    "cost_epochs": e.outcome.cost_epochs if e.charged else 0.0,
                    "cost_seconds": e.outcome.cost_seconds if e.charged else 0.0,
                    "train_examples": examples if e.charged else 0.0,
                    "charged": e.charged,
                    "kept": e.kept,
                    "winner": e is final,
                    "model": trainer.candidates[e.candidate].model_name(e.epochs),
                    "member_ids": ",".join(members["member_id"].astype(str)),
                }
            )
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)
