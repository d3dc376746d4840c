"""McNemar's test and the paired bootstrap vs scipy, hand computation and explicit resampling."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from polyculture.errors import MeasureInputError
from polyculture.measure.paired import mcnemar, paired_bootstrap


def pair_with(a_only: int, b_only: int, both: int = 0, neither: int = 0):
    """Right/wrong vectors with the given discordant and concordant counts."""
    a = np.r_[np.ones(a_only), np.zeros(b_only), np.ones(both), np.zeros(neither)]
    b = np.r_[np.zeros(a_only), np.ones(b_only), np.ones(both), np.zeros(neither)]
    return a.astype(bool), b.astype(bool)


def test_mcnemar_hand_example() -> None:
    # 10 vs 2 discordant: P(X <= 2) for X ~ Bin(12, 1/2) = (1 + 12 + 66) / 4096.
    a, b = pair_with(10, 2, both=50, neither=8)
    exact = mcnemar(a, b)
    assert (exact.a_only, exact.b_only, exact.statistic) == (10, 2, 2.0)
    assert exact.p_value == pytest.approx(2 * 79 / 4096)
    # mid-p subtracts P(X = 2) = 66 / 4096 once.
    midp = mcnemar(a, b, method="midp")
    assert midp.p_value == pytest.approx((2 * 79 - 66) / 4096)
    assert midp.method == "midp" and exact.method == "exact"
    # Swapping the members changes nothing but the labels.
    swapped = mcnemar(b, a)
    assert (swapped.a_only, swapped.b_only, swapped.p_value) == (2, 10, exact.p_value)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60), st.integers(0, 20))
def test_mcnemar_matches_scipy_binomtest(a_only: int, b_only: int, ties: int) -> None:
    a, b = pair_with(a_only, b_only, both=ties, neither=1)
    exact = mcnemar(a, b)
    midp = mcnemar(a, b, method="midp")
    d = a_only + b_only
    reference = binomtest(a_only, d, 0.5).pvalue if d else 1.0
    assert exact.p_value == pytest.approx(reference, rel=1e-9, abs=1e-15)
    k = min(a_only, b_only)
    point = comb(d, k) / 2**d if d else 0.0
    if d:
        assert midp.p_value == pytest.approx(
            min(1.0, 2 * sum(comb(d, i) for i in range(k + 1)) / 2**d - point)
        )
    assert 0 <= midp.p_value <= exact.p_value <= 1


def test_mcnemar_without_discordant_pairs() -> None:
    out = mcnemar(*pair_with(0, 0, both=5, neither=5))
    assert out.p_value == 1.0 and out.a_only == out.b_only == 0


def test_paired_bootstrap_difference_and_ci() -> None:
    a, b = pair_with(40, 10, both=400, neither=50)
    out = paired_bootstrap(a, b, seed=1)
    assert out.difference == pytest.approx(a.mean() - b.mean()) == pytest.approx(0.06)
    assert out.ci_low < 0.06 < out.ci_high and out.ci_low > 0
    assert out.p_value < 0.01 and out.n_resamples == 2000
    # Same seed, same answer; a tie gives a share near 1.
    assert paired_bootstrap(a, b, seed=1) == out
    tie = paired_bootstrap(*pair_with(20, 20, both=100))
    assert tie.difference == 0.0 and tie.p_value > 0.5 and tie.ci_low < 0 < tie.ci_high


def test_paired_bootstrap_matches_explicit_resampling() -> None:
    # The multinomial shortcut and drawing instances with replacement give the same distribution.
    a, b = pair_with(30, 18, both=120, neither=32)
    n = len(a)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, n, size=(4000, n))
    explicit = a[rows].mean(axis=1) - b[rows].mean(axis=1)
    out = paired_bootstrap(a, b, n_resamples=4000, seed=3)
    low, high = np.quantile(explicit, [0.025, 0.975])
    assert out.ci_low == pytest.approx(low, abs=0.01)
    assert out.ci_high == pytest.approx(high, abs=0.01)


def test_torch_input_and_bad_inputs() -> None:
    a, b = pair_with(5, 1, both=3)
    assert mcnemar(torch.from_numpy(a), torch.from_numpy(b)) == mcnemar(a, b)
    with pytest.raises(MeasureInputError, match="unknown McNemar method"):
        mcnemar(a, b, method="chi2")  # type: ignore[arg-type]
    with pytest.raises(MeasureInputError, match="instances"):
        mcnemar(a, b[:-1])
    with pytest.raises(MeasureInputError, match="0/1"):
        paired_bootstrap(np.array([0, 1, 2]), np.array([0, 1, 1]))
    with pytest.raises(MeasureInputError, match="n_resamples"):
        paired_bootstrap(a, b, n_resamples=0)
