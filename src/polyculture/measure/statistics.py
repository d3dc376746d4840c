"""Uncertainty for headline numbers: percentile bootstrap confidence intervals over instances."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from polyculture.errors import MeasureInputError
from polyculture.measure._checks import check_bootstrap


def bootstrap_mean_ci(
    values: np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-instance ``values`` ``(n,)``.

    Resampling instances with replacement, computed in blocks so memory stays at
    ``O(block * n)``.

    Examples
    --------
    >>> low, high = bootstrap_mean_ci(np.r_[np.ones(80), np.zeros(20)])
    >>> bool(0.7 < low < 0.8 < high < 0.9)
    True
    """
    check_bootstrap(n_resamples, confidence)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise MeasureInputError(
            f"values must be a non-empty 1-D array, got shape {values.shape}",
            hint="pass one number per instance",
        )
    rng = np.random.default_rng(seed)
    n = len(values)
    if np.isin(values, (0.0, 1.0)).all():
        # The mean of n draws with replacement from a 0/1 vector is Binomial(n, p) / n exactly.
        means = rng.binomial(n, values.mean(), size=n_resamples) / n
    else:
        block = max(1, min(n_resamples, 2_000_000 // n))
        means = np.concatenate(
            [
                values[rng.integers(0, n, size=(min(block, n_resamples - start), n))].mean(axis=1)
                for start in range(0, n_resamples, block)
            ]
        )
    return percentile_interval(means, confidence)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of any ``statistic(rows)`` over ``n`` instances.

    ``statistic`` receives an index array of resampled rows (length ``n``) and returns a number.

    Examples
    --------
    >>> y = np.arange(50) % 2
    >>> low, high = bootstrap_ci(lambda rows: float(y[rows].mean()), n=50)
    >>> bool(low < 0.5 < high)
    True
    """
    check_bootstrap(n_resamples, confidence)
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_resamples)])
    return percentile_interval(stats[np.isfinite(stats)], confidence)


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap ``values`` (NaN, NaN when empty).

    Infinite values (ratios beyond float64) are ordered, not interpolated, since interpolating
    between infinities gives NaN.

    Examples
    --------
    >>> percentile_interval(np.arange(101.0), 0.5)
    (25.0, 75.0)
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    if np.isfinite(values).all():
        low, high = np.quantile(values, [alpha, 1 - alpha])
    else:
        low, high = np.quantile(values, [alpha, 1 - alpha], method="inverted_cdf")
    return float(low), float(high)
