"""Input drift: PSI against a direct computation, KS through scipy, Holm, the drift flag."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

from polyculture.errors import MeasureInputError
from polyculture.measure.drift import (
    feature_drift,
    holm,
    population_stability_index,
    principal_components,
)


def _psi_reference(reference: np.ndarray, current: np.ndarray, bins: int) -> float:
    """Direct loop: decile bins of the reference, shares floored at 1e-4."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    total = 0.0
    bounds = [-np.inf, *edges, np.inf]
    for low, high in itertools.pairwise(bounds):
        r = max(np.mean((reference >= low) & (reference < high)), 1e-4)
        c = max(np.mean((current >= low) & (current < high)), 1e-4)
        total += (c - r) * np.log(c / r)
    return total


def test_psi_equals_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=3000)
    for current in (rng.normal(size=2000), rng.normal(0.5, 1.5, size=2000)):
        assert population_stability_index(reference, current) == pytest.approx(
            _psi_reference(reference, current, 10)
        )


def test_psi_of_a_binary_feature_uses_one_bin_per_value() -> None:
    reference = np.r_[np.zeros(800), np.ones(200)]  # 20% ones
    current = np.r_[np.zeros(500), np.ones(500)]  # 50% ones
    expected = (0.5 - 0.8) * np.log(0.5 / 0.8) + (0.5 - 0.2) * np.log(0.5 / 0.2)
    assert population_stability_index(reference, current) == pytest.approx(expected)


def test_psi_counts_a_category_the_reference_never_had() -> None:
    reference = np.r_[np.zeros(500), np.ones(500)]
    current = np.r_[np.zeros(500), np.full(500, 4.0)]  # half the rows in a new category
    # bins 0, 1, new: shares 0.5/0.5/0 against 0.5/0/0.5, zero shares floored at 1e-4
    expected = 2 * (0.5 - 1e-4) * np.log(0.5 / 1e-4)
    assert population_stability_index(reference, current) == pytest.approx(expected)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_psi_is_non_negative_and_zero_for_identical_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=200)
    assert population_stability_index(x, x) == pytest.approx(0.0, abs=1e-12)
    assert population_stability_index(x, rng.normal(size=150)) >= 0.0


def test_holm_equals_the_step_down_definition() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(12) ** 3
    order = np.argsort(p)
    expected = np.empty(12)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (12 - rank) * p[index]))
        expected[index] = running
    np.testing.assert_allclose(holm(p), expected)


def test_feature_drift_flags_the_shifted_feature_only() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(3000, 3))
    current = rng.normal(size=(2000, 3))
    current[:, 1] += 0.8
    table = feature_drift(reference, current, ["a", "b", "c"])
    assert table["drifted"].tolist() == [False, True, False]
    expected = ks_2samp(reference[:, 1], current[:, 1])
    assert table.loc[1, "ks_statistic"] == pytest.approx(expected.statistic)
    assert table.loc[1, "ks_p"] == pytest.approx(expected.pvalue)


def test_no_drift_on_fresh_samples_of_one_distribution() -> None:
    flagged = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        table = feature_drift(rng.normal(size=(2000, 5)), rng.normal(size=(1000, 5)))
        flagged += int(table["drifted"].any())
    assert flagged <= 1


def test_principal_components_keep_the_main_direction() -> None:
    rng = np.random.default_rng(3)
    reference = np.outer(rng.normal(size=500), [3.0, 4.0]) + 0.01 * rng.normal(size=(500, 2))
    projected, _ = principal_components(reference, reference[:10], k=1)
    assert abs(np.corrcoef(projected[:, 0], reference[:, 0])[0, 1]) > 0.99


def test_bad_drift_input_is_a_clear_error() -> None:
    with pytest.raises(MeasureInputError, match="3 features but current has 2"):
        feature_drift(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(MeasureInputError, match="finite"):
        population_stability_index(np.array([1.0, np.nan]), np.array([1.0]))
