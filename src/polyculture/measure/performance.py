"""Performance and calibration of class-probability predictions, and the metric registry.

Every metric function takes true class indices ``y`` ``(n,)`` and predicted probabilities
``proba`` ``(n, classes)`` (rows summing to 1) and returns a float. :data:`METRICS` holds the
metrics every member gets on every split (the built-ins and any a plugin registers with
:func:`metric`); :func:`classification_metrics` computes them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from polyculture.errors import MeasureInputError, PluginError, RegistryError
from polyculture.measure._checks import to_numpy
from polyculture.measure.statistics import bootstrap_ci, bootstrap_mean_ci, percentile_interval
from polyculture.registry import BUILTIN_ORIGIN, Registry

EPSILON = 1e-12


def _check(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Tensors (on any device) are scored on the CPU: these are O(n * classes) reductions.
    y = to_numpy(y) if isinstance(y, torch.Tensor) else np.asarray(y)
    proba = to_numpy(proba) if isinstance(proba, torch.Tensor) else proba
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or y.ndim != 1 or len(y) != len(proba):
        raise MeasureInputError(
            f"need y (n,) and proba (n, classes); got {y.shape} and {proba.shape}"
        )
    if len(y) == 0:
        raise MeasureInputError("no instances to score")
    if y.min() < 0 or y.max() >= proba.shape[1]:
        raise MeasureInputError(f"labels must lie in [0, {proba.shape[1]})")
    if not np.isfinite(proba).all():
        raise MeasureInputError("proba holds NaN or infinite values")
    return y.astype(np.int64), proba


def accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    """Share of instances whose most probable class is the true one.

    Examples
    --------
    >>> accuracy(np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]))
    0.5
    """
    y, proba = _check(y, proba)
    return float((proba.argmax(1) == y).mean())


def macro_f1(y: np.ndarray, proba: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over classes that occur in ``y`` or in the predictions.

    Matches ``sklearn.metrics.f1_score(y, pred, average="macro")`` (F1 of a class with no true and
    no predicted instances is not counted; 0/0 precision or recall counts as 0).

    Examples
    --------
    >>> macro_f1(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    0.6666666666666666
    """
    y, proba = _check(y, proba)
    pred = proba.argmax(1)
    classes = proba.shape[1]
    true_pos = np.bincount(y[pred == y], minlength=classes).astype(float)
    predicted = np.bincount(pred, minlength=classes).astype(float)
    actual = np.bincount(y, minlength=classes).astype(float)
    present = (predicted + actual) > 0
    denominator = predicted + actual
    f1 = np.divide(2 * true_pos, denominator, out=np.zeros(classes), where=denominator > 0)
    return float(f1[present].mean())


def nll(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-12).

    Examples
    --------
    >>> round(nll(np.array([0]), np.array([[0.5, 0.5]])), 4)
    0.6931
    """
    y, proba = _check(y, proba)
    return float(-np.log(np.clip(proba[np.arange(len(y)), y], EPSILON, 1.0)).mean())


def brier(y: np.ndarray, proba: np.ndarray) -> float:
    """Multi-class Brier score: mean over instances of ``sum_c (p_c - [y = c])^2`` (0 is best).

    Examples
    --------
    >>> brier(np.array([0]), np.array([[1.0, 0.0]]))
    0.0
    """
    y, proba = _check(y, proba)
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((proba - onehot) ** 2).sum(axis=1).mean())


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with ``bins`` equal-width confidence bins (Guo et al. 2017).

    ``sum_b (n_b / n) |accuracy_b - confidence_b|`` over non-empty bins; bin ``b`` holds
    confidences in ``(b/B, (b+1)/B]``.

    Examples
    --------
    >>> expected_calibration_error(np.array([0, 0]), np.array([[1.0, 0.0], [1.0, 0.0]]))
    0.0
    """
    y, proba = _check(y, proba)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(float)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / len(y)) if count.sum() else 0.0


MetricValue = float | Mapping[str, float]
MetricFunction = Callable[[np.ndarray, np.ndarray, np.ndarray | None], MetricValue]
"""``compute(y, proba, groups) -> number or {group: number}``: ``y`` class indices ``(n,)``,
``proba`` probabilities ``(n, classes)``, ``groups`` one group label per instance ``(n,)`` (the
task's group attributes joined by ``" x "``) or ``None`` when the task has none."""


@dataclass(frozen=True)
class Metric:
    """A registered per-split metric of members' predictions.

    Attributes
    ----------
    name
        Registry name; members-table columns are ``<split>_<name>`` (per-group results:
        ``<split>_<name>[<group>]``).
    compute
        The function (see :data:`MetricFunction`).
    description
        One line for ``polyculture metrics``.
    higher_is_better
        Direction, for reports and selection constraints.
    needs_groups
        Only computed for tasks with group attributes.
    """

    name: str
    compute: MetricFunction
    description: str
    higher_is_better: bool = True
    needs_groups: bool = False


