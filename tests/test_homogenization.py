"""Systemic failure, failure-count distribution and H_avg / H_unif / H_worst."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyculture.errors import MeasureInputError
from polyculture.measure.homogenization import (
    failure_count_distribution,
    homogenization,
    poisson_binomial_pmf,
    systemic_failure,
)

FAST = {"n_resamples": 200}


def independent_correct(seed: int, n: int, error_rates: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, len(error_rates))) >= error_rates  # (n, m), member j wrong w.p. eps_j


def naive_homogenization(correct: np.ndarray, groups: np.ndarray) -> tuple[float, float, float]:
    """The three definitions read literally: loop over groups, product over members."""
    failures = 1 - correct.astype(float)
    m = failures.shape[1]
    overall = np.prod(failures.mean(axis=0))
    numerator = denominator = 0.0
    per_group = []
    for g in np.unique(groups):
        inside = groups == g
        f_g = inside.mean()
        product = np.prod(failures[inside].mean(axis=0))
        numerator += f_g**m * product
        denominator += f_g**m * overall
        per_group.append(product / overall)
    return numerator / denominator, float(np.mean(per_group)), float(np.max(per_group))


# ---------------------------------------------------------------------------- systemic failure


def test_systemic_failure_hand_example() -> None:
    # 8 instances, 2 members with error rates 0.5 and 0.25; both fail on instance 0 only.
    correct = np.ones((8, 2), dtype=int)
    correct[[0, 1, 2, 3], 0] = 0
    correct[[0, 4], 1] = 0
    out = systemic_failure(correct, n_resamples=500)
    assert out.observed == pytest.approx(1 / 8)
    assert out.expected == pytest.approx(0.5 * 0.25)
    assert out.ratio == pytest.approx(1.0)
    np.testing.assert_allclose(out.error_rates, [0.5, 0.25])
    assert out.observed_ci[0] <= out.observed <= out.observed_ci[1]
    assert out.ratio_ci[0] <= out.ratio <= out.ratio_ci[1]
    # With 8 instances some resamples contain no failure of member 1; the note says so.
    assert out.note.startswith("ratio CI from") and "no failures" in out.note


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    error_rates=st.lists(st.floats(0.3, 0.7), min_size=2, max_size=3),
)
def test_independent_failures_give_ratio_near_one(seed: int, error_rates: list[float]) -> None:
    n = 20_000
    eps = np.array(error_rates)
    out = systemic_failure(independent_correct(seed, n, eps), n_resamples=50)
    # Delta method: log(ratio) = log(observed) - sum_j log(eps_hat_j). Each term is a log of a
    # binomial share with variance ~ (1 - p) / (n p); the observed all-fail indicator is
    # positively correlated with every member's failures, so adding the variances bounds the
    # variance of the difference from above. 5 standard deviations: false alarm < 1e-6.
    p_all = np.prod(eps)
    variance_bound = (1 - p_all) / (n * p_all) + np.sum((1 - eps) / (n * eps))
    assert abs(np.log(out.ratio)) < 5 * np.sqrt(variance_bound)


@settings(max_examples=30, deadline=None)
@given(
    column=st.lists(st.booleans(), min_size=1, max_size=60),
    copies=st.integers(1, 6),
)
def test_copies_of_one_member_give_ratio_eps_to_the_one_minus_m(
    column: list[bool], copies: int
) -> None:
    correct = np.repeat(np.array(column)[:, None], copies, axis=1)
    eps = 1 - np.mean(column)
    out = systemic_failure(correct, **FAST)
    assert out.observed == pytest.approx(eps)
    assert out.expected == pytest.approx(eps**copies)
    if eps == 0:
        assert np.isnan(out.ratio) and "never fail" in out.note
        assert np.isnan(out.ratio_ci[0])
    else:
        assert out.ratio == pytest.approx(eps ** (1 - copies))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    m=st.integers(1, 6),
)
def test_permutation_invariance(seed: int, n: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    correct = rng.random((n, m)) < rng.uniform(0.2, 0.8, m)
    groups = rng.integers(0, 3, n)
    rows, cols = rng.permutation(n), rng.permutation(m)
    shuffled = correct[rows][:, cols]

    a, b = systemic_failure(correct, **FAST), systemic_failure(shuffled, **FAST)
    np.testing.assert_allclose(
        [a.observed, a.expected, a.ratio], [b.observed, b.expected, b.ratio], equal_nan=True
    )
    da, db = failure_count_distribution(correct), failure_count_distribution(shuffled)
    np.testing.assert_allclose(da.observed, db.observed)
    np.testing.assert_allclose(da.expected, db.expected, atol=1e-12)
    ha, hb = homogenization(correct, groups), homogenization(shuffled, groups[rows])
    np.testing.assert_allclose(
        [ha.h_avg, ha.h_unif, ha.h_worst], [hb.h_avg, hb.h_unif, hb.h_worst], equal_nan=True
    )


def test_correlated_failures_are_detected() -> None:
    # Half the instances are "hard": every member fails them with probability 0.8.
    rng = np.random.default_rng(0)
    hard = rng.random(5000) < 0.5
    eps = np.where(hard[:, None], 0.8, 0.1)
    correct = rng.random((5000, 3)) >= eps
    out = systemic_failure(correct, n_resamples=500)
    assert out.ratio_ci[0] > 1.5
    assert failure_count_distribution(correct).total_variation > 0.1


def test_systemic_failure_many_members_stays_in_log_space() -> None:
    # 400 members, each wrong on 5% of instances: prod_j eps_j = 0.05**400 underflows float64.
    rng = np.random.default_rng(0)
    correct = rng.random((1000, 400)) >= 0.05
    out = systemic_failure(correct, n_resamples=100)
    assert out.expected == 0.0 and "underflows" in out.note
    assert out.observed == 0.0 and out.ratio == 0.0
    # The same members all failing one shared instance: the ratio is beyond float64.
    correct[0] = False
    out = systemic_failure(correct, n_resamples=100)
    assert out.ratio == np.inf and "exceeds the float64 range" in out.note
    assert out.ratio_ci[1] == np.inf
    # Fewer members: tiny expected rate, finite ratio computed without underflow.
    out = systemic_failure(correct[:, :150], n_resamples=100)
    eps = 1 - correct[:, :150].mean(axis=0)
    assert out.ratio == pytest.approx(np.exp(np.log(out.observed) - np.log(eps).sum()))
    assert homogenization(correct[:, :150]).h_avg == pytest.approx(out.ratio)


# ---------------------------------------------------------------------------- Poisson binomial


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=0, max_size=8))
def test_poisson_binomial_matches_brute_force(probabilities: list[float]) -> None:
    p = np.array(probabilities)
    pmf = poisson_binomial_pmf(p)
    assert pmf.sum() == pytest.approx(1.0)
    brute = np.zeros(len(p) + 1)
    for outcome in itertools.product([0, 1], repeat=len(p)):
        x = np.array(outcome, dtype=bool)
        brute[x.sum()] += np.prod(np.where(x, p, 1 - p))
    np.testing.assert_allclose(pmf, brute, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=300))
def test_poisson_binomial_sums_to_one_and_has_the_right_mean(probabilities: list[float]) -> None:
    pmf = poisson_binomial_pmf(probabilities)
    assert pmf.sum() == pytest.approx(1.0)
    assert (pmf >= 0).all()
    assert np.arange(len(pmf)) @ pmf == pytest.approx(np.sum(probabilities))


def test_poisson_binomial_rejects_bad_probabilities() -> None:
    with pytest.raises(MeasureInputError, match=r"\[0, 1\]"):
        poisson_binomial_pmf([0.5, 1.5])


def test_failure_count_distribution_example_and_consistency() -> None:
    correct = independent_correct(4, 3000, np.array([0.1, 0.4, 0.6, 0.3]))
    out = failure_count_distribution(correct)
    assert out.k.tolist() == [0, 1, 2, 3, 4]
    assert out.observed.sum() == pytest.approx(1.0)
    assert out.observed[-1] == pytest.approx(systemic_failure(correct, **FAST).observed)
    assert out.expected[-1] == pytest.approx(np.prod(out.error_rates))
    assert out.total_variation < 0.05  # independent by construction
    frame = out.to_frame()
    assert list(frame.columns) == ["k", "observed", "expected"] and len(frame) == 5


# ---------------------------------------------------------------------------- homogenization


def test_individual_level_is_the_systemic_ratio() -> None:
    correct = independent_correct(1, 500, np.array([0.3, 0.5, 0.4]))
    correct[:40] = False  # some instances everyone fails
    out = homogenization(correct)
    ratio = systemic_failure(correct, **FAST).ratio
    assert out.level == "individual" and out.per_group is None
    assert out.h_avg == pytest.approx(ratio) and out.h_unif == pytest.approx(ratio)
    eps = 1 - correct.mean(axis=0)
    assert out.h_worst == pytest.approx(1 / np.prod(eps))
    # Groups of one instance each are the same thing.
    each = homogenization(correct, groups=np.arange(500))
    np.testing.assert_allclose(
        [each.h_avg, each.h_unif, each.h_worst], [out.h_avg, out.h_unif, out.h_worst]
    )


@pytest.mark.parametrize("seed", range(4))
def test_group_level_matches_literal_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = rng.choice(np.array(["a", "b", "c", "d"]), size=400, p=[0.4, 0.3, 0.2, 0.1])
    group_eps = {"a": 0.1, "b": 0.3, "c": 0.5, "d": 0.7}
    eps = np.array([group_eps[g] for g in groups])[:, None] * rng.uniform(0.5, 1.2, 3)
    correct = rng.random((400, 3)) >= eps
    out = homogenization(correct, groups)
    expected = naive_homogenization(correct, groups)
    np.testing.assert_allclose([out.h_avg, out.h_unif, out.h_worst], expected, rtol=1e-10)
    assert out.level == "group" and out.h_worst >= out.h_unif
    table = out.per_group
    assert table is not None and table["group"].tolist() == ["a", "b", "c", "d"]
    assert table["n"].sum() == 400 and table["frequency"].sum() == pytest.approx(1.0)
    assert table["relative"].max() == pytest.approx(out.h_worst)
    # Failures concentrate on groups c and d, but H_avg weights groups by f_g^m, so the large,
    # easy group a dominates it; H_unif weights the groups equally and sees the concentration.
    assert out.h_unif > 1


def test_equal_group_sizes_make_h_avg_equal_h_unif_and_at_least_one() -> None:
    # With f_g = 1/G the f_g^m weights cancel: H_avg = H_unif. If member j's error rate in group
    # g is c_g b_j, H_unif = mean(c_g^m) / mean(c_g)^m >= 1 by Jensen's inequality.
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(4), 2500)
    scale = np.array([0.2, 0.5, 1.0, 1.5])[groups][:, None]
    correct = rng.random((10_000, 3)) >= scale * np.array([0.3, 0.4, 0.5])
    out = homogenization(correct, groups)
    assert out.h_avg == pytest.approx(out.h_unif)
    assert out.h_unif > 1.2


def test_group_level_is_one_when_groups_do_not_matter() -> None:
    correct = independent_correct(2, 300, np.array([0.2, 0.5]))
    one = homogenization(correct, groups=np.zeros(300))
    assert (one.h_avg, one.h_unif, one.h_worst) == pytest.approx((1.0, 1.0, 1.0))
    # Identical error rates in two halves (by construction) also give exactly 1.
    correct = np.tile(np.array([[0, 1], [1, 0], [1, 1], [0, 0]], dtype=bool), (2, 1))
    halves = homogenization(correct, groups=np.repeat([0, 1], 4))
    assert (halves.h_avg, halves.h_unif, halves.h_worst) == pytest.approx((1.0, 1.0, 1.0))


def test_member_that_never_fails_gives_nan_with_note() -> None:
    correct = np.array([[1, 0], [1, 1], [1, 0]])
    for out in (homogenization(correct), homogenization(correct, groups=np.array([0, 0, 1]))):
        assert np.isnan(out.h_avg) and np.isnan(out.h_worst)
        assert "[0] never fail" in out.note


def test_torch_inputs() -> None:
    correct = independent_correct(3, 200, np.array([0.4, 0.5]))
    groups = np.arange(200) % 3
    a = homogenization(correct, groups)
    b = homogenization(torch.from_numpy(correct), torch.from_numpy(groups))
    assert (a.h_avg, a.h_unif, a.h_worst) == (b.h_avg, b.h_unif, b.h_worst)
    assert systemic_failure(torch.from_numpy(correct), **FAST).ratio == pytest.approx(
        systemic_failure(correct, **FAST).ratio
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: systemic_failure(np.ones(4)), "2-D"),
        (lambda: systemic_failure(np.full((3, 2), np.nan)), "NaN"),
        (lambda: systemic_failure(np.full((3, 2), 2)), "0/1"),
        (lambda: systemic_failure(np.ones((3, 2)), n_resamples=0), "n_resamples"),
        (lambda: systemic_failure(np.ones((3, 2)), confidence=1.5), "confidence"),
        (lambda: homogenization(np.ones((3, 2)), groups=np.zeros(2)), "one label per"),
        (lambda: homogenization(np.ones((3, 2)), groups=np.array([0, np.nan, 1])), "NaN"),
        (lambda: failure_count_distribution(np.ones((0, 2))), "no instances"),
    ],
)
def test_bad_inputs_raise_measure_input_error(call, match: str) -> None:
    with pytest.raises(MeasureInputError, match=match):
        call()
