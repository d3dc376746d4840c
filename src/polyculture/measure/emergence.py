"""Emergence: how a capability changes with scale, and whether a jump is real or a metric artifact.

Every function here takes a positive scale ``x`` (parameters, data size, training steps, FLOPs) and
a metric ``y`` measured at each scale, as 1-D arrays. Repeated ``x`` values are allowed: one ``y``
per seed. Fits are least squares of ``y`` against ``u = log x``.

Curve families (:func:`fit_power_law`, :func:`fit_sigmoid`, :func:`fit_broken_power_law`)

- power law: ``y = a + b * x**c``. ``c`` has either sign, so the family covers rising and falling
  curves, saturating ones (``c < 0``, ``a`` is the asymptote) and accelerating ones (``c > 0``).
- sigmoid in log scale: ``y = lo + (hi - lo) / (1 + exp(-k * (log x - log m)))`` with midpoint
  ``m`` and slope ``k > 0`` (``hi < lo`` for a falling curve). It climbs from 10% to 90% of
  ``hi - lo`` over ``2 ln 9 / k`` in ``log x``.
- broken power law with one break (Caballero et al. 2022, "Broken Neural Scaling Laws"):
  ``y = a + b * x**(-c0) * (1 + (x / d1)**(1 / f1))**(-c1 * f1)``. The log-log slope of
  ``y - a`` changes from ``-c0`` to ``-(c0 + c1)`` around the break ``x = d1``; ``f1`` is the
  break's width in ``log x`` (smaller is sharper: the slope change goes from 10% to 90% over
  ``2 ln 9 * f1``). With ``c0 = 0``, ``c1 * f1 = 1`` it is exactly the sigmoid (``d1 = m``,
  ``f1 = 1 / k``), so it also covers flat-then-rising emergence curves.

Each fit needs at least as many distinct scales as it has parameters (3, 4 and 6): with fewer the
curve passes through every point in many ways and its parameters are not identifiable. The linear
parameters (``a, b`` and ``lo, hi``) are solved exactly for each value of the others (variable
projection); the others start from the best points of a small grid and are refined with
:func:`scipy.optimize.least_squares` inside bounds (the midpoint ``m`` within 25% of the log range
beyond the data, the break ``d1`` inside it). The fits report ``AIC = n ln(RSS/n) + 2(p + 1)`` and
``BIC = n ln(RSS/n) + (p + 1) ln n`` for ``p`` curve parameters plus the noise variance, with
``RSS`` floored at ``n (1e-6 range(y))**2`` so two exact fits tie instead of comparing round-off.

Breaks and emergence

- :func:`break_with_ci`: is there a break, and where? The broken power law nests the plain one
  (``c1 = 0``); a break needs ``Delta BIC >= 10`` ("very strong" evidence on Kass & Raftery's
  scale) and a nested F-test ``p < 0.001`` (BIC alone lets a break chase noise when there are
  few points). ``d1`` and ``f1`` get percentile bootstrap CIs (resampling seeds when there are
  several ``y`` per ``x``, otherwise residuals).
- :func:`emergence_score`: BIG-bench's breakthroughness (Srivastava et al. 2022, "Beyond the
  Imitation Game", App. B): with ``y_i`` averaged over seeds and ordered by scale,
  ``I_y = sign(argmax_i y_i - argmin_i y_i) * (max_i y_i - min_i y_i)`` and
  ``B = I_y / sqrt(median_i (y_{i+1} - y_i)**2)``: large when the total change happens in a few
  steps. Linearity here is the ``R**2`` of the straight line ``y ~ log x`` (1 for a curve that is
  linear in log scale; BIG-bench's own linearity score is not reproduced).
- :func:`curve_shape` and :func:`metric_swap_verdict`: the metric-swap test of Schaeffer et al.
  2023 ("Are Emergent Abilities of Large Language Models a Mirage?"). Exact match over ``L``
  tokens scores about ``p**L`` when per-token accuracy is ``p``, so a smooth ``p(x)`` can look
  like a sudden jump. An ability that jumps under the discontinuous metric but is smooth under a
  continuous one is reported as a likely metric artifact; one that jumps under both survives.
  A curve *jumps* (:func:`curve_shape`) when a sigmoid or broken power law beats the power law
  (``Delta BIC >= 10`` and F-test ``p < 0.001``), the better of them is flat at the smallest
  scales and then steep over at most 35% of the log-scale range, and its breakthroughness per
  step is at least that of a straight line in log scale.

Training dynamics: :func:`extrapolation_error` (fit on the smaller scales, predict the largest) and
:func:`delayed_generalization` (when train and test metrics first reach thresholds; grokking shows
as a long delay, Power et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit
from scipy.stats import f as f_distribution

from polyculture.errors import MeasureInputError
from polyculture.measure._checks import Array, as_tensor, check_bootstrap, to_numpy
from polyculture.measure.statistics import percentile_interval

__all__ = [
    "CURVE_FAMILIES",
    "BreakEstimate",
    "Crossing",
    "CurveFit",
    "CurveShape",
    "DelayedGeneralization",
    "EmergenceScore",
    "Extrapolation",
    "MetricSwapVerdict",
    "break_with_ci",
    "curve_shape",
    "delayed_generalization",
    "emergence_score",
    "extrapolation_error",
    "fit_broken_power_law",
    "fit_curve",
    "fit_power_law",
    "fit_sigmoid",
    "metric_swap_verdict",
]

Family = Literal["power_law", "sigmoid", "broken_power_law"]
CURVE_FAMILIES: tuple[Family, ...] = ("power_law", "sigmoid", "broken_power_law")
"""The curve families :func:`fit_curve` knows, simplest first."""

# Distinct scales each family needs: its number of parameters (fewer cannot identify them).
_MIN_SCALES: dict[Family, int] = {"power_law": 3, "sigmoid": 4, "broken_power_law": 6}
_LABELS: dict[Family, str] = {
    "power_law": "a power-law fit",
    "sigmoid": "a sigmoid fit",
    "broken_power_law": "a broken power-law fit",
}
_SWEEP_HINT = "add more points to the sweep axis"
# Relative RSS floor: a fit this close counts as exact (see the module docstring).
_RSS_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _float_vector(values: Array, name: str) -> np.ndarray:
    array = to_numpy(as_tensor(values, name))
    if np.iscomplexobj(array):
        raise MeasureInputError(f"{name} must be real numbers; got dtype {array.dtype}")
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 1:
        raise MeasureInputError(
            f"{name} must be a 1-D vector (one value per scale point); got shape {array.shape}",
            hint="flatten it, repeating x once per seed: np.repeat(x, n_seeds), y.ravel()",
        )
    if len(array) == 0:
        raise MeasureInputError(f"{name} is empty", hint=_SWEEP_HINT)
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise MeasureInputError(
            f"{name} holds NaN or infinite values (first at index {bad}: {array[bad]})",
            hint="drop the failed or missing runs before fitting",
        )
    return array


def _scale_vector(values: Array, name: str = "x") -> np.ndarray:
    x = _float_vector(values, name)
    if (x <= 0).any():
        raise MeasureInputError(
            f"{name} must be a positive scale (parameters, data size, steps, FLOPs); "
            f"found {x.min():g}",
            hint="fits are in log x: drop zero-size points or shift the axis (e.g. steps + 1)",
        )
    return x


def _curve(
    x: Array, y: Array, what: str, min_scales: int, y_name: str = "y"
) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(x, y)`` float64 vectors with at least ``min_scales`` distinct ``x`` values."""
    xs = _scale_vector(x)
    ys = _float_vector(y, y_name)
    if len(xs) != len(ys):
        raise MeasureInputError(
            f"x has {len(xs)} points but {y_name} has {len(ys)}",
            hint="pass one y value per x value (repeat x once per seed)",
        )
    n_scales = len(np.unique(xs))
    if n_scales < min_scales:
        raise MeasureInputError(
            f"{what} needs at least {min_scales} scale points, got {n_scales}", hint=_SWEEP_HINT
        )
    return xs, ys


