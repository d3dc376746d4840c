"""Change detectors for a rising share: an EWMA control chart and a one-sided CUSUM.

The monitored quantity is a count of "events" (negative texts) among a volume (all texts) per
time window, for example per topic and hour. Both detectors work on the variance-stabilized
share (Anscombe's arcsine transform), which is close to normal with variance ``1 / (4 n)`` even
for small volumes and shares near 0, so that the control limits mean the same thing at every
volume:

    u_t = arcsin(sqrt((x_t + 3/8) / (n_t + 3/4))),    d_t = u_t - u0_t

with ``u0_t = arcsin(sqrt((p_0 n_t + 3/8) / (n_t + 3/4)))`` the baseline share ``p_0``
transformed at the window's own volume (the 3/8 offset does not cancel at small volumes:
centring on ``arcsin(sqrt(p_0))`` would make a window exactly at the baseline look high). The
baseline is either given or estimated from a warm-up of ``N`` texts; its own uncertainty
``1 / (4 N)`` is part of every variance below (an estimated baseline that is a little low would
otherwise raise false alarms for ever after).

* **EWMA chart** (Roberts 1959; Lucas & Saccucci 1990): ``E_t = lam d_t + (1 - lam) E_{t-1}``
  with ``E_0 = 0``; its exact variance with varying volumes and an estimated baseline is
  ``V_t = sum_i w_i^2 / (4 n_i) + (sum_i w_i)^2 / (4 N)`` with ``w_i = lam (1 - lam)^(t-i)``.
  The statistic is ``E_t / sqrt(V_t)``; an alert when it exceeds ``limit`` (defaults
  ``lam = 0.3``, ``limit = 3.5``).
* **One-sided CUSUM** (Page 1954): ``z_t = d_t / sqrt(1 / (4 n_t) + 1 / (4 N))``,
  ``S_t = max(0, S_{t-1} + z_t - slack)``; an alert when ``S_t`` exceeds ``limit`` (defaults
  ``slack = 1``, tuned to bursts of two or more standard deviations, and ``limit = 4``; with the
  textbook ``slack = 0.5`` the shared baseline error, which makes consecutive ``z_t``
  correlated, raises too many false alarms after a short warm-up).

The defaults keep the false alarms of a day-long warm-up low (about 1% (EWMA) and 0.5% (CUSUM)
of streams of 4 topics x 72 hourly windows of ~15 texts raise one; see
``tests/test_changepoint.py`` and docs/monitor.md).

:func:`ewma_statistics` and :func:`cusum_statistics` are the plain array forms (every window
monitored, no reset); :class:`ChangeDetector` is the streaming form the monitor uses: warm-up,
minimum volume per window, a cooldown after an alert and then a restart at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from polyculture.errors import MeasureInputError

Method = Literal["ewma", "cusum"]
DEFAULT_LIMITS: dict[str, float] = {"ewma": 3.5, "cusum": 4.0}
"""Default alert limits per method (in-control false alarms: see docs/monitor.md)."""


def anscombe(events: np.ndarray | float, volume: np.ndarray | float) -> np.ndarray:
    """Anscombe's arcsine transform of a binomial share, variance about ``1 / (4 n)``.

    Examples
    --------
    >>> round(float(anscombe(5, 10)), 4)
    0.7854
    """
    events = np.asarray(events, dtype=np.float64)
    volume = np.asarray(volume, dtype=np.float64)
    return np.asarray(np.arcsin(np.sqrt((events + 0.375) / (volume + 0.75))))


def _baseline_point(baseline: float | tuple[int, int]) -> tuple[float, float]:
    """``(p_0, 1 / (4 N))`` of a given share (``N`` infinite) or of ``(events, volume)`` counts."""
    if isinstance(baseline, tuple):
        events, volume = baseline
        if volume <= 0 or not 0 <= events <= volume:
            raise MeasureInputError(
                f"baseline counts ({events} events of {volume}) are not a share",
                hint="give 0 <= events <= volume and volume > 0",
            )
        return events / volume, 1.0 / (4.0 * volume)
    if not 0.0 <= float(baseline) <= 1.0 or math.isnan(float(baseline)):
        raise MeasureInputError(
            f"baseline share {baseline} is not in [0, 1]", hint="give a fraction such as 0.2"
        )
    return float(baseline), 0.0


def _check_counts(events: np.ndarray, volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    events = np.asarray(events, dtype=np.float64)
    volumes = np.asarray(volumes, dtype=np.float64)
    if events.shape != volumes.shape or events.ndim != 1:
        raise MeasureInputError(
            f"events {events.shape} and volumes {volumes.shape} must be 1-d and of one length",
            hint="pass one count and one volume per window",
        )
    if not (np.all(np.isfinite(events)) and np.all(np.isfinite(volumes))):
        raise MeasureInputError("events or volumes hold NaN or inf", hint="pass whole counts")
    if np.any(volumes <= 0) or np.any(events < 0) or np.any(events > volumes):
        raise MeasureInputError(
            "every window needs volume > 0 and 0 <= events <= volume",
            hint="drop empty windows before calling (the streaming detector skips them)",
        )
    return events, volumes


def ewma_statistics(
    events: np.ndarray,
    volumes: np.ndarray,
    baseline: float | tuple[int, int],
    smoothing: float = 0.3,
) -> np.ndarray:
    """Standardized EWMA statistic ``E_t / sqrt(V_t)`` of every window (see the module docstring).

    Parameters
    ----------
    events, volumes
        ``(t,)`` negative texts and all texts per window (volume > 0).
    baseline
        The in-control share, or ``(events, volume)`` of a warm-up it is estimated from.
    smoothing
        ``lam`` in (0, 1]: the weight of the newest window.

    Examples
    --------
    >>> ewma_statistics(np.array([2, 2, 9, 9]), np.array([10, 10, 10, 10]), 0.2).round(2)
    array([0.  , 0.  , 3.44, 5.66])
    """
    events, volumes = _check_counts(events, volumes)
    if not 0.0 < smoothing <= 1.0:
        raise MeasureInputError(f"smoothing {smoothing} is not in (0, 1]", hint="use e.g. 0.2")
    share, baseline_variance = _baseline_point(baseline)
    deviation = anscombe(events, volumes) - anscombe(share * volumes, volumes)  # (t,)
    out = np.empty(len(events))
    smoothed = weight_squares = weight_sum = 0.0
    for t in range(len(events)):
        smoothed = smoothing * deviation[t] + (1 - smoothing) * smoothed
        weight_squares = smoothing**2 / (4 * volumes[t]) + (1 - smoothing) ** 2 * weight_squares
        weight_sum = smoothing + (1 - smoothing) * weight_sum
        out[t] = smoothed / math.sqrt(weight_squares + weight_sum**2 * baseline_variance)
    return out


def cusum_statistics(
    events: np.ndarray,
    volumes: np.ndarray,
    baseline: float | tuple[int, int],
    slack: float = 1.0,
) -> np.ndarray:
    """One-sided (upper) CUSUM ``S_t`` of the standardized shares (see the module docstring).

    Examples
    --------
    >>> cusum_statistics(np.array([2, 8, 8]), np.array([10, 10, 10]), 0.2).round(2).tolist()
    [0.0, 2.75, 5.49]
    """
    events, volumes = _check_counts(events, volumes)
    if slack < 0:
        raise MeasureInputError(f"slack {slack} is negative", hint="use e.g. 0.5")
    share, baseline_variance = _baseline_point(baseline)
    deviation = anscombe(events, volumes) - anscombe(share * volumes, volumes)  # (t,)
    z = deviation / np.sqrt(1 / (4 * volumes) + baseline_variance)
    out = np.empty(len(events))
    total = 0.0
    for t in range(len(events)):
        total = max(0.0, total + float(z[t]) - slack)
        out[t] = total
    return out


@dataclass(frozen=True)
class DetectorSettings:
    """Parameters of :class:`ChangeDetector`.

    Attributes
    ----------
    method
        ``ewma`` or ``cusum``.
    limit
        Alert when the statistic exceeds this (default :data:`DEFAULT_LIMITS` of the method).
    smoothing
        EWMA weight of the newest window.
    slack
        CUSUM allowance ``k`` (in standard deviations).
    warmup
        Windows (with at least ``min_volume`` texts) that estimate the baseline.
    baseline
        A given baseline share (no warm-up).
    min_volume
        Windows with fewer texts are not monitored (the statistic keeps its value).
    cooldown
        Windows (with enough volume) after an alert that are not monitored: they belong to the
        same event; the statistic restarts at 0 after them.
    """

    method: Method = "ewma"
    limit: float | None = None
    smoothing: float = 0.3
    slack: float = 1.0
    warmup: int = 24
    baseline: float | None = None
    min_volume: int = 5
    cooldown: int = 3

    def __post_init__(self) -> None:
        problems = []
        if self.method not in DEFAULT_LIMITS:
            problems.append(f"method '{self.method}' (use ewma or cusum)")
        if self.limit is not None and not (self.limit > 0 and math.isfinite(self.limit)):
            problems.append(f"limit {self.limit} (use a positive number)")
        if not 0.0 < self.smoothing <= 1.0:
            problems.append(f"smoothing {self.smoothing} (use a value in (0, 1])")
        if not (self.slack >= 0 and math.isfinite(self.slack)):
            problems.append(f"slack {self.slack} (use 0 or more)")
        if self.warmup < 1 and self.baseline is None:
            problems.append(f"warmup {self.warmup} (use 1 or more windows, or give a baseline)")
        if self.baseline is not None and not 0.0 <= self.baseline <= 1.0:
            problems.append(f"baseline {self.baseline} (use a share in [0, 1])")
        if self.min_volume < 1 or self.cooldown < 0:
            problems.append("min_volume < 1 or cooldown < 0")
        if problems:
            raise MeasureInputError(
                "bad detector settings: " + "; ".join(problems),
                hint="see `polyculture monitor --help` for the accepted values",
            )

    @property
    def threshold(self) -> float:
        """The alert limit in effect."""
        return DEFAULT_LIMITS[self.method] if self.limit is None else float(self.limit)


@dataclass(frozen=True)
class DetectorStep:
    """What :meth:`ChangeDetector.update` saw in one window.

    ``status`` is ``warmup``, ``low_volume``, ``monitored`` or ``cooldown`` (skipped right after
    an alert); ``statistic`` is NaN until the baseline is known.
    """

    status: str
    statistic: float
    threshold: float
    baseline: float
    alert: bool


class ChangeDetector:
    """A streaming EWMA or CUSUM detector of a rising share, one window at a time.

    Without a given baseline, the first ``warmup`` windows with enough volume estimate it; later
    windows below ``min_volume`` are skipped; after an alert ``cooldown`` windows are skipped and
    the statistic restarts at 0. On monitored windows without a reset the
    statistics equal :func:`ewma_statistics` / :func:`cusum_statistics`.

    Examples
    --------
    >>> detector = ChangeDetector(DetectorSettings(baseline=0.2))
    >>> [detector.update(events, 20).alert for events in (4, 3, 5, 19, 20)]
    [False, False, False, True, False]
    """

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        self.warmup_events = 0
        self.warmup_volume = 0
        self.warmup_windows = 0
        self._baseline_p: float | None = None
        self._baseline_variance = 0.0
        self._baseline_share = math.nan
        if settings.baseline is not None:
            self._baseline_p, self._baseline_variance = _baseline_point(settings.baseline)
            self._baseline_share = settings.baseline
        self._reset()
        self._cooldown_left = 0

    def _reset(self) -> None:
        self._smoothed = self._weight_squares = self._weight_sum = 0.0
        self._cusum = 0.0
        self._statistic = math.nan if self._baseline_p is None else 0.0

    @property
    def baseline(self) -> float:
        """The baseline share (NaN during the warm-up)."""
        return self._baseline_share

    def update(self, events: int, volume: int) -> DetectorStep:
        """Feed one window's ``events`` (negative texts) among ``volume`` texts."""
        settings = self.settings
        threshold = settings.threshold
        if volume < settings.min_volume:
            return DetectorStep("low_volume", self._statistic, threshold, self.baseline, False)
        if self._baseline_p is None:
            self.warmup_events += events
            self.warmup_volume += volume
            self.warmup_windows += 1
            if self.warmup_windows >= settings.warmup:
                counts = (self.warmup_events, self.warmup_volume)
                self._baseline_p, self._baseline_variance = _baseline_point(counts)
                self._baseline_share = self.warmup_events / self.warmup_volume
                self._statistic = 0.0
            return DetectorStep("warmup", math.nan, threshold, self.baseline, False)
        if self._cooldown_left > 0:  # the windows right after an alert belong to the same event
            self._cooldown_left -= 1
            return DetectorStep("cooldown", self._statistic, threshold, self.baseline, False)
        deviation = float(anscombe(events, volume) - anscombe(self._baseline_p * volume, volume))
        if settings.method == "ewma":
            lam = settings.smoothing
            self._smoothed = lam * deviation + (1 - lam) * self._smoothed
            self._weight_squares = lam**2 / (4 * volume) + (1 - lam) ** 2 * self._weight_squares
            self._weight_sum = lam + (1 - lam) * self._weight_sum
            variance = self._weight_squares + self._weight_sum**2 * self._baseline_variance
            self._statistic = self._smoothed / math.sqrt(variance)
        else:
            z = deviation / math.sqrt(1 / (4 * volume) + self._baseline_variance)
            self._cusum = max(0.0, self._cusum + z - settings.slack)
            self._statistic = self._cusum
        statistic = self._statistic
        alert = statistic > threshold
        if alert:
            self._reset()
            self._cooldown_left = settings.cooldown
        return DetectorStep("monitored", statistic, threshold, self.baseline, alert)
