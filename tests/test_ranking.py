"""Ranking measures against independent loop computations, and the temporal split's guarantee."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyculture.data.interactions import temporal_split
from polyculture.errors import DataError, MeasureInputError
from polyculture.measure import ranking


def loop_rank(scores: np.ndarray, seen: np.ndarray, target: int) -> int:
    """Rank by sorting (score descending, item ascending) the unseen items, in plain Python."""
    candidates = [i for i in range(len(scores)) if not seen[i]]
    ordered = sorted(candidates, key=lambda i: (-scores[i], i))
    return ordered.index(target) + 1


def loop_gini(counts: list[int]) -> float:
    """Mean absolute difference form: sum |x_i - x_j| / (2 n^2 mean)."""
    n, mean = len(counts), sum(counts) / len(counts)
    total = sum(abs(a - b) for a in counts for b in counts)
    return total / (2 * n * n * mean)


@pytest.fixture(scope="module")
def planted() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    users, items = 40, 30
    # Rounded scores force ties, so the tie rule is exercised.
    scores = np.round(rng.random((users, items)), 1)
    seen = rng.random((users, items)) < 0.2
    targets = np.array([rng.choice(np.flatnonzero(~row)) for row in seen])
    return {"scores": scores, "seen": seen, "targets": targets}


def test_ranks_and_quality_metrics_equal_a_loop(planted: dict[str, np.ndarray]) -> None:
    scores, seen, targets = planted["scores"], planted["seen"], planted["targets"]
    ranks = ranking.rank_of_targets(scores, targets, seen)
    expected = [loop_rank(scores[u], seen[u], int(targets[u])) for u in range(len(scores))]
    assert ranks.tolist() == expected
    k = 5
    lists = ranking.top_k_items(scores, k, seen)
    for u in range(len(scores)):
        ordered = sorted((i for i in range(scores.shape[1]) if not seen[u, i]),
                         key=lambda i: (-scores[u, i], i))  # fmt: skip
        assert lists[u].tolist() == ordered[:k]
        # A hit at k is exactly "the target is in the top-k list".
        assert ranking.hit_rate(ranks[u : u + 1], k)[0] == float(targets[u] in ordered[:k])
    hits = [1.0 if r <= k else 0.0 for r in expected]
    gains = [1 / math.log2(r + 1) if r <= k else 0.0 for r in expected]
    assert ranking.hit_rate(ranks, k).mean() == pytest.approx(sum(hits) / len(hits))
    assert ranking.ndcg(ranks, k).mean() == pytest.approx(sum(gains) / len(gains))
    assert ranking.reciprocal_rank(ranks).mean() == pytest.approx(
        sum(1 / r for r in expected) / len(expected)
    )


def test_catalogue_measures_equal_a_loop(planted: dict[str, np.ndarray]) -> None:
    lists = ranking.top_k_items(planted["scores"], 4, planted["seen"])
    n_items = planted["scores"].shape[1]
    shown = {int(i) for row in lists for i in row}
    assert ranking.catalogue_coverage(lists, n_items) == pytest.approx(len(shown) / n_items)
    counts = [sum(int(i) == item for row in lists for i in row) for item in range(n_items)]
    assert ranking.exposure_gini(lists, n_items) == pytest.approx(loop_gini(counts))
    popularity = np.arange(n_items) % 7
    users = 50
    novelty = ranking.novelty(lists, popularity, users)
    for u, row in enumerate(lists):
        info = [-math.log2((popularity[i] + 1) / (users + 1)) for i in row]
        assert novelty[u] == pytest.approx(sum(info) / len(info))


def test_overlaps_equal_set_computations(planted: dict[str, np.ndarray]) -> None:
    a = ranking.top_k_items(planted["scores"], 5, planted["seen"])
    b = ranking.top_k_items(np.round(planted["scores"] ** 2 + 0.05 * a.mean(), 2), 5)
    jaccard = ranking.jaccard_per_user(a, b)
    for u in range(len(a)):
        sa, sb = set(a[u].tolist()), set(b[u].tolist())
        assert jaccard[u] == pytest.approx(len(sa & sb) / len(sa | sb))
    between = ranking.between_user_overlap(a, planted["scores"].shape[1], block=7)
    for u in range(len(a)):
        mine = set(a[u].tolist())
        others = [
            len(mine & set(a[v].tolist())) / len(mine | set(a[v].tolist()))
            for v in range(len(a))
            if v != u
        ]
        assert between[u] == pytest.approx(sum(others) / len(others))


def test_identical_lists_and_disjoint_lists() -> None:
    same = np.tile(np.arange(3), (4, 1))
    assert ranking.between_user_overlap(same, 10).tolist() == [1.0] * 4
    assert ranking.jaccard_per_user(same, same + 3).tolist() == [0.0] * 4
    assert ranking.catalogue_coverage(same, 10) == pytest.approx(0.3)


def test_catalogue_interval_holds_its_estimate() -> None:
    rng = np.random.default_rng(1)
    lists = rng.integers(0, 200, size=(120, 10))
    for statistic in (ranking.catalogue_coverage, ranking.exposure_gini):
        estimate = statistic(lists, 200)
        low, high = ranking.catalogue_statistic_ci(statistic, lists, 200, n_resamples=300)
        assert 0.0 <= low <= estimate <= high <= 1.0


def test_bad_inputs_raise_one_line_errors() -> None:
    with pytest.raises(MeasureInputError, match="k=0"):
        ranking.top_k_items(np.zeros((2, 3)), 0)
    with pytest.raises(MeasureInputError, match="NaN"):
        ranking.rank_of_targets(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(MeasureInputError, match="marked as seen"):
        ranking.rank_of_targets(np.ones((1, 3)), np.array([1]), np.array([[False, True, False]]))
    with pytest.raises(MeasureInputError, match="exceeds"):
        ranking.top_k_items(np.ones((1, 3)), 4)


interactions = st.lists(
    st.tuples(
        st.integers(0, 5),  # user
        st.integers(0, 12),  # item
        st.integers(0, 6),  # timestamp: few values, so ties are common
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(rows=interactions, min_interactions=st.integers(3, 5))
def test_temporal_split_never_leaks_later_interactions(
    rows: list[tuple[int, int, int]], min_interactions: int
) -> None:
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"]).drop_duplicates(
        ["user", "item"]
    )
    frame = frame.assign(user=frame["user"].astype(str), item=frame["item"].map("{:02d}".format))
    frame = frame.assign(rating=5.0)
    split = temporal_split(frame, min_interactions)
    counts = frame.groupby("user").size()
    assert split.users == sorted(counts.index[counts >= min_interactions])
    assert split.excluded == sorted(counts.index[counts < min_interactions])
    assert len(split.train) + 2 * len(split.users) == counts[counts >= min_interactions].sum()
    for user in split.users:
        train = split.train[split.train["user"] == user]
        validation = split.validation[split.validation["user"] == user].iloc[0]
        test = split.test[split.test["user"] == user].iloc[0]
        key = (validation["timestamp"], validation["item"])
        # Every training interaction comes strictly before validation, which is before test.
        assert all((t, i) < key for t, i in zip(train["timestamp"], train["item"], strict=True))
        assert key < (test["timestamp"], test["item"])
        later = frame[(frame["user"] == user) & (frame["timestamp"] > validation["timestamp"])]
        assert not set(later["item"]) & set(train["item"])


def test_split_is_independent_of_row_order() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "user": rng.integers(0, 5, 80).astype(str),
            "item": rng.integers(0, 40, 80).astype(str),
            "timestamp": rng.integers(0, 4, 80),
            "rating": 5.0,
        }
    ).drop_duplicates(["user", "item"])
    first = temporal_split(frame)
    second = temporal_split(frame.sample(frac=1.0, random_state=1))
    for name in ("train", "validation", "test"):
        a = getattr(first, name).sort_values(["user", "item"], ignore_index=True)
        b = getattr(second, name).sort_values(["user", "item"], ignore_index=True)
        pd.testing.assert_frame_equal(a, b)
    with pytest.raises(DataError, match="below 3"):
        temporal_split(frame, 2)
