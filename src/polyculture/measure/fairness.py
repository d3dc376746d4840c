"""Fairness by group: per-group metrics with bootstrap CIs, disparities, per-group systemic failure.

* :func:`group_metrics`: one member's accuracy, selection rate, true-positive rate (TPR) and
  false-positive rate (FPR) per group, disaggregated with fairlearn's ``MetricFrame``, with
  percentile bootstrap CIs (resampling instances of the whole evaluation set, seeded, so two
  members evaluated with the same seed see the same resamples); the demographic-parity and
  equalized-odds differences and ratios (fairlearn's functions) with CIs from the same resamples.
* :func:`group_systemic_failure`: over a zoo of members, the share of each group's instances
  that *every* member fails, with CIs, and H_avg / H_unif / H_worst of
  :func:`polyculture.measure.homogenization.homogenization` for the grouping.

The rates treat one class as the positive decision (``positive``, e.g. income ``>50K``):
selection rate = share predicted positive, TPR = share of true positives predicted positive,
FPR = share of true negatives predicted positive. Accuracy uses all classes.

Small groups: groups with fewer than ``min_group_size`` instances are kept and reported (flag
``small``, wide CIs) but left out of the between-group differences and ratios and of the choice
of the worst group, whose estimates they would dominate with noise. The result's ``note`` names
them.

Requires ``polyculture[fair]`` (fairlearn), imported when a function is called.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score

from polyculture.errors import ConfigError, MeasureInputError
from polyculture.measure._checks import Array, check_bootstrap
from polyculture.measure.homogenization import Homogenization, homogenization
from polyculture.measure.statistics import bootstrap_mean_ci, percentile_interval

__all__ = [
    "DISPARITIES",
    "GROUP_METRICS",
    "GroupFairness",
    "group_metrics",
    "group_systemic_failure",
]

GROUP_METRICS = ("accuracy", "selection_rate", "tpr", "fpr")
"""Per-group metrics, in table order."""

DISPARITIES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "accuracy_difference",
)
"""Between-group summaries: fairlearn's (``between_groups``) and best minus worst accuracy."""

# Resampled instance indices held in memory at once by the bootstrap (int64 elements).
_BOOTSTRAP_ELEMENTS = 1 << 22


def _fairlearn() -> Any:
    try:
        import fairlearn.metrics
    except ImportError:
        raise ConfigError(
            "the fairness audit needs polyculture[fair] (fairlearn)",
            hint="pip install 'polyculture[fair]'",
        ) from None
    return fairlearn.metrics


@dataclass(frozen=True, eq=False)
class GroupFairness:
    """One member's metrics by group, with CIs, and its between-group disparities.

    Attributes
    ----------
    by_group
        One row per group (sorted by label): ``group``, ``n``, ``positives`` (true positives in
        the group), ``negatives``, ``small`` (``n < min_group_size``), and for each of
        :data:`GROUP_METRICS` the value with ``<metric>_ci_low`` / ``<metric>_ci_high``.
    overall
        The same metrics over all instances (``n`` and each metric with its CI).
    disparities
        One row per :data:`DISPARITIES` measure: ``measure``, ``value``, ``ci_low``, ``ci_high``,
        over the groups that are not small.
    worst_group, best_group
        Lowest and highest accuracy among groups that are not small (empty when none).
    note
        Which groups are small, and why a value is NaN; empty when nothing is unusual.
    """

    by_group: pd.DataFrame
    overall: dict[str, float]
    disparities: pd.DataFrame
    worst_group: str
    best_group: str
    note: str = ""


