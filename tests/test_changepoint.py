"""Change detectors (EWMA chart, one-sided CUSUM): statistics against direct computations, the
streaming detector against the array forms, false alarms on stationary counts, delay on bursts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyculture.errors import MeasureInputError
from polyculture.measure.changepoint import (
    ChangeDetector,
    DetectorSettings,
    cusum_statistics,
    ewma_statistics,
)


def transformed(events: np.ndarray, volumes: np.ndarray) -> np.ndarray:
    return np.arcsin(np.sqrt((events + 3 / 8) / (volumes + 3 / 4)))


def ewma_direct(events, volumes, baseline_events, baseline_volume, lam):
    """The EWMA written as explicit weighted sums (no recursion)."""
    share = baseline_events / baseline_volume
    d = transformed(events, volumes) - transformed(share * volumes, volumes)  # centre per volume
    out = []
    for t in range(len(d)):
        weights = np.array([lam * (1 - lam) ** (t - i) for i in range(t + 1)])
        value = float(weights @ d[: t + 1])
        variance = float(np.sum(weights**2 / (4 * volumes[: t + 1])))
        variance += float(weights.sum()) ** 2 / (4 * baseline_volume)
        out.append(value / math.sqrt(variance))
    return np.array(out)


def cusum_direct(events, volumes, baseline, slack):
    """Page's CUSUM as the cumulative sum minus its running minimum (no max(0, .) recursion)."""
    centre = transformed(baseline * volumes, volumes)  # the baseline share at each volume
    z = (transformed(events, volumes) - centre) * np.sqrt(4 * volumes)
    walk = np.concatenate([[0.0], np.cumsum(z - slack)])
    return walk[1:] - np.minimum.accumulate(walk)[1:]


counts = st.lists(st.tuples(st.integers(1, 60), st.floats(0, 1)), min_size=1, max_size=30).map(
    lambda rows: (np.array([round(f * n) for n, f in rows]), np.array([n for n, _ in rows]))
)


def test_a_window_exactly_at_the_baseline_does_not_move_the_statistic() -> None:
    # Small volumes: the transform's 3/8 offset must not read as a rise (baseline 0 included).
    for baseline in (0.0, 0.1):
        events, volumes = np.full(48, round(baseline * 10)), np.full(48, 10)
        assert np.allclose(ewma_statistics(events, volumes, baseline), 0.0)
        assert np.allclose(cusum_statistics(events, volumes, baseline, slack=0.0), 0.0)


@settings(max_examples=40, deadline=None)
@given(counts, st.floats(0.05, 1.0), st.integers(1, 30), st.integers(20, 400))
def test_ewma_equals_weighted_sums(data, lam, base_events, base_volume) -> None:
    events, volumes = data
    base_events = min(base_events, base_volume)
    got = ewma_statistics(events, volumes, (base_events, base_volume), lam)
    want = ewma_direct(events, volumes, base_events, base_volume, lam)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(counts, st.floats(0.01, 0.99), st.floats(0, 2))
def test_cusum_equals_walk_minus_running_minimum(data, baseline, slack) -> None:
    events, volumes = data
    got = cusum_statistics(events, volumes, baseline, slack)
    np.testing.assert_allclose(got, cusum_direct(events, volumes, baseline, slack), atol=1e-9)


@pytest.mark.parametrize("method", ["ewma", "cusum"])
def test_streaming_detector_equals_array_forms(method: str) -> None:
    rng = np.random.default_rng(0)
    volumes = rng.poisson(20, 60)
    volumes[[15, 30]] = 2  # below min_volume: skipped
    events = rng.binomial(volumes, 0.2)
    settings_ = DetectorSettings(method=method, warmup=10, min_volume=5, limit=1e9)
    detector = ChangeDetector(settings_)
    steps = [detector.update(int(e), int(n)) for e, n in zip(events, volumes, strict=True)]
    statuses = [s.status for s in steps]
    assert statuses[:10] == ["warmup"] * 10 and statuses[15] == statuses[30] == "low_volume"
    monitored = [i for i, s in enumerate(statuses) if s == "monitored"]
    assert len(monitored) == 48
    warm = np.arange(10)
    baseline = (int(events[warm].sum()), int(volumes[warm].sum()))
    assert detector.baseline == pytest.approx(baseline[0] / baseline[1])
    if method == "ewma":
        want = ewma_statistics(events[monitored], volumes[monitored], baseline)
    else:
        want = cusum_statistics(events[monitored], volumes[monitored], baseline)
    got = np.array([steps[i].statistic for i in monitored])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert math.isnan(steps[0].statistic)


def stationary_alerts(method: str, seed: int) -> int:
    """Alerts on 4 topics x 3 days of hourly windows, ~15 texts each, share 0.2 throughout."""
    rng = np.random.default_rng(seed)
    alerts = 0
    for _ in range(4):
        detector = ChangeDetector(DetectorSettings(method=method))
        volumes = rng.poisson(15, 72)
        for n, e in zip(volumes, rng.binomial(volumes, 0.2), strict=True):
            alerts += detector.update(int(e), int(n)).alert
    return alerts


@pytest.mark.parametrize("method", ["ewma", "cusum"])
def test_no_alert_on_stationary_counts_in_19_of_20_seeds(method: str) -> None:
    quiet = sum(stationary_alerts(method, seed) == 0 for seed in range(20))
    assert quiet >= 19, f"{method}: only {quiet} of 20 stationary streams raised no alert"


@pytest.mark.parametrize("method", ["ewma", "cusum"])
def test_alert_within_two_windows_of_a_planted_burst(method: str) -> None:
    delays = []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        detector = ChangeDetector(DetectorSettings(method=method))
        volumes = rng.poisson(20, 40)
        shares = np.where(np.arange(40) >= 30, 0.7, 0.15)  # burst from window 30 on
        first = None
        for t, (n, e) in enumerate(zip(volumes, rng.binomial(volumes, shares), strict=True)):
            if detector.update(int(e), int(n)).alert and first is None:
                first = t
        assert first is not None and first >= 30, (seed, first)
        delays.append(first - 30)
    assert max(delays) <= 2, delays  # the configured delay: at most two windows after onset


def test_cooldown_then_restart() -> None:
    detector = ChangeDetector(DetectorSettings(baseline=0.1, cooldown=2))
    steps = [detector.update(e, 20) for e in (2, 18, 18, 18, 2, 18)]
    statuses = ["monitored", "monitored", "cooldown", "cooldown", "monitored", "monitored"]
    assert [s.status for s in steps] == statuses
    assert [s.alert for s in steps] == [False, True, False, False, False, True]


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "shewhart"},
        {"limit": -1.0},
        {"smoothing": 0.0},
        {"warmup": 0},
        {"baseline": 1.5},
        {"min_volume": 0},
    ],
)
def test_bad_settings_raise_one_clear_error(bad: dict) -> None:
    with pytest.raises(MeasureInputError, match="bad detector settings"):
        DetectorSettings(**bad)


def test_bad_counts_raise() -> None:
    with pytest.raises(MeasureInputError, match="volume > 0"):
        ewma_statistics(np.array([1, 0]), np.array([5, 0]), 0.2)
    with pytest.raises(MeasureInputError, match="NaN"):
        cusum_statistics(np.array([1.0, np.nan]), np.array([5, 5]), 0.2)
    with pytest.raises(MeasureInputError, match="not in"):
        ewma_statistics(np.array([1]), np.array([5]), float("nan"))
