"""Outcome homogenization: do the same instances fail under every member?

Everything here reads the failure matrix ``F = 1 - correct`` ``(n instances, m members)``:

- :func:`systemic_failure`: the share of instances that *every* member gets wrong, against
  ``prod_j eps_j``, its value if members erred independently with their error rates ``eps_j``
  (Toups, Bommasani et al. 2023, "Ecosystem-level analysis of deployed machine learning reveals
  homogeneous outcomes", NeurIPS), with bootstrap CIs over instances.
- :func:`failure_count_distribution`: the whole distribution of "how many members fail an
  instance" against the Poisson-binomial distribution it would follow under independence.
- :func:`homogenization`: H_avg, H_unif and H_worst of Bommasani et al. 2022 ("Picking on the
  Same Person: Does Algorithmic Monoculture lead to Outcome Homogenization?", NeurIPS), for
  individual instances or for groups of instances. H = 1 when failures look independent, H > 1
  when they concentrate on the same instances (or groups).

Undefined ratios (e.g. a member that never fails makes the independent baseline 0) are NaN, and
the result's ``note`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from polyculture.errors import MeasureInputError
from polyculture.measure._checks import Array, binary_matrix, check_bootstrap, to_numpy
from polyculture.measure.statistics import percentile_interval

__all__ = [
    "FailureCountDistribution",
    "Homogenization",
    "SystemicFailure",
    "failure_count_distribution",
    "homogenization",
    "poisson_binomial_pmf",
    "systemic_failure",
]

# Resampled instance counts held in memory at once by the bootstrap (float64 elements).
_BOOTSTRAP_ELEMENTS = 1 << 22


def _failures(correct: Array) -> np.ndarray:
    """The failure matrix ``F = 1 - correct`` ``(n, m)`` as float64, after the shared checks."""
    return (~to_numpy(binary_matrix(correct))).astype(np.float64)


def _log_product(rates: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log prod rates`` along ``axis``: -inf when a rate is 0, no underflow for many members."""
    with np.errstate(divide="ignore"):
        return np.log(rates).sum(axis=axis)


def _logsumexp(values: np.ndarray) -> float:
    top = float(values.max())
    if not np.isfinite(top):
        return top
    return top + float(np.log(np.exp(values - top).sum()))


def _never_fail_note(error_rates: np.ndarray) -> str:
    members = np.flatnonzero(error_rates == 0).tolist()
    return (
        f"member(s) {members} never fail, so the expected rate under independent errors is 0 "
        "and the ratio to it is undefined (NaN)"
    )


# --------------------------------------------------------------------------------------------
# Systemic failure
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SystemicFailure:
    """Observed vs independent-errors rate of instances that every member fails.

    Attributes
    ----------
    observed
        ``mean_u prod_j F[u, j]``: share of instances failed by all members.
    expected
        ``prod_j eps_j``: that share if members erred independently with their error rates.
    ratio
        ``observed / expected`` (1 = as if independent, > 1 = failures pile up on the same
        instances). Computed in log space, so it stays finite when ``expected`` underflows.
    observed_ci, ratio_ci
        Percentile bootstrap CIs over instances (resampling rows of ``F``, so the error rates in
        ``expected`` are re-estimated in every resample).
    error_rates
        ``eps_j`` of each member ``(m,)``.
    note
        Why a value is NaN or a CI rests on fewer resamples; empty when nothing is unusual.
    """

    observed: float
    expected: float
    ratio: float
    observed_ci: tuple[float, float]
    ratio_ci: tuple[float, float]
    error_rates: np.ndarray
    note: str = ""


