"""Functional agreement between members: do they give the same answers and make the same mistakes?

Single-pair functions take two 1-D arrays over the same instances; :func:`pairwise_agreement`
computes every measure for every pair of ``m`` members at once from an ``(n, m)`` matrix of
predicted class indices, with a handful of matrix products over 0/1 matrices (never a Python loop
over pairs), on the device of the input tensor.

Conventions: instances are rows; ``correct`` is a 0/1 matrix ``(n, m)`` (1 = member right);
``predictions`` holds class indices ``(n, m)`` and ``labels`` the true classes ``(n,)``. For a pair
of members ``a, b`` the 2x2 counts are ``n11`` (both right), ``n10`` (a right, b wrong), ``n01``
and ``n00`` (both wrong).

Measures that are 0/0 for an input (e.g. error consistency of two members that are never wrong)
are NaN; the scalar functions also emit a
:class:`~polyculture.measure._checks.DegenerateMeasureWarning` saying why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from polyculture.measure._checks import (
    Array,
    DegenerateMeasureWarning,
    binary_matrix,
    binary_pair,
    class_matrix,
    label_vectors,
    to_numpy,
    undefined,
)

__all__ = [
    "ContingencyCounts",
    "DegenerateMeasureWarning",
    "ErrorConsistency",
    "SameWrong",
    "cohen_kappa",
    "contingency_counts",
    "disagreement",
    "error_consistency",
    "pairwise_agreement",
    "same_wrong_rate",
]

# float32 sums of 0/1 products are exact up to 2**24, so blocks of at most that many rows keep
# every count exact; the blocks' results are summed in float64.
_EXACT_FLOAT32 = 1 << 24
# Elements of scratch memory per block of instances (one-hot rows, presence flags).
_BLOCK_ELEMENTS = 1 << 25
# Above this many classes, class ids are first renumbered to the ones that actually occur.
_MAX_DENSE_CLASSES = 1024


# --------------------------------------------------------------------------------------------
# Single pairs
# --------------------------------------------------------------------------------------------


def disagreement(pred_a: Array, pred_b: Array) -> float:
    """Share of instances on which two members predict different classes.

    Parameters
    ----------
    pred_a, pred_b
        Predicted class indices ``(n,)`` of the two members on the same instances.

    Examples
    --------
    >>> disagreement(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 0]))
    0.5
    """
    a, b = label_vectors((pred_a, "pred_a"), (pred_b, "pred_b"))
    return float((a != b).mean())


def cohen_kappa(pred_a: Array, pred_b: Array) -> float:
    """Cohen's kappa between two members' predicted labels: agreement beyond chance.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the share of equal predictions and
    ``p_e = sum_c q_a(c) q_b(c)`` the agreement expected from each member's own frequencies of
    predicting class ``c`` (Cohen 1960). Equals ``sklearn.metrics.cohen_kappa_score``.

    NaN (with a :class:`DegenerateMeasureWarning`) when ``p_e = 1``: both members always predict
    one and the same class, so agreement beyond chance is 0/0.

    Examples
    --------
    >>> cohen_kappa(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]))
    0.5
    """
    a, b = label_vectors((pred_a, "pred_a"), (pred_b, "pred_b"))
    n = len(a)
    codes = np.unique(np.concatenate([a, b]), return_inverse=True)[1]  # (2n,) compact ids
    classes = int(codes.max()) + 1
    q_a = np.bincount(codes[:n], minlength=classes).astype(np.float64)  # (classes,) counts
    q_b = np.bincount(codes[n:], minlength=classes).astype(np.float64)
    # In counts (times n^2) so that the degenerate case p_e = 1 is detected exactly.
    kappa = _kappa(n * float((a == b).sum()), float(q_a @ q_b), n)
    if np.isnan(kappa):
        return undefined(
            "Cohen's kappa is undefined: both members always predict the same single class"
        )
    return float(kappa)


@dataclass(frozen=True)
class ErrorConsistency:
    """Error consistency of two members (Geirhos et al. 2020) and its attainable range.

    Attributes
    ----------
    kappa
        ``(observed - expected) / (1 - expected)``: 0 = errors overlap as much as independent
        members with these accuracies would, 1 = identical right/wrong pattern.
    observed
        ``c_obs``: share of instances where both are right or both are wrong.
    expected
        ``c_exp = p_a p_b + (1 - p_a)(1 - p_b)`` for accuracies ``p_a, p_b``.
    kappa_min, kappa_max
        The smallest and largest kappa any pair with these two accuracies can reach:
        ``c_obs`` lies in ``[|p_a + p_b - 1|, 1 - |p_a - p_b|]``.
    """

    kappa: float
    observed: float
    expected: float
    kappa_min: float
    kappa_max: float


def error_consistency(correct_a: Array, correct_b: Array) -> ErrorConsistency:
    """Error consistency kappa of two members' right/wrong vectors (Geirhos et al. 2020).

    Geirhos, Meding & Wichmann, "Beyond accuracy: quantifying trial-by-trial behaviour of CNNs and
    humans by measuring error consistency", NeurIPS 2020. ``c_obs`` is the share of instances on
    which the two are both right or both wrong; ``c_exp = p_a p_b + (1 - p_a)(1 - p_b)`` is that
    share for independent members with accuracies ``p_a``, ``p_b``; ``kappa = (c_obs - c_exp) /
    (1 - c_exp)``. Because the accuracies constrain the overlap, ``c_obs`` can only lie in
    ``[|p_a + p_b - 1|, 1 - |p_a - p_b|]``; ``kappa_min`` / ``kappa_max`` map those bounds to kappa.

    NaN (with a :class:`DegenerateMeasureWarning`) when ``c_exp = 1``: both members are always
    right, or both always wrong.

    Examples
    --------
    >>> ec = error_consistency(np.array([1, 1, 0, 0]), np.array([1, 1, 0, 1]))
    >>> ec.kappa, ec.observed, ec.expected, ec.kappa_max
    (0.5, 0.75, 0.5, 0.5)
    """
    a, b = binary_pair(correct_a, correct_b, ("correct_a", "correct_b"))
    n = len(a)
    right_a, right_b = float(a.sum()), float(b.sum())
    same = float((a == b).sum())
    expected_n2 = right_a * right_b + (n - right_a) * (n - right_b)  # c_exp * n^2
    kappa = _kappa(n * same, expected_n2, n)
    # The accuracies bound the overlap: c_obs lies in [|p_a + p_b - 1|, 1 - |p_a - p_b|].
    kappa_min = _kappa(n * abs(right_a + right_b - n), expected_n2, n)
    kappa_max = _kappa(n * (n - abs(right_a - right_b)), expected_n2, n)
    if np.isnan(kappa):
        reason = "right" if right_a == n else "wrong"
        undefined(
            f"error consistency is undefined: both members are always {reason} "
            "(expected agreement c_exp = 1)"
        )
    return ErrorConsistency(kappa, same / n, expected_n2 / n**2, kappa_min, kappa_max)


@dataclass(frozen=True)
class SameWrong:
    """How often two members are both wrong with the same answer, against its chance level.

    Attributes
    ----------
    observed
        Share of instances where both are wrong and predict the same (wrong) class.
    chance
        Share expected if, within each true class, the two members answered independently, each
        following its own observed confusion-matrix row (see :func:`same_wrong_rate`).
    both_wrong
        Share of instances where both are wrong (with any answers).
    both_wrong_chance
        ``both_wrong`` expected under the same class-conditional independence.
    """

    observed: float
    chance: float
    both_wrong: float
    both_wrong_chance: float


def same_wrong_rate(pred_a: Array, pred_b: Array, labels: Array) -> SameWrong:
    """Rate of "both wrong with the same answer", with its chance level.

    The chance level is our definition: the rate expected if, *given the true class*, the two
    members answered independently, each with the answer frequencies of its own confusion matrix::

        chance = sum_y (n_y / n) * sum_{c != y} P_a(c | y) * P_b(c | y)
               = (1 / n) * sum_y sum_{c != y} N_a[y, c] * N_b[y, c] / n_y

    where ``N_a[y, c]`` counts instances of class ``y`` that member ``a`` calls ``c``. Conditioning
    on the true class keeps what is explained by class difficulty and by classes that are easy to
    confuse (both members call many 4s "9") inside the baseline, so ``observed`` above ``chance``
    means the two share mistakes *on the same instances* beyond that. It is Cohen's chance
    agreement restricted to wrong answers and stratified by true class, the same independence
    reasoning as ``c_exp`` of error consistency (Geirhos et al. 2020) applied to the answers.

    Examples
    --------
    >>> labels = np.array([0, 0, 0, 0])
    >>> out = same_wrong_rate(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), labels)
    >>> out.observed, out.chance, out.both_wrong
    (0.25, 0.125, 0.25)
    """
    a, b, y = label_vectors((pred_a, "pred_a"), (pred_b, "pred_b"), (labels, "labels"))
    n = len(y)
    codes = np.unique(np.concatenate([a, b, y]), return_inverse=True)[1]
    a, b, y = codes[:n], codes[n : 2 * n], codes[2 * n :]  # compact ids 0..K-1
    classes = int(codes.max()) + 1
    wrong_a, wrong_b = a != y, b != y
    # Confusion counts restricted to wrong answers: (K, K) with zero diagonal.
    conf_a = np.bincount(y[wrong_a] * classes + a[wrong_a], minlength=classes**2)
    conf_b = np.bincount(y[wrong_b] * classes + b[wrong_b], minlength=classes**2)
    per_class = np.bincount(y, minlength=classes).astype(np.float64)  # (K,) n_y, all > 0 used
    weight = 1.0 / np.maximum(per_class, 1.0)
    chance = float((conf_a * conf_b * np.repeat(weight, classes)).sum() / n)
    errors_a = conf_a.reshape(classes, classes).sum(1)  # (K,) wrong answers per true class
    errors_b = conf_b.reshape(classes, classes).sum(1)
    return SameWrong(
        observed=float((wrong_a & (a == b)).mean()),
        chance=chance,
        both_wrong=float((wrong_a & wrong_b).mean()),
        both_wrong_chance=float((errors_a * errors_b * weight).sum() / n),
    )


# --------------------------------------------------------------------------------------------
# All pairs at once
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ContingencyCounts:
    """The 2x2 right/wrong counts of every pair of members, each an ``(m, m)`` float64 matrix.

    ``n11[a, b]``: both right; ``n10[a, b]``: ``a`` right and ``b`` wrong; ``n01[a, b]``: ``a``
    wrong and ``b`` right; ``n00[a, b]``: both wrong. ``n`` is the number of instances.
    """

    n11: np.ndarray
    n10: np.ndarray
    n01: np.ndarray
    n00: np.ndarray
    n: int


def contingency_counts(correct: Array) -> ContingencyCounts:
    """Right/wrong 2x2 counts of all member pairs from one product ``C^T C`` of the 0/1 matrix.

    Computed on the device of ``correct`` when it is a torch tensor; exact for any ``n``.

    Examples
    --------
    >>> counts = contingency_counts(np.array([[1, 1], [1, 0], [0, 0]]))
    >>> counts.n11.tolist(), float(counts.n00[0, 1])
    ([[2.0, 1.0], [1.0, 1.0]], 1.0)
    """
    right = binary_matrix(correct)  # (n, m) bool
    n = right.shape[0]
    n11 = to_numpy(_gram(right))  # (m, m) float64: both right
    hits = np.diag(n11)  # (m,) right answers per member
    n10 = hits[:, None] - n11
    n01 = hits[None, :] - n11
    return ContingencyCounts(n11=n11, n10=n10, n01=n01, n00=n - n11 - n10 - n01, n=n)


def pairwise_agreement(predictions: Array, labels: Array) -> dict[str, np.ndarray]:
    """Every agreement measure for every pair of members, as ``(m, m)`` float64 matrices.

    All cells come from three products over 0/1 matrices: ``C^T C`` of the right/wrong matrix
    ``C``, ``O^T O`` of a compact one-hot of the predictions ``O`` (one row per distinct
    (instance, predicted class)), and small products of per-member class and confusion counts.
    200 members x 10,000 instances x 10 classes take about 0.1 s on a 2-core CPU (see
    ``benchmarks/agreement.py``). Tensors are processed on their own device.

    Parameters
    ----------
    predictions
        Predicted class indices ``(n, m)``, one column per member.
    labels
        True class indices ``(n,)``.

    Returns
    -------
    dict
        ``"disagreement"``: share of instances with different predictions (diagonal 0).
        ``"cohen_kappa"``: Cohen's kappa on predicted labels (:func:`cohen_kappa`; diagonal 1).
        ``"error_consistency"``: Geirhos et al.'s kappa (:func:`error_consistency`; diagonal 1).
        ``"same_wrong"``: share of instances both get wrong with the same answer (diagonal: the
        member's error rate). ``"same_wrong_chance"``: its chance level (:func:`same_wrong_rate`).
        ``"double_fault"``: share both get wrong, ``n00 / n`` (diagonal: error rate).
        ``"q_statistic"``: Yule's Q ``(n11 n00 - n01 n10) / (n11 n00 + n01 n10)`` (diagonal 1).
        ``"correlation"``: phi coefficient of the right/wrong vectors (diagonal 1).

        Degenerate pairs are NaN on that cell, without a warning: Cohen's kappa when both always
        predict one and the same class; error consistency when both are always right (or both
        always wrong); Q when ``n11 n00 + n01 n10 = 0`` (e.g. one member always right); the
        correlation when either member is always right or always wrong. The diagonal compares a
        member with itself and is set to the values of identical members (1) even then.

    Examples
    --------
    >>> pred = np.array([[0, 0, 1], [1, 1, 1], [2, 1, 2], [0, 0, 0]])
    >>> out = pairwise_agreement(pred, np.array([0, 1, 2, 1]))
    >>> out["disagreement"][0].tolist(), float(out["same_wrong"][0, 1])
    ([0.0, 0.25, 0.25], 0.25)
    """
    pred, y = class_matrix(predictions, labels)  # (n, m), (n,) int64 on one device
    n, m = pred.shape
    pred, y, classes = _compact_classes(pred, y)
    right = pred == y[:, None]  # (n, m) bool

    # The products over instances run on the input's device; the (m, m) arithmetic after them
    # is cheap and runs in NumPy (tiny torch ops cost more in thread-pool overhead than work).
    member = torch.arange(m, device=pred.device)
    predicted = torch.bincount((member * classes + pred).reshape(-1), minlength=m * classes)
    predicted = predicted.reshape(m, classes).double()  # (m, K) how often each class is predicted
    n11 = to_numpy(_gram(right))  # (m, m): both right
    agree = to_numpy(_agreement_counts(pred, classes))  # (m, m): same prediction
    chance_agree_n2 = to_numpy(predicted @ predicted.T)  # (m, m) = p_e * n^2 (Cohen)
    same_wrong_chance = to_numpy(_same_wrong_chance(pred, y, classes))

    hits = np.diag(n11).copy()  # (m,) right answers per member
    n10 = hits[:, None] - n11
    n01 = hits[None, :] - n11
    n00 = n - n11 - n10 - n01
    # Kappas in counts times n^2, so that p_e = 1 (0/0) is detected exactly. Error consistency's
    # c_exp * n^2 = A B + (n - A)(n - B) for right-answer counts A, B.
    expected_n2 = np.outer(hits, hits) + np.outer(n - hits, n - hits)
    spread = np.sqrt(hits * (n - hits))  # (m,) n * standard deviation of right/wrong
    result = {
        "disagreement": 1.0 - agree / n,
        "cohen_kappa": _divide(n * agree - chance_agree_n2, n * n - chance_agree_n2),
        "error_consistency": _divide(n * (n11 + n00) - expected_n2, n * n - expected_n2),
        # Same prediction and right means both right, so the rest of the agreement is wrong.
        "same_wrong": (agree - n11) / n,
        "same_wrong_chance": same_wrong_chance,
        "double_fault": n00 / n,
        "q_statistic": _divide(n11 * n00 - n01 * n10, n11 * n00 + n01 * n10),
        "correlation": _divide(n11 * n00 - n01 * n10, np.outer(spread, spread)),
    }
    for name in ("cohen_kappa", "error_consistency", "q_statistic", "correlation"):
        np.fill_diagonal(result[name], 1.0)
    return result


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with NaN where the denominator is 0 (0/0 is undefined)."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator != 0)


def _kappa(observed_n2: float, expected_n2: float, n: int) -> float:
    """``(p_o - p_e) / (1 - p_e)`` from ``p_o n^2`` and ``p_e n^2``; NaN when ``p_e = 1``.

    Working in counts keeps the degenerate case exact: ``p_e n^2`` is an integer.
    """
    return (
        float("nan")
        if expected_n2 == n * n
        else (observed_n2 - expected_n2) / (n * n - expected_n2)
    )


def _gram(indicator: torch.Tensor) -> torch.Tensor:
    """``X^T X`` of a 0/1 matrix ``(rows, m)`` as exact float64 counts ``(m, m)``.

    float32 products on blocks of rows (exact while a block has at most 2**24 rows, and far faster
    than float64 or integer matmul on CPUs and GPUs), summed in float64.
    """
    rows, m = indicator.shape
    block = max(1, min(_EXACT_FLOAT32, _BLOCK_ELEMENTS // max(m, 1)))
    total = torch.zeros(m, m, dtype=torch.float64, device=indicator.device)
    for start in range(0, rows, block):
        part = indicator[start : start + block].to(torch.float32)  # (block, m)
        total += (part.T @ part).double()
    return total


def _compact_classes(pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Class ids and their count ``K``; renumbered to the classes that occur when ids are large."""
    classes = int(max(int(pred.max()), int(y.max()))) + 1
    if classes <= _MAX_DENSE_CLASSES:
        return pred, y, classes
    values, codes = torch.unique(torch.cat([pred.reshape(-1), y]), return_inverse=True)
    n_pred = pred.numel()
    return codes[:n_pred].reshape(pred.shape), codes[n_pred:], len(values)


def _agreement_counts(pred: torch.Tensor, classes: int) -> torch.Tensor:
    """``agree[a, b]`` = number of instances where members a and b predict the same class.

    Equal to ``sum_c P_c^T P_c`` over the one-hot slices ``P_c = (pred == c)``, but computed as a
    single Gram matrix of a compact one-hot ``O`` with one row per *distinct* (instance, class)
    pair that some member predicts: row ``r`` of ``O`` marks the members predicting that class on
    that instance. When members mostly agree, ``O`` has far fewer than ``n K`` rows.
    """
    n, m = pred.shape
    device = pred.device
    block = max(1, min(n, _BLOCK_ELEMENTS // (classes + m * min(classes, m))))
    member = torch.arange(m, device=device)
    total = torch.zeros(m, m, dtype=torch.float64, device=device)
    for start in range(0, n, block):
        part = pred[start : start + block]  # (b, m)
        b = part.shape[0]
        if classes <= m:
            # Few classes: flag the (instance, class) ids that occur; their running count
            # numbers the rows of O. Linear in b (K + m).
            key = torch.arange(b, device=device)[:, None] * classes + part  # (b, m)
            present = torch.zeros(b * classes, dtype=torch.bool, device=device)
            present[key.reshape(-1)] = True
            rank = torch.cumsum(present, 0, dtype=torch.int32) - 1  # (b K,) row of O per id
            rows = rank[key].long().reshape(-1)  # (b m,) row of O of each prediction
            columns = member.repeat(b)
        else:
            # Many classes: sort each instance's predictions; a new row of O starts wherever
            # the sorted class changes. Independent of K.
            ordered, columns = torch.sort(part, dim=1)  # (b, m) classes, members
            starts = torch.ones_like(ordered, dtype=torch.bool)
            starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
            rows = torch.cumsum(starts.reshape(-1), 0) - 1  # (b m,)
            columns = columns.reshape(-1)
        distinct = int(rows.max()) + 1
        onehot = torch.zeros(distinct * m, dtype=torch.bool, device=device)
        onehot[rows * m + columns] = True
        total += _gram(onehot.view(distinct, m))
    return total


def _same_wrong_chance(pred: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """``(1/n) sum_y sum_{c != y} N_a[y, c] N_b[y, c] / n_y`` for all pairs, as ``W W^T``.

    ``W[j, (y, c)] = N_j[y, c] / sqrt(n_y)`` over the (true class, wrong answer) cells: all
    ``K^2`` cells when few, otherwise only the cells that occur, in blocks of cells so memory
    stays at ``O(m * block)``.
    """
    n, m = pred.shape
    device = pred.device
    wrong = pred != y[:, None]  # (n, m)
    member = torch.arange(m, device=device).expand(n, m)[wrong]  # (w,) member of each error
    cell = (y[:, None] * classes + pred)[wrong]  # (w,) true class * K + answer
    block = max(1, _BLOCK_ELEMENTS // m)
    if classes * classes <= block:
        cells = classes * classes
        cell_class = torch.arange(cells, device=device) // classes  # (cells,) true class
    else:
        used, cell = torch.unique(cell, return_inverse=True)
        cells = len(used)
        cell_class = used // classes
    per_class = torch.bincount(y, minlength=classes).double()  # (K,) n_y
    weight = 1.0 / per_class.clamp(min=1.0)[cell_class]  # (cells,) 1 / n_y
    if cells > block:
        order = torch.argsort(cell)
        cell, member = cell[order], member[order]
    total = torch.zeros(m, m, dtype=torch.float64, device=device)
    for start in range(0, cells, block):
        width = min(block, cells - start)
        if cells > block:
            low, high = (
                int(i)
                for i in torch.searchsorted(
                    cell, torch.tensor([start, start + width], device=device)
                )
            )
            part_cell, part_member = cell[low:high] - start, member[low:high]
        else:
            part_cell, part_member = cell, member
        counts = torch.bincount(part_member * width + part_cell, minlength=m * width)
        counts = counts.reshape(m, width).double()  # (m, width) N_j[y, c]
        total += (counts * weight[start : start + width]) @ counts.T
    return total / n
