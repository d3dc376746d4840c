"""Paired comparisons of two members scored on the same instances.

Two members evaluated on the same test set are not independent samples: most instances are right
(or wrong) for both, and only the *discordant* instances carry evidence about which is better.
McNemar's test and the paired bootstrap use exactly that pairing; an unpaired two-proportion
z-test would ignore it and be badly miscalibrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import binom

from polyculture.errors import MeasureInputError
from polyculture.measure._checks import Array, binary_pair, check_bootstrap
from polyculture.measure.statistics import percentile_interval

__all__ = ["McNemarResult", "PairedBootstrapResult", "mcnemar", "paired_bootstrap"]


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on the discordant pairs of two members.

    Attributes
    ----------
    statistic
        ``min(a_only, b_only)``: the smaller discordant count, the binomial statistic whose tail
        gives the p-value.
    p_value
        Two-sided p-value for "both members have the same accuracy".
    a_only
        Instances member ``a`` gets right and ``b`` wrong.
    b_only
        Instances member ``b`` gets right and ``a`` wrong.
    method
        ``"exact"`` or ``"midp"``.
    """

    statistic: float
    p_value: float
    a_only: int
    b_only: int
    method: str


def mcnemar(
    correct_a: Array, correct_b: Array, *, method: Literal["exact", "midp"] = "exact"
) -> McNemarResult:
    """McNemar's test of equal accuracy for two members scored on the same instances.

    Under the null hypothesis each of the ``d = a_only + b_only`` discordant instances is equally
    likely to favour either member, so ``a_only ~ Binomial(d, 1/2)``. With ``k = min(a_only,
    b_only)`` and ``X ~ Binomial(d, 1/2)``:

    - ``"exact"``: ``p = min(1, 2 P(X <= k))``, the two-sided exact binomial test (equal to
      ``scipy.stats.binomtest(a_only, d, 0.5).pvalue``).
    - ``"midp"``: ``p = 2 P(X <= k) - P(X = k)``, the mid-p variant, which counts only half the
      probability of the observed outcome; less conservative and closer to nominal size
      (Fagerland, Lydersen & Laake 2013, BMC Med. Res. Methodol. 13:91).

    With no discordant instances there is no evidence of a difference: ``p = 1``.

    Examples
    --------
    >>> a = np.r_[np.ones(10), np.zeros(2), np.ones(30)]
    >>> b = np.r_[np.zeros(10), np.ones(2), np.ones(30)]
    >>> out = mcnemar(a, b)
    >>> out.a_only, out.b_only, round(out.p_value, 6)
    (10, 2, 0.038574)
    """
    if method not in ("exact", "midp"):
        raise MeasureInputError(
            f"unknown McNemar method {method!r}", hint="use method='exact' or method='midp'"
        )
    a, b = binary_pair(correct_a, correct_b, ("correct_a", "correct_b"))
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = a_only + b_only
    k = min(a_only, b_only)
    if discordant == 0:
        return McNemarResult(0.0, 1.0, 0, 0, method)
    p_value = 2 * float(binom.cdf(k, discordant, 0.5))
    if method == "midp":
        p_value -= float(binom.pmf(k, discordant, 0.5))
    return McNemarResult(float(k), min(1.0, p_value), a_only, b_only, method)


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Accuracy difference of two members with a paired bootstrap CI.

    Attributes
    ----------
    difference
        ``accuracy_a - accuracy_b``.
    ci_low, ci_high
        Percentile bootstrap CI of the difference, resampling instances (pairs kept together).
    p_value
        Two-sided bootstrap share ``min(1, 2 (t + 1) / (B + 1))`` with ``t`` the smaller of the
        numbers of resampled differences ``<= 0`` and ``>= 0`` among ``B`` resamples (the ``+1``
        keeps it above 0: ``B`` resamples cannot resolve smaller values). A p-value-like summary
        of how often resampling flips or zeroes the sign, not an exact test; use
        :func:`mcnemar` for that.
    n_resamples
        Number of bootstrap resamples.
    """

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n_resamples: int


def paired_bootstrap(
    correct_a: Array,
    correct_b: Array,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedBootstrapResult:
    """Paired bootstrap of the accuracy difference of two members on the same instances.

    Each resample draws ``n`` instances with replacement, keeping both members' outcomes on an
    instance together. Only the counts of the three kinds of instance matter (``a`` alone right,
    ``b`` alone right, tie), so a resample is drawn exactly as one multinomial of those counts,
    in ``O(1)`` per resample rather than ``O(n)``.

    Examples
    --------
    >>> a = np.r_[np.ones(30), np.zeros(5), np.ones(65)]
    >>> b = np.r_[np.zeros(30), np.ones(5), np.ones(65)]
    >>> out = paired_bootstrap(a, b)
    >>> out.difference, bool(0 < out.ci_low < 0.25 < out.ci_high), round(out.p_value, 4)
    (0.25, True, 0.001)
    """
    n_resamples = check_bootstrap(n_resamples, confidence)
    a, b = binary_pair(correct_a, correct_b, ("correct_a", "correct_b"))
    n = len(a)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    shares = np.array([a_only, b_only, n - a_only - b_only]) / n
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, shares, size=n_resamples)  # (n_resamples, 3)
    differences = (draws[:, 0] - draws[:, 1]) / n  # (n_resamples,)
    low, high = percentile_interval(differences, confidence)
    tail = min(int((differences <= 0).sum()), int((differences >= 0).sum()))
    return PairedBootstrapResult(
        difference=(a_only - b_only) / n,
        ci_low=float(low),
        ci_high=float(high),
        p_value=min(1.0, 2 * (tail + 1) / (n_resamples + 1)),
        n_resamples=n_resamples,
    )
