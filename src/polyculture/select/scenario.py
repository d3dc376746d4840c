"""Scenarios: the constraints a deployment puts on a model, the feasible set and a recommendation.

A :class:`Scenario` (a TOML file, see ``docs/selection.md``) bounds latency, parameters, size on
disk, accuracy, the accuracy gap between groups and the member's contribution to systemic
failure. :func:`feasible` checks every member of a candidates table against it and says why each
infeasible member is ruled out; :func:`recommend` picks one feasible member on the Pareto front
of (accuracy up, latency down, systemic contribution down) by the scenario's weights, and says
why in sentences.

The candidates table has one row per member with ``member_id``, ``name`` and the columns the
constraints read: ``accuracy``, ``latency_p50_ms``/``latency_p95_ms``, ``n_parameters``,
``size_mb``, ``fairness_gap`` and ``systemic_contribution`` (see :func:`fairness_gap` and
:func:`systemic_contribution` for the last two).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from polyculture.errors import ConfigError, MeasureInputError
from polyculture.select.pareto import Direction, pareto_front
from polyculture.validation import as_config_error

__all__ = [
    "CONSTRAINTS",
    "Constraint",
    "EnsembleSettings",
    "Feasibility",
    "NothingFeasibleError",
    "Recommendation",
    "Scenario",
    "Weights",
    "fairness_gap",
    "feasible",
    "load_scenario",
    "recommend",
    "systemic_contribution",
]


# ---------------------------------------------------------------------------------------------
# Derived per-member quantities


def fairness_gap(correct: np.ndarray, groups: np.ndarray) -> float:
    """Accuracy of the best group minus accuracy of the worst group.

    Parameters
    ----------
    correct
        1 where the member is right ``(n,)``.
    groups
        Group label of each instance ``(n,)`` (e.g. the group attributes joined, ``"f x 30-40"``).

    Returns
    -------
    float
        In ``[0, 1]``; 0 with a single group.

    Examples
    --------
    >>> fairness_gap(np.array([1, 1, 1, 0]), np.array(["a", "a", "b", "b"]))
    0.5
    """
    right = np.asarray(correct, dtype=np.float64)
    labels = np.asarray(groups)
    if right.ndim != 1 or labels.shape != right.shape or len(right) == 0:
        raise MeasureInputError(
            f"correct {right.shape} and groups {labels.shape} must be two non-empty vectors of "
            "the same length",
            hint="pass one group label per instance",
        )
    _, codes = np.unique(labels, return_inverse=True)
    per_group = np.bincount(codes, weights=right) / np.bincount(codes)  # (groups,)
    return float(per_group.max() - per_group.min())


def systemic_contribution(correct: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Share of each member's errors that every reference system also makes.

    ``contribution_j = #{u : j fails u and every reference system fails u} / #{u : j fails u}``.
    It reads as: of the instances this member gets wrong, the share on which no other system
    gets it right either (no recourse). 0 = whenever the member errs, some reference system is
    right; 1 = it only errs where every reference system errs too, so it adds no protection
    against systemic failure. A member that never errs contributes 0. Multiplied by the member's
    error rate it is the systemic-failure rate of the reference systems plus the member.

    Parameters
    ----------
    correct
        0/1 matrix ``(n, m)`` of the members, 1 where right.
    reference
        0/1 matrix ``(n, r)`` of the reference systems (e.g. incumbents already deployed). When
        ``None``, each member's reference is every *other* member (leave-one-out); with a single
        member that is nothing, and the result is NaN.

    Returns
    -------
    numpy.ndarray
        ``(m,)`` contributions in ``[0, 1]``.

    Examples
    --------
    >>> correct = np.array([[0, 0, 1], [0, 0, 0], [1, 0, 1], [1, 1, 1]])
    >>> systemic_contribution(correct).tolist()  # member 1 errs on 3 rows, 1 is shared by all
    [0.5, 0.3333333333333333, 1.0]
    >>> systemic_contribution(correct[:, :1], reference=correct[:, 1:]).tolist()
    [0.5]
    """
    failures = ~np.asarray(correct).astype(bool)  # (n, m)
    if failures.ndim != 2:
        raise MeasureInputError(
            f"correct must be a matrix (n, m); got shape {failures.shape}",
            hint="pass one column per member",
        )
    n, m = failures.shape
    if reference is None:
        if m < 2:
            return np.full(m, np.nan)
        total = failures.sum(axis=1, keepdims=True)  # (n, 1) members failing each instance
        others_all_fail = (total - failures) == m - 1  # (n, m) every other member fails
    else:
        ref = ~np.asarray(reference).astype(bool)
        if ref.ndim != 2 or ref.shape[0] != n or ref.shape[1] == 0:
            raise MeasureInputError(
                f"reference must be a non-empty matrix ({n}, r); got shape {ref.shape}",
                hint="pass the reference systems' 0/1 correctness on the same instances",
            )
        others_all_fail = np.repeat(ref.all(axis=1, keepdims=True), m, axis=1)  # (n, m)
    shared = (failures & others_all_fail).sum(axis=0)  # (m,)
    errors = failures.sum(axis=0)  # (m,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(errors > 0, shared / np.maximum(errors, 1), 0.0)


