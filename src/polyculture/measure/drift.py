"""Input drift between a reference sample (training data) and new data, per feature.

* :func:`population_stability_index` (PSI): ``sum_b (c_b - r_b) ln(c_b / r_b)`` over bins ``b``
  cut at the reference's quantiles, ``r_b`` and ``c_b`` the reference and current shares (floored
  at ``1e-4`` so empty bins stay finite). Rule of thumb: < 0.1 no shift, 0.1-0.25 moderate,
  > 0.25 major. Features with few distinct values get one bin per value.
* :func:`feature_drift`: PSI and the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``)
  for every feature, with Holm-adjusted p-values over the features and a ``drifted`` flag.
* :func:`holm`: Holm's step-down adjustment of p-values (family-wise error rate).

For images and text, pass the final representation of a member (``Predictor.represent``)
instead of the raw inputs; :func:`principal_components` reduces it to a few directions first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from polyculture.errors import MeasureInputError
from polyculture.measure._checks import Array

__all__ = [
    "MAJOR_PSI",
    "MODERATE_PSI",
    "feature_drift",
    "holm",
    "population_stability_index",
    "principal_components",
]

MODERATE_PSI = 0.1
"""PSI from which a shift counts as moderate (drift needs it, and a significant KS test)."""
MAJOR_PSI = 0.25
"""PSI from which a shift counts as major (drift on its own)."""
_FLOOR = 1e-4


def _column(values: Array, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(array) == 0 or not np.isfinite(array).all():
        raise MeasureInputError(
            f"{name} must be a non-empty vector of finite numbers",
            hint="drop or impute missing values before measuring drift",
        )
    return array


def population_stability_index(reference: Array, current: Array, bins: int = 10) -> float:
    """PSI of one feature: bins at the reference's quantiles (one per value when few values).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> same = population_stability_index(rng.normal(size=5000), rng.normal(size=5000))
    >>> moved = population_stability_index(rng.normal(size=5000), rng.normal(1, 1, size=5000))
    >>> bool(same < 0.01), bool(moved > 0.25)
    (True, True)
    """
    ref = _column(reference, "reference")
    cur = _column(current, "current")
    if bins < 2:
        raise MeasureInputError(f"bins must be at least 2, got {bins}", hint="use e.g. 10")
    values = np.unique(ref)
    if len(values) <= bins:
        # Discrete feature (e.g. one-hot): one bin per reference value by exact match, and one
        # more for values the reference never had (a new category must count as drift).
        ref_share = np.bincount(np.searchsorted(values, ref), minlength=len(values) + 1)
        position = np.minimum(np.searchsorted(values, cur), len(values) - 1)
        known = values[position] == cur
        cur_share = np.bincount(np.where(known, position, len(values)), minlength=len(values) + 1)
    else:
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
        ref_share = np.bincount(np.searchsorted(edges, ref, "right"), minlength=len(edges) + 1)
        cur_share = np.bincount(np.searchsorted(edges, cur, "right"), minlength=len(edges) + 1)
    r = np.maximum(ref_share / len(ref), _FLOOR)
    c = np.maximum(cur_share / len(cur), _FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def holm(p_values: Array) -> np.ndarray:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the input order.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def feature_drift(
    reference: Array,
    current: Array,
    names: list[str] | tuple[str, ...] | None = None,
    *,
    alpha: float = 0.05,
    bins: int = 10,
) -> pd.DataFrame:
    """PSI and Kolmogorov-Smirnov drift of every feature of ``current`` against ``reference``.

    Parameters
    ----------
    reference, current
        Feature matrices ``(n, d)`` and ``(m, d)`` (any trailing shape is flattened).
    names
        One name per feature (default ``x0, x1, ...``).
    alpha
        Family-wise level of the KS tests (Holm over the features).
    bins
        PSI bins (reference quantiles).

    Returns
    -------
    pandas.DataFrame
        One row per feature: ``feature``, ``psi``, ``ks_statistic``, ``ks_p``, ``ks_p_holm``,
        ``reference_mean``, ``current_mean`` and ``drifted``: ``psi >= MAJOR_PSI``, or a
        significant KS test (Holm) with ``psi >= MODERATE_PSI`` (large samples make tiny,
        harmless shifts significant; the PSI floor keeps those out).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=(2000, 2))
    >>> new = np.c_[rng.normal(size=2000), rng.normal(2, 1, size=2000)]
    >>> feature_drift(ref, new, ["a", "b"])["drifted"].tolist()
    [False, True]
    """
    from scipy.stats import ks_2samp

    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref = ref.reshape(len(ref), -1)  # (n, d)
    cur = cur.reshape(len(cur), -1)  # (m, d)
    if ref.shape[1] != cur.shape[1]:
        raise MeasureInputError(
            f"reference has {ref.shape[1]} features but current has {cur.shape[1]}",
            hint="encode the new data like the reference (same columns)",
        )
    d = ref.shape[1]
    names = list(names) if names is not None else [f"x{j}" for j in range(d)]
    if len(names) != d:
        raise MeasureInputError(f"{len(names)} names for {d} features", hint="one name each")
    psi = np.array([population_stability_index(ref[:, j], cur[:, j], bins) for j in range(d)])
    tests = [ks_2samp(ref[:, j], cur[:, j]) for j in range(d)]
    statistic = np.array([float(t.statistic) for t in tests])
    p = np.array([float(t.pvalue) for t in tests])
    adjusted = holm(p)
    drifted = (psi >= MAJOR_PSI) | ((adjusted < alpha) & (psi >= MODERATE_PSI))
    return pd.DataFrame(
        {
            "feature": names,
            "psi": psi,
            "ks_statistic": statistic,
            "ks_p": p,
            "ks_p_holm": adjusted,
            "reference_mean": ref.mean(axis=0),
            "current_mean": cur.mean(axis=0),
            "drifted": drifted,
        }
    )


def principal_components(
    reference: Array, current: Array, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Both samples projected on the top ``k`` principal directions of ``reference``.

    Representations have hundreds of correlated dimensions; drift is tested on the few
    directions that carry most of the reference's variance.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref, cur = principal_components(rng.normal(size=(50, 8)), rng.normal(size=(30, 8)), k=3)
    >>> ref.shape, cur.shape
    ((50, 3), (30, 3))
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref = ref.reshape(len(ref), -1)  # (n, d)
    cur = cur.reshape(len(cur), -1)  # (m, d)
    mean = ref.mean(axis=0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)  # vt (min(n, d), d)
    directions = vt[: min(k, vt.shape[0])].T  # (d, k)
    return (ref - mean) @ directions, (cur - mean) @ directions