def _rates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from confusion counts ``(..., 2 truth, 2 decision, 2 correct)``, NaN for 0/0."""
    n = counts.sum(axis=(-1, -2, -3))
    positives = counts[..., 1, :, :].sum(axis=(-1, -2))
    negatives = counts[..., 0, :, :].sum(axis=(-1, -2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "accuracy": counts[..., 1].sum(axis=(-1, -2)) / n,
            "selection_rate": counts[..., :, 1, :].sum(axis=(-1, -2)) / n,
            "tpr": counts[..., 1, 1, :].sum(axis=-1) / positives,
            "fpr": counts[..., 0, 1, :].sum(axis=-1) / negatives,
        }


def _disparities(rates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Between-group summaries over the last axis (groups); NaN groups are ignored."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN
        low = {k: np.nanmin(v, axis=-1) for k, v in rates.items()}
        high = {k: np.nanmax(v, axis=-1) for k, v in rates.items()}
        # Equal rates of 0 in every group (no false positives anywhere) are parity: ratio 1.
        ratio = {k: np.where(high[k] == 0, 1.0, low[k] / high[k]) for k in rates}
    return {
        "demographic_parity_difference": high["selection_rate"] - low["selection_rate"],
        "demographic_parity_ratio": ratio["selection_rate"],
        # fmax/fmin: a rate undefined in every group (NaN) leaves the other one to decide
        "equalized_odds_difference": np.fmax(high["tpr"] - low["tpr"], high["fpr"] - low["fpr"]),
        "equalized_odds_ratio": np.fmin(ratio["tpr"], ratio["fpr"]),
        "accuracy_difference": high["accuracy"] - low["accuracy"],
    }


def _labels(groups: Array, n: int) -> np.ndarray:
    labels = np.asarray(groups)
    if labels.ndim != 1 or len(labels) != n:
        raise MeasureInputError(
            f"groups must hold one label per instance, shape ({n},); got {labels.shape}",
            hint="pass the group of each instance, in the same order as the labels",
        )
    if pd.isna(labels).any():
        raise MeasureInputError(
            "groups holds missing labels", hint="give instances without a group their own label"
        )
    return labels.astype(str)


def group_metrics(
    y_true: Array,
    y_pred: Array,
    groups: Array,
    *,
    positive: int = 1,
    min_group_size: int = 30,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> GroupFairness:
    """Accuracy, selection rate, TPR and FPR by group with bootstrap CIs, and disparities.

    Per-group and overall values come from fairlearn's ``MetricFrame``. The disparities follow
    fairlearn's ``method="between_groups"`` definitions (as
    ``fairlearn.metrics.demographic_parity_difference`` and ``equalized_odds_difference``) over
    the groups with at least ``min_group_size`` instances, computed from confusion counts like
    every bootstrap resample; where fairlearn scores a group's undefined TPR (no positives) or
    FPR (no negatives) as 0, it is left out here, and a ratio of two zero rates is 1.
    CIs are percentile bootstrap intervals: each resample draws ``n`` instances with replacement
    from the whole set (group sizes vary as they would in a new sample) and recomputes every
    number from its confusion counts.

    Parameters
    ----------
    y_true, y_pred
        Class indices ``(n,)``: labels and one member's predictions.
    groups
        Group label per instance ``(n,)`` (strings; intersectional groups joined by ``" x "``).
    positive
        Class index of the positive decision for selection rate, TPR and FPR.
    min_group_size
        Groups with fewer instances are flagged ``small``: reported, not compared.
    n_resamples, confidence, seed
        The percentile bootstrap.

    Raises
    ------
    MeasureInputError
        Mismatched lengths, missing group labels, fewer than two groups.
    ConfigError
        fairlearn is not installed.

    Examples
    --------
    >>> y = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    >>> pred = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    >>> out = group_metrics(y, pred, np.array(list("aaaabbbb")), min_group_size=1,
    ...                     n_resamples=100)
    >>> out.by_group[["group", "accuracy", "selection_rate", "tpr", "fpr"]].values.tolist()
    [['a', 0.75, 0.25, 0.5, 0.0], ['b', 0.75, 0.75, 1.0, 0.5]]
    >>> round(float(out.disparities.set_index("measure").loc["equalized_odds_difference",
    ...                                                        "value"]), 3)
    0.5
    """
    n_resamples = check_bootstrap(n_resamples, confidence)
    metrics = _fairlearn()
    truth = np.asarray(y_true).astype(np.int64).reshape(-1)  # (n,)
    predicted = np.asarray(y_pred).astype(np.int64).reshape(-1)  # (n,)
    n = len(truth)
    if predicted.shape != truth.shape or n == 0:
        raise MeasureInputError(
            f"y_true and y_pred must be non-empty and of one length; got {n} and {len(predicted)}",
            hint="pass one prediction per labelled instance",
        )
    labels = _labels(groups, n)
    names, codes = np.unique(labels, return_inverse=True)  # (G,), (n,)
    if len(names) < 2:
        raise MeasureInputError(
            f"a fairness audit needs at least two groups; all instances are in {names[0]!r}",
            hint="use a group attribute with two or more values",
        )
    true_positive = (truth == positive).astype(np.int64)
    decided_positive = (predicted == positive).astype(np.int64)

    def tpr(truth_part: np.ndarray, predicted_part: np.ndarray) -> float:
        return float(
            metrics.true_positive_rate(
                truth_part == positive, predicted_part == positive, pos_label=True
            )
        )

    def fpr(truth_part: np.ndarray, predicted_part: np.ndarray) -> float:
        return float(
            metrics.false_positive_rate(
                truth_part == positive, predicted_part == positive, pos_label=True
            )
        )

    def selection_rate(truth_part: np.ndarray, predicted_part: np.ndarray) -> float:
        return float(metrics.selection_rate(truth_part, predicted_part, pos_label=positive))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a group without positives: scikit-learn warns
        frame = metrics.MetricFrame(
            metrics={
                "accuracy": accuracy_score,
                "selection_rate": selection_rate,
                "tpr": tpr,
                "fpr": fpr,
            },
            y_true=truth,
            y_pred=predicted,
            sensitive_features=pd.Series(labels, name="group"),
        )
    sizes = np.bincount(codes, minlength=len(names))  # (G,)
    small = sizes < min_group_size
    by_group = frame.by_group.reindex(names).reset_index()
    by_group.insert(1, "n", sizes)
    by_group.insert(2, "positives", np.bincount(codes, true_positive, len(names)).astype(int))
    by_group.insert(3, "negatives", by_group["n"] - by_group["positives"])
    by_group.insert(4, "small", small)

    # Confusion counts per (group, truth, decision, correct): the point values and every
    # bootstrap resample go through the same _disparities, so an estimate always lies within the
    # reach of its interval. They are fairlearn's "between_groups" definitions (demographic
    # parity compares selection rates, equalized odds the worse of the TPR and FPR gaps), except
    # that a rate undefined in a group (TPR without positives) is left out rather than taken as 0.
    cells = ((codes * 2 + true_positive) * 2 + decided_positive) * 2 + (truth == predicted)
    n_cells = len(names) * 8
    compared = int((~small).sum())
    values: dict[str, float] = dict.fromkeys(DISPARITIES, float("nan"))
    if compared >= 2:
        observed = np.bincount(cells, minlength=n_cells).reshape(len(names), 2, 2, 2)
        observed_rates = {k: v[~small] for k, v in _rates(observed).items()}  # each (compared,)
        values = {k: float(v) for k, v in _disparities(observed_rates).items()}

    rng = np.random.default_rng(seed)
    boot_group: dict[str, list[np.ndarray]] = {k: [] for k in GROUP_METRICS}
    boot_overall: dict[str, list[np.ndarray]] = {k: [] for k in GROUP_METRICS}
    boot_disparity: dict[str, list[np.ndarray]] = {k: [] for k in DISPARITIES}
    block = max(1, min(n_resamples, _BOOTSTRAP_ELEMENTS // n))
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        draws = rng.integers(0, n, size=(size, n))  # (size, n)
        keys = cells[draws] + n_cells * np.arange(size)[:, None]
        counts = np.bincount(keys.ravel(), minlength=size * n_cells)
        counts = counts.reshape(size, len(names), 2, 2, 2)  # (size, G, truth, decision, correct)
        group_rates = _rates(counts)  # each (size, G)
        overall_rates = _rates(counts.sum(axis=1))  # each (size,)
        for key in GROUP_METRICS:
            boot_group[key].append(group_rates[key])
            boot_overall[key].append(overall_rates[key])
        compared_rates = {k: v[:, ~small] for k, v in group_rates.items()}
        for key, value in _disparities(compared_rates).items():
            boot_disparity[key].append(value)

    for key in GROUP_METRICS:
        samples = np.concatenate(boot_group[key])  # (B, G)
        bounds = [_interval(samples[:, g], confidence) for g in range(len(names))]
        by_group[f"{key}_ci_low"] = [b[0] for b in bounds]
        by_group[f"{key}_ci_high"] = [b[1] for b in bounds]
    by_group = by_group[_group_columns()]
    # fairlearn scores a rate over no instances as 0; it is undefined.
    by_group.loc[by_group["positives"] == 0, ["tpr", "tpr_ci_low", "tpr_ci_high"]] = np.nan
    by_group.loc[by_group["negatives"] == 0, ["fpr", "fpr_ci_low", "fpr_ci_high"]] = np.nan
    overall: dict[str, float] = {"n": float(n)}
    for key in GROUP_METRICS:
        overall[key] = float(frame.overall[key])
        low, high = _interval(np.concatenate(boot_overall[key]), confidence)
        overall[f"{key}_ci_low"], overall[f"{key}_ci_high"] = low, high
    rows = []
    for key in DISPARITIES:
        low = high = float("nan")
        if compared >= 2:
            low, high = _bias_corrected_interval(
                np.concatenate(boot_disparity[key]), float(values[key]), confidence
            )
        rows.append({"measure": key, "value": float(values[key]), "ci_low": low, "ci_high": high})
    disparities = pd.DataFrame(rows)
    notes = []
    if small.any():
        listed = ", ".join(
            f"{name} (n={size})" for name, size in zip(names[small], sizes[small], strict=True)
        )
        notes.append(f"small groups (n < {min_group_size}) reported but not compared: {listed}")
    if compared < 2:
        notes.append("fewer than two groups large enough to compare: disparities are NaN")
    worst = best = ""
    if compared >= 1:
        ranked = by_group[~by_group["small"]].sort_values(["accuracy", "group"])
        worst, best = str(ranked["group"].iloc[0]), str(ranked["group"].iloc[-1])
    return GroupFairness(by_group, overall, disparities, worst, best, "; ".join(notes))


def _group_columns() -> list[str]:
    columns = ["group", "n", "positives", "negatives", "small"]
    for key in GROUP_METRICS:
        columns += [key, f"{key}_ci_low", f"{key}_ci_high"]
    return columns


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite resampled values (a group absent from a resample,
    or without positives in it, gives NaN there)."""
    return percentile_interval(samples[np.isfinite(samples)], confidence)


