"""Performance metrics against scikit-learn and naive reference computations, plus properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import accuracy_score, f1_score, log_loss

from polyculture.measure import (
    accuracy,
    bootstrap_ci,
    bootstrap_mean_ci,
    brier,
    classification_metrics,
    expected_calibration_error,
    macro_f1,
    nll,
)


def random_predictions(seed: int, n: int = 300, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * 2
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, classes, n)
    return y, proba


def naive_ece(y: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    total = 0.0
    confidence, pred = proba.max(1), proba.argmax(1)
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [
            i
            for i in range(len(y))
            if (low < confidence[i] <= high) or (b == 0 and confidence[i] == 0)
        ]
        if inside:
            acc = np.mean([pred[i] == y[i] for i in inside])
            conf = np.mean([confidence[i] for i in inside])
            total += len(inside) / len(y) * abs(acc - conf)
    return total


@pytest.mark.parametrize("seed", range(5))
def test_against_references(seed: int) -> None:
    y, proba = random_predictions(seed)
    pred = proba.argmax(1)
    assert accuracy(y, proba) == pytest.approx(accuracy_score(y, pred))
    assert macro_f1(y, proba) == pytest.approx(f1_score(y, pred, average="macro"))
    assert nll(y, proba) == pytest.approx(log_loss(y, proba, labels=range(5)))
    onehot = np.eye(5)[y]
    assert brier(y, proba) == pytest.approx(((proba - onehot) ** 2).sum(1).mean())
    assert expected_calibration_error(y, proba) == pytest.approx(naive_ece(y, proba))


def test_macro_f1_missing_classes_matches_sklearn() -> None:
    y = np.array([0, 0, 1, 1, 3])
    proba = np.eye(5)[[0, 1, 1, 1, 4]]
    assert macro_f1(y, proba) == pytest.approx(f1_score(y, proba.argmax(1), average="macro"))


def test_perfect_and_confident_predictions() -> None:
    y = np.array([0, 1, 2, 1])
    proba = np.eye(3)[y]
    out = classification_metrics(y, proba)
    assert out["accuracy"] == 1.0 and out["macro_f1"] == 1.0
    assert out["brier"] == 0.0 and out["ece"] == 0.0 and out["nll"] == pytest.approx(0.0, abs=1e-9)
    assert out["accuracy_ci_low"] == out["accuracy_ci_high"] == 1.0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="need y"):
        accuracy(np.zeros(3, int), np.ones((2, 2)) / 2)
    with pytest.raises(ValueError, match="NaN"):
        nll(np.zeros(2, int), np.array([[np.nan, 1.0], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="labels"):
        brier(np.array([0, 5]), np.ones((2, 2)) / 2)
    with pytest.raises(ValueError, match="no instances"):
        accuracy(np.zeros(0, int), np.zeros((0, 2)))


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, st.integers(2, 60), elements=st.floats(0, 1)).map(
        lambda a: (a > 0.5).astype(float)
    ),
    st.integers(0, 1000),
)
def test_bootstrap_ci_brackets_the_mean(values: np.ndarray, seed: int) -> None:
    low, high = bootstrap_mean_ci(values, seed=seed)
    assert 0.0 <= low <= values.mean() + 1e-12 and values.mean() - 1e-12 <= high <= 1.0


def test_binary_bootstrap_matches_resampling() -> None:
    rng = np.random.default_rng(0)
    correct = (rng.random(500) < 0.7).astype(float)
    fast = bootstrap_mean_ci(correct, n_resamples=4000, seed=1)
    slow = bootstrap_ci(lambda rows: float(correct[rows].mean()), n=500, n_resamples=4000, seed=2)
    assert fast == pytest.approx(slow, abs=0.01)
    continuous = bootstrap_mean_ci(correct + 1e-3, n_resamples=4000, seed=1)
    assert continuous == pytest.approx((fast[0] + 1e-3, fast[1] + 1e-3), abs=0.01)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 8))
def test_metric_ranges(seed: int, classes: int) -> None:
    y, proba = random_predictions(seed, n=50, classes=classes)
    out = classification_metrics(y, proba, with_ci=False)
    assert 0 <= out["accuracy"] <= 1 and 0 <= out["macro_f1"] <= 1
    assert 0 <= out["ece"] <= 1 and 0 <= out["brier"] <= 2 and out["nll"] >= 0
