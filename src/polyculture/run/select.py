"""Selection over a run directory: a scenario's feasible set, recommendation, ensemble, incumbents.

:func:`select_run` reads a run directory's members table (with the cost columns), its
predictions, stored probabilities and groups, derives per member

* ``accuracy`` on the scenario's split,
* ``size_mb`` (``size_bytes`` / 10^6),
* ``fairness_gap``: accuracy of the best group minus the worst group on the test split (when
  the run has group attributes; groups are the attributes joined, as in the homogenization
  tables),
* ``systemic_contribution``: the share of the member's errors that every reference system also
  makes, the references being the incumbents when given, else every other member
  (:func:`polyculture.select.scenario.systemic_contribution`),

applies the scenario (:func:`polyculture.select.scenario.recommend`), builds a soft-vote ensemble
by greedy forward selection on the validation split and compares it with the best single member
on the test split (:mod:`polyculture.select.ensemble`), and, when incumbents are named, picks the
candidate that minimizes systemic failure together with them
(:mod:`polyculture.select.incumbents`). It writes, atomically:

* ``tables/selection.parquet`` (and ``.csv``): one row per member with the derived columns,
  ``feasible``, ``reasons``, ``pareto``, ``pareto_feasible``, ``score``, ``recommended``;
* ``tables/pareto.parquet``: the members on the Pareto front;
* ``tables/ensemble.parquet``: one row per greedy step (removed when no ensemble was built);
* ``tables/incumbents.parquet``: one row per candidate against the incumbents (removed when
  there are none);
* ``tables/selection.json``: the scenario, the recommendation with its reasons, the ensemble
  comparison and the incumbents result (written last: the report reads it as "selection done").
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyculture.errors import ConfigError, PolycultureError
from polyculture.measure.cost import MB
from polyculture.run.emergence import metric_names
from polyculture.run.members import find_member
from polyculture.run.results import RunResults, load_run
from polyculture.run.store import write_optional_table, write_table, write_text
from polyculture.select.ensemble import (
    EnsembleComparison,
    EnsembleSelection,
    compare_to_single,
    greedy_ensemble,
)
from polyculture.select.incumbents import IncumbentChoice, choose_against_incumbents
from polyculture.select.scenario import (
    Recommendation,
    Scenario,
    fairness_gap,
    recommend,
    systemic_contribution,
)

__all__ = [
    "SELECTION_SUMMARY",
    "EnsembleOutcome",
    "IncumbentOutcome",
    "SelectionResult",
    "read_selection",
    "select_after_run",
    "select_run",
]

SELECTION_SUMMARY = "selection.json"
"""The summary file in ``tables/`` (scenario, recommendation, ensemble and incumbents results)."""

COST_COLUMNS = (
    "latency_p50_ms",
    "latency_p95_ms",
    "throughput_per_s",
    "peak_memory_mb",
    "n_parameters",
    "flops_per_example",
    "size_bytes",
    "train_seconds",
)


@dataclass
class EnsembleOutcome:
    """The greedy ensemble of a run and its paired comparison with the best single member.

    Attributes
    ----------
    member_ids, labels
        The ensemble's members in the order they were added.
    single_id, single_label
        The best single member within the budget on the selection split (the first added).
    selection
        The greedy trace (:class:`~polyculture.select.ensemble.EnsembleSelection`).
    comparison
        Ensemble vs best single member on the test split.
    selected_on
        The split the members were chosen on (``val``; ``test`` when there is no validation).
    cost, budget
        What a member costs (``latency_ms``, ``parameters`` or ``none``) and the budget.
    steps
        The trace with member ids and labels.
    """

    member_ids: list[str]
    labels: list[str]
    single_id: str
    single_label: str
    selection: EnsembleSelection
    comparison: EnsembleComparison
    selected_on: str
    cost: str
    budget: float | None
    steps: pd.DataFrame

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields."""
        comparison = self.comparison
        return {
            "members": self.member_ids,
            "labels": self.labels,
            "single": self.single_id,
            "single_label": self.single_label,
            "selected_on": self.selected_on,
            "cost": self.cost,
            "budget": self.budget,
            "total_cost": self.selection.cost,
            "stopped": self.selection.stopped,
            "selection_accuracy": self.selection.accuracy,
            "test_accuracy": comparison.ensemble_accuracy,
            "single_test_accuracy": comparison.single_accuracy,
            "difference": comparison.difference,
            "ci_low": comparison.ci_low,
            "ci_high": comparison.ci_high,
            "mcnemar_p": comparison.mcnemar_p,
            "bootstrap_p": comparison.bootstrap_p,
            "ensemble_only": comparison.ensemble_only,
            "single_only": comparison.single_only,
            "instances": comparison.instances,
            "sentence": comparison.sentence(
                f"ensemble of {len(self.member_ids)}", f"best single ({self.single_label})"
            ),
        }


