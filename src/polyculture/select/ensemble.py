"""Ensembles by greedy forward selection under a cost budget that values diversity.

:func:`greedy_ensemble` builds a soft-vote ensemble (the mean of the members' class
probabilities, then the most probable class) one member at a time, on a selection split
(validation), maximizing

    J(S) = accuracy(soft vote of S) + lambda * D(S)

where ``D(S)`` is the mean pairwise disagreement of the members' own predicted classes (0 for one
member) and ``lambda`` (``diversity``) is small: it breaks near-ties in accuracy towards members
that fail differently, whose errors the vote can then outvote. Each step adds the member that
raises ``J`` the most among those that keep the total cost (sum of the members' costs, e.g.
latency at batch 1 when they run one after another, or parameters) within the budget; selection
stops when no member raises ``J`` (after ``min_members``), none fits the budget, or
``max_members`` is reached. Each member is used at most once. The first member is therefore the
best single member within the budget (on the selection split).

:func:`compare_to_single` then compares the ensemble with that best single member on *other*
instances (the test split) with paired tests on the same instances: McNemar's exact test and a
paired bootstrap CI of the accuracy difference (:mod:`polyculture.measure.paired`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from polyculture.errors import MeasureInputError
from polyculture.measure.paired import mcnemar, paired_bootstrap

__all__ = [
    "EnsembleComparison",
    "EnsembleSelection",
    "compare_to_single",
    "greedy_ensemble",
    "soft_vote",
]

# Gains of J below this are round-off, not improvements.
_TOLERANCE = 1e-12


def _check_probabilities(probabilities: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    proba = np.asarray(probabilities, dtype=np.float64)
    if proba.ndim != 3 or 0 in proba.shape:
        raise MeasureInputError(
            f"probabilities must be (members, instances, classes); got shape {proba.shape}",
            hint="stack each member's (n, classes) probabilities along a new first axis",
        )
    if not np.isfinite(proba).all():
        raise MeasureInputError(
            "probabilities hold NaN or inf", hint="pass finite class probabilities"
        )
    if labels is not None and np.asarray(labels).shape != (proba.shape[1],):
        raise MeasureInputError(
            f"labels must be ({proba.shape[1]},), one per instance; got {np.asarray(labels).shape}",
            hint="pass the true class index of every instance",
        )
    return proba


def soft_vote(probabilities: np.ndarray, members: Sequence[int] | None = None) -> np.ndarray:
    """Class predicted by the mean probabilities of ``members`` ``(n,)`` (ties: lowest class).

    Parameters
    ----------
    probabilities
        ``(m, n, classes)`` class probabilities of every member.
    members
        Indices of the members that vote (default: all).

    Examples
    --------
    >>> proba = np.array([[[0.9, 0.1], [0.4, 0.6]], [[0.2, 0.8], [0.3, 0.7]]])
    >>> soft_vote(proba).tolist(), soft_vote(proba, [0]).tolist()
    ([0, 1], [0, 1])
    """
    proba = _check_probabilities(probabilities)
    chosen = list(range(len(proba))) if members is None else list(members)
    return proba[chosen].mean(axis=0).argmax(axis=1)


@dataclass(frozen=True)
class EnsembleSelection:
    """The members greedy forward selection chose, and its trace.

    Attributes
    ----------
    members
        Indices of the chosen members, in the order they were added.
    steps
        One row per step: ``step``, ``member`` (index added), ``cost``, ``total_cost``,
        ``accuracy`` (soft vote so far), ``disagreement`` (mean pairwise, so far) and
        ``objective`` (``J``), on the selection split.
    accuracy, objective, cost
        Of the final ensemble on the selection split.
    stopped
        Why selection stopped: ``no gain``, ``budget``, ``max_members`` or ``all members``.
    """

    members: list[int]
    steps: pd.DataFrame
    accuracy: float
    objective: float
    cost: float
    stopped: str


def greedy_ensemble(
    probabilities: np.ndarray,
    labels: np.ndarray,
    costs: Sequence[float] | np.ndarray | None = None,
    *,
    budget: float | None = None,
    diversity: float = 0.02,
    min_members: int = 1,
    max_members: int | None = None,
) -> EnsembleSelection:
    """Greedy forward selection of a soft-vote ensemble (see the module docstring).

    Parameters
    ----------
    probabilities
        ``(m, n, classes)`` class probabilities of every candidate on the selection split.
    labels
        True classes ``(n,)``.
    costs
        Cost of each candidate ``(m,)`` (NaN: unknown, never fits a budget); default all 0.
    budget
        Most total cost (``None``: no limit).
    diversity
        ``lambda``, the weight of the mean pairwise disagreement.
    min_members, max_members
        Keep adding the best member until ``min_members`` even without gain; stop at
        ``max_members``.

    Raises
    ------
    MeasureInputError
        Bad shapes, or no candidate fits the budget on its own.

    Examples
    --------
    Three members, each wrong (and less confident) on its own third of the instances: two of
    them already outvote each other's errors, and the third adds nothing.

    >>> labels = np.zeros(6, dtype=int)
    >>> proba = np.full((3, 6, 2), [0.8, 0.2])
    >>> for j in range(3):
    ...     proba[j, 2 * j : 2 * j + 2] = [0.45, 0.55]
    >>> chosen = greedy_ensemble(proba, labels)
    >>> chosen.members, chosen.accuracy, chosen.stopped
    ([0, 1], 1.0, 'no gain')
    """
    proba = _check_probabilities(probabilities, labels)
    y = np.asarray(labels)
    m = len(proba)
    cost = np.zeros(m) if costs is None else np.asarray(costs, dtype=np.float64)
    if cost.shape != (m,):
        raise MeasureInputError(
            f"costs must hold one value per member ({m},); got {cost.shape}",
            hint="pass each candidate's cost",
        )
    limit = np.inf if budget is None else float(budget)
    fits_alone = np.nan_to_num(cost, nan=np.inf) <= limit
    if not fits_alone.any():
        raise MeasureInputError(
            f"no member fits the ensemble budget {limit:g} (the cheapest costs "
            f"{np.nanmin(cost) if np.isfinite(cost).any() else float('nan'):g})",
            hint="raise the budget or leave it out",
        )
    most = m if max_members is None else min(m, max_members)
    predicted = proba.argmax(axis=2)  # (m, n) each member's own prediction
    # disagree[a, b]: share of instances on which members a and b predict different classes.
    disagree = (predicted[:, None, :] != predicted[None, :, :]).mean(axis=2)  # (m, m)

    chosen: list[int] = []
    summed = np.zeros(proba.shape[1:])  # (n, classes) sum of the chosen members' probabilities
    pair_sum, total_cost, objective = 0.0, 0.0, -np.inf
    accuracy, spread = float("nan"), 0.0
    rows = []
    stopped = "all members"
    while len(chosen) < most:
        best: tuple[float, float, int] | None = None  # (objective, -cost, -index) to maximize
        best_values = (0.0, 0.0, 0.0)
        for j in range(m):
            if j in chosen or not np.nan_to_num(total_cost + cost[j], nan=np.inf) <= limit:
                continue
            votes = (summed + proba[j]).argmax(axis=1)  # (n,)
            acc = float((votes == y).mean())
            size = len(chosen) + 1
            pairs = pair_sum + float(disagree[j, chosen].sum())
            mean_disagreement = pairs / (size * (size - 1) / 2) if size > 1 else 0.0
            value = acc + diversity * mean_disagreement
            key = (value, -float(cost[j]), -j)
            if best is None or key > best:
                best, best_values = key, (acc, mean_disagreement, pairs)
        if best is None:
            stopped = "budget"
            break
        value, j = best[0], -best[2]
        if len(chosen) >= min_members and value <= objective + _TOLERANCE:
            stopped = "no gain"
            break
        chosen.append(j)
        summed += proba[j]
        accuracy, spread, pair_sum = best_values
        total_cost += float(cost[j])
        objective = value
        rows.append(
            {
                "step": len(chosen),
                "member": j,
                "cost": float(cost[j]),
                "total_cost": total_cost,
                "accuracy": accuracy,
                "disagreement": spread,
                "objective": objective,
            }
        )
    else:
        stopped = "all members" if most == m else "max_members"
    return EnsembleSelection(
        members=chosen,
        steps=pd.DataFrame(rows),
        accuracy=accuracy,
        objective=objective,
        cost=total_cost,
        stopped=stopped,
    )


@dataclass(frozen=True)
class EnsembleComparison:
    """The ensemble against one member on the same instances.

    Attributes
    ----------
    ensemble_accuracy, single_accuracy
        Accuracies on the comparison instances.
    difference, ci_low, ci_high
        ``ensemble - single`` with its paired-bootstrap CI.
    bootstrap_p
        The paired bootstrap's two-sided p-value-like share (see
        :class:`~polyculture.measure.paired.PairedBootstrapResult`).
    mcnemar_p
        McNemar's exact two-sided p-value.
    ensemble_only, single_only
        Instances only the ensemble (only the single member) gets right.
    instances
        Number of instances compared.
    """

    ensemble_accuracy: float
    single_accuracy: float
    difference: float
    ci_low: float
    ci_high: float
    bootstrap_p: float
    mcnemar_p: float
    ensemble_only: int
    single_only: int
    instances: int

    def sentence(
        self, ensemble: str = "the ensemble", single: str = "the best single member"
    ) -> str:
        """The comparison in one sentence.

        Examples
        --------
        >>> a, b = np.r_[np.ones(30), np.zeros(5), np.ones(65)], np.r_[np.zeros(35), np.ones(65)]
        >>> print(compare_to_single(a, b).sentence())  # doctest: +NORMALIZE_WHITESPACE
        the ensemble: 95.0% vs the best single member: 65.0% on 100 instances, +30.0 points
        [95% CI +21.0, +39.0]; McNemar p = 1.86e-09 (30 instances only the ensemble gets right, 0
        only the single member).
        """
        return (
            f"{ensemble}: {100 * self.ensemble_accuracy:.1f}% vs {single}: "
            f"{100 * self.single_accuracy:.1f}% on {self.instances} instances, "
            f"{100 * self.difference:+.1f} points [95% CI {100 * self.ci_low:+.1f}, "
            f"{100 * self.ci_high:+.1f}]; McNemar p = {self.mcnemar_p:.3g} ({self.ensemble_only} "
            f"instances only the ensemble gets right, {self.single_only} only the single member)."
        )


def compare_to_single(
    ensemble_correct: np.ndarray,
    single_correct: np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> EnsembleComparison:
    """Paired comparison of an ensemble with one member on the same instances.

    Parameters
    ----------
    ensemble_correct, single_correct
        0/1 vectors ``(n,)``, 1 where right, on the same instances in the same order.
    n_resamples, seed
        Of the paired bootstrap.

    Examples
    --------
    >>> out = compare_to_single(np.array([1, 1, 1, 0]), np.array([1, 0, 1, 0]), n_resamples=200)
    >>> out.difference, out.ensemble_only, out.single_only, out.mcnemar_p
    (0.25, 1, 0, 1.0)
    """
    test = mcnemar(ensemble_correct, single_correct)
    boot = paired_bootstrap(ensemble_correct, single_correct, n_resamples=n_resamples, seed=seed)
    return EnsembleComparison(
        ensemble_accuracy=float(np.mean(ensemble_correct)),
        single_accuracy=float(np.mean(single_correct)),
        difference=boot.difference,
        ci_low=boot.ci_low,
        ci_high=boot.ci_high,
        bootstrap_p=boot.p_value,
        mcnemar_p=test.p_value,
        ensemble_only=test.a_only,
        single_only=test.b_only,
        instances=len(np.asarray(ensemble_correct)),
    )
