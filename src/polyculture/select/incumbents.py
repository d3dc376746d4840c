"""Choosing a new system against incumbents: the candidate that fails least where they all fail.

Systems already deployed (the *incumbents*) fail some instances together; an instance every
deployed system fails is a systemic failure: whoever it is has no other system to turn to. Adding
a candidate that also fails it keeps it systemic; adding one that gets it right fixes it.

:func:`choose_against_incumbents` picks, among the candidates whose accuracy is at least the
required one, the candidate that minimizes the systemic-failure rate of *incumbents plus
candidate* (the share of instances every one of them fails; Toups, Bommasani et al. 2023), and
compares it with the candidate picked by accuracy alone: how many systemic failures the choice
avoids, with McNemar's exact test on the paired per-instance systemic-failure indicators of the
two choices (the same instances under both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from polyculture.errors import MeasureInputError
from polyculture.measure.paired import mcnemar

__all__ = ["IncumbentChoice", "choose_against_incumbents"]


@dataclass(frozen=True)
class IncumbentChoice:
    """The candidate chosen against incumbents, and the one accuracy alone would pick.

    Attributes
    ----------
    chosen
        Index of the candidate with the lowest systemic-failure rate together with the
        incumbents among the eligible ones (ties: higher accuracy, then lower index).
    by_accuracy
        Index of the most accurate eligible candidate (ties: lower systemic failure, then lower
        index).
    required_accuracy
        The accuracy a candidate needed to be eligible.
    incumbents_systemic
        Systemic-failure rate of the incumbents alone.
    accuracy
        Accuracy of every candidate ``(m,)``.
    systemic
        Systemic-failure rate of the incumbents plus each candidate ``(m,)``.
    expected
        That rate if every system erred independently with its error rate ``(m,)``
        (``prod`` of the error rates).
    eligible
        Candidates meeting ``required_accuracy`` ``(m,)``.
    avoided
        ``systemic[by_accuracy] - systemic[chosen]``: share of instances that stop failing
        systemically by choosing ``chosen`` rather than ``by_accuracy`` (>= 0).
    avoided_instances
        The same as a net count of instances.
    mcnemar_p
        McNemar's exact p-value of the difference between the two choices' systemic failures.
    instances
        Number of instances.
    """

    chosen: int
    by_accuracy: int
    required_accuracy: float
    incumbents_systemic: float
    accuracy: np.ndarray
    systemic: np.ndarray
    expected: np.ndarray
    eligible: np.ndarray
    avoided: float
    avoided_instances: int
    mcnemar_p: float
    instances: int

    def table(self, names: list[str] | None = None) -> pd.DataFrame:
        """One row per candidate: accuracy, systemic failure with the incumbents, the picks.

        Examples
        --------
        >>> incumbents = np.array([[0], [0], [1], [1]])
        >>> candidates = np.array([[0, 1], [1, 0], [1, 1], [1, 1]])
        >>> choose_against_incumbents(incumbents, candidates, 0.5).table(["a", "b"])["chosen"]
        0     True
        1    False
        Name: chosen, dtype: bool
        """
        m = len(self.accuracy)
        return pd.DataFrame(
            {
                "candidate": names if names is not None else [str(j) for j in range(m)],
                "accuracy": self.accuracy,
                "systemic_with_incumbents": self.systemic,
                "expected_if_independent": self.expected,
                "eligible": self.eligible,
                "chosen": np.arange(m) == self.chosen,
                "by_accuracy": np.arange(m) == self.by_accuracy,
            }
        )


def choose_against_incumbents(
    incumbent_correct: np.ndarray,
    candidate_correct: np.ndarray,
    required_accuracy: float,
    allowed: np.ndarray | None = None,
) -> IncumbentChoice:
    """Pick the candidate that minimizes systemic failure together with the incumbents.

    Parameters
    ----------
    incumbent_correct
        0/1 matrix ``(n, k)`` of the incumbents (1 = right), ``k >= 1``.
    candidate_correct
        0/1 matrix ``(n, m)`` of the candidates on the same instances.
    required_accuracy
        Least accuracy of an eligible candidate.
    allowed
        Candidates that may be chosen at all ``(m,)`` (e.g. those meeting a scenario's other
        constraints); default all.

    Raises
    ------
    MeasureInputError
        Shapes that do not match, no incumbents or candidates, or no candidate reaching the
        required accuracy (the message gives the best candidate accuracy).

    Examples
    --------
    One incumbent failing the first 3 of 10 instances; candidate 0 copies it but fixes one of
    them (accuracy 0.8), candidate 1 fails 3 other instances (accuracy 0.7):

    >>> incumbent = np.r_[0, 0, 0, np.ones(7)][:, None]
    >>> copy, other = np.r_[0, 0, np.ones(8)], np.r_[1, 1, 1, 0, 0, 0, np.ones(4)]
    >>> out = choose_against_incumbents(incumbent, np.c_[copy, other], required_accuracy=0.7)
    >>> out.chosen, out.by_accuracy, out.avoided, out.incumbents_systemic
    (1, 0, 0.2, 0.3)
    """
    incumbents = np.asarray(incumbent_correct).astype(bool)
    candidates = np.asarray(candidate_correct).astype(bool)
    if incumbents.ndim != 2 or candidates.ndim != 2:
        raise MeasureInputError(
            "incumbent_correct and candidate_correct must be 0/1 matrices (n, k) and (n, m)",
            hint="pass one column per system",
        )
    if incumbents.shape[0] != candidates.shape[0] or incumbents.shape[0] == 0:
        raise MeasureInputError(
            f"incumbents cover {incumbents.shape[0]} instances and candidates "
            f"{candidates.shape[0]}: they must be scored on the same, non-empty instances",
            hint="align both on the same instances",
        )
    if incumbents.shape[1] == 0 or candidates.shape[1] == 0:
        raise MeasureInputError(
            f"{incumbents.shape[1]} incumbents and {candidates.shape[1]} candidates: need at "
            "least one of each",
            hint="name the incumbents and leave at least one other member as a candidate",
        )
    n = len(candidates)
    all_incumbents_fail = np.asarray((~incumbents).all(axis=1))  # (n,)
    joint_fail = all_incumbents_fail[:, None] & ~candidates  # (n, m) systemic with candidate j
    systemic = joint_fail.mean(axis=0)  # (m,)
    accuracy = candidates.mean(axis=0)  # (m,)
    incumbent_errors = np.prod(1 - incumbents.mean(axis=0))
    expected = incumbent_errors * (1 - accuracy)  # (m,)
    permitted = np.ones(len(accuracy), bool) if allowed is None else np.asarray(allowed, bool)
    eligible = permitted & (accuracy >= required_accuracy - 1e-12)
    if not eligible.any():
        best = accuracy[permitted].max() if permitted.any() else float("nan")
        raise MeasureInputError(
            f"no candidate reaches the required accuracy {100 * required_accuracy:.1f}% (the "
            f"best allowed one reaches {100 * best:.1f}%)",
            hint="lower the required accuracy (min_accuracy) or add candidates",
        )
    index = np.arange(len(accuracy))
    pool = index[eligible]
    chosen = int(min(pool, key=lambda j: (systemic[j], -accuracy[j], j)))
    by_accuracy = int(min(pool, key=lambda j: (-accuracy[j], systemic[j], j)))
    test = mcnemar(~joint_fail[:, chosen], ~joint_fail[:, by_accuracy])
    return IncumbentChoice(
        chosen=chosen,
        by_accuracy=by_accuracy,
        required_accuracy=float(required_accuracy),
        incumbents_systemic=float(all_incumbents_fail.mean()),
        accuracy=accuracy,
        systemic=systemic,
        expected=expected,
        eligible=eligible,
        avoided=float(systemic[by_accuracy] - systemic[chosen]),
        avoided_instances=int(joint_fail[:, by_accuracy].sum() - joint_fail[:, chosen].sum()),
        mcnemar_p=test.p_value,
        instances=n,
    )