# ---------------------------------------------------------------------------------------------
# The scenario


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Weights(_Strict):
    """How the recommendation trades objectives off among the feasible members (all >= 0).

    Each objective is rescaled to ``[0, 1]`` over the feasible members (1 = best), and the
    recommended member maximizes the weighted mean. The default picks the most accurate feasible
    member.
    """

    accuracy: float = 1.0
    latency: float = 0.0
    systemic: float = 0.0
    size: float = 0.0
    parameters: float = 0.0
    fairness: float = 0.0


class EnsembleSettings(_Strict):
    """Greedy forward ensemble selection (see :mod:`polyculture.select.ensemble`).

    Attributes
    ----------
    budget
        Most total cost of the ensemble's members (``None``: the scenario's ``max_latency_ms``
        or ``max_parameters``, whichever matches ``cost``, else unlimited).
    cost
        What a member costs: its ``latency_ms`` (p50 at batch 1, summed: members run one after
        another) or its ``parameters``.
    diversity
        Weight ``lambda`` of the mean pairwise disagreement in the objective.
    min_members, max_members
        Fewest and most members (``max_members = None``: no limit but the budget).
    """

    budget: float | None = None
    cost: Literal["latency_ms", "parameters"] = "latency_ms"
    diversity: float = 0.02
    min_members: int = 1
    max_members: int | None = None


class MetricBound(_Strict):
    """Bounds on one metric of the members table: ``{ min = ..., max = ... }`` (either or both).

    Examples
    --------
    >>> MetricBound(max=0.05).max
    0.05
    """

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> MetricBound:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        for value in (self.min, self.max):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{value} is not a finite number")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}: no value fits both")
        return self


class Scenario(_Strict):
    """The constraints of one deployment and how to choose among the members that meet them.

    Every constraint is optional (``None``: not constrained). See ``docs/selection.md``.

    Attributes
    ----------
    name, description
        For the report.
    split
        Where accuracy and the systemic contribution are measured: ``test`` (default; what the
        report shows) or ``val`` (keeps the test split untouched by the choice).
    latency_percentile
        Which latency ``max_latency_ms`` and the latency objective read: 50 or 95 (batch 1).
    max_latency_ms
        Most latency of one prediction at batch 1, in milliseconds.
    max_parameters
        Most parameters (trainable parameters; learned values of classical models).
    max_size_mb
        Most size of the stored weights, in MB (10^6 bytes).
    min_accuracy
        Least accuracy, a fraction in ``[0, 1]``.
    max_fairness_gap
        Most accuracy gap between the best and the worst group (test split; needs groups).
    max_systemic_contribution
        Most share of the member's errors that every reference system also makes (the
        incumbents when given, else every other member); see :func:`systemic_contribution`.
    incumbents
        Systems already deployed: member references (id, id prefix, ``name`` or ``name@seed``)
        or the folder of an audit run whose models are all incumbents.
    incumbent_slack
        Without ``min_accuracy``, a candidate against incumbents must be within this much
        accuracy of the most accurate candidate.
    metrics
        Bounds on any other metric of the members table on ``split`` (built-in, answer or
        plugin metrics): ``metrics = { ece = { max = 0.05 }, top2_accuracy = { min = 0.95 } }``.
    weights
        The recommendation's objective weights.
    ensemble
        Ensemble selection settings.

    Examples
    --------
    >>> Scenario(max_latency_ms=5, min_accuracy=0.9).constraints()
    {'max_latency_ms': 5.0, 'min_accuracy': 0.9}
    >>> Scenario(min_accuracy=1.5)
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: min_accuracy = 1.5 is above 1; accuracy is a fraction ...
    """

    name: str = "scenario"
    description: str = ""
    split: Literal["test", "val"] = "test"
    latency_percentile: Literal[50, 95] = 50
    max_latency_ms: float | None = None
    max_parameters: float | None = None
    max_size_mb: float | None = None
    min_accuracy: float | None = None
    max_fairness_gap: float | None = None
    max_systemic_contribution: float | None = None
    incumbents: list[str] = []
    incumbent_slack: float = 0.01
    metrics: dict[str, MetricBound] = {}
    weights: Weights = Weights()
    ensemble: EnsembleSettings = EnsembleSettings()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        _check_consistent(self)
        return self

    def constraints(self) -> dict[str, float]:
        """The constraints that are set, in :data:`CONSTRAINTS` order, then metric bounds
        (keys ``metrics.<name>.min`` / ``metrics.<name>.max``)."""
        out = {
            key: float(getattr(self, key)) for key in CONSTRAINTS if getattr(self, key) is not None
        }
        for name, bound in self.metrics.items():
            for side in ("min", "max"):
                value = getattr(bound, side)
                if value is not None:
                    out[f"metrics.{name}.{side}"] = float(value)
        return out

    @property
    def latency_column(self) -> str:
        """``latency_p50_ms`` or ``latency_p95_ms``."""
        return f"latency_p{self.latency_percentile}_ms"


