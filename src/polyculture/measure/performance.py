"""Performance and calibration of class-probability predictions: plain functions of arrays.

Every function takes true class indices ``y`` ``(n,)`` and predicted probabilities ``proba``
``(n, classes)`` (rows summing to 1) and returns a float.
"""

from __future__ import annotations

import numpy as np
import torch

from polyculture.errors import MeasureInputError
from polyculture.measure._checks import to_numpy
from polyculture.measure.statistics import bootstrap_ci, bootstrap_mean_ci

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


METRICS = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "nll": nll,
    "brier": brier,
    "ece": expected_calibration_error,
}
"""The per-split metrics of every member, in report order."""


def classification_metrics(
    y: np.ndarray, proba: np.ndarray, with_ci: bool = True, seed: int = 0
) -> dict[str, float]:
    """Every metric of :data:`METRICS`, plus a 95% bootstrap CI of accuracy and macro-F1.

    Returns keys ``accuracy``, ``accuracy_ci_low``, ``accuracy_ci_high``, ``macro_f1``, ...

    Examples
    --------
    >>> out = classification_metrics(np.array([0, 1, 1, 0]), np.eye(2)[[0, 1, 0, 0]])
    >>> out["accuracy"], sorted(out)[:3]
    (0.75, ['accuracy', 'accuracy_ci_high', 'accuracy_ci_low'])
    """
    y, proba = _check(y, proba)
    out = {name: fn(y, proba) for name, fn in METRICS.items()}
    if with_ci:
        correct = (proba.argmax(1) == y).astype(float)
        out["accuracy_ci_low"], out["accuracy_ci_high"] = bootstrap_mean_ci(correct, seed=seed)
        out["macro_f1_ci_low"], out["macro_f1_ci_high"] = bootstrap_ci(
            lambda rows: macro_f1(y[rows], proba[rows]), len(y), n_resamples=500, seed=seed
        )
    return out