@dataclass
class IncumbentOutcome:
    """The candidate chosen against incumbents.

    Attributes
    ----------
    incumbents
        Display labels of the incumbents.
    source
        ``this run`` or the folder name of the audit run they come from.
    choice
        The result of :func:`~polyculture.select.incumbents.choose_against_incumbents`.
    table
        One row per candidate (``member_id``, ``label`` and the choice's columns).
    """

    incumbents: list[str]
    source: str
    choice: IncumbentChoice
    table: pd.DataFrame

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields, with a sentence saying what the choice avoids."""
        choice, table = self.choice, self.table
        chosen, greedy = table.iloc[choice.chosen], table.iloc[choice.by_accuracy]
        if choice.chosen == choice.by_accuracy:
            rate = _share(choice.systemic[choice.chosen])
            sentence = (
                f"{chosen['label']} is both the most accurate eligible candidate and the one that "
                f"fails least together with the incumbents ({rate} of instances failed by all)."
            )
        else:
            sentence = (
                f"{chosen['label']} ({_percent(chosen['accuracy'])} accuracy) leaves "
                f"{_share(choice.systemic[choice.chosen])} of instances failed by every system, "
                f"against {_share(choice.systemic[choice.by_accuracy])} for "
                f"{greedy['label']} ({_percent(greedy['accuracy'])}), the pick by accuracy "
                f"alone: it avoids {choice.avoided_instances} systemic failures of "
                f"{choice.instances} instances (McNemar p = {choice.mcnemar_p:.3g})."
            )
        return {
            "incumbents": self.incumbents,
            "source": self.source,
            "required_accuracy": choice.required_accuracy,
            "incumbents_systemic": choice.incumbents_systemic,
            "chosen": str(chosen["member_id"]),
            "chosen_label": str(chosen["label"]),
            "chosen_systemic": float(choice.systemic[choice.chosen]),
            "by_accuracy": str(greedy["member_id"]),
            "by_accuracy_label": str(greedy["label"]),
            "by_accuracy_systemic": float(choice.systemic[choice.by_accuracy]),
            "avoided": choice.avoided,
            "avoided_instances": choice.avoided_instances,
            "mcnemar_p": choice.mcnemar_p,
            "instances": choice.instances,
            "sentence": sentence,
        }


@dataclass
class SelectionResult:
    """Everything :func:`select_run` computed (and wrote).

    Attributes
    ----------
    root
        The run directory.
    scenario
        The scenario applied.
    recommendation
        The recommended member, its reasons and the per-member table.
    ensemble
        The greedy ensemble, or ``None`` (fewer than two members with stored probabilities).
    incumbents
        The choice against incumbents, or ``None`` (none named).
    notes
        What was left out and why.
    """

    root: Path
    scenario: Scenario
    recommendation: Recommendation
    ensemble: EnsembleOutcome | None = None
    incumbents: IncumbentOutcome | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        """One row per member: derived columns, feasibility, Pareto flags, score."""
        return self.recommendation.table

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (what ``tables/selection.json`` holds)."""
        table = self.table
        return _finite(
            {
                "scenario": self.scenario.model_dump(mode="json"),
                "split": self.scenario.split,
                "members": len(table),
                "feasible": int(table["feasible"].sum()),
                "recommended": self.recommendation.member_id,
                "recommended_label": self.recommendation.label,
                "reasons": self.recommendation.reasons,
                "objectives": self.recommendation.objectives,
                "pareto": table.loc[table["pareto"], "member_id"].astype(str).tolist(),
                "ruled_out": self.recommendation.feasibility.ruled_out,
                "ensemble": None if self.ensemble is None else self.ensemble.summary(),
                "incumbents": None if self.incumbents is None else self.incumbents.summary(),
                "notes": self.notes,
            }
        )


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined numbers become ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def _percent(value: float) -> str:
    return f"{100 * float(value):.1f}%"