def _check_consistent(scenario: Scenario) -> None:
    """Raise :class:`ConfigError` for values no member could meet or that contradict each other."""
    for key in CONSTRAINTS:
        value = getattr(scenario, key)
        if value is None:
            continue
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value} is not a finite number", hint="give a number")
        if value < 0:
            raise ConfigError(
                f"{key} = {value:g} is negative, so no member could meet it",
                hint=f"use a value >= 0 or leave {key} out",
            )
        if key in _FRACTIONS and value > 1:
            raise ConfigError(
                f"{key} = {value:g} is above 1; {_FRACTIONS[key]}",
                hint=f"give a fraction in [0, 1], e.g. {key} = {_EXAMPLES[key]}",
            )
    weights = scenario.weights.model_dump()
    negative = [k for k, v in weights.items() if v < 0 or not math.isfinite(v)]
    if negative:
        raise ConfigError(
            f"weights.{negative[0]} = {weights[negative[0]]} must be a number >= 0",
            hint="weights say how much each objective counts; use 0 to ignore one",
        )
    if not any(weights.values()):
        raise ConfigError(
            "every weight is 0, so no member is better than another",
            hint="give at least one weight above 0, e.g. weights.accuracy = 1",
        )
    ensemble = scenario.ensemble
    if ensemble.budget is not None and not ensemble.budget > 0:
        raise ConfigError(
            f"ensemble.budget = {ensemble.budget:g} leaves no room for any member",
            hint="use a budget above 0, or leave it out for no limit",
        )
    if ensemble.diversity < 0:
        raise ConfigError(
            f"ensemble.diversity = {ensemble.diversity:g} is negative",
            hint="use 0 (accuracy only) or more",
        )
    if ensemble.min_members < 1:
        raise ConfigError(
            f"ensemble.min_members = {ensemble.min_members} is below 1", hint="use 1 or more"
        )
    if ensemble.max_members is not None and ensemble.max_members < ensemble.min_members:
        raise ConfigError(
            f"ensemble.min_members = {ensemble.min_members} is above ensemble.max_members = "
            f"{ensemble.max_members}",
            hint="make min_members <= max_members",
        )
    if not 0 <= scenario.incumbent_slack <= 1:
        raise ConfigError(
            f"incumbent_slack = {scenario.incumbent_slack:g} is not a fraction in [0, 1]",
            hint="e.g. incumbent_slack = 0.01 for one accuracy point",
        )


@dataclass(frozen=True)
class Constraint:
    """How one scenario key reads the candidates table.

    Attributes
    ----------
    column
        The candidates-table column it bounds (the latency column depends on the scenario).
    bound
        ``max`` (the value must be <= the limit) or ``min`` (>=).
    what
        What the column is, for messages.
    unit
        Formats a value for messages.
    """

    column: str
    bound: Literal["max", "min"]
    what: str
    unit: str


