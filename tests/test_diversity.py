"""Kuncheva & Whitaker diversity measures: published fixture, identities, loops, edge cases."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from polyculture.errors import MeasureInputError
from polyculture.measure.diversity import (
    DegenerateMeasureWarning,
    coincident_failure_diversity,
    correlation,
    difficulty,
    disagreement_measure,
    diversity_report,
    double_fault,
    entropy_measure,
    generalized_diversity,
    interrater_agreement,
    kohavi_wolpert_variance,
    q_statistic,
)

# The 15 x 10 oracle matrix (rows = instances, columns = classifiers, 1 = right) used in the
# diversity tests of the open-source ensemble libraries "brew" and "scikit-ensemble"
# (tests/.../test_diversity*.py, citing Kuncheva & Whitaker 2003), where KW = 0.22 and E = 0.72.
ORACLE = np.array(
    [
        [1, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        [0, 1, 0, 0, 1, 0, 1, 0, 0, 0],
        [1, 0, 1, 1, 0, 1, 0, 1, 1, 0],
        [1, 0, 0, 1, 1, 1, 0, 0, 1, 1],
        [1, 1, 0, 1, 1, 1, 0, 0, 0, 1],
        [1, 1, 1, 1, 0, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 0, 1, 0, 1, 1],
        [0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
        [0, 0, 1, 0, 0, 1, 1, 0, 0, 1],
        [0, 1, 0, 0, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0, 0, 1, 1],
        [1, 0, 1, 1, 0, 0, 0, 0, 0, 1],
        [0, 1, 0, 1, 1, 0, 0, 1, 1, 0],
        [1, 0, 1, 1, 1, 1, 1, 0, 1, 0],
        [1, 1, 1, 1, 0, 0, 1, 0, 0, 1],
    ]
)


def test_published_fixture() -> None:
    # Published: KW = 0.22, E = 0.72 (4 decimals). Hand check from the row sums
    # l = [2, 3, 6, 6, 6, 5, 5, 2, 4, 2, 3, 4, 5, 7, 6] (N = 15, L = 10):
    #   E  = sum min(l, 10 - l) / (10 - 5) / 15 = 54 / 5 / 15 = 0.72
    #   KW = sum l (10 - l) / (15 * 100) = 330 / 1500 = 0.22
    assert entropy_measure(ORACLE) == pytest.approx(0.72, abs=1e-12)
    assert kohavi_wolpert_variance(ORACLE) == pytest.approx(0.22, abs=1e-12)
    # Further values by hand from the same row sums (failures i = 10 - l, sum i = 84):
    #   D_av  = KW * 2L / (L - 1) = 0.22 * 20 / 9
    #   kappa = 1 - (330 / 10) / (15 * 9 * 0.44 * 0.56), mean accuracy 66 / 150 = 0.44
    #   theta = var(l / 10) = mean(l^2) / 100 - 0.44^2 = (330 / 15) / 100 - 0.1936
    #   p(1) = 84 / 150; p(2) = sum i (i - 1) / (15 * 90) = 426 / 1350; GD = 1 - p(2) / p(1)
    #   DF_av = p(2) (each instance with i failures holds C(i, 2) of the C(L, 2) pairs)
    #   CFD = sum_u (10 - i_u) / 9 / 15 = 66 / 135 (no instance has 0 failures)
    assert disagreement_measure(ORACLE) == pytest.approx(0.22 * 20 / 9)
    assert interrater_agreement(ORACLE) == pytest.approx(1 - 33 / (15 * 9 * 0.44 * 0.56))
    assert difficulty(ORACLE) == pytest.approx(330 / 1500 - 0.44**2)
    assert generalized_diversity(ORACLE) == pytest.approx(1 - (426 / 1350) / (84 / 150))
    assert double_fault(ORACLE) == pytest.approx(426 / 1350)
    assert coincident_failure_diversity(ORACLE) == pytest.approx(66 / 135)


# ---------------------------------------------------------------------------- naive loops


def loop_pairwise(correct: np.ndarray, kind: str) -> float:
    n, L = correct.shape
    values = []
    for i in range(L):
        for k in range(i + 1, L):
            n11 = n10 = n01 = n00 = 0
            for u in range(n):
                a, b = correct[u, i], correct[u, k]
                n11 += a and b
                n10 += a and not b
                n01 += b and not a
                n00 += not a and not b
            if kind == "q":
                den = n11 * n00 + n01 * n10
                values.append((n11 * n00 - n01 * n10) / den if den else math.nan)
            elif kind == "rho":
                den = math.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
                values.append((n11 * n00 - n01 * n10) / den if den else math.nan)
            elif kind == "d":
                values.append((n01 + n10) / n)
            else:
                values.append(n00 / n)
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def loop_nonpairwise(correct: np.ndarray) -> dict[str, float]:
    n, L = correct.shape
    right = [int(sum(correct[u])) for u in range(n)]
    p_bar = sum(right) / (n * L)
    failures = [L - r for r in right]
    p = [sum(1 for f in failures if f == i) / n for i in range(L + 1)]
    p1 = sum(i / L * p[i] for i in range(1, L + 1))
    p2 = sum(i * (i - 1) / (L * (L - 1)) * p[i] for i in range(1, L + 1))
    x = [r / L for r in right]
    mean_x = sum(x) / n
    spread = sum(r * (L - r) for r in right)
    return {
        "entropy": sum(min(r, L - r) / (L - math.ceil(L / 2)) for r in right) / n,
        "kohavi_wolpert": spread / (n * L**2),
        "interrater_kappa": (
            1 - spread / L / (n * (L - 1) * p_bar * (1 - p_bar)) if 0 < p_bar < 1 else math.nan
        ),
        "difficulty": sum((v - mean_x) ** 2 for v in x) / n,
        "generalized_diversity": 1 - p2 / p1 if p1 > 0 else math.nan,
        "coincident_failure_diversity": (
            sum((L - i) / (L - 1) * p[i] for i in range(1, L + 1)) / (1 - p[0]) if p[0] < 1 else 0.0
        ),
    }


@pytest.mark.parametrize("seed", range(6))
def test_every_measure_matches_a_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, L = int(rng.integers(5, 40)), int(rng.integers(2, 8))
    correct = rng.random((n, L)) < rng.uniform(0.2, 0.9, L)
    if seed == 5:
        correct[:, 0] = True  # an always-right member: its Q and rho pairs are skipped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateMeasureWarning)
        report = diversity_report(correct)
    expected = loop_nonpairwise(correct) | {
        "q_statistic": loop_pairwise(correct, "q"),
        "correlation": loop_pairwise(correct, "rho"),
        "disagreement": loop_pairwise(correct, "d"),
        "double_fault": loop_pairwise(correct, "df"),
    }
    assert set(report) == set(expected)
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.integers(2, 7).flatmap(lambda L: arrays(np.bool_, (n, L)))
    )
)
def test_kw_is_scaled_average_disagreement(correct: np.ndarray) -> None:
    L = correct.shape[1]
    assert kohavi_wolpert_variance(correct) == pytest.approx(
        (L - 1) / (2 * L) * disagreement_measure(correct), abs=1e-12
    )


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.integers(1, 5).flatmap(lambda L: arrays(np.bool_, (n, L)))
    )
)
def test_never_raises_and_values_are_in_range(correct: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateMeasureWarning)
        report = diversity_report(correct)
    for key, value in report.items():
        assert isinstance(value, float), key
        if correct.shape[1] < 2:
            assert math.isnan(value), key
        elif not math.isnan(value) and key not in ("q_statistic", "correlation"):
            low = -1.0 if key == "interrater_kappa" else 0.0
            assert low - 1e-12 <= value <= 1 + 1e-12, key


# ---------------------------------------------------------------------------- degenerate inputs


def measures_warning(correct: np.ndarray) -> tuple[dict[str, float], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = diversity_report(correct)
    return report, [str(w.message) for w in caught if w.category is DegenerateMeasureWarning]


def test_identical_perfect_members() -> None:
    report, reasons = measures_warning(np.ones((20, 4), dtype=bool))
    for key in ("q_statistic", "correlation", "interrater_kappa", "generalized_diversity"):
        assert math.isnan(report[key]), key
    for key in ("disagreement", "double_fault", "entropy", "kohavi_wolpert", "difficulty"):
        assert report[key] == 0.0, key
    assert report["coincident_failure_diversity"] == 0.0  # defined as 0 when nothing fails
    assert any("always right" in r for r in reasons)
    assert any("no member ever fails" in r for r in reasons)
    assert len(reasons) == 4


def test_member_always_wrong_is_skipped_in_pair_averages() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random((50, 3)) < 0.6
    correct[:, 2] = False
    with pytest.warns(DegenerateMeasureWarning, match="averaged over 1 of 3 pairs"):
        q = q_statistic(correct)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateMeasureWarning)
        assert q == pytest.approx(q_statistic(correct[:, :2]))
        assert correlation(correct) == pytest.approx(correlation(correct[:, :2]))


@pytest.mark.parametrize(
    "measure",
    [
        q_statistic,
        correlation,
        disagreement_measure,
        double_fault,
        entropy_measure,
        kohavi_wolpert_variance,
        interrater_agreement,
        difficulty,
        generalized_diversity,
        coincident_failure_diversity,
    ],
)
def test_single_member_is_nan_with_reason(measure: Callable[[np.ndarray], float]) -> None:
    with pytest.warns(DegenerateMeasureWarning, match="at least two members"):
        assert math.isnan(measure(np.array([[1], [0], [1]])))


def test_torch_input_and_bad_inputs() -> None:
    assert diversity_report(torch.from_numpy(ORACLE)) == diversity_report(ORACLE)
    with pytest.raises(MeasureInputError, match="0/1"):
        kohavi_wolpert_variance(np.array([[1, 2], [0, 1]]))
    with pytest.raises(MeasureInputError, match="2-D"):
        diversity_report(np.ones(5))