def _bias_corrected_interval(
    samples: np.ndarray, estimate: float, confidence: float
) -> tuple[float, float]:
    """Bias-corrected percentile bootstrap interval (Efron 1981) of ``estimate``.

    Differences and ratios of extreme groups (max minus min) are biased upwards in resamples;
    the plain percentile interval can then miss the estimate itself. The bias correction shifts
    the percentiles by ``z0 = Phi^-1(share of resamples below the estimate)``.
    """
    from scipy.stats import norm

    finite = samples[np.isfinite(samples)]
    if len(finite) == 0 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    below = (np.sum(finite < estimate) + 0.5 * np.sum(finite == estimate)) / len(finite)
    below = float(np.clip(below, 0.5 / len(finite), 1 - 0.5 / len(finite)))
    z0 = norm.ppf(below)
    alpha = (1 - confidence) / 2
    levels = norm.cdf(2 * z0 + norm.ppf([alpha, 1 - alpha]))
    low, high = np.quantile(finite, levels)
    return float(low), float(high)


def group_systemic_failure(
    correct: Array,
    groups: Array,
    *,
    min_group_size: int = 30,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[pd.DataFrame, Homogenization]:
    """Per-group systemic failure of a zoo (share of a group's instances every member fails).

    Parameters
    ----------
    correct
        0/1 matrix ``(n, m)``, 1 where member ``j`` gets instance ``u`` right.
    groups
        Group label per instance ``(n,)``.
    min_group_size
        Groups with fewer instances are flagged ``small``.
    n_resamples, confidence, seed
        Percentile bootstrap over the group's instances for the observed rate.

    Returns
    -------
    tuple[pandas.DataFrame, Homogenization]
        One row per group: ``group``, ``n``, ``small``, ``mean_error_rate``,
        ``observed_systemic`` with ``_ci_low``/``_ci_high``, ``expected_systemic`` (if members
        erred independently within the group), ``within_group_ratio`` and ``relative`` (the
        group's term of H_unif / H_worst); and the grouping's H_avg, H_unif, H_worst.

    Examples
    --------
    >>> correct = np.array([[0, 0], [0, 0], [1, 1], [1, 0]])
    >>> table, h = group_systemic_failure(correct, np.array(["a", "a", "b", "b"]),
    ...                                   min_group_size=1, n_resamples=100)
    >>> table[["group", "observed_systemic"]].values.tolist(), h.h_worst
    ([['a', 1.0], ['b', 0.0]], 2.6666666666666665)
    """
    matrix = np.asarray(correct)
    if matrix.ndim != 2:
        raise MeasureInputError(
            f"correct must be a matrix (instances, members); got shape {matrix.shape}",
            hint="stack one 0/1 column per member",
        )
    labels = _labels(groups, matrix.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate ratios are NaN with a note
        result = homogenization(matrix, labels)
    assert result.per_group is not None
    table = result.per_group.copy()
    all_fail = (matrix == 0).all(axis=1).astype(np.float64)  # (n,)
    bounds = [
        bootstrap_mean_ci(all_fail[labels == name], n_resamples, confidence, seed)
        for name in table["group"]
    ]
    table["group"] = table["group"].astype(str)
    table["small"] = table["n"] < min_group_size
    table["observed_systemic_ci_low"] = [b[0] for b in bounds]
    table["observed_systemic_ci_high"] = [b[1] for b in bounds]
    columns = [
        "group",
        "n",
        "small",
        "mean_error_rate",
        "observed_systemic",
        "observed_systemic_ci_low",
        "observed_systemic_ci_high",
        "expected_systemic",
        "within_group_ratio",
        "relative",
    ]
    return table[columns], result