def systemic_failure(
    correct: Array, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> SystemicFailure:
    """Systemic failure rate, its independent-errors baseline and their ratio, with CIs.

    Following Toups, Bommasani et al. 2023 ("Ecosystem-level analysis of deployed machine learning
    reveals homogeneous outcomes", NeurIPS): an instance fails systemically when every member gets
    it wrong. ``observed = mean_u prod_j F[u, j]``; under independent errors the rate would be
    ``expected = prod_j eps_j`` with ``eps_j = mean_u F[u, j]``.

    Parameters
    ----------
    correct
        0/1 matrix ``(n, m)``, 1 where member ``j`` gets instance ``u`` right.
    n_resamples, confidence, seed
        Percentile bootstrap over instances: each resample draws ``n`` rows with replacement and
        recomputes both the observed rate and the error rates.

    Returns
    -------
    SystemicFailure
        ``ratio`` is NaN, with a ``note``, when a member never fails (``expected = 0``).

    Examples
    --------
    >>> correct = np.array([[0, 0], [0, 0], [1, 1], [1, 1]])
    >>> out = systemic_failure(correct, n_resamples=200)
    >>> out.observed, out.expected, out.ratio
    (0.5, 0.25, 2.0)
    """
    n_resamples = check_bootstrap(n_resamples, confidence)
    failures = _failures(correct)  # (n, m)
    n = failures.shape[0]
    all_fail = failures.min(axis=1)  # (n,) 1 where every member fails
    error_rates = failures.mean(axis=0)  # (m,) eps_j
    observed = float(all_fail.mean())
    log_expected = float(_log_product(error_rates))
    notes = []
    if np.isfinite(log_expected) and np.exp(log_expected) == 0:
        notes.append(
            f"expected rate exp({log_expected:.1f}) underflows float64 and is shown as 0; "
            "the ratio is computed in log space"
        )
    if np.isfinite(log_expected):
        with np.errstate(divide="ignore", over="ignore"):
            log_ratio = np.log(observed) - log_expected
            ratio = float(np.exp(log_ratio))
        if np.isinf(ratio):
            notes.append(f"ratio exp({log_ratio:.1f}) exceeds the float64 range")
    else:
        ratio = float("nan")
        notes.append(_never_fail_note(error_rates))

    rng = np.random.default_rng(seed)
    boot_observed, boot_ratio = [], []
    block = max(1, min(n_resamples, _BOOTSTRAP_ELEMENTS // n))
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        weights = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n) / n
        resampled_observed = weights @ all_fail  # (size,)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_boot = np.log(resampled_observed) - _log_product(weights @ failures)
            boot_ratio.append(np.exp(log_boot))
        boot_observed.append(resampled_observed)
    ratios = np.concatenate(boot_ratio)
    # A resample in which some member never fails has ratio 0/0 = NaN and drops out.
    ratios = ratios[~np.isnan(ratios)]
    if 0 < len(ratios) < n_resamples and not np.isnan(ratio):
        notes.append(
            f"ratio CI from {len(ratios)} of {n_resamples} resamples; in the rest some member "
            "had no failures"
        )
    return SystemicFailure(
        observed=observed,
        expected=float(np.exp(log_expected)),
        ratio=ratio,
        observed_ci=percentile_interval(np.concatenate(boot_observed), confidence),
        ratio_ci=(np.nan, np.nan) if np.isnan(ratio) else percentile_interval(ratios, confidence),
        error_rates=error_rates,
        note="; ".join(notes),
    )


# --------------------------------------------------------------------------------------------
# Failure-count distribution
# --------------------------------------------------------------------------------------------


def poisson_binomial_pmf(probabilities: Array) -> np.ndarray:
    """Exact pmf ``(m + 1,)`` of the number of successes of independent Bernoulli(p_j) trials.

    Dynamic programming over the trials (``O(m^2)``, no simulation, no FFT round-off): after
    trial ``j``, ``pmf[k] = pmf[k] (1 - p_j) + pmf[k - 1] p_j``.

    Examples
    --------
    >>> poisson_binomial_pmf([0.5, 0.5]).tolist()
    [0.25, 0.5, 0.25]
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 1 or not np.all((probs >= 0) & (probs <= 1)):
        raise MeasureInputError(
            "probabilities must be a 1-D array of values in [0, 1]",
            hint="pass the members' error rates, e.g. (1 - correct).mean(axis=0)",
        )
    pmf = np.zeros(len(probs) + 1)
    pmf[0] = 1.0
    for k, p in enumerate(probs, start=1):
        pmf[1 : k + 1] = pmf[1 : k + 1] * (1 - p) + pmf[:k] * p
        pmf[0] *= 1 - p
    return pmf


@dataclass(frozen=True, eq=False)
class FailureCountDistribution:
    """How many members fail each instance: observed shares vs the independent-errors pmf.

    Attributes
    ----------
    k
        ``0, 1, ..., m`` ``(m + 1,)``.
    observed
        Share of instances failed by exactly ``k`` members ``(m + 1,)``.
    expected
        Poisson-binomial pmf of the members' error rates ``(m + 1,)``: the distribution of the
        count if members erred independently.
    total_variation
        ``0.5 * sum_k |observed - expected|`` in ``[0, 1]``; 0 = indistinguishable.
    error_rates
        ``eps_j`` of each member ``(m,)``.
    """

    k: np.ndarray
    observed: np.ndarray
    expected: np.ndarray
    total_variation: float
    error_rates: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """One row per ``k`` with columns ``k``, ``observed``, ``expected``."""
        return pd.DataFrame({"k": self.k, "observed": self.observed, "expected": self.expected})


def failure_count_distribution(correct: Array) -> FailureCountDistribution:
    """Distribution of the number of members failing an instance vs its independent baseline.

    Toups, Bommasani et al. 2023 compare the observed distribution of "how many systems fail this
    user" with the one independent systems would give; with error rates ``eps_j`` that baseline is
    the Poisson-binomial distribution, computed here exactly by :func:`poisson_binomial_pmf`.
    Homogeneous outcomes show as excess mass at both ends (``k = 0`` and ``k = m``).

    Examples
    --------
    >>> out = failure_count_distribution(np.array([[0, 0], [0, 0], [1, 1], [1, 1]]))
    >>> out.observed.tolist(), out.expected.tolist(), out.total_variation
    ([0.5, 0.0, 0.5], [0.25, 0.5, 0.25], 0.5)
    """
    failures = _failures(correct)  # (n, m)
    n, m = failures.shape
    counts = failures.sum(axis=1).astype(np.int64)  # (n,) members failing each instance
    observed = np.bincount(counts, minlength=m + 1) / n
    error_rates = failures.mean(axis=0)
    expected = poisson_binomial_pmf(error_rates)
    return FailureCountDistribution(
        k=np.arange(m + 1),
        observed=observed,
        expected=expected,
        total_variation=float(0.5 * np.abs(observed - expected).sum()),
        error_rates=error_rates,
    )


# --------------------------------------------------------------------------------------------
# Homogenization (Bommasani et al. 2022)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Homogenization:
    """H_avg, H_unif and H_worst of Bommasani et al. 2022 (1 = as if independent).

    Attributes
    ----------
    h_avg, h_unif, h_worst
        See :func:`homogenization` for the formulas.
    level
        ``"individual"`` (every instance is its own group) or ``"group"``.
    per_group
        ``None`` at the individual level; otherwise one row per group with columns ``group``,
        ``n``, ``frequency`` (``f_g``), ``mean_error_rate`` (mean over members of
        ``eps_{j,g}``), ``expected_systemic`` (``prod_j eps_{j,g}``), ``relative``
        (``prod_j eps_{j,g} / prod_j eps_j``: the group's term in H_unif and H_worst),
        ``observed_systemic`` (share of the group's instances failed by every member) and
        ``within_group_ratio`` (``observed_systemic / expected_systemic``: individual-level
        homogenization inside the group).
    note
        Why values are NaN; empty otherwise.
    """

    h_avg: float
    h_unif: float
    h_worst: float
    level: str
    per_group: pd.DataFrame | None
    note: str = ""


def homogenization(correct: Array, groups: Array | None = None) -> Homogenization:
    """Outcome homogenization H_avg, H_unif, H_worst (Bommasani et al. 2022, NeurIPS).

    Bommasani, Creel, Kumar, Jurafsky & Liang, "Picking on the Same Person: Does Algorithmic
    Monoculture lead to Outcome Homogenization?" (NeurIPS 2022), Section 3; implemented after
    the definitions in the authors' code (``src/homogenization.py`` of
    ``rishibommasani/HomogenizationNeurIPS2022``). With members ``j = 1..m`` (the paper's
    deployments), groups ``g`` holding a share ``f_g`` of the instances, ``eps_j`` the error
    rate of member ``j`` and ``eps_{j,g}`` its error rate within group ``g``::

        H_avg   = sum_g f_g^m prod_j eps_{j,g}  /  ( sum_g f_g^m * prod_j eps_j )
        H_unif  = (1 / |G|) sum_g prod_j eps_{j,g}  /  prod_j eps_j
        H_worst = max_g prod_j eps_{j,g}  /  prod_j eps_j

    The denominator ``prod_j eps_j`` is the chance that all members fail when each gets its own
    independently drawn instance. H_avg's numerator is that chance when the ``m`` instances are
    drawn independently but *from one common group* (groups weighted by the chance ``f_g^m``
    that all ``m`` draws land in them; the paper has ``prod_j f_{g,j}`` because each deployment
    has its own population, here every member sees the same instances, so ``f_{g,j} = f_g``).
    H_unif weights groups equally, H_worst takes the worst group. All three are 1 when failures
    are independent of group membership, and grow as failures concentrate on the same groups.
    Because of the ``f_g^m`` weights, H_avg is dominated by the largest groups: a large group
    with few failures can hold it below 1 while small groups fail together (H_unif and H_worst
    then show it). With equal group sizes H_avg = H_unif.

    With ``groups=None`` every instance is its own group (``f_u = 1/n``), the individual level:
    ``H_avg = H_unif = mean_u prod_j F[u, j] / prod_j eps_j``, the observed/expected ratio of
    :func:`systemic_failure`, and ``H_worst = max_u prod_j F[u, j] / prod_j eps_j``.

    Parameters
    ----------
    correct
        0/1 matrix ``(n, m)``, 1 where member ``j`` gets instance ``u`` right.
    groups
        Optional group label per instance ``(n,)`` (any hashable NumPy dtype, or a tensor).

    Returns
    -------
    Homogenization
        NaN values with a ``note`` when a member never fails (``prod_j eps_j = 0``). Products are
        computed in log space, so hundreds of members do not underflow.

    Examples
    --------
    >>> correct = np.array([[0, 0], [0, 0], [1, 1], [1, 1]])
    >>> homogenization(correct).h_avg
    2.0
    >>> out = homogenization(correct, groups=np.array(["a", "a", "b", "b"]))
    >>> out.h_avg, out.h_unif, out.h_worst
    (2.0, 2.0, 4.0)
    """
    failures = _failures(correct)  # (n, m)
    n, m = failures.shape
    error_rates = failures.mean(axis=0)  # (m,) eps_j
    log_overall = float(_log_product(error_rates))  # log prod_j eps_j
    note = "" if np.isfinite(log_overall) else _never_fail_note(error_rates)

    if groups is None:
        # Each instance is a group: prod_j eps_{j,u} = prod_j F[u, j] in {0, 1}.
        all_fail = failures.min(axis=1)
        if not np.isfinite(log_overall):
            return Homogenization(np.nan, np.nan, np.nan, "individual", None, note)
        with np.errstate(divide="ignore"):
            h_avg = float(np.exp(np.log(all_fail.mean()) - log_overall))
        h_worst = float(np.exp(-log_overall)) if all_fail.any() else 0.0
        return Homogenization(h_avg, h_avg, h_worst, "individual", None, note)

    labels = to_numpy(groups) if isinstance(groups, torch.Tensor) else np.asarray(groups)
    if labels.ndim != 1 or len(labels) != n:
        raise MeasureInputError(
            f"groups must hold one label per instance, shape ({n},); got {labels.shape}",
            hint="pass the group of each row of correct, in the same order",
        )
    if labels.dtype.kind == "f" and np.isnan(labels).any():
        raise MeasureInputError(
            "groups holds NaN labels", hint="give instances without a group their own label"
        )
    names, codes = np.unique(labels, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)  # (G,) n_g
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    group_errors = np.add.reduceat(failures[order], starts, axis=0) / sizes[:, None]  # (G, m)
    group_all_fail = np.add.reduceat(failures.min(axis=1)[order], starts) / sizes  # (G,)
    frequency = sizes / n
    log_group = _log_product(group_errors, axis=1)  # (G,) log prod_j eps_{j,g}

    if np.isfinite(log_overall):
        log_weight = m * np.log(frequency)  # log f_g^m
        h_avg = np.exp(_logsumexp(log_weight + log_group) - _logsumexp(log_weight) - log_overall)
        relative = np.exp(log_group - log_overall)  # (G,)
        h_unif, h_worst = float(relative.mean()), float(relative.max())
    else:
        h_avg = h_unif = h_worst = np.nan
        relative = np.full(len(names), np.nan)
    expected_group = np.exp(log_group)
    with np.errstate(divide="ignore", invalid="ignore"):
        within = np.where(expected_group > 0, group_all_fail / expected_group, np.nan)
    per_group = pd.DataFrame(
        {
            "group": names,
            "n": sizes,
            "frequency": frequency,
            "mean_error_rate": group_errors.mean(axis=1),
            "expected_systemic": expected_group,
            "relative": relative,
            "observed_systemic": group_all_fail,
            "within_group_ratio": within,
        }
    )
    return Homogenization(float(h_avg), h_unif, h_worst, "group", per_group, note)
