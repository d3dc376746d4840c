"""Ranking quality, beyond-accuracy and homogenization measures of top-k recommendations.

Plain functions of arrays (DESIGN.md rule 1). A recommender gives ``scores`` ``(users, items)``;
items a user has already seen are excluded by a boolean mask of the same shape. Ties in score are
broken by item index (lower first), the same rule in :func:`top_k_items` and
:func:`rank_of_targets`, so that a held-out item is a hit at ``k`` exactly when it is in the top-k
list.

* per user, one held-out item: HitRate@k, NDCG@k (one relevant item: ``1 / log2(rank + 1)`` when
  ``rank <= k``), reciprocal rank (MRR is its mean);
* per list set: catalogue coverage (share of items in at least one list), the Gini coefficient of
  item exposure (over all catalogue items, 0 = every item shown equally often), novelty (mean
  self-information ``-log2 p`` of the recommended items, ``p`` = share of users who liked the item
  in training, smoothed as ``(count + 1) / (users + 1)``);
* homogenization: Jaccard overlap of two members' top-k lists for the same user, and of one
  member's lists between users.

Confidence intervals are bootstrap intervals over users: per-user measures through
:func:`polyculture.measure.statistics.bootstrap_mean_ci`, catalogue-level ones (coverage, Gini)
through :func:`catalogue_statistic_ci`.

Examples
--------
>>> scores = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.1, 0.4]])
>>> seen = np.array([[True, False, False, False], [False, False, False, False]])
>>> top_k_items(scores, 2, seen).tolist()
[[2, 3], [1, 3]]
>>> rank_of_targets(scores, np.array([3, 0]), seen).tolist()
[2, 3]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from polyculture.errors import MeasureInputError
from polyculture.measure._checks import check_bootstrap
from polyculture.measure.statistics import percentile_interval


def _check_scores(scores: np.ndarray, seen: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise MeasureInputError(
            f"scores must be (users, items), got shape {scores.shape}",
            hint="pass one row of item scores per user",
        )
    if np.isnan(scores).any():
        raise MeasureInputError("scores contain NaN", hint="check the model that produced them")
    mask = np.zeros(scores.shape, dtype=bool) if seen is None else np.asarray(seen, dtype=bool)
    if mask.shape != scores.shape:
        raise MeasureInputError(
            f"seen mask has shape {mask.shape}, scores {scores.shape}",
            hint="pass one boolean per (user, item)",
        )
    return scores, mask


def _check_k(k: int) -> None:
    if k < 1:
        raise MeasureInputError(f"k={k} must be at least 1", hint="use k >= 1, e.g. k=10")


def top_k_items(scores: np.ndarray, k: int, seen: np.ndarray | None = None) -> np.ndarray:
    """The ``k`` best unseen items per user, best first (ties: lower item index first).

    Parameters
    ----------
    scores
        ``(users, items)`` scores, higher is better.
    k
        List length (at most the number of items).
    seen
        ``(users, items)`` booleans: items never recommended to that user.

    Returns
    -------
    numpy.ndarray
        int64 ``(users, k)`` item indices.

    Examples
    --------
    >>> top_k_items(np.array([[1.0, 3.0, 3.0, 2.0]]), 3).tolist()
    [[1, 2, 3]]
    """
    _check_k(k)
    scores, mask = _check_scores(scores, seen)
    if k > scores.shape[1]:
        raise MeasureInputError(
            f"k={k} exceeds the {scores.shape[1]} items", hint="use a smaller k"
        )
    masked = np.where(mask, -np.inf, scores)  # (users, items)
    # A stable sort of the negated scores keeps lower indices first among equal scores.
    return np.argsort(-masked, axis=1, kind="stable")[:, :k].astype(np.int64)


def rank_of_targets(
    scores: np.ndarray, targets: np.ndarray, seen: np.ndarray | None = None
) -> np.ndarray:
    """The 1-based rank of each user's held-out item among their unseen items.

    Rank = 1 + the number of unseen items that score higher, or score the same with a lower
    index (the tie rule of :func:`top_k_items`).

    Examples
    --------
    >>> rank_of_targets(np.array([[0.5, 0.5, 0.9]]), np.array([1])).tolist()
    [3]
    """
    scores, mask = _check_scores(scores, seen)
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != (len(scores),):
        raise MeasureInputError(
            f"targets has shape {targets.shape}, expected ({len(scores)},)",
            hint="pass one held-out item index per user",
        )
    rows = np.arange(len(scores))
    if mask[rows, targets].any():
        raise MeasureInputError(
            "a held-out item is marked as seen", hint="the seen mask must not hold test items"
        )
    target_scores = scores[rows, targets][:, None]  # (users, 1)
    index = np.arange(scores.shape[1])[None, :]  # (1, items)
    ahead = (scores > target_scores) | ((scores == target_scores) & (index < targets[:, None]))
    return 1 + (ahead & ~mask).sum(axis=1)


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per user: 1.0 when the held-out item is in the top ``k`` (rank <= k), else 0.0.

    Examples
    --------
    >>> hit_rate(np.array([1, 5, 11]), 10).tolist()
    [1.0, 1.0, 0.0]
    """
    _check_k(k)
    return (np.asarray(ranks) <= k).astype(np.float64)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per user NDCG@k with one relevant item: ``1 / log2(rank + 1)`` within the top k, else 0.

    Examples
    --------
    >>> ndcg(np.array([1, 3, 11]), 10).round(3).tolist()
    [1.0, 0.5, 0.0]
    """
    _check_k(k)
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def reciprocal_rank(ranks: np.ndarray) -> np.ndarray:
    """Per user ``1 / rank`` (no cut-off); its mean is the MRR.

    Examples
    --------
    >>> reciprocal_rank(np.array([1, 4])).tolist()
    [1.0, 0.25]
    """
    return 1.0 / np.asarray(ranks, dtype=np.float64)


def exposure_counts(lists: np.ndarray, n_items: int) -> np.ndarray:
    """How many lists show each item: int64 ``(n_items,)``.

    Examples
    --------
    >>> exposure_counts(np.array([[0, 1], [1, 2]]), 4).tolist()
    [1, 2, 1, 0]
    """
    return np.bincount(np.asarray(lists, dtype=np.int64).ravel(), minlength=n_items)


def catalogue_coverage(lists: np.ndarray, n_items: int) -> float:
    """Share of the catalogue's ``n_items`` that appear in at least one list.

    Examples
    --------
    >>> catalogue_coverage(np.array([[0, 1], [1, 2]]), 4)
    0.75
    """
    return float((exposure_counts(lists, n_items) > 0).mean())


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative ``values`` (0 = all equal, near 1 = one holds all).

    ``sum_i (2i - n - 1) x_(i) / (n sum x)`` over the sorted values; NaN when all are zero.

    Examples
    --------
    >>> gini(np.array([1, 1, 1, 1])), gini(np.array([0, 0, 0, 4]))
    (0.0, 0.75)
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return float("nan")
    positions = np.arange(1, n + 1)
    return float(((2 * positions - n - 1) * x).sum() / (n * total))


def exposure_gini(lists: np.ndarray, n_items: int) -> float:
    """Gini coefficient of how often each catalogue item is recommended (unshown items count).

    Examples
    --------
    >>> exposure_gini(np.array([[0], [1], [2], [3]]), 4)
    0.0
    """
    return gini(exposure_counts(lists, n_items))


def self_information(popularity_counts: np.ndarray, n_users: int) -> np.ndarray:
    """``-log2 p`` per item with ``p = (count + 1) / (n_users + 1)`` (never infinite).

    Examples
    --------
    >>> self_information(np.array([0, 3]), 3).tolist()
    [2.0, 0.0]
    """
    counts = np.asarray(popularity_counts, dtype=np.float64)
    return np.log2((n_users + 1.0) / (counts + 1.0))


def novelty(lists: np.ndarray, popularity_counts: np.ndarray, n_users: int) -> np.ndarray:
    """Per user: the mean self-information of the recommended items (higher = less popular).

    Examples
    --------
    >>> novelty(np.array([[0, 1]]), np.array([0, 3]), 3).tolist()
    [1.0]
    """
    information = self_information(popularity_counts, n_users)  # (items,)
    return information[np.asarray(lists, dtype=np.int64)].mean(axis=1)


def jaccard_per_user(lists_a: np.ndarray, lists_b: np.ndarray) -> np.ndarray:
    """Per user: Jaccard overlap of two top-k lists (|A ∩ B| / |A ∪ B|).

    Examples
    --------
    >>> jaccard_per_user(np.array([[0, 1, 2], [0, 1, 2]]), np.array([[2, 1, 0], [3, 4, 2]]))
    array([1. , 0.2])
    """
    lists_a, lists_b = np.asarray(lists_a), np.asarray(lists_b)
    if lists_a.shape[0] != lists_b.shape[0]:
        raise MeasureInputError(
            f"{lists_a.shape[0]} lists vs {lists_b.shape[0]}",
            hint="compare the lists of the same users, in the same order",
        )
    # (users, k_a, k_b) equality: k is small, so this stays tiny.
    shared = (lists_a[:, :, None] == lists_b[:, None, :]).any(axis=2).sum(axis=1)
    union = lists_a.shape[1] + lists_b.shape[1] - shared
    return shared / union


def between_user_overlap(lists: np.ndarray, n_items: int, block: int = 1024) -> np.ndarray:
    """Per user: mean Jaccard overlap of their top-k list with every other user's list.

    Computed in blocks of users with a sparse user-item indicator, so memory stays at
    ``O(block * users)``. NaN with a single user.

    Examples
    --------
    >>> between_user_overlap(np.array([[0, 1], [0, 1], [2, 3]]), 4).round(3).tolist()
    [0.5, 0.5, 0.0]
    """
    from scipy import sparse

    lists = np.asarray(lists, dtype=np.int64)
    users, k = lists.shape
    if users < 2:
        return np.full(users, np.nan)
    rows = np.repeat(np.arange(users), k)
    indicator = sparse.csr_matrix(
        (np.ones(users * k), (rows, lists.ravel())), shape=(users, n_items)
    )
    indicator.data[:] = 1.0  # an item listed twice counts once
    sizes = np.asarray(indicator.sum(axis=1)).ravel()  # (users,)
    out = np.empty(users)
    for start in range(0, users, block):
        stop = min(users, start + block)
        shared = (indicator[start:stop] @ indicator.T).toarray()  # (block, users)
        union = sizes[start:stop, None] + sizes[None, :] - shared
        jaccard = shared / union
        jaccard[np.arange(stop - start), np.arange(start, stop)] = 0.0  # not with oneself
        out[start:stop] = jaccard.sum(axis=1) / (users - 1)
    return out


def catalogue_statistic_ci(
    statistic: Callable[[np.ndarray, int], float],
    lists: np.ndarray,
    n_items: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap CI over users of a catalogue-level statistic (coverage, exposure Gini).

    Resampling users with replacement repeats some users and drops others, which by itself
    lowers coverage and raises the Gini: the percentile interval of such a statistic sits beside
    its estimate, not around it. The interval is therefore re-centred on the estimate (the mean
    resampling bias removed) and clipped to ``[0, 1]``.

    Examples
    --------
    >>> lists = np.arange(200).reshape(100, 2) % 50
    >>> low, high = catalogue_statistic_ci(catalogue_coverage, lists, 60, n_resamples=200)
    >>> bool(low <= catalogue_coverage(lists, 60) <= high)
    True
    """
    check_bootstrap(n_resamples, confidence)
    lists = np.asarray(lists, dtype=np.int64)
    estimate = statistic(lists, n_items)
    rng = np.random.default_rng(seed)
    users = len(lists)
    values = np.array(
        [statistic(lists[rng.integers(0, users, size=users)], n_items) for _ in range(n_resamples)]
    )
    values = values[np.isfinite(values)]
    if len(values) == 0 or not np.isfinite(estimate):
        return float("nan"), float("nan")
    low, high = percentile_interval(values + (estimate - values.mean()), confidence)
    return max(0.0, low), min(1.0, high)