def _scale_means(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scales in increasing order and the mean ``y`` (over seeds) at each."""
    scales, inverse = np.unique(x, return_inverse=True)
    return scales, np.bincount(inverse, weights=y) / np.bincount(inverse)


# --------------------------------------------------------------------------------------------
# Curve fits
# --------------------------------------------------------------------------------------------


def _softplus(t: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, t)


def _basis(family: Family, theta: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The non-constant basis function ``phi`` of ``y = A + B * phi`` ``(..., n)``.

    ``theta`` ``(..., p_nonlinear)`` holds the nonlinear parameters in standardized log scale
    ``z = (log x - center) / spread``; leading dimensions broadcast (grids of candidates).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if family == "power_law":
            return np.exp(theta[..., 0:1] * z)
        if family == "sigmoid":
            return expit(theta[..., 0:1] * (z - theta[..., 1:2]))
        c0, c1, d, f = (theta[..., i : i + 1] for i in range(4))
        return np.exp(-c0 * z - c1 * f * _softplus((z - d) / f))


def _linear_fit(phi: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares ``A, B`` of ``y ~ A + B * phi`` for each row of ``phi`` ``(G, n)``, and RSS."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # Rescaling each row keeps the normal equations well conditioned however large phi gets.
        scale = np.max(np.abs(phi), axis=-1, keepdims=True)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        p = phi / scale
        p_mean = p.mean(axis=-1, keepdims=True)
        p_centered = p - p_mean  # (G, n)
        y_centered = y - y.mean()
        var = (p_centered**2).sum(axis=-1)
        cov = (p_centered * y_centered).sum(axis=-1)
        identifiable = var > 1e-12 * phi.shape[-1]
        slope = np.where(identifiable, cov / np.where(identifiable, var, 1.0), 0.0)
        intercept = y.mean() - slope * p_mean[..., 0]
        rss = ((y_centered - slope[..., None] * p_centered) ** 2).sum(axis=-1)
        rss = np.where(np.isfinite(rss) & np.isfinite(p).all(axis=-1), rss, np.inf)
        return intercept, slope / scale[..., 0], rss


def _grid(*axes: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))


# Nonlinear parameters in standardized log scale z in [-1, 1]: starting grid and bounds.
_GRIDS: dict[Family, np.ndarray] = {
    "power_law": _grid([-12, -6, -3, -1.5, -0.5, 0.5, 1.5, 3, 6, 12]),
    "sigmoid": _grid(np.geomspace(0.5, 128, 9), np.linspace(-1.2, 1.2, 13)),
    "broken_power_law": _grid(
        [-3.0, -1.0, 0.0, 1.0, 3.0],
        [-24.0, -6.0, -1.5, 1.5, 6.0, 24.0],
        np.linspace(-0.9, 0.9, 13),
        [0.02, 0.1, 0.4],
    ),
}
# The sigmoid midpoint may lie up to 25% of the log range beyond the data (z = +-1.25); the break
# stays inside it, and its width f1 stays above 0.4% of the half range (sharper is unresolvable).
_BOUNDS: dict[Family, tuple[list[float], list[float]]] = {
    "power_law": ([-40.0], [40.0]),
    "sigmoid": ([0.05, -1.25], [400.0, 1.25]),
    "broken_power_law": ([-40.0, -80.0, -1.0, 0.004], [40.0, 80.0, 1.0, 2.0]),
}
_PARAMETERS: dict[Family, tuple[str, ...]] = {
    "power_law": ("a", "b", "c"),
    "sigmoid": ("lo", "hi", "k", "m"),
    "broken_power_law": ("a", "b", "c0", "c1", "d1", "f1"),
}
_FORMULAS: dict[Family, str] = {
    "power_law": "y = a + b * x**c",
    "sigmoid": "y = lo + (hi - lo) / (1 + exp(-k * (log x - log m)))",
    "broken_power_law": "y = a + b * x**(-c0) * (1 + (x / d1)**(1 / f1))**(-c1 * f1)",
}


@dataclass(frozen=True, eq=False)
class CurveFit:
    """A least-squares fit of ``y`` against a positive scale ``x``, in log ``x``.

    Attributes
    ----------
    family
        ``"power_law"``, ``"sigmoid"`` or ``"broken_power_law"`` (see :attr:`formula`).
    params
        The fitted parameters by name, in the units of ``x`` and ``y``: ``a, b, c`` (power law),
        ``lo, hi, k, m`` (sigmoid), ``a, b, c0, c1, d1, f1`` (broken power law).
    rss
        Residual sum of squares.
    r2
        ``1 - RSS / TSS`` (1 when ``y`` is constant and fitted exactly).
    aic, bic
        Gaussian information criteria counting the noise variance as a parameter (lower is
        better; compare them only between fits of the same ``y``).
    n_points, n_params
        Points fitted (all seeds) and curve parameters.
    """

    family: Family
    params: dict[str, float]
    rss: float
    r2: float
    aic: float
    bic: float
    n_points: int
    n_params: int
    # The fit in standardized log scale: (A, B, nonlinear...), log-x center and half-range.
    theta: tuple[float, ...] = field(repr=False)
    center: float = field(repr=False)
    spread: float = field(repr=False)
    y_range: float = field(repr=False)  # the y spread behind the RSS floor

    @property
    def formula(self) -> str:
        """The family's formula, e.g. ``"y = a + b * x**c"``."""
        return _FORMULAS[self.family]

    def predict(self, x: Array) -> np.ndarray:
        """The fitted curve at scales ``x`` (positive: a number or 1-D array) as float64 ``(m,)``.

        Examples
        --------
        >>> x = np.geomspace(1, 1000, 8)
        >>> fit = fit_power_law(x, 2 + 3 * x**-0.5)
        >>> np.round(fit.predict([4.0, 1e6]), 4).tolist()
        [3.5, 2.003]
        """
        scales = _scale_vector(np.atleast_1d(to_numpy(as_tensor(x, "x"))))
        z = (np.log(scales) - self.center) / self.spread
        nonlinear = np.asarray(self.theta[2:], dtype=np.float64)
        return self.theta[0] + self.theta[1] * _basis(self.family, nonlinear, z)


class _Projection:
    """Variable projection for ``y ~ A + B * phi(theta)``: residuals and Kaufman's Jacobian.

    The linear parameters are solved exactly at each ``theta``, so the optimizer only searches
    the nonlinear ones. The Jacobian drops the second-order term (Kaufman 1975), which costs
    nothing in accuracy near the optimum and avoids finite differences.
    """

    def __init__(self, family: Family, z: np.ndarray, y: np.ndarray) -> None:
        self.family, self.z, self.y = family, z, y
        self.y_centered = y - y.mean()

    def _parts(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Centered scaled basis ``(n,)``, its scaled gradient ``(p, n)`` and slope ``B*scale``."""
        z, th = self.z, theta
        with np.errstate(over="ignore", invalid="ignore"):
            if self.family == "power_law":
                phi = np.exp(th[0] * z)
                grad_log = z[None, :]
                grad = grad_log * phi
            elif self.family == "sigmoid":
                phi = expit(th[0] * (z - th[1]))
                dphi = phi * (1.0 - phi)
                grad = np.stack([(z - th[1]) * dphi, -th[0] * dphi])
            else:
                c0, c1, d, f = th
                t = (z - d) / f
                soft, sig = _softplus(t), expit(t)
                phi = np.exp(-c0 * z - c1 * f * soft)
                grad_log = np.stack([-z, -f * soft, c1 * sig, c1 * (sig * t - soft)])
                grad = grad_log * phi
            scale = float(np.max(np.abs(phi)))
            if not np.isfinite(scale) or scale == 0:
                scale = 1.0
            p = phi / scale
            centered = p - p.mean()
            var = float(centered @ centered)
            slope = float(centered @ self.y_centered) / var if var > 1e-12 * len(z) else 0.0
            return centered, grad / scale, slope

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        centered, _, slope = self._parts(theta)
        resid = self.y_centered - slope * centered
        return np.where(np.isfinite(resid), resid, 1e150)

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        centered, grad, slope = self._parts(theta)
        # d resid / d theta = -(I - P) (d phi / d theta) B, P projecting onto span{1, phi}.
        g = grad - grad.mean(axis=1, keepdims=True)  # (p, n)
        var = float(centered @ centered)
        if var > 1e-12 * len(centered):
            g = g - np.outer(g @ centered / var, centered)
        jac = -slope * g.T  # (n, p)
        return np.where(np.isfinite(jac), jac, 0.0)


def _fit(
    family: Family,
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_starts: int = 3,
    extra_starts: Sequence[np.ndarray] = (),
) -> CurveFit:
    """Fit ``family`` to checked data: grid search, then bounded refinement of the best starts."""
    u = np.log(x)
    center = float((u.max() + u.min()) / 2)
    spread = float((u.max() - u.min()) / 2)
    z = (u - center) / spread
    grid = _GRIDS[family]
    _, _, grid_rss = _linear_fit(_basis(family, grid, z), y)
    lower, upper = (np.asarray(b, dtype=np.float64) for b in _BOUNDS[family])
    margin = 1e-9 * (upper - lower)
    starts = [grid[i] for i in np.argsort(grid_rss, kind="stable")[:n_starts]]
    starts += [np.asarray(s, dtype=np.float64) for s in extra_starts]
    if not starts:
        starts = [grid[int(np.argmin(grid_rss))]]
    projection = _Projection(family, z, y)
    best_theta, best_cost = starts[0], np.inf
    for start in starts:
        result = least_squares(
            projection.residuals,
            np.clip(start, lower + margin, upper - margin),
            jac=projection.jacobian,
            bounds=(lower, upper),
            method="trf",
            x_scale="jac",
            max_nfev=100,
        )
        if result.cost < best_cost:
            best_theta, best_cost = result.x, result.cost
    phi = _basis(family, best_theta[None, :], z)
    intercept, slope, rss_row = _linear_fit(phi, y)
    return _summarize(
        family,
        best_theta,
        float(intercept[0]),
        float(slope[0]),
        float(rss_row[0]),
        y,
        center,
        spread,
    )


def _rss_floor(n_points: int, y_range: float) -> float:
    """RSS below which a fit counts as exact: ``n (1e-6 range(y))**2``."""
    return n_points * (_RSS_FLOOR * y_range) ** 2


def _summarize(
    family: Family,
    nonlinear: np.ndarray,
    intercept: float,
    slope: float,
    rss: float,
    y: np.ndarray,
    center: float,
    spread: float,
) -> CurveFit:
    n = len(y)
    tss = float(((y - y.mean()) ** 2).sum())
    y_range = float(np.ptp(y)) or max(float(np.abs(y).max()), 1.0)
    floor = _rss_floor(n, y_range)
    rss_for_criteria = max(rss, floor)
    n_params = len(_PARAMETERS[family])
    log_likelihood_term = n * math.log(rss_for_criteria / n)
    values: tuple[float, ...]
    with np.errstate(over="ignore"):
        if family == "power_law":
            c = nonlinear[0] / spread
            values = (intercept, slope * np.exp(-c * center), c)
        elif family == "sigmoid":
            k, mid = nonlinear
            values = (intercept, intercept + slope, k / spread, np.exp(center + spread * mid))
        else:
            c0, c1, d, f = nonlinear
            values = (
                intercept,
                slope * np.exp(c0 / spread * center),
                c0 / spread,
                c1 / spread,
                np.exp(center + spread * d),
                spread * f,
            )
    return CurveFit(
        family=family,
        params={name: float(v) for name, v in zip(_PARAMETERS[family], values, strict=True)},
        rss=rss,
        r2=1.0 - rss / tss if tss > 0 else float(rss <= floor),
        aic=log_likelihood_term + 2 * (n_params + 1),
        bic=log_likelihood_term + (n_params + 1) * math.log(n),
        n_points=n,
        n_params=n_params,
        theta=(intercept, slope, *(float(v) for v in nonlinear)),
        center=center,
        spread=spread,
        y_range=y_range,
    )


def fit_curve(x: Array, y: Array, family: Family) -> CurveFit:
    """Fit one of :data:`CURVE_FAMILIES` by name (see the ``fit_*`` functions).

    Examples
    --------
    >>> x = np.geomspace(1e3, 1e7, 9)
    >>> fit_curve(x, 1 - x**-0.3, "power_law").family
    'power_law'
    """
    if family not in _MIN_SCALES:
        raise MeasureInputError(
            f"unknown curve family {family!r}", hint=f"use one of {', '.join(CURVE_FAMILIES)}"
        )
    xs, ys = _curve(x, y, _LABELS[family], _MIN_SCALES[family])
    return _fit(family, xs, ys)


def fit_power_law(x: Array, y: Array) -> CurveFit:
    """Fit ``y = a + b * x**c`` (rising or falling; ``c < 0`` saturates towards ``a``).

    Parameters
    ----------
    x
        Positive scales ``(n,)``; repeat a scale once per seed. At least 3 distinct scales.
    y
        The metric at each scale ``(n,)``.

    Returns
    -------
    CurveFit
        ``params`` ``a, b, c``.

    Examples
    --------
    >>> x = np.geomspace(1e3, 1e9, 10)
    >>> fit = fit_power_law(x, 0.1 + 50 * x**-0.4)
    >>> {k: round(v, 3) for k, v in fit.params.items()}
    {'a': 0.1, 'b': 50.0, 'c': -0.4}
    """
    return fit_curve(x, y, "power_law")


def fit_sigmoid(x: Array, y: Array) -> CurveFit:
    """Fit ``y = lo + (hi - lo) / (1 + exp(-k * (log x - log m)))``, a sigmoid in log scale.

    ``k > 0``; a falling curve has ``hi < lo``. The midpoint ``m`` is kept within 25% of the
    log range beyond the observed scales.

    Parameters
    ----------
    x
        Positive scales ``(n,)``; repeat a scale once per seed. At least 4 distinct scales.
    y
        The metric at each scale ``(n,)``.

    Returns
    -------
    CurveFit
        ``params`` ``lo, hi, k, m``.

    Examples
    --------
    >>> x = np.geomspace(1e6, 1e10, 12)
    >>> y = 0.25 + 0.7 / (1 + np.exp(-3 * (np.log(x) - np.log(3e8))))
    >>> fit = fit_sigmoid(x, y)
    >>> round(fit.params["m"] / 3e8, 3), round(fit.params["k"], 3)
    (1.0, 3.0)
    """
    return fit_curve(x, y, "sigmoid")


def fit_broken_power_law(x: Array, y: Array) -> CurveFit:
    """Fit the one-break broken power law of Caballero et al. (2022).

    ``y = a + b * x**(-c0) * (1 + (x / d1)**(1 / f1))**(-c1 * f1)``: the log-log slope of
    ``y - a`` turns from ``-c0`` to ``-(c0 + c1)`` at the break ``d1`` (kept inside the observed
    scales) over a width ``f1`` in ``log x`` (smaller is sharper; kept at or above 0.2% of the
    observed log range, below which the sweep cannot tell sharpness apart).

    Parameters
    ----------
    x
        Positive scales ``(n,)``; repeat a scale once per seed. At least 6 distinct scales (one per
        parameter).
    y
        The metric at each scale ``(n,)``.

    Returns
    -------
    CurveFit
        ``params`` ``a, b, c0, c1, d1, f1``.

    Examples
    --------
    >>> x = np.geomspace(1e2, 1e6, 16)
    >>> y = 1 - (1 + (x / 1e4) ** 5) ** -0.2  # flat, then a rise after x = 1e4
    >>> fit = fit_broken_power_law(x, y)
    >>> round(fit.params["d1"] / 1e4, 2), round(fit.params["f1"], 2)
    (1.0, 0.2)
    """
    return fit_curve(x, y, "broken_power_law")


# --------------------------------------------------------------------------------------------
# Breaks with bootstrap CIs
# --------------------------------------------------------------------------------------------

Resample = Literal["auto", "groups", "seeds", "residuals", "points"]


@dataclass(frozen=True, eq=False)
class BreakEstimate:
    """Whether a curve has a break, where, and how sharp, with percentile bootstrap CIs.

    Attributes
    ----------
    has_break
        ``delta_bic >= min_delta_bic`` and ``p_value < alpha``: the broken power law beats the
        plain power law.
    break_location, break_location_ci
        ``d1`` of the broken power-law fit (in units of ``x``) and its CI. Reported whether or not
        there is a break; only meaningful when there is.
    sharpness, sharpness_ci
        ``f1``, the break's width in ``log x`` (smaller is sharper), and its CI. ``f1`` is kept
        at or above 0.2% of the log range; a value at that bound means "sharper than the sweep
        resolves".
    delta_bic
        ``BIC(power law) - BIC(broken power law)``; positive favours the break.
    p_value
        Nested F-test of the broken power law's three extra parameters (NaN with ``n <= 6``).
    break_support
        Share of bootstrap replicates that also find a break by the same rule.
    power_law, broken_power_law
        The two fits on all points.
    resample
        How replicates were drawn: ``"groups"`` (whole seeds), ``"seeds"`` (within each scale),
        ``"residuals"`` or ``"points"``.
    n_boot, n_valid
        Replicates requested and used (``"points"`` replicates that keep fewer than 6 distinct
        scales cannot be fitted and are skipped).
    """

    has_break: bool
    break_location: float
    break_location_ci: tuple[float, float]
    sharpness: float
    sharpness_ci: tuple[float, float]
    delta_bic: float
    p_value: float
    break_support: float
    power_law: CurveFit
    broken_power_law: CurveFit
    resample: str
    n_boot: int
    n_valid: int


def _group_codes(groups: Array, n: int) -> np.ndarray:
    labels = np.asarray(groups)
    if labels.ndim != 1 or len(labels) != n:
        raise MeasureInputError(
            f"groups must be a 1-D vector with one label per point ({n}); got shape {labels.shape}",
            hint="pass the seed of each point, e.g. np.tile(seeds, n_scales)",
        )
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise MeasureInputError("groups holds NaN or infinite labels", hint="label every point")
    codes = np.unique(labels, return_inverse=True)[1].reshape(-1)
    if codes.max() < 1:
        raise MeasureInputError(
            "groups has a single label, so there is nothing to resample",
            hint="pass one label per seed, or groups=None to resample residuals",
        )
    return codes


def _replicate_sampler(
    x: np.ndarray,
    y: np.ndarray,
    fitted: np.ndarray,
    resample: Resample,
    groups: Array | None,
) -> tuple[str, Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]]:
    """The resampling scheme actually used and a function drawing one ``(x*, y*)`` replicate."""
    n = len(x)
    _, scale_index, counts = np.unique(x, return_inverse=True, return_counts=True)
    if resample == "auto":
        if groups is not None:
            resample = "groups"
        elif counts.min() >= 2:
            resample = "seeds"
        else:
            resample = "residuals"
    if resample == "groups":
        if groups is None:
            raise MeasureInputError(
                "resample='groups' needs groups (the seed of each point)",
                hint="pass groups=..., or resample='seeds' to resample within each scale",
            )
        codes = _group_codes(groups, n)
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]

        def draw_groups(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
            return x[rows], y[rows]

        return resample, draw_groups
    if resample == "seeds":
        if counts.max() < 2:
            raise MeasureInputError(
                "resample='seeds' needs several y values (seeds) at some scale; every x is unique",
                hint="repeat x once per seed, or use resample='residuals'",
            )
        at_scale = [np.flatnonzero(scale_index == s) for s in range(len(counts))]

        def draw_seeds(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            rows = np.concatenate(
                [rows[rng.integers(0, len(rows), len(rows))] for rows in at_scale]
            )
            return x[rows], y[rows]

        return resample, draw_seeds
    if resample == "residuals":
        n_params = len(_PARAMETERS["broken_power_law"])
        # Raw residuals understate the noise by sqrt((n - p) / n) (Davison & Hinkley 1997, 6.2).
        inflation = math.sqrt(n / (n - n_params)) if n > n_params else 1.0
        residuals = (y - fitted - (y - fitted).mean()) * inflation

        def draw_residuals(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            return x, fitted + residuals[rng.integers(0, n, n)]

        return resample, draw_residuals
    if resample == "points":

        def draw_points(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            rows = rng.integers(0, n, n)
            return x[rows], y[rows]

        return resample, draw_points
    raise MeasureInputError(
        f"unknown resample scheme {resample!r}",
        hint="use 'auto', 'groups', 'seeds', 'residuals' or 'points'",
    )


def _broken_starts(power: CurveFit, sigmoid: CurveFit | None = None) -> list[np.ndarray]:
    """Broken power-law starts at the nested fits, so the broken fit is at least as good."""
    starts = [np.array([-power.theta[2], 0.0, 0.0, 1.0])]  # c1 = 0: the power law itself
    if sigmoid is not None:
        # c0 = 0, c1 * f1 = 1, f1 = 1 / k, d1 = m: the sigmoid itself.
        k = float(np.clip(sigmoid.theta[2], 0.5, 240.0))
        starts.append(np.array([0.0, k, float(np.clip(sigmoid.theta[3], -1.0, 1.0)), 1.0 / k]))
    return starts


def _nested_test(power: CurveFit, broken: CurveFit) -> tuple[float, float]:
    """``BIC(power) - BIC(broken)`` and the F-test p-value of the 3 extra broken parameters.

    The F-test ``((RSS0 - RSS1) / 3) / (RSS1 / (n - 6))`` is NaN without residual degrees of
    freedom (``n <= 6``). It guards the decision at small ``n``, where BIC alone lets the break
    chase noise. In simulated smooth power laws with 1-5% noise: with 8 points ``Delta BIC >= 10``
    in 8% of 160 curves but ``p < 0.01`` in none; with 12 points ``Delta BIC >= 10`` and
    ``p < 0.01`` in 2 of 240, ``p < 0.001`` in none.
    """
    n = broken.n_points
    extra = broken.n_params - power.n_params
    residual_df = n - broken.n_params
    if residual_df <= 0:
        return power.bic - broken.bic, float("nan")
    floor = _rss_floor(broken.n_points, broken.y_range)
    rss_broken = max(broken.rss, floor)
    gain = max(max(power.rss, floor) - rss_broken, 0.0)
    statistic = (gain / extra) / (rss_broken / residual_df)
    return power.bic - broken.bic, float(f_distribution.sf(statistic, extra, residual_df))


def _is_break(delta_bic: float, p_value: float, min_delta_bic: float, alpha: float) -> bool:
    return bool(delta_bic >= min_delta_bic and p_value < alpha)


def break_with_ci(
    x: Array,
    y: Array,
    *,
    groups: Array | None = None,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    resample: Resample = "auto",
    min_delta_bic: float = 10.0,
    alpha: float = 0.001,
) -> BreakEstimate:
    """Locate a break in ``y`` over scale, decide whether it is real, and bootstrap its CIs.

    The decision compares the broken power law with the plain power law, which it nests
    (``c1 = 0``): there is a break when ``BIC(power law) - BIC(broken) >= min_delta_bic`` and the
    nested F-test of the three extra parameters gives ``p < alpha`` (so at least 7 points are
    needed to find one). A smooth power law gets no break; a flat-then-rising (emergent) curve
    gets one at its knee.

    Parameters
    ----------
    x
        Positive scales ``(n,)``, repeated once per seed when there are several ``y`` per scale.
        At least 6 distinct scales.
    y
        The metric ``(n,)``.
    groups
        Optional seed label of each point ``(n,)``: with it, replicates resample whole seeds
        (all of a seed's points together, keeping its correlation across scales).
    n_boot, confidence, seed
        Percentile bootstrap replicates, interval level and random seed.
    resample
        ``"auto"`` (default) picks ``"groups"`` when ``groups`` is given, ``"seeds"`` (resample the
        ``y`` values within each scale) when every scale has several, else ``"residuals"``
        (add resampled residuals of the broken fit to its curve; keeps every scale, which the
        six-parameter fit needs). ``"points"`` resamples ``(x, y)`` pairs.
    min_delta_bic
        BIC margin that counts as a break (10: "very strong" evidence, Kass & Raftery 1995).
    alpha
        Level of the nested F-test that must also reject the plain power law.

    Returns
    -------
    BreakEstimate

    Examples
    --------
    >>> x = np.geomspace(1e6, 1e10, 14)
    >>> y = 1 - (1 + (x / 1e8) ** 6) ** (-1 / 6)  # flat, then rising after 1e8
    >>> est = break_with_ci(x, y, n_boot=20)
    >>> est.has_break, round(est.break_location / 1e8, 2)
    (True, 1.0)
    >>> break_with_ci(x, 2 - x**-0.2, n_boot=20).has_break  # a smooth power law
    False
    """
    n_boot = check_bootstrap(n_boot, confidence)
    xs, ys = _curve(x, y, "a break estimate", _MIN_SCALES["broken_power_law"])
    if groups is not None:
        _group_codes(groups, len(xs))
    power = _fit("power_law", xs, ys)
    broken = _fit("broken_power_law", xs, ys, extra_starts=_broken_starts(power))
    delta_bic, p_value = _nested_test(power, broken)
    used, draw = _replicate_sampler(xs, ys, broken.predict(xs), resample, groups)

    rng = np.random.default_rng(seed)
    locations, widths, supports = [], [], []
    for _ in range(n_boot):
        bx, by = draw(rng)
        if len(np.unique(bx)) < _MIN_SCALES["broken_power_law"]:
            continue
        # No grid search: the full-data optima are good starts for a replicate.
        boot_power = _fit(
            "power_law", bx, by, n_starts=0, extra_starts=[np.asarray(power.theta[2:])]
        )
        boot_broken = _fit(
            "broken_power_law",
            bx,
            by,
            n_starts=0,
            extra_starts=[np.asarray(broken.theta[2:]), *_broken_starts(boot_power)],
        )
        locations.append(boot_broken.params["d1"])
        widths.append(boot_broken.params["f1"])
        supports.append(_is_break(*_nested_test(boot_power, boot_broken), min_delta_bic, alpha))
    return BreakEstimate(
        has_break=_is_break(delta_bic, p_value, min_delta_bic, alpha),
        break_location=broken.params["d1"],
        break_location_ci=percentile_interval(np.asarray(locations), confidence),
        sharpness=broken.params["f1"],
        sharpness_ci=percentile_interval(np.asarray(widths), confidence),
        delta_bic=float(delta_bic),
        p_value=p_value,
        break_support=float(np.mean(supports)) if supports else float("nan"),
        power_law=power,
        broken_power_law=broken,
        resample=used,
        n_boot=n_boot,
        n_valid=len(locations),
    )


# --------------------------------------------------------------------------------------------
# Emergence scores and the metric-swap test
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EmergenceScore:
    """BIG-bench breakthroughness and a linearity score of one metric over scale.

    Attributes
    ----------
    breakthroughness
        ``B = I_y / sqrt(median_i (y_{i+1} - y_i)**2)`` over the per-scale means (Srivastava et
        al. 2022, App. B). Negative for a curve that mostly falls; ``inf`` when more than half of
        the steps are exactly flat; 0 for a flat curve.
    breakthroughness_per_step
        ``B / (n_scales - 1)``: 1 for a curve that is linear in log scale with evenly spaced
        scales, larger when the change is concentrated in fewer steps.
    linearity
        ``R**2`` of the least-squares line ``y ~ log x`` through the per-scale means (1 = linear
        in log scale; 1 as well for a flat curve).
    total_improvement
        ``I_y = sign(argmax - argmin) * (max - min)`` of the per-scale means.
    n_scales
        Distinct scales.
    """

    breakthroughness: float
    breakthroughness_per_step: float
    linearity: float
    total_improvement: float
    n_scales: int


def emergence_score(x: Array, y: Array) -> EmergenceScore:
    """BIG-bench breakthroughness and linearity (``R**2`` in log scale) of ``y`` over scale.

    ``y`` is first averaged over seeds (repeated ``x``) and ordered by scale.

    Parameters
    ----------
    x
        Positive scales ``(n,)``; at least 3 distinct.
    y
        The metric ``(n,)``.

    Returns
    -------
    EmergenceScore

    Examples
    --------
    >>> x = 10.0 ** np.arange(6)
    >>> emergence_score(x, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]).breakthroughness_per_step
    1.0
    >>> round(emergence_score(x, [0.0, 0.01, 0.0, 0.9, 0.91, 0.9]).breakthroughness, 6)
    91.0
    """
    xs, ys = _curve(x, y, "an emergence score", 3)
    scales, means = _scale_means(xs, ys)
    total = float(np.sign(np.argmax(means) - np.argmin(means)) * np.ptp(means))
    typical_step = float(np.sqrt(np.median(np.diff(means) ** 2)))
    if total == 0:
        breakthroughness = 0.0
    elif typical_step == 0:
        breakthroughness = math.copysign(math.inf, total)
    else:
        breakthroughness = total / typical_step
    u = np.log(scales)
    tss = float(((means - means.mean()) ** 2).sum())
    if tss == 0:
        linearity = 1.0
    else:
        slope, intercept = np.polyfit(u, means, 1)
        linearity = 1.0 - float(((means - slope * u - intercept) ** 2).sum()) / tss
    return EmergenceScore(
        breakthroughness=float(breakthroughness),
        breakthroughness_per_step=float(breakthroughness) / (len(scales) - 1),
        linearity=float(np.clip(linearity, 0.0, 1.0)),
        total_improvement=total,
        n_scales=len(scales),
    )


ShapeLabel = Literal["jump", "smooth", "unclear"]
# Resolution of the slope profile of a fitted curve over the observed log range.
_PROFILE_POINTS = 801


@dataclass(frozen=True, eq=False)
class CurveShape:
    """Whether one metric jumps over scale, and the evidence (see :func:`curve_shape`).

    Attributes
    ----------
    label
        ``"jump"``, ``"smooth"`` or ``"unclear"``.
    reason
        One clause saying which criterion decided the label.
    delta_bic
        ``BIC(power law) - BIC(best sharp fit)``: how much better a sigmoid or broken power law
        explains the curve than a smooth power law.
    p_value
        Nested F-test of the broken power law against the power law (NaN without the broken
        fit or with ``n <= 6``).
    sharp_family
        The better (lower BIC) of ``"sigmoid"`` and ``"broken_power_law"``.
    transition_location
        Where the sharp fit is steepest in ``log x`` (units of ``x``).
    transition_width
        Width of its steep part: the stretch of ``log x`` around the steepest point where the
        slope ``|dy / d log x|`` is at least half its peak, as a share of the observed log range
        (``3.53 / k`` in ``log x`` for a sigmoid).
    starts_flat
        Whether the slope at the smallest scale is below half the peak (the curve is flat
        before its transition rather than steepest at the start, as a saturating power law is).
    score
        The curve's :class:`EmergenceScore`.
    fits
        The fits by family (the broken power law only with at least 6 distinct scales).
    """

    label: ShapeLabel
    reason: str
    delta_bic: float
    p_value: float
    sharp_family: Family
    transition_location: float
    transition_width: float
    starts_flat: bool
    score: EmergenceScore
    fits: dict[str, CurveFit]


def _steep_part(fit: CurveFit, x: np.ndarray) -> tuple[float, float, bool]:
    """Steepest point, half-peak slope width (share of the log range) and flat start of a fit."""
    u = np.linspace(np.log(x.min()), np.log(x.max()), _PROFILE_POINTS)
    slope = np.abs(np.gradient(fit.predict(np.exp(u)), u))  # (points,)
    peak = int(np.argmax(slope))
    if not np.isfinite(slope[peak]) or slope[peak] == 0:
        return float("nan"), 1.0, False
    steep = slope >= slope[peak] / 2
    # The connected run of steep points around the peak.
    left = peak - int(np.argmin(steep[peak::-1])) + 1 if not steep[: peak + 1].all() else 0
    right = peak + int(np.argmin(steep[peak:])) - 1 if not steep[peak:].all() else len(u) - 1
    width = (u[right] - u[left]) / (u[-1] - u[0])
    return float(np.exp(u[peak])), float(width), not bool(steep[0])


def curve_shape(
    x: Array,
    y: Array,
    *,
    min_delta_bic: float = 10.0,
    max_width: float = 0.35,
    min_breakthroughness: float = 1.0,
    alpha: float = 0.001,
) -> CurveShape:
    """Classify a metric's curve over scale as a ``"jump"``, ``"smooth"`` or ``"unclear"``.

    A curve **jumps** when all three hold:

    1. *a sharp family fits much better than a power law*:
       ``BIC(power law) - min(BIC(sigmoid), BIC(broken power law)) >= min_delta_bic`` and,
       with at least 6 distinct scales, the broken power law (which nests both the power law
       and the sigmoid) rejects the power law in a nested F-test at level ``alpha``;
    2. *the transition is sharp and observed*: on the better sharp fit, the slope
       ``|dy / d log x|`` peaks after a flat start (at the smallest scale it is below half the
       peak) and stays above half the peak over at most ``max_width`` of the observed log
       range. A saturating power law is steepest at the smallest scale and fails this;
    3. *the change is concentrated*: BIG-bench breakthroughness per step
       ``|B| / (n_scales - 1) >= min_breakthroughness``, where a curve linear in log scale
       scores 1.

    It is **smooth** when 1 or 2 fails: a power law explains it as well, or the best sharp fit
    changes gradually or fastest at the start. It is **unclear** when a sharp transition fits
    (1 and 2) but the change is not concentrated in few steps (3 fails, e.g. seed noise makes
    the typical step as large as the jump's share).

    Parameters
    ----------
    x
        Positive scales ``(n,)``, repeated once per seed; at least 4 distinct (6 to include the
        broken power law).
    y
        The metric ``(n,)``.
    min_delta_bic, alpha, max_width, min_breakthroughness
        The thresholds of criteria 1-3.

    Returns
    -------
    CurveShape

    Examples
    --------
    >>> x = np.geomspace(1e6, 1e10, 12)
    >>> step = 1 / (1 + np.exp(-6 * (np.log(x) - np.log(1e8))))
    >>> curve_shape(x, step).label, curve_shape(x, 1 - 0.5 * (x / 1e6) ** -0.3).label
    ('jump', 'smooth')
    """
    xs, ys = _curve(x, y, "a curve-shape test", _MIN_SCALES["sigmoid"])
    fits = {family: _fit(family, xs, ys) for family in ("power_law", "sigmoid")}
    p_value = float("nan")
    if len(np.unique(xs)) >= _MIN_SCALES["broken_power_law"]:
        starts = _broken_starts(fits["power_law"], fits["sigmoid"])
        fits["broken_power_law"] = _fit("broken_power_law", xs, ys, extra_starts=starts)
        p_value = _nested_test(fits["power_law"], fits["broken_power_law"])[1]
    sharp: Family = (
        "broken_power_law"
        if "broken_power_law" in fits and fits["broken_power_law"].bic < fits["sigmoid"].bic
        else "sigmoid"
    )
    delta_bic = fits["power_law"].bic - fits[sharp].bic
    location, width, starts_flat = _steep_part(fits[sharp], xs)
    score = emergence_score(xs, ys)
    per_step = abs(score.breakthroughness_per_step)
    label: ShapeLabel
    if delta_bic < min_delta_bic:
        label, reason = "smooth", f"a power law fits about as well (delta BIC {delta_bic:.1f})"
    elif "broken_power_law" in fits and not p_value < alpha:
        label = "smooth"
        reason = f"the nested F-test does not reject a power law (p = {p_value:.2g})"
    elif not starts_flat:
        label, reason = "smooth", f"the {sharp} fit is steepest at the smallest scales"
    elif width > max_width:
        label = "smooth"
        reason = f"the {sharp} fit's steep part spans {width:.0%} of the log-scale range"
    elif per_step < min_breakthroughness:
        label = "unclear"
        reason = (
            f"a sharp {sharp} fits (delta BIC {delta_bic:.1f}) but breakthroughness per step is "
            f"only {per_step:.2f}"
        )
    else:
        label = "jump"
        reason = (
            f"a {sharp} fits better by delta BIC {delta_bic:.1f}, its steep part spans "
            f"{width:.0%} of the log-scale range, breakthroughness per step {per_step:.2f}"
        )
    return CurveShape(
        label=label,
        reason=reason,
        delta_bic=float(delta_bic),
        p_value=p_value,
        sharp_family=sharp,
        transition_location=location,
        transition_width=width,
        starts_flat=starts_flat,
        score=score,
        fits=dict(fits),
    )


Verdict = Literal["artifact", "survives", "smooth", "inconclusive"]


@dataclass(frozen=True, eq=False)
class MetricSwapVerdict:
    """The metric-swap test of Schaeffer et al. (2023) on one ability.

    Attributes
    ----------
    verdict
        ``"artifact"`` (jumps under the discontinuous metric, smooth under the continuous one),
        ``"survives"`` (jumps under both), ``"smooth"`` (smooth under both) or
        ``"inconclusive"`` (anything else, e.g. an ``"unclear"`` curve).
    text
        One sentence, e.g. ``"jumps under exact_match, smooth under per_token_accuracy -> likely
        a metric artifact"``.
    names
        The two metrics' names (discontinuous, continuous).
    discontinuous, continuous
        Each metric's :class:`CurveShape` (label, reason, fits, scores).
    discontinuous_break, continuous_break
        Each metric's :class:`BreakEstimate` with bootstrap CIs, or None with fewer than 6
        distinct scales or ``n_boot=0``.
    """

    verdict: Verdict
    text: str
    names: tuple[str, str]
    discontinuous: CurveShape
    continuous: CurveShape
    discontinuous_break: BreakEstimate | None
    continuous_break: BreakEstimate | None


def _verdict(labels: tuple[ShapeLabel, ShapeLabel], names: tuple[str, str]) -> tuple[Verdict, str]:
    disc, cont = names
    if labels == ("jump", "smooth"):
        return "artifact", f"jumps under {disc}, smooth under {cont} -> likely a metric artifact"
    if labels == ("jump", "jump"):
        return "survives", f"jumps under both {disc} and {cont} -> survives the metric swap"
    if labels == ("smooth", "smooth"):
        return "smooth", f"smooth under both {disc} and {cont} -> no jump to explain"
    words = {"jump": "jumps", "smooth": "smooth", "unclear": "unclear"}
    return (
        "inconclusive",
        f"{words[labels[0]]} under {disc}, {words[labels[1]]} under {cont} -> inconclusive",
    )


def metric_swap_verdict(
    x: Array,
    discontinuous_metric: Array,
    continuous_metric: Array,
    names: tuple[str, str] = ("exact_match", "per_token_accuracy"),
    *,
    groups: Array | None = None,
    n_boot: int = 200,
    seed: int = 0,
    min_delta_bic: float = 10.0,
    alpha: float = 0.001,
    max_width: float = 0.35,
    min_breakthroughness: float = 1.0,
) -> MetricSwapVerdict:
    """Does an ability's jump survive swapping a discontinuous metric for a continuous one?

    Both metrics are scored on the same models: ``x`` is shared. Each curve is classified by
    :func:`curve_shape` (see there for the definition of a jump) and its break located by
    :func:`break_with_ci`. Then ``jump`` + ``smooth`` -> ``"artifact"``, ``jump`` + ``jump`` ->
    ``"survives"``, ``smooth`` + ``smooth`` -> ``"smooth"``, anything else ->
    ``"inconclusive"``.

    Parameters
    ----------
    x
        Positive scales ``(n,)``, repeated once per seed; at least 4 distinct.
    discontinuous_metric
        E.g. exact match ``(n,)``.
    continuous_metric
        E.g. per-token accuracy, Brier score or log-likelihood ``(n,)``, on the same models.
    names
        The two metrics' names for the text.
    groups, n_boot, seed
        Passed to :func:`break_with_ci` (``n_boot=0`` skips the break CIs).
    min_delta_bic, alpha, max_width, min_breakthroughness
        The jump criteria of :func:`curve_shape` (the first two also decide the breaks).

    Returns
    -------
    MetricSwapVerdict

    Examples
    --------
    >>> x = np.geomspace(1e7, 1e11, 12)
    >>> per_token = np.exp(-((x / 3.6e6) ** -1.0))  # 0.7 -> 1, smooth in log scale
    >>> out = metric_swap_verdict(x, per_token**30, per_token, n_boot=0)
    >>> out.verdict
    'artifact'
    >>> print(out.text)
    jumps under exact_match, smooth under per_token_accuracy -> likely a metric artifact
    """
    if (
        len(names) != 2
        or not all(isinstance(name, str) and name for name in names)
        or names[0] == names[1]
    ):
        raise MeasureInputError(
            f"names must be two different non-empty strings; got {names!r}",
            hint="e.g. names=('exact_match', 'per_token_accuracy')",
        )
    if int(n_boot) != n_boot or n_boot < 0:
        raise MeasureInputError(
            f"n_boot must be a non-negative integer; got {n_boot!r}",
            hint="0 skips the break CIs; a few hundred gives stable ones",
        )
    criteria = {
        "min_delta_bic": min_delta_bic,
        "alpha": alpha,
        "max_width": max_width,
        "min_breakthroughness": min_breakthroughness,
    }
    xs, disc = _curve(x, discontinuous_metric, "a metric-swap test", 4, "discontinuous_metric")
    _, cont = _curve(xs, continuous_metric, "a metric-swap test", 4, "continuous_metric")
    if groups is not None:
        _group_codes(groups, len(xs))
    shapes = (curve_shape(xs, disc, **criteria), curve_shape(xs, cont, **criteria))
    breaks: list[BreakEstimate | None] = [None, None]
    if n_boot > 0 and len(np.unique(xs)) >= _MIN_SCALES["broken_power_law"]:
        breaks = [
            break_with_ci(
                xs,
                values,
                groups=groups,
                n_boot=int(n_boot),
                seed=seed,
                min_delta_bic=min_delta_bic,
                alpha=alpha,
            )
            for values in (disc, cont)
        ]
    verdict, text = _verdict((shapes[0].label, shapes[1].label), (names[0], names[1]))
    return MetricSwapVerdict(
        verdict=verdict,
        text=text,
        names=(names[0], names[1]),
        discontinuous=shapes[0],
        continuous=shapes[1],
        discontinuous_break=breaks[0],
        continuous_break=breaks[1],
    )


# --------------------------------------------------------------------------------------------
# Extrapolation and delayed generalization
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Extrapolation:
    """How well a fit on the smaller scales predicts the largest ones.

    Attributes
    ----------
    family
        The fitted family.
    fit
        The fit on all but the ``holdout`` largest scales.
    x
        The held-out scales ``(holdout,)``, increasing.
    observed
        Mean ``y`` (over seeds) at each held-out scale ``(holdout,)``.
    predicted
        The fit's prediction there ``(holdout,)``.
    abs_error
        ``|predicted - observed|`` ``(holdout,)``.
    rel_error
        ``abs_error / |observed|`` ``(holdout,)``; ``inf`` where ``observed`` is 0 and the
        prediction is not.
    """

    family: Family
    fit: CurveFit
    x: np.ndarray
    observed: np.ndarray
    predicted: np.ndarray
    abs_error: np.ndarray
    rel_error: np.ndarray


def extrapolation_error(x: Array, y: Array, family: Family, holdout: int = 1) -> Extrapolation:
    """Fit ``family`` on all but the ``holdout`` largest scales and score its predictions there.

    All seeds at a held-out scale are held out, and the prediction is compared with their mean.

    Parameters
    ----------
    x
        Positive scales ``(n,)``, repeated once per seed.
    y
        The metric ``(n,)``.
    family
        ``"power_law"``, ``"sigmoid"`` or ``"broken_power_law"``.
    holdout
        How many of the largest distinct scales to hold out (at least 1). The remaining ones must
        be enough for the fit (3, 4 or 6 distinct scales).

    Returns
    -------
    Extrapolation

    Examples
    --------
    >>> x = np.geomspace(1e6, 1e10, 9)
    >>> out = extrapolation_error(x, 3 * x**-0.1, "power_law", holdout=2)
    >>> out.x.tolist(), bool(out.rel_error.max() < 1e-6)
    ([3162277660.1683793, 10000000000.0], True)
    """
    if family not in _MIN_SCALES:
        raise MeasureInputError(
            f"unknown curve family {family!r}", hint=f"use one of {', '.join(CURVE_FAMILIES)}"
        )
    if isinstance(holdout, bool) or int(holdout) != holdout or holdout < 1:
        raise MeasureInputError(
            f"holdout must be a positive integer (largest scales to hold out); got {holdout!r}",
            hint="e.g. holdout=1 to predict the largest scale from the others",
        )
    holdout = int(holdout)
    needed = _MIN_SCALES[family] + holdout
    xs, ys = _curve(x, y, f"extrapolating {_LABELS[family]} with holdout={holdout}", needed)
    scales = np.unique(xs)
    held_out = scales[-holdout:]
    train = xs < held_out[0]
    fit = _fit(family, xs[train], ys[train])
    observed = np.array([ys[xs == scale].mean() for scale in held_out])
    predicted = fit.predict(held_out)
    abs_error = np.abs(predicted - observed)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_error = np.where(abs_error == 0, 0.0, abs_error / np.abs(observed))
    return Extrapolation(
        family=family,
        fit=fit,
        x=held_out,
        observed=observed,
        predicted=predicted,
        abs_error=abs_error,
        rel_error=rel_error,
    )


@dataclass(frozen=True)
class Crossing:
    """When the train and test metrics first reach one threshold.

    Attributes
    ----------
    threshold
        The level.
    train_step, test_step
        The first step at which each metric reaches it (None when it never does).
    delay
        ``test_step - train_step`` (None unless both reach it).
    """

    threshold: float
    train_step: float | None
    test_step: float | None
    delay: float | None


@dataclass(frozen=True)
class DelayedGeneralization:
    """First crossings of each threshold by a train and a test curve (see
    :func:`delayed_generalization`).

    Attributes
    ----------
    crossings
        One :class:`Crossing` per threshold, in the order given.
    higher_is_better
        Whether reaching meant ``metric >= threshold`` (True) or ``<=`` (losses).
    """

    crossings: tuple[Crossing, ...]
    higher_is_better: bool

    def delay(self, threshold: float) -> float | None:
        """The delay at ``threshold`` (one of the thresholds given).

        Examples
        --------
        >>> out = delayed_generalization([0, 1, 2], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0], (0.5,))
        >>> out.delay(0.5)
        1
        """
        for crossing in self.crossings:
            if crossing.threshold == threshold:
                return crossing.delay
        raise MeasureInputError(
            f"threshold {threshold!r} was not measured",
            hint=f"use one of {[c.threshold for c in self.crossings]}",
        )


def _first_crossing(
    steps: np.ndarray, metric: np.ndarray, threshold: float, higher_is_better: bool
) -> float | None:
    reached = metric >= threshold if higher_is_better else metric <= threshold
    if not reached.any():
        return None
    step: float = steps[int(np.argmax(reached))].item()
    return step


def delayed_generalization(
    steps: Array,
    train_metric: Array,
    test_metric: Array,
    thresholds: Sequence[float] = (0.5, 0.9),
    *,
    higher_is_better: bool = True,
) -> DelayedGeneralization:
    """First steps at which train and test metrics reach each threshold, and the delay between.

    A long delay at a high threshold (train accuracy reaches 0.9 long before test accuracy does)
    is the signature of grokking (Power et al. 2022, "Grokking: Generalization beyond
    overfitting on small algorithmic datasets"). Crossings are the first *logged* step at which a
    metric reaches the threshold, without interpolation.

    Parameters
    ----------
    steps
        Strictly increasing training steps (or epochs) ``(n,)``; integer steps come back as ints.
    train_metric, test_metric
        The metrics logged at those steps ``(n,)``.
    thresholds
        Levels to test, e.g. accuracies.
    higher_is_better
        True for accuracies (reach = ``metric >= threshold``); False for losses (``<=``).

    Returns
    -------
    DelayedGeneralization

    Examples
    --------
    >>> steps = np.arange(0, 1000, 100)
    >>> train = np.minimum(1.0, steps / 200)  # memorizes by step 200
    >>> test = np.where(steps >= 700, 0.95, 0.1)  # generalizes at step 700
    >>> out = delayed_generalization(steps, train, test)
    >>> [(c.threshold, c.train_step, c.test_step, c.delay) for c in out.crossings]
    [(0.5, 100, 700, 600), (0.9, 200, 700, 500)]
    """
    raw_steps = to_numpy(as_tensor(steps, "steps"))
    step_values = _float_vector(raw_steps, "steps")
    train = _float_vector(train_metric, "train_metric")
    test = _float_vector(test_metric, "test_metric")
    for name, values in (("train_metric", train), ("test_metric", test)):
        if len(values) != len(step_values):
            raise MeasureInputError(
                f"steps has {len(step_values)} entries but {name} has {len(values)}",
                hint="log both metrics at every step in steps",
            )
    if len(step_values) > 1 and not (np.diff(step_values) > 0).all():
        raise MeasureInputError(
            "steps must be strictly increasing",
            hint="sort the log by step and drop duplicate steps",
        )
    levels = _float_vector(np.asarray(thresholds, dtype=np.float64).reshape(-1), "thresholds")
    if raw_steps.dtype.kind not in "iu":
        raw_steps = step_values
    crossings = []
    for level in levels.tolist():
        train_step = _first_crossing(raw_steps, train, level, higher_is_better)
        test_step = _first_crossing(raw_steps, test, level, higher_is_better)
        delay = None if train_step is None or test_step is None else test_step - train_step
        crossings.append(Crossing(level, train_step, test_step, delay))
    return DelayedGeneralization(crossings=tuple(crossings), higher_is_better=higher_is_better)
