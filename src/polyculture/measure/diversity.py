"""Ensemble diversity measures of Kuncheva & Whitaker (2003) on the oracle (right/wrong) matrix.

Kuncheva & Whitaker, "Measures of diversity in classifier ensembles and their relationship with
the ensemble accuracy", Machine Learning 51:181-207 (2003); also Kuncheva, "Combining Pattern
Classifiers" (2nd ed. 2014), Ch. 8. Every function takes the oracle matrix ``correct``
``(N instances, L members)``, 1 where a member is right, and returns a float.

Notation: ``l_u`` is the number of members right on instance ``u``; ``p_bar`` the mean accuracy
``sum_u l_u / (N L)``; for a pair of members the 2x2 counts are ``n11`` (both right), ``n10``,
``n01`` and ``n00`` (both wrong).

Pairwise measures are averaged over the ``L (L - 1) / 2`` pairs. Which way is "more diverse":

======================  ===========================
lower = more diverse    higher = more diverse
======================  ===========================
Q statistic, rho,       disagreement, entropy E,
double fault, kappa,    Kohavi-Wolpert variance,
difficulty theta        GD, CFD
======================  ===========================

Degenerate inputs never raise ZeroDivisionError. One policy throughout: a measure that is 0/0
for the input returns NaN and emits a :class:`DegenerateMeasureWarning` stating the reason;
every measure needs ``L >= 2`` (diversity of a single member is undefined). Pairwise averages
skip the pairs where the pair's value is 0/0 (Q and rho of a pair with a member that is always
right or always wrong) and warn how many were skipped. CFD is 0, not NaN, when no member ever
fails, as defined by Partridge & Krzanowski (1997).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from polyculture.measure._checks import (
    Array,
    DegenerateMeasureWarning,
    binary_matrix,
    to_numpy,
    undefined,
)
from polyculture.measure.agreement import contingency_counts

__all__ = [
    "DegenerateMeasureWarning",
    "coincident_failure_diversity",
    "correlation",
    "difficulty",
    "disagreement_measure",
    "diversity_report",
    "double_fault",
    "entropy_measure",
    "generalized_diversity",
    "interrater_agreement",
    "kohavi_wolpert_variance",
    "q_statistic",
]


def _right_counts(correct: Array, measure: str) -> tuple[np.ndarray, int] | None:
    """``l_u`` ``(N,)`` and ``L``; ``None`` (after a warning) when there are under 2 members."""
    right = binary_matrix(correct)  # (N, L) bool
    members = right.shape[1]
    if members < 2:
        undefined(f"{measure} needs at least two members; got L = {members}")
        return None
    return to_numpy(right.sum(dim=1)).astype(np.float64), members


def _pair_average(
    correct: Array, measure: str, value: Literal["q", "rho", "disagreement", "double_fault"]
) -> float:
    """One pairwise measure for each of the ``L (L - 1) / 2`` pairs, averaged."""
    right = binary_matrix(correct)
    members = right.shape[1]
    if members < 2:
        return undefined(f"{measure} needs at least two members; got L = {members}")
    counts = contingency_counts(right)
    upper = np.triu_indices(members, k=1)  # the L (L - 1) / 2 pairs i < k
    n11, n10, n01, n00 = (x[upper] for x in (counts.n11, counts.n10, counts.n01, counts.n00))
    n = counts.n
    if value == "disagreement":
        return float(((n01 + n10) / n).mean())
    if value == "double_fault":
        return float((n00 / n).mean())
    numerator = n11 * n00 - n01 * n10
    if value == "q":
        denominator = n11 * n00 + n01 * n10
    else:  # rho: product of the two members' right/wrong spreads
        denominator = np.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
    defined = denominator != 0
    if not defined.any():
        return undefined(
            f"{measure} is undefined for every pair: each pair has a member that is always "
            "right or always wrong (0/0)"
        )
    if not defined.all():
        undefined(
            f"{measure} averaged over {int(defined.sum())} of {len(defined)} pairs; the others "
            "have a member that is always right or always wrong (0/0)"
        )
    return float((numerator[defined] / denominator[defined]).mean())


# --------------------------------------------------------------------------------------------
# Pairwise, averaged over pairs
# --------------------------------------------------------------------------------------------


def q_statistic(correct: Array) -> float:
    """Average Yule's Q over pairs: ``Q_ik = (n11 n00 - n01 n10) / (n11 n00 + n01 n10)``.

    In ``[-1, 1]``; 0 for statistically independent members, positive when they tend to be right
    on the same instances (lower = more diverse).

    Examples
    --------
    >>> q_statistic(np.array([[1, 1], [0, 0], [1, 0], [1, 1]]))
    1.0
    """
    return _pair_average(correct, "Q statistic", "q")


def correlation(correct: Array) -> float:
    """Average correlation (phi) of the members' right/wrong vectors over pairs.

    ``rho_ik = (n11 n00 - n01 n10) / sqrt((n11 + n10)(n01 + n00)(n11 + n01)(n10 + n00))``;
    lower = more diverse.

    Examples
    --------
    >>> round(correlation(np.array([[1, 1], [0, 0], [1, 0], [1, 1]])), 4)
    0.5774
    """
    return _pair_average(correct, "correlation rho", "rho")


def disagreement_measure(correct: Array) -> float:
    """Average over pairs of the share of instances one member gets right and the other wrong.

    ``D_ik = (n01 + n10) / N`` (Skalak 1996). Oracle-based: two members wrong with different
    answers count as agreeing here, unlike :func:`polyculture.measure.agreement.disagreement`,
    which compares predicted labels. Higher = more diverse.

    Examples
    --------
    >>> disagreement_measure(np.array([[1, 1], [0, 0], [1, 0], [1, 1]]))
    0.25
    """
    return _pair_average(correct, "disagreement", "disagreement")


def double_fault(correct: Array) -> float:
    """Average over pairs of the share of instances both members get wrong, ``n00 / N``.

    Giacinto & Roli (2001). Lower = more diverse.

    Examples
    --------
    >>> double_fault(np.array([[1, 1], [0, 0], [1, 0], [1, 1]]))
    0.25
    """
    return _pair_average(correct, "double fault", "double_fault")


# --------------------------------------------------------------------------------------------
# Non-pairwise
# --------------------------------------------------------------------------------------------


def entropy_measure(correct: Array) -> float:
    """Kuncheva & Whitaker's entropy ``E = (1/N) sum_u min(l_u, L - l_u) / (L - ceil(L/2))``.

    In ``[0, 1]``: 0 when all members agree on every instance, 1 when they split as evenly as
    possible everywhere. Higher = more diverse.

    Examples
    --------
    >>> entropy_measure(np.array([[1, 1, 0], [1, 1, 1]]))
    0.5
    """
    counts = _right_counts(correct, "entropy E")
    if counts is None:
        return float("nan")
    right, members = counts
    return float((np.minimum(right, members - right) / (members - np.ceil(members / 2))).mean())


def kohavi_wolpert_variance(correct: Array) -> float:
    """Kohavi-Wolpert variance ``KW = (1 / (N L^2)) sum_u l_u (L - l_u)``.

    Equals ``(L - 1) / (2L)`` times the averaged pairwise disagreement. Higher = more diverse.

    Examples
    --------
    >>> kohavi_wolpert_variance(np.array([[1, 0], [1, 1]]))
    0.125
    """
    counts = _right_counts(correct, "Kohavi-Wolpert variance")
    if counts is None:
        return float("nan")
    right, members = counts
    return float((right * (members - right)).mean() / members**2)


def interrater_agreement(correct: Array) -> float:
    """Fleiss' interrater agreement ``kappa = 1 - sum_u l_u (L - l_u) / (N L (L-1) p (1-p))``.

    ``p`` is the mean individual accuracy. Lower = more diverse. NaN (with a warning) when every
    member is always right or every member is always wrong (``p (1 - p) = 0``).

    Examples
    --------
    >>> interrater_agreement(np.array([[1, 1], [0, 0], [1, 0], [1, 1]]))
    0.4666666666666667
    """
    counts = _right_counts(correct, "interrater kappa")
    if counts is None:
        return float("nan")
    right, members = counts
    n = len(right)
    accuracy = right.sum() / (n * members)
    if accuracy in (0.0, 1.0):
        state = "right" if accuracy == 1.0 else "wrong"
        return undefined(f"interrater kappa is undefined: every member is always {state} (0/0)")
    spread = (right * (members - right)).sum() / members
    return float(1 - spread / (n * (members - 1) * accuracy * (1 - accuracy)))


def difficulty(correct: Array) -> float:
    """Difficulty ``theta``: variance over instances of the share of members right, ``l_u / L``.

    Population variance (``ddof=0``), after Hansen & Salamon (1990). Lower = more diverse.

    Examples
    --------
    >>> difficulty(np.array([[1, 1], [0, 0]]))
    0.25
    """
    counts = _right_counts(correct, "difficulty theta")
    if counts is None:
        return float("nan")
    right, members = counts
    return float(np.var(right / members))


def generalized_diversity(correct: Array) -> float:
    """Generalized diversity ``GD = 1 - p(2) / p(1)`` (Partridge & Krzanowski 1997).

    With ``Y`` the share of members failing a random instance, ``p(1) = E[Y]`` is the chance that
    one randomly picked member fails and ``p(2) = E[Y (L Y - 1) / (L - 1)]`` the chance that two
    distinct randomly picked members both fail. In ``[0, 1]``; 1 when a failure of one member is
    always met by the success of the other. NaN (with a warning) when no member ever fails.

    Examples
    --------
    >>> generalized_diversity(np.array([[1, 0], [0, 1], [1, 1]]))
    1.0
    """
    counts = _right_counts(correct, "generalized diversity")
    if counts is None:
        return float("nan")
    right, members = counts
    failing = members - right  # (N,) members failing each instance
    p1 = (failing / members).mean()
    if p1 == 0:
        return undefined("generalized diversity is undefined: no member ever fails (0/0)")
    p2 = (failing * (failing - 1)).mean() / (members * (members - 1))
    return float(1 - p2 / p1)


def coincident_failure_diversity(correct: Array) -> float:
    """Coincident failure diversity (Partridge & Krzanowski 1997).

    ``CFD = 1 / (1 - p_0) * sum_{i=1}^{L} (L - i) / (L - 1) * p_i`` with ``p_i`` the share of
    instances failed by exactly ``i`` members; 0 by definition when no member ever fails
    (``p_0 = 1``). In ``[0, 1]``: 1 when every failure is by a single member alone.

    Examples
    --------
    >>> coincident_failure_diversity(np.array([[1, 0], [0, 1], [1, 1]]))
    1.0
    """
    counts = _right_counts(correct, "coincident failure diversity")
    if counts is None:
        return float("nan")
    right, members = counts
    failing = members - right  # (N,)
    tally = np.bincount(failing.astype(np.int64), minlength=members + 1)  # (L + 1,) N p_i
    if tally[0] == len(failing):
        return 0.0
    i = np.arange(1, members + 1)
    # In counts: sum_i (L - i)/(L - 1) N p_i / (N - N p_0) is the formula times N/N.
    return float(((members - i) / (members - 1) * tally[1:]).sum() / (len(failing) - tally[0]))


_MEASURES = {
    "q_statistic": q_statistic,
    "correlation": correlation,
    "disagreement": disagreement_measure,
    "double_fault": double_fault,
    "entropy": entropy_measure,
    "kohavi_wolpert": kohavi_wolpert_variance,
    "interrater_kappa": interrater_agreement,
    "difficulty": difficulty,
    "generalized_diversity": generalized_diversity,
    "coincident_failure_diversity": coincident_failure_diversity,
}


def diversity_report(correct: Array) -> dict[str, float]:
    """All ten Kuncheva & Whitaker measures of the oracle matrix, by name.

    Keys: ``q_statistic``, ``correlation``, ``disagreement``, ``double_fault`` (pairwise,
    averaged), ``entropy``, ``kohavi_wolpert``, ``interrater_kappa``, ``difficulty``,
    ``generalized_diversity``, ``coincident_failure_diversity``. Undefined values are NaN, each
    with its :class:`DegenerateMeasureWarning`.

    Examples
    --------
    >>> report = diversity_report(np.array([[1, 0], [0, 1], [1, 1], [0, 0]]))
    >>> report["disagreement"], report["kohavi_wolpert"], report["q_statistic"]
    (0.5, 0.125, 0.0)
    """
    right = binary_matrix(correct)  # check once, so errors name the input, not a measure
    return {name: fn(right) for name, fn in _MEASURES.items()}