def _share(value: float) -> str:
    return f"{100 * float(value):.2f}%"


# ---------------------------------------------------------------------------------------------
# Reading the run


def _labels(members: pd.DataFrame) -> list[str]:
    """Display label per member: ``name sSEED`` (audited models: the name), ids on clashes."""
    labels = [
        f"{row.name} s{int(row.seed)}"
        if pd.notna(row.seed) and int(row.seed) >= 0
        else str(row.name)
        for row in members.itertuples(index=False)
    ]
    counts = pd.Series(labels).value_counts()
    return [
        f"{label} [{str(member_id)[:6]}]" if counts[label] > 1 else label
        for label, member_id in zip(labels, members["member_id"], strict=True)
    ]


def _correct(
    predictions: pd.DataFrame, split: str, member_ids: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances ``(n,)``, labels ``(n,)`` and correctness ``(n, m)`` of members on a split."""
    rows = predictions[(predictions["split"] == split) & predictions["member_id"].isin(member_ids)]
    wide = rows.pivot(index="instance", columns="member_id", values="correct")
    missing = [member_id for member_id in member_ids if member_id not in wide.columns]
    if missing or wide.isna().any().any():
        raise ConfigError(
            f"members do not all have predictions for every '{split}' instance",
            hint="rerun the study (or audit with --intersect) so every member predicts them",
        )
    wide = wide[member_ids]
    labels = rows.drop_duplicates("instance").set_index("instance")["label"].loc[wide.index]
    return wide.index.to_numpy(), labels.to_numpy(), wide.to_numpy(bool)


@dataclass
class _Incumbents:
    """Incumbents resolved against the run: in-run member columns, or an external matrix."""

    labels: list[str]
    source: str
    columns: list[int] = field(default_factory=list)  # positions among the usable members
    external: np.ndarray | None = None  # (common, k) correctness on the common rows
    rows: np.ndarray | None = None  # positions of the common instances in this run's split


def _resolve_incumbents(
    results: RunResults,
    members: pd.DataFrame,
    labels: list[str],
    references: list[str],
    split: str,
    instances: np.ndarray,
    split_labels: np.ndarray,
) -> _Incumbents | None:
    if not references:
        return None
    runs = [ref for ref in references if (Path(ref) / "study.toml").is_file()]
    if runs:
        if len(references) > 1:
            raise ConfigError(
                f"incumbents mix an audit run ('{runs[0]}') with other references",
                hint="name either one audit run folder or members of this run",
            )
        return _external_incumbents(results, Path(runs[0]), split, instances, split_labels)
    ids = members["member_id"].astype(str).tolist()
    columns: list[int] = []
    for reference in references:
        row = find_member(results.members, reference)
        member_id = str(row["member_id"])
        if member_id not in ids:
            raise ConfigError(
                f"incumbent '{reference}' is a member that failed",
                hint="name a member that trained",
            )
        if ids.index(member_id) not in columns:
            columns.append(ids.index(member_id))
    if len(columns) == len(ids):
        raise ConfigError(
            "every member is an incumbent, so there is no candidate left",
            hint="name fewer incumbents",
        )
    return _Incumbents([labels[j] for j in columns], "this run", columns=columns)


def _external_incumbents(
    results: RunResults, folder: Path, split: str, instances: np.ndarray, split_labels: np.ndarray
) -> _Incumbents:
    """The models of an audit run as incumbents, matched to this run's instances by id."""
    if split != "test":
        raise ConfigError(
            f"incumbents from another run are compared on the test split, not '{split}'",
            hint="use split = 'test' in the scenario",
        )
    other = load_run(folder)
    ours = [str(c) for c in results.task.get("classes", [])]
    theirs = [str(c) for c in other.task.get("classes", [])]
    predictions = other.predictions()
    predictions = predictions[predictions["split"] == "test"]
    ok = other.members[other.members["status"] == "ok"]
    ids = ok["member_id"].astype(str).tolist()
    if predictions.empty or not ids:
        raise ConfigError(f"incumbent run '{folder}' has no test predictions", hint="audit again")
    wide = predictions[predictions["member_id"].isin(ids)].pivot(
        index="instance", columns="member_id", values="correct"
    )[ids]
    their_labels = predictions.drop_duplicates("instance").set_index("instance")["label"]
    wide.index = wide.index.astype(str)
    their_labels.index = their_labels.index.astype(str)
    position = {str(instance): i for i, instance in enumerate(instances)}
    common = [instance for instance in wide.index if instance in position]
    if not common:
        raise ConfigError(
            f"incumbent run '{folder}' shares no instance id with this run's test split",
            hint="audit the incumbents' predictions on this task's test instances (same ids)",
        )
    rows = np.array([position[instance] for instance in common])
    ours_named = np.array([ours[int(v)] if ours else str(v) for v in split_labels[rows]])
    theirs_named = np.array([theirs[int(v)] if theirs else str(v) for v in their_labels[common]])
    clash = np.flatnonzero(ours_named != theirs_named)
    if len(clash):
        first = common[clash[0]]
        raise ConfigError(
            f"incumbent run '{folder}' labels instance {first} '{theirs_named[clash[0]]}' where "
            f"this run has '{ours_named[clash[0]]}' ({len(clash)} instance(s) differ)",
            hint="the incumbents must be scored on the same task with the same class names",
        )
    if wide.loc[common].isna().any().any():
        raise ConfigError(
            f"not every model of incumbent run '{folder}' predicts every shared instance",
            hint="audit it with --intersect",
        )
    return _Incumbents(
        labels=ok["name"].astype(str).tolist(),
        source=folder.name,
        external=wide.loc[common].to_numpy(bool),
        rows=rows,
    )


def _groups(results: RunResults, instances: np.ndarray) -> np.ndarray | None:
    """Group label per test instance (attributes joined with `` x ``), or ``None``."""
    path = results.store.tables_dir / "groups.parquet"
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    frame = frame[frame["split"] == "test"].drop(columns="split").set_index("instance")
    if frame.empty or frame.shape[1] == 0:
        return None
    frame.index = frame.index.astype(str)
    joined = frame.astype(str).agg(" x ".join, axis=1)
    return joined.reindex([str(i) for i in instances]).fillna("(no group)").to_numpy()


# ---------------------------------------------------------------------------------------------
# Selection


def select_run(
    run_dir: str | Path | RunResults,
    scenario: Scenario | None = None,
    *,
    write: bool = True,
    seed: int = 0,
    n_resamples: int = 2000,
) -> SelectionResult:
    """Apply a scenario to a run directory and write the selection tables.

    Parameters
    ----------
    run_dir
        A run directory (or its loaded results).
    scenario
        The scenario (default: no constraints, the most accurate member).
    write
        Write the tables (see the module docstring).
    seed, n_resamples
        Of the paired bootstrap comparing the ensemble with the best single member.

    Raises
    ------
    ConfigError
        No member trained; the scenario's split has no predictions; an unknown incumbent; a
        constraint on a quantity the run does not have; no member feasible (naming the
        constraint that rules out the most members).

    Examples
    --------
    >>> import tempfile
    >>> from polyculture.run import run_study
    >>> run = run_study("mnist1d", tempfile.mkdtemp(), ["zoo=[{family='logreg'},"
    ...                 "{family='linear'}]", "seeds=[0]", "train.epochs=1"], workers=1)
    >>> result = select_run(run, Scenario(max_parameters=1000), n_resamples=100)
    >>> result.table["feasible"].tolist(), (run.root / "tables" / "selection.json").is_file()
    ([True, True], True)
    """
    results = run_dir if isinstance(run_dir, RunResults) else load_run(run_dir)
    scenario = scenario or Scenario()
    members = results.members
    ok = members[members["status"] == "ok"].reset_index(drop=True)
    if ok.empty:
        raise ConfigError(
            f"no member of '{results.root}' trained, so there is nothing to choose",
            hint="fix the failures (see `polyculture show RUN_DIR --members`) and rerun",
        )
    predictions = results.predictions()
    split = scenario.split
    splits = sorted(predictions["split"].astype(str).unique())
    if split not in splits:
        raise ConfigError(
            f"the run has no predictions on split '{split}' (it has: {', '.join(splits)})",
            hint="set split = 'test' in the scenario",
        )
    ids = ok["member_id"].astype(str).tolist()
    labels = _labels(ok)
    instances, split_labels, correct = _correct(predictions, split, ids)  # (n,), (n,), (n, m)
    notes: list[str] = []
    incumbents = _resolve_incumbents(
        results, ok, labels, scenario.incumbents, split, instances, split_labels
    )
    frame = _candidates(ok, labels, correct)
    frame["systemic_contribution"] = _contributions(correct, incumbents)
    if incumbents is None and len(ids) < 2:
        notes.append("systemic contribution needs at least two members (or incumbents)")
    _add_fairness(results, frame, predictions, ids, notes)
    deployed = [] if incumbents is None else incumbents.columns
    if deployed:  # the choice is among the other members
        notes.append(
            f"incumbents ({', '.join(labels[j] for j in deployed)}) are already deployed: the "
            "recommendation is among the other members"
        )
    candidates = frame.drop(index=deployed).reset_index(drop=True)
    recommendation = recommend(candidates, scenario)  # raises when nothing is feasible
    against = None
    if incumbents is not None:  # the homogenization-aware choice replaces the ranking
        table = recommendation.table
        allowed = set(table.loc[table["feasible"], "member_id"].astype(str))
        against = _against_incumbents(incumbents, frame, correct, scenario, allowed)
        summary = against.summary()
        recommendation = recommend(
            candidates,
            scenario,
            choice=summary["chosen"],
            choice_reason=f"Against the incumbents ({', '.join(against.incumbents)}), among the "
            f"feasible candidates with accuracy ≥ {_percent(summary['required_accuracy'])}: "
            + summary["sentence"],
        )
    result = SelectionResult(
        results.root, scenario, recommendation, incumbents=against, notes=notes
    )
    result.ensemble = _ensemble(
        results, predictions, ok, labels, frame, scenario, seed, n_resamples, notes
    )
    if write:
        _write(results, result)
    return result


def _candidates(ok: pd.DataFrame, labels: list[str], correct: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "member_id": ok["member_id"].astype(str),
            "label": labels,
            "name": ok["name"].astype(str),
            "family": ok["family"].astype(str),
            "seed": ok["seed"],
            "accuracy": correct.mean(axis=0),
        }
    )
    for column in COST_COLUMNS:
        if column in ok:
            frame[column] = pd.to_numeric(ok[column], errors="coerce").to_numpy(float)
    # Every per-split metric (built-in, answer and plugin metrics), for `metrics` bounds.
    for split in ("val", "test"):
        for name in metric_names(ok, split):
            frame[f"{split}_{name}"] = pd.to_numeric(
                ok[f"{split}_{name}"], errors="coerce"
            ).to_numpy(float)
    if "size_bytes" in frame:
        frame["size_mb"] = frame["size_bytes"] / MB
    return frame


