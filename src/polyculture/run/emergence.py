"""Emergence analysis of a run: its sweeps' metrics against scale, and when training generalizes.

A sweep (a ``[[sweeps]]`` entry of the study, or any zoo entry with a grid, named on the command
line) places the members of one zoo entry on a scale axis and fits each test metric against it
with :mod:`polyculture.measure.emergence`. :func:`analyze_emergence` writes:

* ``tables/emergence_points.parquet``: one row per (sweep, metric, member): scale and value;
* ``tables/emergence_fits.parquet``: one row per (sweep, metric, curve family): the fitted
  parameters (JSON), R², AIC, BIC;
* ``tables/emergence_curves.parquet``: one row per (sweep, metric): the shape (jump / smooth /
  unclear and why), the break with bootstrap CIs, breakthroughness, linearity and the error of a
  power law fitted on the smaller scales when it predicts the largest;
* ``tables/emergence_verdicts.parquet``: one row per sweep with a ``swap`` pair: the
  metric-swap verdict of Schaeffer et al. (2023) and its sentence;
* ``tables/emergence_crossings.parquet``: one row per (torch member, threshold): the first
  logged step at which training accuracy and held-out (validation) accuracy reach 50% and 90%,
  and the delay between them (grokking shows as a long delay).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from polyculture.errors import ConfigError, MeasureInputError
from polyculture.measure.emergence import (
    break_with_ci,
    curve_shape,
    delayed_generalization,
    extrapolation_error,
    metric_swap_verdict,
)
from polyculture.measure.performance import ANSWER_METRICS
from polyculture.run.store import RunStore, write_table
from polyculture.run.study import MIN_SWEEP_POINTS, SWEEP_AXES, SweepSpec

AXIS_COLUMNS = {
    "params": "n_parameters",
    "data": "train_rows",
    "steps": "steps",
    "flops": "train_flops",
}
"""Members-table column behind each scale axis."""

AXIS_TITLES = {
    "params": "trainable parameters",
    "data": "training rows",
    "steps": "optimizer steps",
    "flops": "training FLOPs",
}

CROSSING_THRESHOLDS = (0.5, 0.9)
"""Accuracy levels at which training and held-out accuracy crossings are reported."""

BREAK_POINTS = 6
"""Distinct scales the broken power law (and so a break with CIs) needs."""


@dataclass(frozen=True)
class Sweep:
    """A sweep to analyse: a name, the zoo entry, the axis, the metrics and an optional swap."""

    name: str
    zoo: str
    axis: str
    metrics: tuple[str, ...]
    swap: tuple[str, str] | None = None
    n_boot: int = 200

    @classmethod
    def from_spec(cls, spec: SweepSpec, n_boot: int = 200) -> Sweep:
        """The sweep a study's ``[[sweeps]]`` entry describes."""
        metrics = tuple(dict.fromkeys([*spec.metrics, *(spec.swap or ())]))
        return cls(spec.name, spec.zoo, spec.axis, metrics, spec.swap, n_boot)


def metric_names(members: pd.DataFrame, split: str = "test") -> list[str]:
    """The metrics a run's members table holds for ``split`` (without CI columns).

    Columns of other splits that share the prefix (the shifted test sets ``test_noise``, ...,
    recognised by their ``<split>_accuracy`` and ``<split>_nll`` columns) are not metrics.

    Examples
    --------
    >>> metric_names(pd.DataFrame(columns=["test_accuracy", "test_accuracy_ci_low", "val_nll",
    ...     "test_noise_accuracy", "test_noise_nll", "test_exact_match"]))
    ['accuracy', 'exact_match']
    """
    columns = set(members.columns)
    others = [
        column.removesuffix("_accuracy")
        for column in columns
        if column.endswith("_accuracy")
        and column != f"{split}_accuracy"
        and f"{column.removesuffix('_accuracy')}_nll" in columns
    ]
    prefix = f"{split}_"
    return [
        column.removeprefix(prefix)
        for column in members.columns
        if column.startswith(prefix)
        and not column.endswith(("_ci_low", "_ci_high"))
        and not any(column.startswith(f"{other}_") for other in others)
    ]


def sweep_entries(members: pd.DataFrame) -> list[str]:
    """Zoo entries of a run with at least :data:`MIN_SWEEP_POINTS` distinct models."""
    if "entry" not in members:
        return []
    counts = members.groupby("entry")["name"].nunique()
    return sorted(counts[counts >= MIN_SWEEP_POINTS].index)