CONSTRAINTS: dict[str, Constraint] = {
    "max_latency_ms": Constraint("latency_p50_ms", "max", "latency", "ms"),
    "max_parameters": Constraint("n_parameters", "max", "parameters", "count"),
    "max_size_mb": Constraint("size_mb", "max", "size", "MB"),
    "min_accuracy": Constraint("accuracy", "min", "accuracy", "percent"),
    "max_fairness_gap": Constraint("fairness_gap", "max", "fairness gap", "points"),
    "max_systemic_contribution": Constraint(
        "systemic_contribution", "max", "systemic contribution", "share"
    ),
}
"""Scenario keys that constrain members, the column each reads and its direction."""

_FRACTIONS = {
    "min_accuracy": "accuracy is a fraction (0.9 = 90%)",
    "max_fairness_gap": "the gap is a difference of accuracies, a fraction (0.05 = 5 points)",
    "max_systemic_contribution": "it is a share of the member's errors, a fraction",
}

_EXAMPLES = {
    "min_accuracy": "0.9 for 90%",
    "max_fairness_gap": "0.05 for 5 points",
    "max_systemic_contribution": "0.5 for half of the member's errors",
}

_WHY_MISSING = {
    "latency_p50_ms": "latency is measured by the cost profile when a study trains; audit runs "
    "and older runs have none",
    "n_parameters": "audited models have no parameter counts",
    "size_mb": "sizes are measured with the cost profiles when a study trains",
    "accuracy": "the run has no predictions on this split",
    "fairness_gap": "the fairness gap needs group attributes of the test instances (e.g. "
    "`polyculture audit --group COLUMN`)",
    "systemic_contribution": "it compares members' errors and needs at least two members (or "
    "incumbents)",
}


def format_value(value: float, unit: str) -> str:
    """A constraint value as text in its unit.

    Examples
    --------
    >>> format_value(0.912, "percent"), format_value(1234567, "count"), format_value(0.5, "ms")
    ('91.2%', '1,234,567', '0.5 ms')
    """
    if value is None or not math.isfinite(float(value)):
        return "unknown"
    if unit == "percent":
        return f"{100 * value:.1f}%"
    if unit == "points":
        return f"{100 * value:.1f} points"
    if unit == "count":
        return f"{round(value):,}"
    if unit == "share":
        return f"{value:.3f}"
    return f"{value:.3g} {unit}".rstrip()


def _constraint(key: str, scenario: Scenario) -> Constraint:
    if key.startswith("metrics."):
        name, side = key.removeprefix("metrics.").rsplit(".", 1)
        return Constraint(f"{scenario.split}_{name}", side, name, "")  # type: ignore[arg-type]
    constraint = CONSTRAINTS[key]
    if key == "max_latency_ms":
        return Constraint(scenario.latency_column, "max", constraint.what, constraint.unit)
    return constraint


def load_scenario(
    source: str | Path | Mapping[str, Any] | None = None, **overrides: Any
) -> Scenario:
    """Read a scenario from a TOML file (or a dict), with keyword overrides (e.g. CLI flags).

    Overrides that are ``None`` (or an empty list) are ignored; ``incumbents`` given as an
    override are added to those of the file.

    Raises
    ------
    ConfigError
        Missing or invalid TOML file; an unknown key (naming the closest known one); a bad or
        contradictory value.

    Examples
    --------
    >>> load_scenario({"max_latency_ms": 2}, min_accuracy=0.8).constraints()
    {'max_latency_ms': 2.0, 'min_accuracy': 0.8}
    >>> load_scenario({"max_latency": 2})
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: scenario: unknown key 'max_latency'; did you mean ...
    """
    origin = "scenario"
    if source is None:
        raw: dict[str, Any] = {}
    elif isinstance(source, Mapping):  # a copy: the overrides below must not change it
        raw = dict(source)
    else:
        path = Path(source)
        origin = f"scenario '{path}'"
        if not path.is_file():
            raise ConfigError(
                f"no scenario file '{path}'", hint="give the path of a TOML scenario file"
            )
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{origin} is not valid TOML: {err}", hint="fix the syntax") from None
    for key, value in overrides.items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        if key == "incumbents":
            raw["incumbents"] = [*raw.get("incumbents", []), *value]
        elif key.startswith("ensemble_"):
            raw["ensemble"] = {**raw.get("ensemble", {}), key.removeprefix("ensemble_"): value}
        else:
            raw[key] = value
    try:
        return Scenario.model_validate(raw)
    except ValidationError as err:
        raise as_config_error(err, Scenario, origin=origin) from None