METRICS: Registry[Metric] = Registry("metric")
"""Every per-split metric a member gets, in registration (report) order; plugins add theirs."""


def metric(
    name: str, *, description: str, higher_is_better: bool = True, needs_groups: bool = False
) -> Callable[[MetricFunction], MetricFunction]:
    """Register ``compute(y, proba, groups)`` as metric ``name`` (a decorator).

    The metric is computed for every member on every evaluation split, gets a 95% bootstrap CI
    over instances, and appears in the members table, ``polyculture show``, the report and
    selection constraints.

    Examples
    --------
    >>> @metric("doc_top2", description="true class among the two most probable")
    ... def top2(y, proba, groups):
    ...     return float((np.argsort(-proba, axis=1)[:, :2] == y[:, None]).any(axis=1).mean())
    >>> classification_metrics(np.array([0, 1]), np.array([[0.5, 0.3, 0.2], [0.6, 0.1, 0.3]]),
    ...                        with_ci=False)["doc_top2"]
    0.5
    >>> METRICS.remove("doc_top2")  # keep the registry as it was
    """

    def add(compute: MetricFunction) -> MetricFunction:
        if not callable(compute):
            raise RegistryError(f"metric '{name}': the decorated object is not callable")
        METRICS.add(name, Metric(name, compute, description, higher_is_better, needs_groups))
        return compute

    return add


def _ignoring_groups(function: Callable[[np.ndarray, np.ndarray], float]) -> MetricFunction:
    def compute(y: np.ndarray, proba: np.ndarray, groups: np.ndarray | None) -> float:
        return function(y, proba)

    return compute


for _name, _function, _description, _higher in (
    ("accuracy", accuracy, "share of instances whose most probable class is right", True),
    ("macro_f1", macro_f1, "F1 averaged over classes present in labels or predictions", True),
    ("nll", nll, "mean negative log-likelihood of the true class (nats)", False),
    ("brier", brier, "multi-class Brier score (sum over classes)", False),
    ("ece", expected_calibration_error, "expected calibration error, 15 bins", False),
):
    METRICS.add(
        _name, Metric(_name, _ignoring_groups(_function), _description, _higher), BUILTIN_ORIGIN
    )

BUILTIN_METRICS = tuple(METRICS.names_in_order())
"""The built-in metrics every member gets."""

CUSTOM_RESAMPLES = 200
"""Bootstrap replicates behind the CIs of plugin metrics (each replicate recomputes the metric)."""


def _metric_values(
    metric: Metric, y: np.ndarray, proba: np.ndarray, groups: np.ndarray | None
) -> dict[str, float]:
    value = metric.compute(y, proba, groups)
    if isinstance(value, Mapping):
        return {f"{metric.name}[{group}]": float(v) for group, v in value.items()}
    return {metric.name: float(value)}