def sweep_points(
    members: pd.DataFrame, entry: str, axis: str, metrics: list[str] | tuple[str, ...]
) -> pd.DataFrame:
    """The members of zoo entry ``entry`` on scale ``axis`` with their test ``metrics``.

    Failed members are left out. Returns one row per (metric, member): ``metric``,
    ``member_id``, ``name``, ``seed``, ``scale``, ``value``.

    Raises
    ------
    ConfigError
        Unknown axis, entry or metric, too few distinct scales, or a non-finite value.

    Examples
    --------
    >>> members = pd.DataFrame({"member_id": list("abcd"), "name": list("abcd"),
    ...     "entry": "mlp", "seed": 0, "status": "ok", "n_parameters": [10, 20, 40, 80],
    ...     "test_accuracy": [0.1, 0.2, 0.6, 0.9]})
    >>> sweep_points(members, "mlp", "params", ["accuracy"])["scale"].tolist()
    [10.0, 20.0, 40.0, 80.0]
    """
    if axis not in AXIS_COLUMNS:
        raise ConfigError(
            f"unknown scale axis '{axis}'", hint=f"use one of {', '.join(SWEEP_AXES)}"
        )
    if "entry" not in members:
        raise ConfigError(
            "this run's members table has no zoo-entry column (it was made by an older version)",
            hint="rerun the study with this version to analyse sweeps",
        )
    rows = members[(members["entry"] == entry) & (members["status"] == "ok")]
    if rows.empty:
        known = ", ".join(sweep_entries(members)) or "(none with 4 or more grid points)"
        raise ConfigError(
            f"the run has no trained members of zoo entry '{entry}'",
            hint=f"sweepable entries: {known}",
        )
    column = AXIS_COLUMNS[axis]
    scale = pd.to_numeric(rows[column], errors="coerce") if column in rows else None
    if scale is None or not np.isfinite(scale.to_numpy(float)).all() or (scale <= 0).any():
        raise ConfigError(
            f"zoo entry '{entry}' has no positive {AXIS_TITLES[axis]} for every member",
            hint=(
                "scikit-learn members have no training FLOPs or steps; use --axis params or data"
                if axis in ("flops", "steps")
                else "rerun the study with this version"
            ),
        )
    distinct = int(scale.nunique())
    if distinct < MIN_SWEEP_POINTS:
        raise ConfigError(
            f"zoo entry '{entry}' has {distinct} distinct {AXIS_TITLES[axis]} value(s); a fit "
            f"needs at least {MIN_SWEEP_POINTS}",
            hint="add grid values that change this axis, or pick another --axis",
        )
    available = metric_names(members)
    frames = []
    for metric in metrics:
        if metric not in available:
            raise ConfigError(
                f"metric '{metric}' does not exist in this run",
                hint=f"metrics of this run: {', '.join(available)}",
            )
        values = pd.to_numeric(rows[f"test_{metric}"], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(values)
        if bad.any():
            names = ", ".join(rows["name"].to_numpy()[bad][:3])
            raise ConfigError(
                f"metric '{metric}' is NaN or infinite for {int(bad.sum())} member(s) of "
                f"'{entry}' ({names})",
                hint="look at those members' status and reason in `polyculture show`",
            )
        frames.append(
            pd.DataFrame(
                {
                    "metric": metric,
                    "member_id": rows["member_id"].to_numpy(),
                    "name": rows["name"].to_numpy(),
                    "seed": rows["seed"].to_numpy(),
                    "scale": scale.to_numpy(float),
                    "value": values,
                }
            )
        )
    return pd.concat(frames, ignore_index=True).sort_values(["metric", "scale", "seed"])


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _seed_groups(points: pd.DataFrame) -> np.ndarray | None:
    """Seeds as bootstrap groups (whole seeds resampled), or None with one seed (residuals)."""
    seeds = points["seed"].to_numpy()
    return seeds if len(np.unique(seeds)) > 1 else None


def analyze_curve(
    points: pd.DataFrame, *, n_boot: int = 200, seed: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Shape, break, scores and extrapolation of one metric over scale (``points`` of one metric).

    Returns the summary row (``emergence_curves``) and one row per fitted family
    (``emergence_fits``).
    """
    x = points["scale"].to_numpy(float)
    y = points["value"].to_numpy(float)
    groups = _seed_groups(points)
    shape = curve_shape(x, y)
    distinct = len(np.unique(x))
    row: dict[str, Any] = {
        "shape": shape.label,
        "reason": shape.reason,
        "delta_bic": shape.delta_bic,
        "sharp_family": shape.sharp_family,
        "transition_location": shape.transition_location,
        "transition_width": shape.transition_width,
        "breakthroughness": shape.score.breakthroughness,
        "breakthroughness_per_step": shape.score.breakthroughness_per_step,
        "linearity": shape.score.linearity,
        "total_improvement": shape.score.total_improvement,
        "n_scales": distinct,
        "has_break": False,
        "break_location": np.nan,
        "break_location_ci_low": np.nan,
        "break_location_ci_high": np.nan,
        "break_sharpness": np.nan,
        "break_sharpness_ci_low": np.nan,
        "break_sharpness_ci_high": np.nan,
        "break_support": np.nan,
    }
    if distinct >= BREAK_POINTS:
        found = break_with_ci(x, y, groups=groups, n_boot=n_boot, seed=seed)
        row |= {
            "has_break": found.has_break,
            "break_location": found.break_location,
            "break_location_ci_low": found.break_location_ci[0],
            "break_location_ci_high": found.break_location_ci[1],
            "break_sharpness": found.sharpness,
            "break_sharpness_ci_low": found.sharpness_ci[0],
            "break_sharpness_ci_high": found.sharpness_ci[1],
            "break_support": found.break_support,
        }
    # A power law fitted on all but the largest scale, scored there: how far a smooth
    # extrapolation from small models misses (large when an ability emerges at the top).
    forecast = extrapolation_error(x, y, "power_law")
    row |= {
        "extrapolated_scale": float(forecast.x[0]),
        "extrapolated_observed": float(forecast.observed[0]),
        "extrapolated_predicted": float(forecast.predicted[0]),
        "extrapolation_abs_error": float(forecast.abs_error[0]),
    }
    fits = [
        {
            "curve": family,
            "formula": fit.formula,
            "parameters": json.dumps({k: _finite(v) for k, v in fit.params.items()}),
            "r2": fit.r2,
            "aic": fit.aic,
            "bic": fit.bic,
            "n_points": fit.n_points,
        }
        for family, fit in shape.fits.items()
    ]
    return row, fits


def swap_verdict(
    points: pd.DataFrame, swap: tuple[str, str], *, n_boot: int = 200, seed: int = 0
) -> dict[str, Any]:
    """The metric-swap verdict of one sweep: ``swap`` = (discontinuous, continuous) metric."""
    by_metric = {metric: group for metric, group in points.groupby("metric")}
    disc, cont = (by_metric[name].sort_values("member_id") for name in swap)
    out = metric_swap_verdict(
        disc["scale"].to_numpy(float),
        disc["value"].to_numpy(float),
        cont["value"].to_numpy(float),
        names=swap,
        groups=_seed_groups(disc),
        n_boot=n_boot if len(np.unique(disc["scale"])) >= BREAK_POINTS else 0,
        seed=seed,
    )
    return {
        "discontinuous": swap[0],
        "continuous": swap[1],
        "verdict": out.verdict,
        "text": out.text,
        "discontinuous_shape": out.discontinuous.label,
        "continuous_shape": out.continuous.label,
        "discontinuous_reason": out.discontinuous.reason,
        "continuous_reason": out.continuous.reason,
    }


def analyze_sweep(members: pd.DataFrame, sweep: Sweep, *, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Points, fits, curve summaries and the verdict of one sweep (tables without the sweep key).

    Raises
    ------
    ConfigError
        Bad axis, entry or metric, or too few points (see :func:`sweep_points`).
    """
    points = sweep_points(members, sweep.zoo, sweep.axis, sweep.metrics)
    curve_rows, fit_rows = [], []
    for metric in sweep.metrics:
        try:
            row, fits = analyze_curve(
                points[points["metric"] == metric], n_boot=sweep.n_boot, seed=seed
            )
        except MeasureInputError as err:
            raise ConfigError(f"sweep '{sweep.name}', metric '{metric}': {err.message}") from None
        curve_rows.append({"metric": metric} | row)
        fit_rows += [{"metric": metric} | fit for fit in fits]
    verdicts = []
    if sweep.swap is not None:
        verdicts.append(swap_verdict(points, sweep.swap, n_boot=sweep.n_boot, seed=seed))
    return {
        "points": points,
        "curves": pd.DataFrame(curve_rows),
        "fits": pd.DataFrame(fit_rows),
        "verdicts": pd.DataFrame(verdicts),
    }


def training_crossings(history: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """When each torch member's training and held-out accuracy first reach 50% and 90%.

    Held-out accuracy is the validation accuracy logged at each evaluation (instances the member
    never trained on). Columns: ``member_id``, ``name``, ``entry``, ``seed``, ``threshold``,
    ``train_step``, ``heldout_step``, ``delay`` (NaN where a curve never reaches the level),
    ``final_train_accuracy``, ``final_heldout_accuracy``.
    """
    columns = [
        "member_id",
        "name",
        "entry",
        "seed",
        "threshold",
        "train_step",
        "heldout_step",
        "delay",
        "final_train_accuracy",
        "final_heldout_accuracy",
    ]
    if history.empty or "train_accuracy" not in history:
        return pd.DataFrame(columns=columns)
    info = members.set_index("member_id")
    rows = []
    for member_id, log in history.groupby("member_id", sort=False):
        log = log.dropna(subset=["train_accuracy", "val_accuracy"]).sort_values("step")
        log = log.drop_duplicates("step", keep="last")
        if log.empty or member_id not in info.index:
            continue
        found = delayed_generalization(
            log["step"].to_numpy(np.int64),
            log["train_accuracy"].to_numpy(float),
            log["val_accuracy"].to_numpy(float),
            CROSSING_THRESHOLDS,
        )
        member = info.loc[member_id]
        for crossing in found.crossings:
            rows.append(
                {
                    "member_id": member_id,
                    "name": member["name"],
                    "entry": member.get("entry", ""),
                    "seed": int(member["seed"]),
                    "threshold": crossing.threshold,
                    "train_step": np.nan if crossing.train_step is None else crossing.train_step,
                    "heldout_step": np.nan if crossing.test_step is None else crossing.test_step,
                    "delay": np.nan if crossing.delay is None else crossing.delay,
                    "final_train_accuracy": float(log["train_accuracy"].iloc[-1]),
                    "final_heldout_accuracy": float(log["val_accuracy"].iloc[-1]),
                }
            )
    return pd.DataFrame(rows, columns=columns)


EMERGENCE_TABLES = ("points", "fits", "curves", "verdicts")


def analyze_emergence(
    store: RunStore, sweeps: list[Sweep], *, seed: int = 0, strict: bool = False
) -> list[str]:
    """Write the emergence tables of a run (see the module docstring); returns problems.

    A sweep that cannot be analysed (members failed, leaving too few scales) is skipped and its
    problem returned and written to ``tables/emergence_notes.parquet``, so one bad sweep does not
    lose the others; ``strict=True`` raises instead. The crossings table is written for every run
    with training histories; every table is written (possibly empty) so that none from an
    earlier analysis survives.
    """
    members = store.table("members")
    history = store.table("history") if (store.tables_dir / "history.parquet").exists() else None
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in EMERGENCE_TABLES}
    problems: list[str] = []
    for sweep in sweeps:
        try:
            tables = analyze_sweep(members, sweep, seed=seed)
        except ConfigError as err:
            if strict:
                raise
            problems.append(f"sweep '{sweep.name}' was not analysed: {err.message}")
            continue
        for name, frame in tables.items():
            if not frame.empty:
                frames[name].append(frame.assign(sweep=sweep.name, axis=sweep.axis))
    write_table(pd.DataFrame({"note": problems}), store.tables_dir / "emergence_notes.parquet")
    for name, parts in frames.items():
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if not table.empty:
            table = table[["sweep", "axis", *[c for c in table if c not in ("sweep", "axis")]]]
        write_table(table, store.tables_dir / f"emergence_{name}.parquet")
    crossings = training_crossings(history if history is not None else pd.DataFrame(), members)
    write_table(crossings, store.tables_dir / "emergence_crossings.parquet")
    return problems


def check_sweep_metrics(sweeps: list[SweepSpec], metrics: list[str]) -> None:
    """Raise before training when a sweep names a metric the task's members will not have.

    Examples
    --------
    >>> check_sweep_metrics([SweepSpec(name="s", zoo="mlp", metrics=["exact_match"])],
    ...                     ["accuracy"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: sweep 's' names metric 'exact_match', which this task's ...
    """
    for sweep in sweeps:
        for metric in dict.fromkeys([*sweep.metrics, *(sweep.swap or ())]):
            if metric not in metrics:
                extra = (
                    " (exact_match, answer_log_likelihood and edit_distance need a task whose "
                    "answers span several tokens, such as 'addition')"
                    if metric in ANSWER_METRICS
                    else ""
                )
                raise ConfigError(
                    f"sweep '{sweep.name}' names metric '{metric}', which this task's members "
                    "do not have",
                    hint=f"use one of {', '.join(metrics)}{extra}",
                )