# ---------------------------------------------------------------------------------------------
# Feasible set


class NothingFeasibleError(ConfigError):
    """No member meets the scenario; the message names the constraint that rules out the most."""


@dataclass(frozen=True)
class Feasibility:
    """Which members meet a scenario, and why the others do not.

    Attributes
    ----------
    mask
        True for feasible members (indexed like the candidates table).
    reasons
        Per member, ``"; "``-joined reasons it is ruled out (empty when feasible).
    ruled_out
        Per constraint set, how many members it rules out (a member can be ruled out by
        several).
    best
        Per constraint set, the best value any member reaches (the fastest latency, the highest
        accuracy, ...), to say how far a constraint is from attainable.
    """

    mask: pd.Series
    reasons: pd.Series
    ruled_out: dict[str, int]
    best: dict[str, float]

    def binding(self) -> str | None:
        """The constraint that rules out the most members (the first set one on a tie)."""
        if not self.ruled_out or max(self.ruled_out.values()) == 0:
            return None
        return max(self.ruled_out, key=lambda key: self.ruled_out[key])


def feasible(members: pd.DataFrame, scenario: Scenario) -> Feasibility:
    """Check every member against the scenario's constraints.

    A member with an unknown (NaN) value of a constrained column is ruled out ("unknown").

    Raises
    ------
    ConfigError
        A constraint is set but the candidates table has no value at all for its column (e.g.
        ``max_latency_ms`` on an audit run, ``max_fairness_gap`` without groups).

    Examples
    --------
    >>> members = pd.DataFrame({"member_id": ["a", "b"], "name": ["fast", "slow"],
    ...                         "accuracy": [0.8, 0.9], "latency_p50_ms": [0.1, 3.0]})
    >>> out = feasible(members, Scenario(max_latency_ms=1))
    >>> out.mask.tolist(), out.reasons.tolist()
    ([True, False], ['', 'latency 3 ms > max_latency_ms 1 ms'])
    """
    mask = pd.Series(True, index=members.index, name="feasible")
    reasons: dict[Any, list[str]] = {index: [] for index in members.index}
    ruled_out: dict[str, int] = {}
    best: dict[str, float] = {}
    for key, limit in scenario.constraints().items():
        constraint = _constraint(key, scenario)
        values = _column(members, constraint.column)
        if key.startswith("metrics.") and constraint.column not in members.columns:
            known = sorted(
                c.removeprefix(f"{scenario.split}_")
                for c in members.columns
                if c.startswith(f"{scenario.split}_") and not c.endswith(("_ci_low", "_ci_high"))
            )
            raise ConfigError(
                f"the scenario bounds metric '{constraint.what}', which this run's members do not "
                f"have on the {scenario.split} split",
                hint=f"metrics of this run: {', '.join(known) or '(none)'}",
            )
        if values.isna().all():
            raise ConfigError(
                f"{key} is set but no member has a {constraint.what}: "
                f"{_WHY_MISSING.get(constraint.column, 'no values')}",
                hint=f"leave {key} out of the scenario for this run",
            )
        ok = values <= limit if constraint.bound == "max" else values >= limit
        ok &= values.notna()
        best[key] = float(values.min() if constraint.bound == "max" else values.max())
        ruled_out[key] = int((~ok).sum())
        sign = ">" if constraint.bound == "max" else "<"
        for index in members.index[~ok.to_numpy()]:
            value = values[index]
            if pd.isna(value):
                reasons[index].append(f"{constraint.what} unknown")
            else:
                reasons[index].append(
                    f"{constraint.what} {format_value(value, constraint.unit)} {sign} {key} "
                    f"{format_value(limit, constraint.unit)}"
                )
        mask &= ok
    return Feasibility(
        mask=mask,
        reasons=pd.Series({k: "; ".join(v) for k, v in reasons.items()}, name="reasons").reindex(
            members.index
        ),
        ruled_out=ruled_out,
        best=best,
    )


