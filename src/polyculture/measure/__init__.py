"""measure: pure functions over arrays (performance, calibration, statistics, ...)."""

from polyculture.measure.performance import (
    METRICS,
    accuracy,
    brier,
    classification_metrics,
    expected_calibration_error,
    macro_f1,
    nll,
)
from polyculture.measure.statistics import bootstrap_ci, bootstrap_mean_ci

__all__ = [
    "METRICS",
    "accuracy",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "brier",
    "classification_metrics",
    "expected_calibration_error",
    "macro_f1",
    "nll",
]
