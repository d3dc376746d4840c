"""Agreement measures against scikit-learn, hand-computed values and naive per-pair loops."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from polyculture.errors import MeasureInputError
from polyculture.measure.agreement import (
    DegenerateMeasureWarning,
    cohen_kappa,
    contingency_counts,
    disagreement,
    error_consistency,
    pairwise_agreement,
    same_wrong_rate,
)

KEYS = {
    "disagreement",
    "cohen_kappa",
    "error_consistency",
    "same_wrong",
    "same_wrong_chance",
    "double_fault",
    "q_statistic",
    "correlation",
}


def random_zoo(seed: int, n: int = 300, m: int = 6, classes: int = 4):
    """Members that copy the label with member-specific skill, else answer at random."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    skill = rng.uniform(0.3, 0.9, m)
    guess = rng.integers(0, classes, (n, m))
    pred = np.where(rng.random((n, m)) < skill, labels[:, None], guess)
    return pred, labels


def naive_same_wrong_chance(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """Direct reading of the definition: class-conditional independent answers."""
    total = 0.0
    for u in range(len(y)):
        in_class = y == y[u]
        for c in set(a.tolist()) | set(b.tolist()):
            if c != y[u]:
                total += np.mean(a[in_class] == c) * np.mean(b[in_class] == c)
    return total / len(y)


def naive_pairwise(pred: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Every cell with plain per-pair code (Python loop over pairs)."""
    n, m = pred.shape
    out = {key: np.full((m, m), np.nan) for key in KEYS}
    correct = pred == y[:, None]
    for i in range(m):
        for j in range(m):
            a, b = correct[:, i], correct[:, j]
            n11, n00 = np.sum(a & b), np.sum(~a & ~b)
            n10, n01 = np.sum(a & ~b), np.sum(~a & b)
            out["disagreement"][i, j] = np.mean(pred[:, i] != pred[:, j])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out["cohen_kappa"][i, j] = cohen_kappa(pred[:, i], pred[:, j])
                out["error_consistency"][i, j] = error_consistency(a, b).kappa
            out["same_wrong"][i, j] = np.mean(~a & (pred[:, i] == pred[:, j]))
            out["same_wrong_chance"][i, j] = naive_same_wrong_chance(pred[:, i], pred[:, j], y)
            out["double_fault"][i, j] = n00 / n
            den_q = n11 * n00 + n01 * n10
            out["q_statistic"][i, j] = (n11 * n00 - n01 * n10) / den_q if den_q else np.nan
            den_r = np.sqrt(float(a.sum() * (~a).sum() * b.sum() * (~b).sum()))
            out["correlation"][i, j] = (n11 * n00 - n01 * n10) / den_r if den_r else np.nan
    for key in ("cohen_kappa", "error_consistency", "q_statistic", "correlation"):
        np.fill_diagonal(out[key], 1.0)
    return out


# ---------------------------------------------------------------------------- single pairs


@pytest.mark.parametrize("seed", range(4))
def test_cohen_kappa_and_disagreement_match_sklearn(seed: int) -> None:
    pred, _ = random_zoo(seed, m=2)
    a, b = pred[:, 0], pred[:, 1]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert disagreement(a, b) == pytest.approx(np.mean(a != b))


def test_cohen_kappa_accepts_sparse_and_float_labels() -> None:
    a, b = np.array([10, 10, 999, 999]), np.array([10.0, 10.0, 999.0, 10.0])
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b.astype(int)))


def test_error_consistency_hand_example() -> None:
    # a right on 6/10, b right on 5/10; both right on 4, both wrong on 3 -> c_obs = 0.7.
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    b = np.array([1, 1, 1, 1, 0, 0, 1, 0, 0, 0])
    out = error_consistency(a, b)
    c_exp = 0.6 * 0.5 + 0.4 * 0.5  # = 0.5
    assert out.observed == pytest.approx(0.7)
    assert out.expected == pytest.approx(c_exp)
    assert out.kappa == pytest.approx((0.7 - c_exp) / (1 - c_exp))  # 0.4
    # c_obs in [|0.6 + 0.5 - 1|, 1 - |0.6 - 0.5|] = [0.1, 0.9].
    assert out.kappa_min == pytest.approx((0.1 - c_exp) / (1 - c_exp))
    assert out.kappa_max == pytest.approx((0.9 - c_exp) / (1 - c_exp))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_error_consistency_bounds_hold_and_are_tight(pairs: list[tuple[bool, bool]]) -> None:
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateMeasureWarning)
        out = error_consistency(a, b)
        if np.isnan(out.kappa):
            assert a.all() == b.all() and (a.all() or not a.any()) and (a == b).all()
            return
        assert out.kappa_min - 1e-12 <= out.kappa <= out.kappa_max + 1e-12
        # Sorting both vectors maximises the overlap of right answers: kappa_max is reached.
        assert error_consistency(np.sort(a), np.sort(b)).kappa == pytest.approx(out.kappa_max)
        # Sorting them in opposite orders minimises it: kappa_min is reached.
        assert error_consistency(np.sort(a), np.sort(b)[::-1]).kappa == pytest.approx(out.kappa_min)


def test_error_consistency_degenerate_is_nan_with_reason() -> None:
    with pytest.warns(DegenerateMeasureWarning, match="always right"):
        out = error_consistency(np.ones(5), np.ones(5))
    assert np.isnan(out.kappa) and out.observed == 1.0 and out.expected == 1.0
    with pytest.warns(DegenerateMeasureWarning, match="same single class"):
        assert np.isnan(cohen_kappa(np.zeros(4), np.zeros(4)))


def test_same_wrong_rate_hand_example() -> None:
    y = np.array([0, 0, 0, 0, 1, 1])
    a = np.array([1, 2, 0, 0, 0, 1])  # wrong on 0, 1, 4
    b = np.array([1, 1, 0, 2, 0, 0])  # wrong on 0, 1, 3, 4, 5
    out = same_wrong_rate(a, b, y)
    assert out.observed == pytest.approx(2 / 6)  # instances 0 (both 1) and 4 (both 0)
    assert out.both_wrong == pytest.approx(3 / 6)
    # Class 0 (n=4): a says 1 once, 2 once; b says 1 twice, 2 once -> (1*2 + 1*1) / 4.
    # Class 1 (n=2): a says 0 once; b says 0 twice -> 1*2 / 2.
    assert out.chance == pytest.approx((3 / 4 + 2 / 2) / 6)
    # Both-wrong chance: class 0: 2 * 3 / 4, class 1: 1 * 2 / 2.
    assert out.both_wrong_chance == pytest.approx((6 / 4 + 2 / 2) / 6)


@pytest.mark.parametrize("seed", range(3))
def test_same_wrong_rate_against_loop(seed: int) -> None:
    pred, y = random_zoo(seed, n=120, m=2, classes=5)
    a, b = pred[:, 0], pred[:, 1]
    out = same_wrong_rate(a, b, y)
    assert out.observed == pytest.approx(np.mean((a != y) & (a == b)))
    assert out.chance == pytest.approx(naive_same_wrong_chance(a, b, y))
    assert out.chance <= out.both_wrong_chance + 1e-12
    # Independent members (given the class) sit near chance; a copy sits far above it.
    copy = same_wrong_rate(a, a, y)
    assert copy.observed == pytest.approx(np.mean(a != y)) and copy.observed > copy.chance


# ---------------------------------------------------------------------------- all pairs


@pytest.mark.parametrize("seed", range(3))
def test_pairwise_agreement_matches_naive_loop(seed: int) -> None:
    pred, y = random_zoo(seed, n=150, m=5)
    pred[:, 3] = y  # an always-right member: Q, rho of its pairs are 0/0
    pred[:, 4] = 2  # a constant member
    fast = pairwise_agreement(pred, y)
    slow = naive_pairwise(pred, y)
    assert set(fast) == KEYS
    for key in KEYS:
        assert fast[key].shape == (5, 5) and fast[key].dtype == np.float64
        np.testing.assert_allclose(fast[key], slow[key], atol=1e-12, err_msg=key)
    assert np.isnan(fast["q_statistic"][3, 0]) and np.isnan(fast["correlation"][0, 3])


def test_pairwise_agreement_degenerate_pair_cells_are_nan() -> None:
    y = np.array([0, 1, 0, 1])
    pred = np.column_stack([y, y, np.zeros(4, int), np.zeros(4, int)])
    out = pairwise_agreement(pred, y)
    assert np.isnan(out["error_consistency"][0, 1])  # both always right
    assert np.isnan(out["cohen_kappa"][2, 3])  # both always predict class 0
    assert out["cohen_kappa"][0, 0] == 1.0 and out["error_consistency"][2, 2] == 1.0
    for key, matrix in out.items():
        finite = matrix[np.isfinite(matrix)]
        assert np.allclose(matrix, matrix.T, equal_nan=True), key
        assert (finite >= -1 - 1e-12).all() and (finite <= 1 + 1e-12).all(), key


def test_pairwise_agreement_symmetry_and_relations() -> None:
    pred, y = random_zoo(7, n=400, m=8)
    out = pairwise_agreement(pred, y)
    error = np.mean(pred != y[:, None], axis=0)
    np.testing.assert_allclose(np.diag(out["double_fault"]), error)
    np.testing.assert_allclose(np.diag(out["same_wrong"]), error)
    assert (out["same_wrong"] <= out["double_fault"] + 1e-12).all()
    np.testing.assert_allclose(np.diag(out["disagreement"]), 0.0)


def test_pairwise_agreement_large_and_sparse_class_ids() -> None:
    # Ids above the dense limit are renumbered, and with thousands of classes the same-wrong
    # chance level takes the path that keeps only the (true, answer) cells that occur.
    rng = np.random.default_rng(3)
    n, m, classes = 6000, 3, 4000
    y = rng.integers(0, classes, n)
    pred = np.where(rng.random((n, m)) < 0.5, y[:, None], rng.integers(0, classes, (n, m)))
    shifted = pairwise_agreement(pred * 7 + 10**6, y * 7 + 10**6)
    for i, j in [(0, 0), (0, 1), (1, 2)]:
        single = same_wrong_rate(pred[:, i], pred[:, j], y)
        assert shifted["same_wrong_chance"][i, j] == pytest.approx(single.chance, abs=1e-12)
        assert shifted["same_wrong"][i, j] == pytest.approx(single.observed, abs=1e-12)
        assert shifted["disagreement"][i, j] == pytest.approx(disagreement(pred[:, i], pred[:, j]))
        if i != j:
            assert shifted["cohen_kappa"][i, j] == pytest.approx(
                cohen_kappa(pred[:, i], pred[:, j]), abs=1e-12
            )


@pytest.mark.parametrize("classes", [3, 40])
def test_blocked_computation_matches_single_block(
    monkeypatch: pytest.MonkeyPatch, classes: int
) -> None:
    # Tiny scratch budgets force many blocks of instances, of one-hot rows and of confusion
    # cells (the paths large inputs take); the result must not change.
    from polyculture.measure import agreement

    pred, y = random_zoo(11, n=200, m=6, classes=classes)
    whole = pairwise_agreement(pred, y)
    monkeypatch.setattr(agreement, "_BLOCK_ELEMENTS", 50)
    monkeypatch.setattr(agreement, "_EXACT_FLOAT32", 7)
    blocked = pairwise_agreement(pred, y)
    for key in KEYS:
        np.testing.assert_allclose(blocked[key], whole[key], atol=1e-12, err_msg=key)


def test_torch_input_matches_numpy() -> None:
    pred, y = random_zoo(1, n=200, m=4)
    from_numpy = pairwise_agreement(pred, y)
    from_torch = pairwise_agreement(torch.from_numpy(pred), torch.from_numpy(y))
    for key in KEYS:
        np.testing.assert_array_equal(from_numpy[key], from_torch[key])
    right = torch.from_numpy(pred == y[:, None])
    counts = contingency_counts(right)
    np.testing.assert_array_equal(counts.n11 + counts.n10 + counts.n01 + counts.n00, 200.0)
    assert error_consistency(right[:, 0], right[:, 1]) == error_consistency(
        right[:, 0].numpy(), right[:, 1].numpy()
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pairwise_agreement(np.zeros(5, int), np.zeros(5, int)), "2-D"),
        (lambda: pairwise_agreement(np.zeros((5, 2), int), np.zeros(4, int)), "4 instances"),
        (lambda: pairwise_agreement(np.full((2, 2), -1), np.zeros(2, int)), "negative"),
        (lambda: pairwise_agreement(np.full((2, 2), 0.5), np.zeros(2, int)), "fractional"),
        (lambda: disagreement(np.array([0.0, np.nan]), np.array([0, 1])), "NaN"),
        (lambda: disagreement(np.array([], int), np.array([], int)), "no instances"),
        (lambda: error_consistency(np.array([0, 2]), np.array([0, 1])), "0/1"),
        (lambda: contingency_counts(np.ones((0, 3))), "no instances"),
        (lambda: same_wrong_rate([0, 1], [0, 1], [0]), "instances"),
    ],
)
def test_bad_inputs_raise_measure_input_error(call, match: str) -> None:
    with pytest.raises(MeasureInputError, match=match) as info:
        call()
    assert isinstance(info.value, ValueError)
