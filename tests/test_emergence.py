"""Emergence measures: curve fits recover planted parameters, breaks are found only where they are,
and the metric-swap test tells a metric artifact (Schaeffer et al. 2023) from a real jump."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyculture.errors import MeasureInputError
from polyculture.measure import (
    break_with_ci,
    curve_shape,
    delayed_generalization,
    emergence_score,
    extrapolation_error,
    fit_broken_power_law,
    fit_curve,
    fit_power_law,
    fit_sigmoid,
    metric_swap_verdict,
)

SCALES = np.geomspace(1e6, 1e10, 20)  # e.g. parameter counts of a model-size sweep


def broken_power_law(
    x: np.ndarray, a: float, b: float, c0: float, c1: float, d1: float, f1: float
) -> np.ndarray:
    """Caballero et al.'s one-break form, written out independently of the module."""
    return a + b * x ** (-c0) * (1 + (x / d1) ** (1 / f1)) ** (-c1 * f1)


def logistic_in_log(x: np.ndarray, lo: float, hi: float, k: float, m: float) -> np.ndarray:
    return lo + (hi - lo) / (1 + np.exp(-k * (np.log(x) - np.log(m))))


def token_metrics(
    per_token: np.ndarray, length: int, n_examples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Exact match over ``length`` tokens (~ p**L) and per-token accuracy (~ p), with the binomial
    noise of scoring ``n_examples`` examples."""
    exact_match = rng.binomial(n_examples, per_token**length) / n_examples
    token_accuracy = rng.binomial(n_examples * length, per_token) / (n_examples * length)
    return exact_match, token_accuracy


# --------------------------------------------------------------------------------------------
# Fits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "planted",
    [
        dict(a=1.0, b=-0.9, c0=0.0, c1=0.8, d1=2e7, f1=0.1),  # emergent, early knee
        dict(a=1.0, b=-0.9, c0=0.0, c1=0.8, d1=1e8, f1=0.1),  # emergent, mid-range knee
        dict(a=1.0, b=-0.5, c0=-0.05, c1=0.6, d1=3e8, f1=0.1),  # slow rise, then fast
        dict(a=2.0, b=1.0, c0=0.02, c1=0.5, d1=1e8, f1=0.1),  # loss that starts to fall
    ],
    ids=["early", "mid", "tilted", "loss"],
)
@pytest.mark.parametrize("seed", range(4))
def test_broken_power_law_recovers_a_planted_break(planted: dict[str, float], seed: int) -> None:
    truth = broken_power_law(SCALES, **planted)
    rng = np.random.default_rng(seed)
    y = truth + rng.normal(0, 0.01 * np.ptp(truth), len(SCALES))  # 1% noise
    fit = fit_broken_power_law(SCALES, y)
    assert fit.family == "broken_power_law"
    assert abs(fit.params["d1"] / planted["d1"] - 1) < 0.10
    assert np.abs(fit.predict(SCALES) - truth).max() < 0.05 * np.ptp(truth)


def test_broken_power_law_is_exact_on_noiseless_data() -> None:
    planted = dict(a=0.3, b=2.0, c0=0.1, c1=0.7, d1=5e7, f1=0.3)
    fit = fit_broken_power_law(SCALES, broken_power_law(SCALES, **planted))
    assert fit.params["d1"] == pytest.approx(planted["d1"], rel=1e-3)
    assert fit.params["f1"] == pytest.approx(planted["f1"], rel=1e-3)
    x_new = np.array([3e6, 7e9])
    assert fit.predict(x_new) == pytest.approx(broken_power_law(x_new, **planted), rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("k", "midpoint"), [(2.0, 1e8), (4.0, 3e7)])
def test_sigmoid_recovers_a_planted_midpoint(seed: int, k: float, midpoint: float) -> None:
    x = np.geomspace(1e6, 1e10, 14)
    rng = np.random.default_rng(seed)
    y = logistic_in_log(x, 0.25, 0.95, k, midpoint) + rng.normal(0, 0.02, len(x))
    fit = fit_sigmoid(x, y)
    assert abs(fit.params["m"] / midpoint - 1) < 0.10
    assert fit.params["k"] == pytest.approx(k, rel=0.3)
    assert fit.params["lo"] == pytest.approx(0.25, abs=0.05)
    assert fit.params["hi"] == pytest.approx(0.95, abs=0.05)


def test_falling_sigmoid_has_hi_below_lo() -> None:
    x = np.geomspace(10, 1e5, 10)
    fit = fit_sigmoid(x, logistic_in_log(x, 2.0, 0.5, 3.0, 1e3))
    assert fit.params["hi"] == pytest.approx(0.5, abs=1e-6)
    assert fit.params["lo"] == pytest.approx(2.0, abs=1e-6)
    assert fit.params["m"] == pytest.approx(1e3, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    a=st.floats(-2, 2),
    b=st.floats(0.1, 5) | st.floats(-5, -0.1),
    c=st.floats(-1.5, -0.05) | st.floats(0.05, 0.5),
)
def test_power_law_is_exact_on_exact_power_laws(a: float, b: float, c: float) -> None:
    x = np.geomspace(1e2, 1e8, 8)
    y = a + b * (x / 1e2) ** c  # rising or falling, saturating or accelerating
    fit = fit_power_law(x, y)
    x_new = np.geomspace(1e2, 1e9, 5)
    expected = a + b * (x_new / 1e2) ** c
    assert fit.predict(x_new) == pytest.approx(expected, rel=1e-5, abs=1e-6 * abs(b))
    assert fit.params["c"] == pytest.approx(c, rel=1e-4)
    assert fit.r2 == pytest.approx(1.0)


def test_fits_report_comparable_information_criteria() -> None:
    x = np.geomspace(1e6, 1e10, 12)
    rng = np.random.default_rng(0)
    y = logistic_in_log(x, 0.0, 1.0, 3.0, 1e8) + rng.normal(0, 0.01, len(x))
    power, sigmoid = fit_power_law(x, y), fit_sigmoid(x, y)
    assert sigmoid.bic < power.bic - 10  # the true family wins clearly
    for fit in (power, sigmoid):
        n, k = fit.n_points, fit.n_params + 1  # + noise variance
        assert fit.aic == pytest.approx(n * math.log(fit.rss / n) + 2 * k)
        assert fit.bic == pytest.approx(n * math.log(fit.rss / n) + k * math.log(n))
        assert fit.rss == pytest.approx(((fit.predict(x) - y) ** 2).sum())
    assert fit_curve(x, y, "sigmoid").params == pytest.approx(sigmoid.params)


def test_fits_accept_seeds_as_repeated_scales_and_torch_tensors() -> None:
    x = np.geomspace(1e3, 1e7, 6)
    y = 1 - x**-0.25
    repeated = fit_power_law(np.repeat(x, 3), np.repeat(y, 3))
    single = fit_power_law(torch.tensor(x), torch.tensor(y))
    assert repeated.n_points == 18 and single.n_points == 6
    assert repeated.params == pytest.approx(single.params, rel=1e-6)


# --------------------------------------------------------------------------------------------
# Breaks with bootstrap CIs
# --------------------------------------------------------------------------------------------


# Seeds 0-2 plus, per exponent, the seeds (of 80) where BIC alone would call a break.
@pytest.mark.parametrize(
    ("exponent", "seed"),
    [(e, s) for e in (-0.3, -1.0, 0.2) for s in range(3)]
    + [(-0.3, 10), (-0.3, 72), (-1.0, 47), (0.2, 35), (0.2, 66)],
)
def test_smooth_power_law_has_no_break(seed: int, exponent: float) -> None:
    x = np.geomspace(1e6, 1e10, 12)
    truth = 0.5 + 0.4 * (x / 1e6) ** exponent
    rng = np.random.default_rng(seed)
    y = truth + rng.normal(0, 0.01 * np.ptp(truth), len(x))
    estimate = break_with_ci(x, y, n_boot=10, seed=seed)
    assert not estimate.has_break, (estimate.delta_bic, estimate.p_value)
    assert estimate.break_support < 0.5
    assert curve_shape(x, y).label == "smooth"


def test_break_ci_covers_a_planted_emergent_break() -> None:
    planted = dict(a=1.0, b=-0.9, c0=0.0, c1=0.8, d1=1e8, f1=0.1)
    rng = np.random.default_rng(1)
    truth = broken_power_law(SCALES, **planted)
    y = truth + rng.normal(0, 0.02, len(SCALES))
    estimate = break_with_ci(SCALES, y, n_boot=60, seed=0)
    assert estimate.has_break and estimate.resample == "residuals"
    assert estimate.delta_bic > 10 and estimate.p_value < 0.001
    low, high = estimate.break_location_ci
    assert low < planted["d1"] < high
    assert low <= estimate.break_location <= high
    assert high / low < 2  # a sharp knee is well located
    assert estimate.sharpness_ci[0] <= estimate.sharpness <= estimate.sharpness_ci[1]
    assert estimate.break_support > 0.9 and estimate.n_valid == 60
    again = break_with_ci(SCALES, y, n_boot=60, seed=0)
    assert again.break_location_ci == estimate.break_location_ci  # seeded


def test_break_ci_resamples_seeds_within_each_scale() -> None:
    x = np.geomspace(1e6, 1e10, 10)
    truth = logistic_in_log(x, 0.0, 1.0, 3.0, 1e8)
    rng = np.random.default_rng(0)
    n_seeds = 4
    y = np.repeat(truth, n_seeds) + rng.normal(0, 0.03, len(x) * n_seeds)
    xs = np.repeat(x, n_seeds)
    within = break_with_ci(xs, y, n_boot=40)
    assert within.resample == "seeds" and within.has_break
    assert within.break_location_ci[0] < within.break_location < within.break_location_ci[1]
    seeds = np.tile(np.arange(n_seeds), len(x))
    whole = break_with_ci(xs, y, groups=seeds, n_boot=40)
    assert whole.resample == "groups" and whole.break_location == within.break_location
    points = break_with_ci(xs, y, n_boot=20, resample="points")
    assert points.resample == "points" and 0 < points.n_valid <= 20


def test_break_needs_more_points_than_parameters_to_be_declared() -> None:
    x = np.geomspace(1e6, 1e10, 6)
    y = logistic_in_log(x, 0.0, 1.0, 4.0, 1e8)
    estimate = break_with_ci(x, y, n_boot=5)
    assert math.isnan(estimate.p_value) and not estimate.has_break


# --------------------------------------------------------------------------------------------
# Emergence score
# --------------------------------------------------------------------------------------------


def test_emergence_score_matches_the_big_bench_formula() -> None:
    x = np.array([1e3, 1e4, 1e5, 1e6, 1e7, 1e3, 1e4, 1e5, 1e6, 1e7])  # two seeds
    y = np.array([0.0, 0.1, 0.2, 0.7, 0.8, 0.2, 0.1, 0.2, 0.9, 1.0])
    means = np.array([0.1, 0.1, 0.2, 0.8, 0.9])  # per scale, by hand
    steps = np.diff(means)  # 0, 0.1, 0.6, 0.1 -> median of squares 0.01
    expected = (0.9 - 0.1) / math.sqrt(np.median(steps**2))
    score = emergence_score(x[::-1], y[::-1])  # order does not matter
    assert score.breakthroughness == pytest.approx(expected)  # 8.0
    assert score.breakthroughness_per_step == pytest.approx(expected / 4)
    assert score.total_improvement == pytest.approx(0.8)
    u = np.log10(x[:5])
    r = np.corrcoef(u, means)[0, 1]
    assert score.linearity == pytest.approx(r**2)
    assert score.n_scales == 5


def test_emergence_score_signs_and_limits() -> None:
    x = 10.0 ** np.arange(5)
    assert emergence_score(x, [0.3] * 5).breakthroughness == 0.0
    assert emergence_score(x, [0.0, 0.0, 0.0, 1.0, 1.0]).breakthroughness == math.inf
    falling = emergence_score(x, [1.0, 0.9, 0.8, 0.7, 0.6])
    assert falling.breakthroughness == pytest.approx(-4.0)
    assert falling.linearity == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# Metric swap (Schaeffer et al. 2023)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_exact_match_jump_of_a_smooth_per_token_curve_is_an_artifact(seed: int) -> None:
    x = np.geomspace(1e7, 1e11, 12)
    c = 1e7 * -math.log(0.7)  # per-token accuracy 0.7 at the smallest model
    per_token = np.exp(-((x / c) ** -1.0))  # cross-entropy falls as a power law in N
    exact_match, token_accuracy = token_metrics(per_token, 30, 200, np.random.default_rng(seed))
    out = metric_swap_verdict(x, exact_match, token_accuracy, n_boot=0)
    assert out.verdict == "artifact", (out.discontinuous.reason, out.continuous.reason)
    assert out.text == (
        "jumps under exact_match, smooth under per_token_accuracy -> likely a metric artifact"
    )
    assert out.discontinuous.label == "jump" and out.continuous.label == "smooth"
    assert out.discontinuous.delta_bic > out.continuous.delta_bic


@pytest.mark.parametrize("seed", range(5))
def test_sharp_per_token_transition_survives_the_metric_swap(seed: int) -> None:
    x = np.geomspace(1e7, 1e11, 12)
    per_token = logistic_in_log(x, 0.02, 0.98, 4.0, 3e9)  # the skill itself switches on
    exact_match, token_accuracy = token_metrics(per_token, 5, 200, np.random.default_rng(seed))
    out = metric_swap_verdict(x, exact_match, token_accuracy, names=("em", "tok"), n_boot=0)
    assert out.verdict == "survives", (out.discontinuous.reason, out.continuous.reason)
    assert out.text == "jumps under both em and tok -> survives the metric swap"
    midpoint = out.continuous.transition_location
    assert abs(math.log(midpoint / 3e9)) < 0.5  # steepest near the planted midpoint


def test_metric_swap_reports_break_cis_as_evidence() -> None:
    x = np.geomspace(1e7, 1e11, 12)
    per_token = np.exp(-((x / (1e7 * -math.log(0.7))) ** -1.0))
    exact_match, token_accuracy = token_metrics(per_token, 30, 200, np.random.default_rng(0))
    out = metric_swap_verdict(x, exact_match, token_accuracy, n_boot=20)
    assert out.verdict == "artifact"
    assert out.discontinuous_break is not None and out.continuous_break is not None
    assert out.discontinuous_break.has_break
    low, high = out.discontinuous_break.break_location_ci
    assert x[0] <= low <= high <= x[-1]


def test_metric_swap_smooth_and_inconclusive() -> None:
    x = np.geomspace(1e6, 1e10, 10)
    smooth = 0.9 - 0.5 * (x / 1e6) ** -0.3
    jump = logistic_in_log(x, 0.0, 0.9, 5.0, 1e8)
    assert metric_swap_verdict(x, smooth**2, smooth, n_boot=0).verdict == "smooth"
    out = metric_swap_verdict(x, smooth, jump, n_boot=0)
    assert out.verdict == "inconclusive"
    assert out.text == "smooth under exact_match, jumps under per_token_accuracy -> inconclusive"


def test_curve_shape_needs_a_flat_start_and_a_narrow_transition() -> None:
    x = np.geomspace(1e6, 1e10, 12)
    wide = curve_shape(x, logistic_in_log(x, 0.0, 1.0, 0.6, 1e8))  # spans the whole sweep
    assert wide.label == "smooth" and wide.transition_width > 0.35
    narrow = curve_shape(x, logistic_in_log(x, 0.0, 1.0, 6.0, 3e7))
    assert narrow.label == "jump" and narrow.starts_flat and narrow.transition_width < 0.1
    assert narrow.transition_location == pytest.approx(3e7, rel=0.05)


# --------------------------------------------------------------------------------------------
# Extrapolation and delayed generalization
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("holdout", [1, 3])
def test_extrapolation_error_is_zero_on_an_exact_power_law(holdout: int) -> None:
    x = np.geomspace(1e6, 1e11, 11)
    y = 1.7 + 40 * x**-0.2
    out = extrapolation_error(x, y, "power_law", holdout=holdout)
    assert out.x.tolist() == x[-holdout:].tolist()
    assert out.observed == pytest.approx(y[-holdout:])
    assert out.abs_error.max() < 1e-7 and out.rel_error.max() < 1e-7
    assert out.fit.n_points == len(x) - holdout


def test_extrapolation_error_measures_a_missed_jump() -> None:
    x = np.geomspace(1e6, 1e10, 9)
    y = np.where(x < 5e9, 0.1 + 0.01 * np.log10(x), 0.9)  # jumps at the largest scale
    out = extrapolation_error(np.repeat(x, 2), np.repeat(y, 2), "sigmoid")
    assert out.observed.tolist() == [0.9]
    assert out.abs_error[0] == pytest.approx(abs(out.predicted[0] - 0.9))
    assert out.abs_error[0] > 0.5
    assert out.rel_error[0] == pytest.approx(out.abs_error[0] / 0.9)


def test_delayed_generalization_on_planted_grokking_curves() -> None:
    steps = np.arange(0, 10_000, 100)
    train = 1 - np.exp(-steps / 300)  # fits the training set quickly
    test = 0.1 + 0.85 / (1 + np.exp(-(steps - 6000) / 200))  # generalizes much later
    out = delayed_generalization(steps, train, test, thresholds=(0.5, 0.9, 0.99))
    first = {c.threshold: c for c in out.crossings}
    # Independent reference: the smallest logged step at or above each threshold.
    assert first[0.5].train_step == steps[np.argmax(train >= 0.5)] == 300
    assert first[0.5].test_step == steps[np.argmax(test >= 0.5)]
    assert first[0.9].delay == first[0.9].test_step - first[0.9].train_step > 5000
    assert first[0.99].train_step is not None and first[0.99].test_step is None
    assert first[0.99].delay is None
    assert out.delay(0.5) == first[0.5].delay
    assert isinstance(first[0.5].train_step, int)


def test_delayed_generalization_for_losses_and_float_steps() -> None:
    epochs = np.array([0.5, 1.0, 1.5, 2.0])
    out = delayed_generalization(
        epochs,
        [2.0, 0.4, 0.1, 0.1],
        [2.0, 1.5, 0.9, 0.2],
        thresholds=[1.0, 0.3],
        higher_is_better=False,
    )
    assert [(c.train_step, c.test_step, c.delay) for c in out.crossings] == [
        (1.0, 1.5, 0.5),  # train loss <= 1.0 at epoch 1.0, test loss at 1.5
        (1.5, 2.0, 0.5),
    ]


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------

X6 = np.geomspace(1e3, 1e8, 6)
Y6 = np.linspace(0, 1, 6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fit_power_law([1.0, 10.0], [0.1, 0.2]), "needs at least 3 scale points, got 2"),
        (lambda: fit_sigmoid(X6[:3], Y6[:3]), "needs at least 4 scale points, got 3"),
        (lambda: fit_broken_power_law(X6[:5], Y6[:5]), "needs at least 6 scale points, got 5"),
        (
            lambda: fit_broken_power_law(np.repeat(X6[:5], 4), np.repeat(Y6[:5], 4)),
            "needs at least 6 scale points, got 5",
        ),
        (lambda: fit_power_law(X6, [0.1, np.nan, 0.3, 0.4, 0.5, 0.6]), "y holds NaN"),
        (lambda: fit_power_law([1.0, np.inf, 3.0, 4.0], Y6[:4]), "x holds NaN or infinite"),
        (lambda: fit_power_law([0.0, 1.0, 2.0, 3.0], Y6[:4]), "x must be a positive scale"),
        (lambda: fit_power_law([-1.0, 1.0, 2.0, 3.0], Y6[:4]), "found -1"),
        (lambda: fit_sigmoid(X6, Y6[:5]), "x has 6 points but y has 5"),
        (lambda: fit_power_law(X6.reshape(2, 3), Y6.reshape(2, 3)), "must be a 1-D vector"),
        (lambda: fit_power_law(X6, ["a"] * 6), "must be numeric"),
        (lambda: fit_curve(X6, Y6, "exponential"), "unknown curve family 'exponential'"),
        (lambda: fit_power_law(X6, Y6).predict([0.0]), "x must be a positive scale"),
        (lambda: emergence_score(X6[:2], Y6[:2]), "needs at least 3 scale points, got 2"),
        (lambda: break_with_ci(X6, Y6, n_boot=0), "n_resamples must be a positive integer"),
        (lambda: break_with_ci(X6, Y6, resample="jackknife"), "unknown resample scheme"),
        (lambda: break_with_ci(X6, Y6, resample="seeds"), "needs several y values"),
        (lambda: break_with_ci(X6, Y6, resample="groups"), "needs groups"),
        (lambda: break_with_ci(X6, Y6, groups=[0, 1]), "one label per point (6)"),
        (lambda: break_with_ci(X6, Y6, groups=[0] * 6), "single label"),
        (lambda: curve_shape(X6[:3], Y6[:3]), "needs at least 4 scale points, got 3"),
        (lambda: metric_swap_verdict(X6, Y6, Y6[:5]), "x has 6 points but continuous_metric"),
        (lambda: metric_swap_verdict(X6, Y6, Y6, names=("em", "em")), "two different"),
        (lambda: metric_swap_verdict(X6, Y6, Y6, n_boot=-1), "n_boot must be a non-negative"),
        (
            lambda: extrapolation_error(X6, Y6, "sigmoid", holdout=3),
            "needs at least 7 scale points, got 6",
        ),
        (lambda: extrapolation_error(X6, Y6, "power_law", holdout=0), "holdout must be"),
        (lambda: extrapolation_error(X6, Y6, "cubic"), "unknown curve family"),
        (lambda: delayed_generalization([0, 1, 1], Y6[:3], Y6[:3]), "strictly increasing"),
        (lambda: delayed_generalization([0, 1, 2], Y6[:3], Y6[:2]), "test_metric has 2"),
        (lambda: delayed_generalization([0, 1], [0.1, np.nan], [0.1, 0.2]), "train_metric holds"),
        (lambda: delayed_generalization([0, 1], [0.1, 0.2], [0.1, 0.2], [np.nan]), "thresholds"),
    ],
)
def test_bad_inputs_raise_measure_input_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(MeasureInputError) as info:
        call()
    assert message in str(info.value)


def test_too_few_points_error_says_how_to_fix_it() -> None:
    with pytest.raises(MeasureInputError) as info:
        fit_broken_power_law(X6[:5], Y6[:5])
    assert str(info.value) == (
        "a broken power-law fit needs at least 6 scale points, got 5; "
        "add more points to the sweep axis"
    )
    assert isinstance(info.value, ValueError)