def classification_metrics(
    y: np.ndarray,
    proba: np.ndarray,
    with_ci: bool = True,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """Every registered metric (:data:`METRICS`), with 95% bootstrap CIs where they apply.

    Built-ins: CIs of accuracy and macro-F1. Plugin metrics: percentile CIs over
    :data:`CUSTOM_RESAMPLES` resamples of the instances (per group for per-group results).
    Metrics that need groups are skipped when ``groups`` is None.

    Returns keys ``accuracy``, ``accuracy_ci_low``, ``accuracy_ci_high``, ``macro_f1``, ...

    Raises
    ------
    PluginError
        A plugin metric raised (its name, origin and the error).

    Examples
    --------
    >>> out = classification_metrics(np.array([0, 1, 1, 0]), np.eye(2)[[0, 1, 0, 0]])
    >>> out["accuracy"], sorted(out)[:3]
    (0.75, ['accuracy', 'accuracy_ci_high', 'accuracy_ci_low'])
    """
    y, proba = _check(y, proba)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise MeasureInputError(f"need one group label per instance; got {groups.shape}")
    out: dict[str, float] = {}
    for name in METRICS.names_in_order():
        entry = METRICS.get(name)
        if entry.needs_groups and groups is None:
            continue
        builtin = name in BUILTIN_METRICS
        try:
            values = _metric_values(entry, y, proba, groups)
        except Exception as err:
            if builtin:
                raise
            raise PluginError(
                f"metric '{name}' (from {METRICS.origin(name)}) raised {type(err).__name__}: {err}",
                hint="fix the metric; polyculture.testing.check_metric tests it",
            ) from err
        out |= values
        if with_ci and not builtin:
            out |= _custom_intervals(entry, y, proba, groups, list(values), seed)
    if with_ci:
        correct = (proba.argmax(1) == y).astype(float)
        out["accuracy_ci_low"], out["accuracy_ci_high"] = bootstrap_mean_ci(correct, seed=seed)
        out["macro_f1_ci_low"], out["macro_f1_ci_high"] = bootstrap_ci(
            lambda rows: macro_f1(y[rows], proba[rows]), len(y), n_resamples=500, seed=seed
        )
    return out


def _custom_intervals(
    entry: Metric,
    y: np.ndarray,
    proba: np.ndarray,
    groups: np.ndarray | None,
    keys: list[str],
    seed: int,
) -> dict[str, float]:
    """Percentile bootstrap CIs of a plugin metric's values (each key: a number or a group)."""
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for _ in range(CUSTOM_RESAMPLES):
        rows = rng.integers(0, len(y), size=len(y))
        resampled = _metric_values(
            entry, y[rows], proba[rows], None if groups is None else groups[rows]
        )
        for key in keys:
            samples[key].append(resampled.get(key, np.nan))  # a group may drop out
    out = {}
    for key, values in samples.items():
        finite = np.asarray(values, dtype=np.float64)
        low, high = percentile_interval(finite[np.isfinite(finite)])
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = low, high
    return out


ANSWER_METRICS = ("exact_match", "answer_log_likelihood", "edit_distance")
"""Metrics of tasks whose answers span several rows (see :func:`answer_metrics`)."""


def _levenshtein(a: np.ndarray, b: np.ndarray) -> int:
    """Edit distance (insertions, deletions, substitutions) between two token sequences."""
    previous = np.arange(len(b) + 1)
    for i, token in enumerate(a, start=1):
        current = np.empty_like(previous)
        current[0] = i
        for j in range(1, len(b) + 1):
            current[j] = min(
                previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token != b[j - 1])
            )
        previous = current
    return int(previous[-1])


def answer_metrics(
    y: np.ndarray,
    proba: np.ndarray,
    instance: np.ndarray,
    answer_length: int,
    with_ci: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Scores of whole answers when each answer spans ``answer_length`` rows (one per token).

    Row ``i`` is position ``instance[i] % answer_length`` of problem
    ``instance[i] // answer_length``. Per problem, the predicted answer is the most probable
    token at each position, in position order.

    - ``exact_match``: share of problems whose every position is right (the discontinuous
      metric of Schaeffer et al. 2023; per-token accuracy is ``accuracy`` of the rows), with a
      95% bootstrap CI over problems;
    - ``answer_log_likelihood``: mean over problems of ``sum_positions log p(true token)``;
    - ``edit_distance``: mean Levenshtein distance between predicted and true token sequences.

    A problem with rows missing (dropped while cleaning) is scored on the rows it has.

    Examples
    --------
    >>> y = np.array([1, 2, 3, 4])  # two problems of two tokens
    >>> proba = np.eye(5)[[1, 2, 3, 0]] * 0.9 + 0.02
    >>> out = answer_metrics(y, proba, np.arange(4), 2, with_ci=False)
    >>> out["exact_match"], out["edit_distance"]
    (0.5, 0.5)
    """
    y, proba = _check(y, proba)
    instance = np.asarray(instance, dtype=np.int64)
    if instance.shape != y.shape:
        raise MeasureInputError(f"need one instance id per row; got {instance.shape} for {y.shape}")
    if answer_length < 1:
        raise MeasureInputError(f"answer_length must be at least 1, got {answer_length}")
    problem, position = np.divmod(instance, answer_length)
    order = np.lexsort((position, problem))  # rows grouped by problem, in position order
    problem, y, proba = problem[order], y[order], proba[order]
    predicted = proba.argmax(1)
    starts = np.flatnonzero(np.r_[True, problem[1:] != problem[:-1]])
    ends = np.r_[starts[1:], len(problem)]
    right = predicted == y
    exact = np.logical_and.reduceat(right, starts).astype(float)  # (problems,)
    log_p = np.log(np.maximum(proba[np.arange(len(y)), y], EPSILON))
    out = {
        "exact_match": float(exact.mean()),
        "answer_log_likelihood": float(np.add.reduceat(log_p, starts).mean()),
        "edit_distance": float(
            np.mean(
                [
                    _levenshtein(predicted[s:e], y[s:e]) if not exact[k] else 0
                    for k, (s, e) in enumerate(zip(starts, ends, strict=True))
                ]
            )
        ),
    }
    if with_ci:
        out["exact_match_ci_low"], out["exact_match_ci_high"] = bootstrap_mean_ci(exact, seed=seed)
    return out