def _contributions(correct: np.ndarray, incumbents: _Incumbents | None) -> np.ndarray:
    """Systemic contribution of every member against its reference systems ``(m,)``."""
    m = correct.shape[1]
    if incumbents is None:
        return systemic_contribution(correct)
    if incumbents.external is not None:
        assert incumbents.rows is not None
        return systemic_contribution(correct[incumbents.rows], incumbents.external)
    values = np.full(m, np.nan)  # incumbents are not candidates: NaN
    others = [j for j in range(m) if j not in incumbents.columns]
    values[others] = systemic_contribution(correct[:, others], correct[:, incumbents.columns])
    return values


def _add_fairness(
    results: RunResults,
    frame: pd.DataFrame,
    predictions: pd.DataFrame,
    ids: list[str],
    notes: list[str],
) -> None:
    """The ``fairness_gap`` column (test split), when the run has group attributes."""
    if not (results.store.tables_dir / "groups.parquet").is_file():
        return
    if "test" not in set(predictions["split"]):
        return
    instances, _, correct = _correct(predictions, "test", ids)
    groups = _groups(results, instances)
    if groups is None:
        return
    frame["fairness_gap"] = [fairness_gap(correct[:, j], groups) for j in range(len(ids))]
    notes.append(
        f"fairness gap: best minus worst group accuracy on the test split over "
        f"{len(np.unique(groups))} groups"
    )