def _column(members: pd.DataFrame, column: str) -> pd.Series:
    if column not in members.columns:
        return pd.Series(np.nan, index=members.index, dtype=float)
    return pd.to_numeric(members[column], errors="coerce").astype(float)


def _nothing_feasible(
    feasibility: Feasibility, scenario: Scenario, total: int
) -> NothingFeasibleError:
    """The error for an empty feasible set, naming the constraint that rules out the most."""
    order = sorted(feasibility.ruled_out, key=lambda key: -feasibility.ruled_out[key])
    key = order[0]
    constraint = _constraint(key, scenario)
    limits = scenario.constraints()
    limit = limits[key]
    parts = [
        f"{other} ({format_value(limits[other], _constraint(other, scenario).unit)}) rules out "
        f"{feasibility.ruled_out[other]}"
        for other in order[1:]
        if feasibility.ruled_out[other]
    ]
    others = f"; also {', '.join(parts)}" if parts else ""
    best = format_value(feasibility.best[key], constraint.unit)
    extreme = "lowest" if constraint.bound == "max" else "highest"
    return NothingFeasibleError(
        f"no member satisfies the scenario: {key} ({format_value(limit, constraint.unit)}) "
        f"rules out {feasibility.ruled_out[key]} of {total} members{others}",
        hint=f"relax {key}: the {extreme} {constraint.what} of any member is {best}",
    )


# ---------------------------------------------------------------------------------------------
# Recommendation

_OBJECTIVES: dict[str, tuple[str, Direction, str, str]] = {
    # weight key: (column, direction, what, unit)
    "accuracy": ("accuracy", "max", "accuracy", "percent"),
    "latency": ("latency_p50_ms", "min", "latency", "ms"),
    "systemic": ("systemic_contribution", "min", "systemic contribution", "share"),
    "size": ("size_mb", "min", "size", "MB"),
    "parameters": ("n_parameters", "min", "parameters", "count"),
    "fairness": ("fairness_gap", "min", "fairness gap", "points"),
}


def pareto_objectives(members: pd.DataFrame, scenario: Scenario) -> dict[str, Direction]:
    """Accuracy up, latency down, systemic contribution down: those the table has values for.

    Examples
    --------
    >>> pareto_objectives(pd.DataFrame({"accuracy": [0.9], "latency_p50_ms": [1.0]}), Scenario())
    {'accuracy': 'max', 'latency_p50_ms': 'min'}
    """
    objectives: dict[str, Direction] = {}
    for column, direction in (
        ("accuracy", "max"),
        (scenario.latency_column, "min"),
        ("systemic_contribution", "min"),
    ):
        if _column(members, column).notna().any():
            objectives[column] = direction  # type: ignore[assignment]
    return objectives


@dataclass(frozen=True)
class Recommendation:
    """The member a scenario recommends, why, and the table behind it.

    Attributes
    ----------
    member_id, label
        The recommended member and its display label (the ``label`` column, else ``name``).
    reasons
        Sentences saying why (what it reaches, which constraints it meets, what was ruled out).
    table
        The candidates table with ``feasible``, ``reasons``, ``pareto`` (on the front of all
        members), ``pareto_feasible`` (on the front of the feasible ones), ``score`` (weighted,
        feasible members only) and ``recommended`` columns.
    objectives
        The Pareto objectives used (column -> direction).
    feasibility
        The feasible set.
    """

    member_id: str
    label: str
    reasons: list[str]
    table: pd.DataFrame
    objectives: dict[str, Direction]
    feasibility: Feasibility = field(repr=False)

    @property
    def front(self) -> pd.DataFrame:
        """The rows of :attr:`table` on the Pareto front of all members."""
        return self.table[self.table["pareto"]]