def _ensemble(
    results: RunResults,
    predictions: pd.DataFrame,
    ok: pd.DataFrame,
    labels: list[str],
    frame: pd.DataFrame,
    scenario: Scenario,
    seed: int,
    n_resamples: int,
    notes: list[str],
) -> EnsembleOutcome | None:
    """Greedy soft-vote ensemble chosen on validation, compared on test (None when impossible)."""
    stored = {str(i): results.probabilities(str(i)) for i in ok["member_id"]}
    usable = [j for j, i in enumerate(ok["member_id"].astype(str)) if "test" in stored[i]]
    if len(usable) < 2:
        notes.append("no ensemble: it needs stored class probabilities of at least two members")
        return None
    ids = [str(ok["member_id"].iloc[j]) for j in usable]
    selected_on = "val" if all("val" in stored[i] for i in ids) else "test"
    if selected_on == "test":
        notes.append("ensemble chosen on the test split (no validation probabilities): optimistic")

    def split_labels(split: str) -> np.ndarray:
        rows = predictions[(predictions["member_id"] == ids[0]) & (predictions["split"] == split)]
        return rows["label"].to_numpy()

    settings = scenario.ensemble
    cost_kind: str = settings.cost
    column = scenario.latency_column if cost_kind == "latency_ms" else "n_parameters"
    costs = frame[column].to_numpy(float)[usable] if column in frame else None
    if costs is None or np.isnan(costs).all():
        if cost_kind == "latency_ms" and "n_parameters" in frame:
            cost_kind, column = "parameters", "n_parameters"
            costs = frame["n_parameters"].to_numpy(float)[usable]
            notes.append("ensemble cost: parameters (the run has no latency measurements)")
        if costs is None or np.isnan(costs).all():
            cost_kind, costs = "none", None
    budget = settings.budget
    if budget is None and cost_kind == "latency_ms":
        budget = scenario.max_latency_ms
    if budget is None and cost_kind == "parameters":
        budget = scenario.max_parameters
    if cost_kind == "none" and budget is not None:
        notes.append("ensemble budget ignored: no member has a cost")
        budget = None
    chosen = greedy_ensemble(
        np.stack([stored[i][selected_on] for i in ids]),
        split_labels(selected_on),
        costs,
        budget=budget,
        diversity=settings.diversity,
        min_members=settings.min_members,
        max_members=settings.max_members,
    )
    test = np.stack([stored[i]["test"] for i in ids])  # (m, n, classes)
    y = split_labels("test")
    ensemble_correct = test[chosen.members].mean(axis=0).argmax(axis=1) == y
    single = chosen.members[0]
    single_correct = test[single].argmax(axis=1) == y
    comparison = compare_to_single(
        ensemble_correct, single_correct, n_resamples=n_resamples, seed=seed
    )
    steps = chosen.steps.copy()
    steps.insert(1, "member_id", [ids[j] for j in steps["member"]])
    steps.insert(2, "label", [labels[usable[j]] for j in steps["member"]])
    steps = steps.drop(columns="member").assign(cost_kind=cost_kind, selected_on=selected_on)
    if len(chosen.members) == 1:
        notes.append("the ensemble is a single member: no other member raised the objective")
    return EnsembleOutcome(
        member_ids=[ids[j] for j in chosen.members],
        labels=[labels[usable[j]] for j in chosen.members],
        single_id=ids[single],
        single_label=labels[usable[single]],
        selection=chosen,
        comparison=comparison,
        selected_on=selected_on,
        cost=cost_kind,
        budget=budget,
        steps=steps,
    )