def recommend(
    members: pd.DataFrame,
    scenario: Scenario,
    *,
    choice: str | None = None,
    choice_reason: str = "",
) -> Recommendation:
    """Recommend one member for a scenario, with its reasons and the Pareto front.

    The feasible members are ranked by the weighted mean of their objectives, each rescaled to
    ``[0, 1]`` over the feasible members (1 = best; all 1 when every member has the same value),
    and the best member on the feasible Pareto front wins. Ties go to higher accuracy, then lower
    latency, lower systemic contribution, fewer parameters, then table order.

    Parameters
    ----------
    members
        The candidates table (see the module docstring).
    scenario
        The constraints and weights.
    choice, choice_reason
        A feasible member id chosen by another rule (e.g. against incumbents) and the sentence
        saying why; it replaces the weighted ranking.

    Raises
    ------
    NothingFeasibleError
        No member meets the scenario: names the constraint that rules out the most members and
        the best value any member reaches.
    ConfigError
        A constraint or a weight reads a column the table has no value for; ``choice`` is not a
        feasible member.

    Examples
    --------
    >>> members = pd.DataFrame({"member_id": ["a", "b", "c"], "name": ["cnn", "mlp", "gru"],
    ...                         "accuracy": [0.94, 0.70, 0.90], "latency_p50_ms": [3.0, 0.1, 1.0]})
    >>> choice = recommend(members, Scenario(max_latency_ms=2))
    >>> choice.label, choice.table["pareto"].tolist()
    ('gru', [True, True, True])
    >>> print(choice.reasons[0])
    gru is recommended: accuracy 90.0%, latency 1 ms.
    """
    if members.empty:
        raise ConfigError("there are no members to choose from", hint="train a study first")
    feasibility = feasible(members, scenario)
    if not feasibility.mask.any():
        raise _nothing_feasible(feasibility, scenario, len(members))
    objectives = pareto_objectives(members, scenario)
    table = members.copy()
    table["feasible"] = feasibility.mask
    table["reasons"] = feasibility.reasons
    table["pareto"] = pareto_front(table, objectives)
    candidates = table[feasibility.mask]
    table["pareto_feasible"] = False
    table.loc[candidates.index, "pareto_feasible"] = pareto_front(candidates, objectives)
    table["score"] = np.nan
    table.loc[candidates.index, "score"] = _scores(candidates, scenario)
    front = table[table["pareto_feasible"]]
    order = front.assign(
        _accuracy=-_column(front, "accuracy").fillna(-np.inf),
        _latency=_column(front, scenario.latency_column).fillna(np.inf),
        _systemic=_column(front, "systemic_contribution").fillna(np.inf),
        _parameters=_column(front, "n_parameters").fillna(np.inf),
        _score=-front["score"],
        _position=np.arange(len(front)),
    ).sort_values(["_score", "_accuracy", "_latency", "_systemic", "_parameters", "_position"])
    chosen = order.index[0]
    if choice is not None:
        matches = table.index[(table["member_id"].astype(str) == choice) & table["feasible"]]
        if len(matches) != 1:
            raise ConfigError(
                f"member '{choice}' is not a feasible candidate",
                hint="choose among the members that meet the scenario",
            )
        chosen = matches[0]
    table["recommended"] = table.index == chosen
    row = table.loc[chosen]
    return Recommendation(
        member_id=str(row["member_id"]),
        label=_label(row),
        reasons=_reasons(table, chosen, scenario, objectives, feasibility, choice_reason),
        table=table,
        objectives=objectives,
        feasibility=feasibility,
    )


def _scores(candidates: pd.DataFrame, scenario: Scenario) -> pd.Series:
    """Weighted mean of the rescaled objectives ``(feasible,)``; 1 = best on every objective."""
    total = pd.Series(0.0, index=candidates.index)
    weight_sum = 0.0
    for key, weight in scenario.weights.model_dump().items():
        if weight == 0:
            continue
        column, direction, what, _ = _OBJECTIVES[key]
        if key == "latency":
            column = scenario.latency_column
        values = _column(candidates, column)
        if values.isna().all():
            raise ConfigError(
                f"weights.{key} is set but no member has a {what}: "
                f"{_WHY_MISSING.get(_OBJECTIVES[key][0], 'no values')}",
                hint=f"set weights.{key} = 0 for this run",
            )
        low, high = values.min(), values.max()
        if high > low:
            rescaled = (values - low) / (high - low)
            rescaled = rescaled if direction == "max" else 1 - rescaled
        else:
            rescaled = pd.Series(1.0, index=values.index)
        total += weight * rescaled.fillna(0.0)  # an unknown value counts as the worst
        weight_sum += weight
    return total / weight_sum


def _label(row: pd.Series) -> str:
    """A member's display label: the ``label`` column (e.g. ``mlp s1``), else its ``name``."""
    label = row.get("label")
    return str(row["name"]) if label is None or pd.isna(label) else str(label)


def _describe(row: pd.Series, scenario: Scenario) -> str:
    parts = [f"accuracy {format_value(row['accuracy'], 'percent')}"]
    for column, what, unit in (
        (scenario.latency_column, "latency", "ms"),
        ("n_parameters", "parameters", "count"),
        ("size_mb", "size", "MB"),
        ("fairness_gap", "fairness gap", "points"),
        ("systemic_contribution", "systemic contribution", "share"),
    ):
        value = row.get(column)
        if value is not None and not pd.isna(value):
            parts.append(f"{what} {format_value(float(value), unit)}")
    return ", ".join(parts)


def _reasons(
    table: pd.DataFrame,
    chosen: Any,
    scenario: Scenario,
    objectives: dict[str, Direction],
    feasibility: Feasibility,
    choice_reason: str = "",
) -> list[str]:
    row = table.loc[chosen]
    reasons = [f"{_label(row)} is recommended: {_describe(row, scenario)}."]
    constraints = scenario.constraints()
    if constraints:
        met = []
        for key, limit in constraints.items():
            constraint = _constraint(key, scenario)
            sign = "≤" if constraint.bound == "max" else "≥"
            met.append(
                f"{constraint.what} {format_value(float(row[constraint.column]), constraint.unit)}"
                f" {sign} {format_value(limit, constraint.unit)}"
            )
        feasible_count = int(feasibility.mask.sum())
        reasons.append(
            f"It meets every constraint ({'; '.join(met)}); {feasible_count} of {len(table)} "
            "members do."
        )
    else:
        reasons.append("The scenario sets no constraint, so every member is feasible.")
    weights = {k: v for k, v in scenario.weights.model_dump().items() if v}
    if choice_reason:
        reasons.append(choice_reason)
    elif list(weights) == ["accuracy"]:
        tied = table["feasible"] & (_column(table, "accuracy") == float(row["accuracy"]))
        reasons.append(
            "It is the most accurate feasible member"
            + (" (a tie, broken by lower latency, lower systemic contribution, fewer "
               "parameters, then table order)." if tied.sum() > 1 else ".")
        )  # fmt: skip
    else:
        spelled = ", ".join(f"{k} {v:g}" for k, v in weights.items())
        reasons.append(
            f"It has the best weighted score ({float(row['score']):.3f}) among the feasible "
            f"members (weights: {spelled}; each objective rescaled to [0, 1] over them)."
        )
    axes = ", ".join(
        f"{_AXIS_NAMES.get(c, c)} {'up' if d == 'max' else 'down'}" for c, d in objectives.items()
    )
    front_size = int(table["pareto"].sum())
    where = "is" if bool(row["pareto"]) else "is not"
    reasons.append(
        f"It {where} on the Pareto front of ({axes}) over all members ({front_size} members are)."
    )
    better = table[~table["feasible"] & (_column(table, "accuracy") > float(row["accuracy"]))]
    if not better.empty:
        top = better.loc[_column(better, "accuracy").idxmax()]
        gain = 100 * (float(top["accuracy"]) - float(row["accuracy"]))
        reasons.append(
            f"{_label(top)} is more accurate ({format_value(top['accuracy'], 'percent')}, "
            f"+{gain:.1f} points) but is ruled out: {top['reasons']}."
        )
    latency = scenario.latency_column
    if latency in table and _column(table, latency).notna().any():
        front = table[table["pareto_feasible"] & (table.index != chosen)]
        faster = front[_column(front, latency) < float(row.get(latency, np.inf))]
        if not faster.empty:
            fast = faster.loc[_column(faster, latency).idxmin()]
            reasons.append(
                f"For lower latency, {_label(fast)} takes "
                f"{format_value(float(fast[latency]), 'ms')} at "
                f"{format_value(float(fast['accuracy']), 'percent')} accuracy."
            )
    return reasons


_AXIS_NAMES = {
    "accuracy": "accuracy",
    "latency_p50_ms": "latency",
    "latency_p95_ms": "p95 latency",
    "systemic_contribution": "systemic contribution",
}