def _against_incumbents(
    incumbents: _Incumbents,
    frame: pd.DataFrame,
    correct: np.ndarray,
    scenario: Scenario,
    allowed: set[str],
) -> IncumbentOutcome:
    """The candidate (among ``allowed`` member ids) failing least together with the incumbents.

    The required accuracy is the scenario's ``min_accuracy``, else the accuracy of the most
    accurate allowed candidate minus ``incumbent_slack``.
    """
    m = correct.shape[1]
    if incumbents.external is not None:
        assert incumbents.rows is not None
        reference, pool = incumbents.external, correct[incumbents.rows]
        candidates = list(range(m))
    else:
        candidates = [j for j in range(m) if j not in incumbents.columns]
        reference, pool = correct[:, incumbents.columns], correct
    pool = pool[:, candidates]
    permitted = frame["member_id"].iloc[candidates].isin(allowed).to_numpy()
    if scenario.min_accuracy is not None:
        required = scenario.min_accuracy
    else:
        required = float(pool.mean(axis=0)[permitted].max()) - scenario.incumbent_slack
    choice = choose_against_incumbents(reference, pool, required, permitted)
    table = choice.table(frame["label"].iloc[candidates].tolist()).rename(
        columns={"candidate": "label"}
    )
    table.insert(0, "member_id", frame["member_id"].iloc[candidates].to_numpy())
    return IncumbentOutcome(incumbents.labels, incumbents.source, choice, table)


def _write(results: RunResults, result: SelectionResult) -> None:
    tables = results.store.tables_dir
    table = result.table.copy()
    write_table(table, tables / "selection.parquet", csv=True)
    write_table(table[table["pareto"]], tables / "pareto.parquet")
    write_optional_table(
        None if result.ensemble is None else result.ensemble.steps, tables / "ensemble.parquet"
    )
    write_optional_table(
        None if result.incumbents is None else result.incumbents.table,
        tables / "incumbents.parquet",
    )
    write_text(tables / SELECTION_SUMMARY, json.dumps(result.summary(), indent=2) + "\n")


def read_selection(run_dir: str | Path) -> dict[str, Any] | None:
    """The summary :func:`select_run` wrote (``tables/selection.json``), or ``None``.

    Examples
    --------
    >>> read_selection("/nonexistent") is None
    True
    """
    path = Path(run_dir) / "tables" / SELECTION_SUMMARY
    if not path.is_file():
        return None
    return dict(json.loads(path.read_text()))


def select_after_run(run_dir: str | Path, *, seed: int = 0) -> SelectionResult | None:
    """The default selection at the end of a study (no constraints: the most accurate member).

    Returns ``None`` when no member trained. A problem with the selection never fails the study:
    it becomes a warning (rerun ``polyculture select`` to see it as an error).

    Examples
    --------
    >>> select_after_run("/nonexistent") is None
    True
    """
    if not (Path(run_dir) / "tables" / "members.parquet").is_file():
        return None
    results = load_run(run_dir)
    if not (results.members["status"] == "ok").any():
        return None
    try:
        return select_run(results, Scenario(), seed=seed)
    except PolycultureError as err:
        warnings.warn(f"selection skipped: {err}", stacklevel=2)
        return None
