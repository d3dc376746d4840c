"""Financial sentiment monitor: per-topic sentiment trends and change alerts over a text stream.

A stream of time-stamped texts (:mod:`polyculture.data.stream`) is assigned to topics (keywords
or entity names from a topics file, optionally embedding similarity to topic descriptions;
unmatched texts go to ``other``), labelled by one or more trained members of a run (micro-batches
through :meth:`Predictor.predict_texts`), and counted per topic and time window. A change
detector per (member, topic) (:mod:`polyculture.measure.changepoint`: EWMA chart or CUSUM) raises
an alert when the negative share rises abnormally above its baseline.

Time is event time. Windows are aligned to the epoch (UTC), ``window`` seconds long. Records may
arrive out of order by up to ``lateness`` seconds: the watermark is the largest timestamp seen
minus ``lateness``, and a window closes (is scored by the detectors) once the watermark passes
its end. A record whose window had already closed when it arrived is counted as *too late* (with
its line number), never silently dropped into a closed window. Which records are too late
depends only on the order of the input, not on the micro-batch size.

With two or more members the same stream runs through all of them and the alerts are compared
(alert-level homogenization): alerts of one topic within ``tolerance`` seconds are the same
alert; per pair of members the shared alerts and the Jaccard index of the alert sets, and the
per-text label agreement and Cohen's kappa.

:func:`run_monitor` writes ``RUN_DIR/monitor/<name>/`` (every file atomically):

========================  =======================================================================
``alerts.jsonl``          one alert per line (rewritten after every alert, so it is always current)
``windows.parquet|.csv``  one row per (member, topic, window with texts): volume, negatives, share,
                          mean negative probability, rolling share, detector status and statistic
``summary.parquet|.csv``  per (member, topic, hour or day): texts, negative share, alerts
``texts.parquet``         per accepted record: line, time, topics, per-member label and p(negative)
``malformed.json``        skipped lines per reason with their first line numbers; too-late records
``agreement.parquet``     per pair of members (two or more members only)
``monitor.json``          settings, members, counts, throughput, alert-level agreement
========================  =======================================================================
"""

from __future__ import annotations

import heapq
import json
import math
import re
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import numpy as np
import pandas as pd

from polyculture.data.stream import (
    MalformedLog,
    StreamFormat,
    StreamReader,
    StreamRecord,
    format_time,
)
from polyculture.errors import ConfigError, DataError
from polyculture.measure.agreement import cohen_kappa
from polyculture.measure.changepoint import ChangeDetector, DetectorSettings
from polyculture.run.results import RunResults, load_run
from polyculture.run.store import write_table, write_text

OTHER = "other"
"""The topic of texts that match no topic."""
MONITOR_DIR = "monitor"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
WINDOW_COLUMNS = (
    "member", "topic", "window_start", "window_end", "start_seconds", "volume", "negatives",
    "negative_share", "mean_negative_probability", "status", "statistic", "threshold",
    "baseline", "alert",
)  # fmt: skip
"""Columns of ``windows.parquet`` (before ``rolling_negative_share``)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_duration(text: str | float) -> float:
    """Seconds of a duration written ``90``, ``90s``, ``10m``, ``1h`` or ``1d``.

    Examples
    --------
    >>> parse_duration("1h"), parse_duration("10m"), parse_duration(30)
    (3600.0, 600.0, 30.0)
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(
            f"cannot read the duration '{text}'", hint="write a number with s, m, h or d: 1h"
        )
    return float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]


# ---------------------------------------------------------------------------------------------
# Topics


@dataclass(frozen=True)
class Topic:
    """A topic: keywords (matched as whole words, case-insensitive), entity names, description."""

    name: str
    keywords: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    description: str = ""


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings", hint='e.g. ["Nokia"]')
    return tuple(v.strip() for v in value)


def load_topics(path: str | Path) -> list[Topic]:
    """Read a topics file: TOML or JSON, ``topic -> keywords`` or ``topic -> {keywords, entities,
    description}``.

    Raises
    ------
    ConfigError
        Missing or unreadable file, a topic named ``other``, a topic with nothing to match.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "t.toml"
    >>> _ = path.write_text('t = ["Elisa", "TeliaSonera"]\\n[nokia]\\nkeywords = ["Nokia"]\\n')
    >>> [(t.name, t.keywords) for t in load_topics(path)]
    [('t', ('Elisa', 'TeliaSonera')), ('nokia', ('Nokia',))]
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"topics file '{path}' not found", hint="see examples/monitor/topics.toml"
        )
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(
            f"cannot read topics file '{path}': {err}".splitlines()[0],
            hint="write TOML (or JSON): [topic] keywords = [...]",
        ) from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"topics file '{path}' defines no topics", hint="add [topic] tables")
    topics = []
    for name, spec in raw.items():
        where = f"topic '{name}' in '{path}'"
        if name == OTHER:
            raise ConfigError(f"{where}: '{OTHER}' is reserved", hint="rename the topic")
        if isinstance(spec, list | str):
            spec = {"keywords": spec}
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table or a list", hint="keywords = [...]")
        unknown = set(spec) - {"keywords", "entities", "description"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
                hint="use keywords, entities and description",
            )
        keywords = _strings(spec.get("keywords", []), f"{where}: keywords")
        entities = _strings(spec.get("entities", []), f"{where}: entities")
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{where}: description must be text", hint='description = "..."')
        if not keywords and not entities and not description.strip():
            raise ConfigError(f"{where} has nothing to match", hint="give keywords or entities")
        topics.append(Topic(str(name), keywords, entities, description.strip()))
    return topics


class TopicMatcher:
    """Assigns texts to topics: whole-word keywords and entity names (case-insensitive), then
    optionally embedding similarity to topic descriptions; unmatched texts go to ``other``.

    A text that names several topics counts in each of them.

    Parameters
    ----------
    topics
        From :func:`load_topics`.
    mode
        ``keywords``, or ``embedding`` (keywords first, then the most similar description above
        ``threshold`` for the texts no keyword matched; needs polyculture[text]).
    threshold
        Least cosine similarity of MiniLM sentence embeddings.

    Examples
    --------
    >>> matcher = TopicMatcher([Topic("nokia", ("Nokia",)), Topic("banks", ("Nordea", "bank"))])
    >>> matcher.assign(["Nokia's sales fell", "The bank and Nokia", "banking news"], [None] * 3)
    [('nokia',), ('nokia', 'banks'), ('other',)]
    """

    def __init__(
        self,
        topics: Sequence[Topic],
        mode: Literal["keywords", "embedding"] = "keywords",
        threshold: float = 0.3,
    ) -> None:
        if mode not in ("keywords", "embedding"):
            raise ConfigError(f"unknown topic match '{mode}'", hint="use keywords or embedding")
        self.topics = list(topics)
        self.names = [t.name for t in self.topics] + [OTHER]
        self.mode = mode
        self.threshold = threshold
        self._patterns = []
        for topic in self.topics:
            words = sorted({*topic.keywords, *topic.entities}, key=len, reverse=True)
            # Lookarounds instead of \b: keywords such as "AT&T" or "S&P 500" end in non-words.
            alternatives = "|".join(re.escape(w) for w in words)
            pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
            self._patterns.append(pattern if words else None)
        self._entities = {e.casefold(): t.name for t in self.topics for e in t.entities}
        self._descriptions: np.ndarray | None = None
        if mode == "embedding":
            from polyculture.zoo.pretrained import sentence_embeddings

            described = [t.description or f"{t.name}: {', '.join(t.keywords)}" for t in topics]
            self._descriptions = sentence_embeddings(described)  # (topics, 384)

    def assign(self, texts: Sequence[str], entities: Sequence[str | None]) -> list[tuple[str, ...]]:
        """The topics of each text (``("other",)`` when none)."""
        out: list[tuple[str, ...]] = []
        for text, entity in zip(texts, entities, strict=True):
            found = [
                topic.name
                for topic, pattern in zip(self.topics, self._patterns, strict=True)
                if pattern is not None and pattern.search(text)
            ]
            named = self._entities.get(entity.casefold()) if entity else None
            if named and named not in found:
                found.append(named)
            out.append(tuple(found))
        if self._descriptions is not None:
            unmatched = [i for i, topics in enumerate(out) if not topics]
            if unmatched:
                from polyculture.zoo.pretrained import sentence_embeddings

                embedded = sentence_embeddings([texts[i] for i in unmatched])  # (u, 384)
                similarity = embedded @ self._descriptions.T  # (u, topics), unit vectors
                best = similarity.argmax(axis=1)
                for row, index in enumerate(unmatched):
                    if similarity[row, best[row]] >= self.threshold:
                        out[index] = (self.topics[int(best[row])].name,)
        return [topics or (OTHER,) for topics in out]


# ---------------------------------------------------------------------------------------------
# Settings and scorers


class Scorer(Protocol):
    """What the monitor needs of a member (a :class:`polyculture.run.predictor.Predictor`)."""

    name: str
    class_names: tuple[str, ...]

    def predict_texts(self, texts: Sequence[str]) -> np.ndarray: ...


TOO_FAR_AHEAD = "too_far_ahead"
"""Malformed-line reason of records beyond ``max_skew`` ahead of the latest time seen."""


@dataclass(frozen=True)
class MonitorSettings:
    """Settings of one monitor run (durations in seconds).

    Attributes
    ----------
    window
        Window length (windows are aligned to the epoch, UTC).
    lateness
        How far out of order records may arrive.
    max_skew
        A record this far ahead of the latest time seen is malformed (``too_far_ahead``: a typo
        such as 2052 for 2025, or epoch milliseconds) and does not move the watermark, which
        would otherwise close every window and count all later records as too late.
    detector
        The change detector (:class:`DetectorSettings`).
    batch_size
        Most texts per micro-batch (follow mode also scores as soon as input pauses).
    examples
        Example texts per alert (the most negative ones of the window).
    rolling
        Windows in the rolling negative share of the windows table.
    tolerance
        Alerts of one topic this close in time count as the same alert (default: one window).
    negative_class
        The class whose share is watched.
    topic_match, similarity
        How texts are matched to topics (see :class:`TopicMatcher`).
    summary
        Period of the summary table: ``hour`` or ``day``.
    keep_malformed
        Line numbers kept per malformed reason.
    """

    window: float = 3600.0
    lateness: float = 600.0
    max_skew: float = 86400.0
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    batch_size: int = 256
    examples: int = 3
    rolling: int = 6
    tolerance: float | None = None
    negative_class: str = "negative"
    topic_match: Literal["keywords", "embedding"] = "keywords"
    similarity: float = 0.3
    summary: Literal["hour", "day"] = "day"
    keep_malformed: int = 20

    def __post_init__(self) -> None:
        if not (self.window > 0 and math.isfinite(self.window)):
            raise ConfigError(f"window {self.window} s is not positive", hint="e.g. --window 1h")
        if not (self.lateness >= 0 and math.isfinite(self.lateness)):
            raise ConfigError(f"lateness {self.lateness} s is negative", hint="e.g. 10m")
        if not self.max_skew > 0:
            raise ConfigError(f"max_skew {self.max_skew} s is not positive", hint="e.g. 1d")
        if self.batch_size < 1 or self.examples < 0 or self.rolling < 1:
            raise ConfigError(
                "batch_size and rolling must be >= 1, examples >= 0", hint="e.g. --batch-size 256"
            )
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ConfigError(f"tolerance {self.tolerance} is negative", hint="e.g. 1h")
        if self.summary not in ("hour", "day"):
            raise ConfigError(f"unknown summary period '{self.summary}'", hint="use hour or day")

    @property
    def alert_tolerance(self) -> float:
        """Seconds within which two alerts of one topic are the same alert."""
        return self.window if self.tolerance is None else self.tolerance

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return asdict(self) | {
            "detector": asdict(self.detector) | {"limit": self.detector.threshold}
        }


@dataclass
class _Window:
    """Counts of one (topic, window) for every member."""

    members: int
    volume: int = 0
    negatives: list[int] = field(default_factory=list)
    probability: list[float] = field(default_factory=list)
    examples: list[list[tuple[float, int, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.negatives = [0] * self.members
        self.probability = [0.0] * self.members
        self.examples = [[] for _ in range(self.members)]


Event = Callable[[str, dict[str, Any]], None]
"""Called with ``("alert", alert)`` and ``("window", row)`` as they happen."""


class SentimentMonitor:
    """The streaming engine: add records, flush micro-batches, close windows, raise alerts.

    Parameters
    ----------
    scorers
        One or more members (anything with ``name``, ``class_names`` and ``predict_texts``).
    matcher
        Assigns topics.
    settings
        Windows, lateness, detector, batch size.
    on_event
        Called with ``("alert", record)`` for each alert and ``("window", row)`` for each closed
        (member, topic, window), at the moment it happens.

    Examples
    --------
    >>> class Words:  # a stand-in member: "loss" is negative
    ...     name, class_names = "words", ("negative", "positive")
    ...     def predict_texts(self, texts):
    ...         return np.array([[0.9, 0.1] if "loss" in t else [0.1, 0.9] for t in texts])
    >>> settings = MonitorSettings(detector=DetectorSettings(baseline=0.1, min_volume=1))
    >>> monitor = SentimentMonitor([Words()], TopicMatcher([Topic("acme", ("Acme",))]), settings)
    >>> texts = ["Acme loss" if i % 10 == 0 or i >= 30 else "Acme profit" for i in range(40)]
    >>> records = [StreamRecord(i + 1, 360.0 * i, text) for i, text in enumerate(texts)]
    >>> monitor.run(records).alerts[0]["topic"]
    'acme'
    """

    def __init__(
        self,
        scorers: Sequence[Scorer],
        matcher: TopicMatcher,
        settings: MonitorSettings,
        on_event: Event | None = None,
    ) -> None:
        if not scorers:
            raise ConfigError("the monitor needs at least one member", hint="give --member NAME")
        self.scorers = list(scorers)
        self.matcher = matcher
        self.settings = settings
        self.on_event = on_event
        self.negative_index = [self._negative_index(s) for s in self.scorers]
        members = len(self.scorers)
        self.detectors = [
            {topic: ChangeDetector(settings.detector) for topic in matcher.names}
            for _ in range(members)
        ]
        self.windows: dict[tuple[float, str], _Window] = {}
        self.pending: list[StreamRecord] = []
        self.max_time = -math.inf
        self.closed_until = -math.inf  # every window ending at or before this is closed
        self.late = MalformedLog(keep=settings.keep_malformed)
        self.rows: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.text_rows: list[dict[str, Any]] = []
        self.labels: list[list[np.ndarray]] = [[] for _ in range(members)]
        self.records = 0
        self.member_seconds = [0.0] * members  # time spent in each member's predict_texts

    def _negative_index(self, scorer: Scorer) -> int:
        wanted = self.settings.negative_class.casefold()
        names = [str(c).casefold() for c in scorer.class_names]
        if wanted not in names:
            raise ConfigError(
                f"member '{scorer.name}' has no class '{self.settings.negative_class}' "
                f"(its classes: {', '.join(map(str, scorer.class_names))})",
                hint="name the watched class with --negative-class",
            )
        return names.index(wanted)

    def _window_start(self, timestamp: float) -> float:
        return math.floor(timestamp / self.settings.window) * self.settings.window

    def add(self, record: StreamRecord) -> None:
        """Queue one record (or count it as too late when its window has closed)."""
        if self.max_time > -math.inf and record.timestamp > self.max_time + self.settings.max_skew:
            self.late.add(TOO_FAR_AHEAD, record.line)
            return
        start = self._window_start(record.timestamp)
        if start + self.settings.window <= self._boundary():
            self.late.add("too_late", record.line)
            return
        self.max_time = max(self.max_time, record.timestamp)
        self.pending.append(record)
        if len(self.pending) >= self.settings.batch_size:
            self.flush()

    def _boundary(self) -> float:
        """End of the last window the watermark has passed (windows ending there are closed)."""
        if self.max_time == -math.inf:
            return -math.inf
        return self._window_start(self.max_time - self.settings.lateness)

    def flush(self, final: bool = False) -> None:
        """Score the queued records, then close the windows the watermark has passed (all
        windows when ``final``)."""
        if self.pending:
            pending, self.pending = self.pending, []  # never scored twice, even after Ctrl-C
            self._score(pending)
        self._close(math.inf if final else self._boundary())

    def _score(self, records: list[StreamRecord]) -> None:
        texts = [r.text for r in records]
        topics = self.matcher.assign(texts, [r.entity for r in records])
        probabilities = []
        for m, scorer in enumerate(self.scorers):
            started = time.perf_counter()
            scored = np.asarray(scorer.predict_texts(texts), dtype=np.float64)  # (b, classes)
            self.member_seconds[m] += time.perf_counter() - started
            if scored.shape != (len(texts), len(scorer.class_names)):
                raise DataError(
                    f"member '{scorer.name}' returned {scored.shape} for {len(texts)} texts",
                    hint="report this: predict_texts must give one row of probabilities per text",
                )
            probabilities.append(scored)
        self.records += len(records)
        members = len(self.scorers)
        negative = [p[:, k] for p, k in zip(probabilities, self.negative_index, strict=True)]
        is_negative = [
            p.argmax(axis=1) == k for p, k in zip(probabilities, self.negative_index, strict=True)
        ]
        for m in range(members):
            self.labels[m].append(probabilities[m].argmax(axis=1).astype(np.int16))
        keep = self.settings.examples
        for i, record in enumerate(records):
            start = self._window_start(record.timestamp)
            row: dict[str, Any] = {
                "line": record.line,
                "time": format_time(record.timestamp),
                "topics": ";".join(topics[i]),
            }
            for topic in topics[i]:
                window = self.windows.get((start, topic))
                if window is None:
                    window = self.windows[(start, topic)] = _Window(members)
                window.volume += 1
                for m in range(members):
                    p = float(negative[m][i])
                    window.probability[m] += p
                    if is_negative[m][i]:
                        window.negatives[m] += 1
                        if keep:  # the most negative texts of the window, ties by line
                            item = (p, -record.line, record.text)
                            heap = window.examples[m]
                            if len(heap) < keep:
                                heapq.heappush(heap, item)
                            else:
                                heapq.heappushpop(heap, item)
            for m, scorer in enumerate(self.scorers):
                row[f"{scorer.name}:negative"] = float(negative[m][i])
                row[f"{scorer.name}:label"] = str(
                    scorer.class_names[int(probabilities[m][i].argmax())]
                )
            self.text_rows.append(row)

    def _close(self, boundary: float) -> None:
        if boundary <= self.closed_until:
            return
        window = self.settings.window
        order = {name: i for i, name in enumerate(self.matcher.names)}
        due = sorted(
            (key for key in self.windows if key[0] + window <= boundary),
            key=lambda key: (key[0], order[key[1]]),
        )
        for key in due:
            self._close_window(key, self.windows.pop(key))
        self.closed_until = boundary

    def _close_window(self, key: tuple[float, str], counts: _Window) -> None:
        start, topic = key
        for m, scorer in enumerate(self.scorers):
            step = self.detectors[m][topic].update(counts.negatives[m], counts.volume)
            row = {
                "member": scorer.name,
                "topic": topic,
                "window_start": format_time(start),
                "window_end": format_time(start + self.settings.window),
                "start_seconds": start,
                "volume": counts.volume,
                "negatives": counts.negatives[m],
                "negative_share": counts.negatives[m] / counts.volume,
                "mean_negative_probability": counts.probability[m] / counts.volume,
                "status": step.status,
                "statistic": step.statistic,
                "threshold": step.threshold,
                "baseline": step.baseline,
                "alert": step.alert,
            }
            self.rows.append(row)
            if self.on_event is not None:
                self.on_event("window", row)
            if step.alert:
                examples = sorted(counts.examples[m], reverse=True)
                alert = {
                    "time": row["window_end"],
                    "window_start": row["window_start"],
                    "topic": topic,
                    "member": scorer.name,
                    "detector": self.settings.detector.method,
                    "statistic": round(step.statistic, 4),
                    "threshold": step.threshold,
                    "volume": counts.volume,
                    "negatives": counts.negatives[m],
                    "negative_share": round(counts.negatives[m] / counts.volume, 4),
                    "baseline": round(step.baseline, 4),
                    "examples": [text for _, _, text in examples],
                    "example_lines": [-line for _, line, _ in examples],
                }
                self.alerts.append(alert)
                if self.on_event is not None:
                    self.on_event("alert", alert)

    def run(self, records: Iterable[StreamRecord], idle: Callable[[], bool] | None = None) -> Any:
        """Process every record; with ``idle`` (follow mode) flush whenever input pauses.

        Returns the monitor itself (its ``alerts``, ``rows`` and counters).
        """
        for record in records:
            self.add(record)
            if idle is not None and self.pending and idle():
                self.flush()
        self.flush(final=True)
        return self


# ---------------------------------------------------------------------------------------------
# Agreement between members


def shared_alerts(
    first: Sequence[tuple[str, float]], second: Sequence[tuple[str, float]], tolerance: float
) -> int:
    """Alerts of ``first`` matched one-to-one to alerts of ``second`` (same topic, at most
    ``tolerance`` seconds apart; greedy in time order).

    Examples
    --------
    >>> shared_alerts([("a", 0), ("a", 7200), ("b", 0)], [("a", 3600), ("b", 9e4)], 3600)
    1
    """
    shared = 0
    topics = {topic for topic, _ in first} & {topic for topic, _ in second}
    for topic in topics:
        left = sorted(t for name, t in first if name == topic)
        right = sorted(t for name, t in second if name == topic)
        j = 0
        for t in left:
            while j < len(right) and right[j] < t - tolerance:
                j += 1
            if j < len(right) and abs(right[j] - t) <= tolerance:
                shared += 1
                j += 1
    return shared


def alert_clusters(
    alerts: Sequence[tuple[str, str, float]], tolerance: float
) -> list[tuple[str, float, frozenset[str]]]:
    """Group ``(member, topic, time)`` alerts: one topic, each within ``tolerance`` of the group's
    first alert. Returns ``(topic, first time, members)`` per group.

    Examples
    --------
    >>> clusters = alert_clusters([("m1", "a", 0), ("m2", "a", 100), ("m2", "a", 9000)], 3600)
    >>> [(topic, first, sorted(members)) for topic, first, members in clusters]
    [('a', 0, ['m1', 'm2']), ('a', 9000, ['m2'])]
    """
    clusters: list[tuple[str, float, frozenset[str]]] = []
    for topic in sorted({topic for _, topic, _ in alerts}):
        items = sorted((t, member) for member, name, t in alerts if name == topic)
        first, members = items[0][0], {items[0][1]}
        for t, member in items[1:]:
            if t - first <= tolerance:
                members.add(member)
            else:
                clusters.append((topic, first, frozenset(members)))
                first, members = t, {member}
        clusters.append((topic, first, frozenset(members)))
    return clusters


def _agreement(monitor: SentimentMonitor) -> tuple[pd.DataFrame, dict[str, Any]]:
    tolerance = monitor.settings.alert_tolerance
    names = [s.name for s in monitor.scorers]
    per_member = {
        name: [(a["topic"], _seconds(a["time"])) for a in monitor.alerts if a["member"] == name]
        for name in names
    }
    labels = [
        np.concatenate(chunks) if chunks else np.zeros(0, np.int16) for chunks in monitor.labels
    ]
    rows = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = per_member[names[i]], per_member[names[j]]
            shared = shared_alerts(a, b, tolerance)
            union = len(a) + len(b) - shared
            agree = float(np.mean(labels[i] == labels[j])) if len(labels[i]) else math.nan
            negative_i = labels[i] == monitor.negative_index[i]
            negative_j = labels[j] == monitor.negative_index[j]
            kappa = math.nan
            if len(labels[i]) and len(np.unique(np.concatenate([labels[i], labels[j]]))) > 1:
                kappa = cohen_kappa(labels[i], labels[j])
            rows.append(
                {
                    "member_a": names[i],
                    "member_b": names[j],
                    "alerts_a": len(a),
                    "alerts_b": len(b),
                    "shared_alerts": shared,
                    "jaccard": shared / union if union else math.nan,
                    "label_agreement": agree,
                    "negative_agreement": (
                        float(np.mean(negative_i == negative_j)) if len(labels[i]) else math.nan
                    ),
                    "cohen_kappa": kappa,
                    "texts": len(labels[i]),
                }
            )
    everyone = frozenset(names)
    clusters = alert_clusters(
        [(a["member"], a["topic"], _seconds(a["time"])) for a in monitor.alerts], tolerance
    )
    by_all = sum(1 for _, _, members in clusters if members == everyone)
    overall = {
        "members": names,
        "tolerance_seconds": tolerance,
        "distinct_alerts": len(clusters),
        "alerts_raised_by_every_member": by_all,
        "alert_homogenization": by_all / len(clusters) if clusters else math.nan,
    }
    return pd.DataFrame(rows), overall


def _seconds(iso: str) -> float:
    return pd.Timestamp(iso).timestamp()


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class MonitorResult:
    """What :func:`run_monitor` computed and wrote.

    Attributes
    ----------
    folder
        ``RUN_DIR/monitor/<name>`` (``None`` when nothing was written).
    alerts
        One dict per alert (the lines of ``alerts.jsonl``).
    windows, summary, agreement
        The tables (agreement is empty with one member).
    info
        The content of ``monitor.json``.
    """

    folder: Path | None
    alerts: list[dict[str, Any]]
    windows: pd.DataFrame
    summary: pd.DataFrame
    agreement: pd.DataFrame
    info: dict[str, Any]


def _rolling(windows: pd.DataFrame, settings: MonitorSettings) -> pd.Series:
    """Volume-weighted negative share over the last ``rolling`` windows (in time, gaps count)."""
    out = pd.Series(np.nan, index=windows.index, dtype=float)
    span = f"{int(settings.rolling * settings.window)}s"
    for _, group in windows.groupby(["member", "topic"], sort=False):
        ordered = group.sort_values("start_seconds")
        indexed = ordered.set_index(pd.to_datetime(ordered["start_seconds"], unit="s"))
        sums = indexed[["negatives", "volume"]].rolling(span).sum()
        out.loc[ordered.index] = (sums["negatives"] / sums["volume"]).to_numpy()
    return out


def _summary(windows: pd.DataFrame, settings: MonitorSettings) -> pd.DataFrame:
    columns = ["member", "period", "topic", "texts", "negatives", "negative_share", "alerts"]
    if windows.empty:
        return pd.DataFrame(columns=columns)
    period = 3600.0 if settings.summary == "hour" else 86400.0
    frame = windows.assign(
        period=[format_time(math.floor(s / period) * period) for s in windows["start_seconds"]],
        alerts=windows["alert"].astype(int),
        texts=windows["volume"],
    )
    grouped = frame.groupby(["member", "period", "topic"], sort=True, as_index=False)[
        ["texts", "negatives", "alerts"]
    ].sum()
    grouped["negative_share"] = grouped["negatives"] / grouped["texts"]
    return grouped[columns]


def finish_monitor(
    monitor: SentimentMonitor,
    reader: StreamReader | None,
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> MonitorResult:
    """The tables and ``monitor.json`` content of a monitor that has run (nothing written)."""
    settings = monitor.settings
    windows = pd.DataFrame(monitor.rows)
    if windows.empty:
        windows = pd.DataFrame(columns=[*WINDOW_COLUMNS])
    windows["rolling_negative_share"] = _rolling(windows, settings) if len(windows) else []
    agreement, overall = _agreement(monitor) if len(monitor.scorers) > 1 else (pd.DataFrame(), {})
    malformed = reader.malformed if reader is not None else MalformedLog()
    reasons = malformed.summary()
    ahead = monitor.late.counts.get(TOO_FAR_AHEAD, 0)
    if ahead:  # malformed in time, found by the monitor rather than the reader
        reasons[TOO_FAR_AHEAD] = {"count": ahead, "lines": monitor.late.lines[TOO_FAR_AHEAD]}
    names = [s.name for s in monitor.scorers]
    info = {
        "stream": reader.name if reader is not None else "records",
        "members": [s.name for s in monitor.scorers],
        "topics": monitor.matcher.names,
        "settings": settings.as_dict(),
        "lines": reader.lines_read if reader is not None else monitor.records,
        "records": monitor.records,
        "malformed": malformed.total + ahead,
        "malformed_lines": reasons,
        "too_late": monitor.late.counts.get("too_late", 0),
        "too_late_lines": monitor.late.lines.get("too_late", []),
        "alerts": len(monitor.alerts),
        "alerts_per_member": {
            s.name: sum(1 for a in monitor.alerts if a["member"] == s.name) for s in monitor.scorers
        },
        "score_seconds": dict(zip(names, monitor.member_seconds, strict=True)),
        "seconds": seconds,
        "texts_per_second_scoring": {
            name: monitor.records / spent if spent > 0 else math.nan
            for name, spent in zip(names, monitor.member_seconds, strict=True)
        },
        "texts_per_second": monitor.records / seconds if seconds > 0 else math.nan,
        "agreement": overall,
    } | (extra or {})
    return MonitorResult(
        None,
        list(monitor.alerts),
        windows,
        _summary(windows, settings),
        agreement,
        _json_safe(info),
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def alerts_jsonl(alerts: Sequence[dict[str, Any]]) -> str:
    """The ``alerts.jsonl`` text: one JSON object per line."""
    return "".join(json.dumps(_json_safe(a), ensure_ascii=False) + "\n" for a in alerts)


def write_monitor(folder: Path, result: MonitorResult, texts: pd.DataFrame | None = None) -> None:
    """Write the files of a monitor run into ``folder`` (each atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "alerts.jsonl", alerts_jsonl(result.alerts))
    write_table(result.windows, folder / "windows.parquet", csv=True)
    write_table(result.summary, folder / "summary.parquet", csv=True)
    if texts is not None:
        write_table(texts, folder / "texts.parquet")
    malformed = {
        "lines": result.info["lines"],
        "records": result.info["records"],
        "malformed": result.info["malformed"],
        "reasons": result.info["malformed_lines"],
        "too_late": result.info["too_late"],
        "too_late_lines": result.info["too_late_lines"],
    }
    write_text(folder / "malformed.json", json.dumps(malformed, indent=2) + "\n")
    agreement = folder / "agreement.parquet"
    if result.agreement.empty:
        agreement.unlink(missing_ok=True)
        agreement.with_suffix(".csv").unlink(missing_ok=True)
    else:
        write_table(result.agreement, agreement, csv=True)
    write_text(folder / "monitor.json", json.dumps(result.info, indent=2) + "\n")


def default_member(results: RunResults) -> str:
    """The member the selection recommends (``tables/selection.json``, else a fresh selection
    without constraints, not written)."""
    from polyculture.run.select import read_selection, select_run

    summary = read_selection(results.root)
    ids = set(results.members["member_id"].astype(str))
    if summary and str(summary.get("recommended")) in ids:
        return str(summary["recommended"])
    return select_run(results, write=False, n_resamples=200).recommendation.member_id


def monitor_folder(run_dir: str | Path, name: str) -> Path:
    """``RUN_DIR/monitor/<name>``, refusing names that are not plain folder names."""
    if not _NAME.match(name):
        raise ConfigError(
            f"monitor name '{name}' is not a plain folder name",
            hint="use letters, digits, '.', '_' and '-' (e.g. --name news-may)",
        )
    return Path(run_dir) / MONITOR_DIR / name


def load_scorers(results: RunResults, members: Sequence[str]) -> list[Any]:
    """Predictors of the named members (the selection's choice when none is named); their
    names are made distinct."""
    from polyculture.run.predictor import load_predictor

    wanted = list(members) or [default_member(results)]
    predictors: list[Any] = []
    for member in wanted:
        task = predictors[0].task if predictors else None
        predictors.append(load_predictor(results, member, task=task))
    ids = [p.member_id for p in predictors]
    if len(set(ids)) < len(ids):
        raise ConfigError(
            "the same member is named twice in --member", hint="name each member once"
        )
    seen: dict[str, int] = {}
    for predictor in predictors:
        seen[predictor.name] = seen.get(predictor.name, 0) + 1
    scorers = []
    for predictor in predictors:
        label = (
            predictor.name if seen[predictor.name] == 1 else f"{predictor.name}@{predictor.seed}"
        )
        scorers.append(_Named(predictor, label))
    return scorers


class _Named:
    """A predictor under a display name that is unique within the monitor run."""

    def __init__(self, predictor: Any, name: str) -> None:
        self.predictor = predictor
        self.name = name
        self.member_id = str(predictor.member_id)
        self.class_names = tuple(str(c) for c in predictor.class_names)

    def predict_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.predictor.predict_texts(texts))


def run_monitor(
    run_dir: str | Path | RunResults,
    stream: str | Path | IO[bytes],
    topics: str | Path | Sequence[Topic],
    members: Sequence[str] = (),
    settings: MonitorSettings | None = None,
    *,
    name: str | None = None,
    stream_format: StreamFormat | None = None,
    on_event: Event | None = None,
    scorers: Sequence[Scorer] | None = None,
    write: bool = True,
) -> MonitorResult:
    """Monitor a stream with members of a run and write ``RUN_DIR/monitor/<name>/``.

    Parameters
    ----------
    run_dir
        A run directory (or its loaded results).
    stream
        A JSONL/CSV file, ``"-"`` for standard input (follow mode), or an open binary handle.
    topics
        A topics file (TOML/JSON) or topics.
    members
        Member ids, id prefixes or ``name[@seed]``; none: the selection's recommendation.
    settings
        Windows, lateness, detector and matching (defaults: :class:`MonitorSettings`).
    name
        Output folder name (default: the stream file's stem, or ``stdin``).
    stream_format
        ``jsonl`` or ``csv`` (default from the suffix).
    on_event
        See :class:`SentimentMonitor` (alerts arrive here as they are raised).
    scorers
        Use these instead of loading ``members`` (tests, notebooks).
    write
        Write the output folder (``alerts.jsonl`` is rewritten after every alert). On Ctrl-C
        the open windows are closed and the files written before the interrupt is re-raised.

    Raises
    ------
    ConfigError, DataError, RunStoreError
        Unknown member, bad topics file, missing stream file, bad settings.

    Examples
    --------
    >>> import io, tempfile
    >>> class Words:
    ...     name, class_names = "words", ("negative", "positive")
    ...     def predict_texts(self, texts):
    ...         return np.array([[0.9, 0.1] if "loss" in t else [0.1, 0.9] for t in texts])
    >>> lines = [f'{{"timestamp": {60 * i}, "text": "Acme profit"}}' for i in range(100)]
    >>> stream = io.BytesIO(("\\n".join(lines) + "\\nbad line\\n").encode())
    >>> result = run_monitor(tempfile.mkdtemp(), stream, [Topic("acme", ("Acme",))],
    ...                      scorers=[Words()], write=False)
    >>> result.info["records"], result.info["malformed_lines"]
    (100, {'bad_json': {'count': 1, 'lines': [101]}})
    """
    settings = settings or MonitorSettings()
    topic_list = load_topics(topics) if isinstance(topics, str | Path) else list(topics)
    matcher = TopicMatcher(topic_list, settings.topic_match, settings.similarity)
    results: RunResults | None = None
    if scorers is None:
        results = run_dir if isinstance(run_dir, RunResults) else load_run(run_dir)
        scorers = load_scorers(results, members)
    root = results.root if results is not None else Path(str(run_dir))
    reader = StreamReader(stream, stream_format, MalformedLog(keep=settings.keep_malformed))
    if name is None:
        name = "stdin" if reader.name == "stdin" else Path(reader.name).stem or "stream"
    folder = monitor_folder(root, name) if write else None

    def event(kind: str, payload: dict[str, Any]) -> None:
        if kind == "alert" and folder is not None:
            write_text(folder / "alerts.jsonl", alerts_jsonl(monitor.alerts))
        if on_event is not None:
            on_event(kind, payload)

    monitor = SentimentMonitor(scorers, matcher, settings, event)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "alerts.jsonl", "")
    started = time.perf_counter()
    interrupted = False
    try:
        monitor.run(reader, idle=reader.idle if reader.lines.follow else None)
    except KeyboardInterrupt:  # Ctrl-C ends a followed stream: keep what was seen so far
        interrupted = True
        monitor.flush(final=True)
    finally:
        reader.close()
    seconds = time.perf_counter() - started
    member_ids = {s.name: str(getattr(s, "member_id", s.name)) for s in monitor.scorers}
    extra = {"name": name, "member_ids": member_ids, "interrupted": interrupted}
    result = finish_monitor(monitor, reader, seconds, extra)
    if folder is not None:
        texts = pd.DataFrame(monitor.text_rows)
        write_monitor(folder, result, texts)
        result.folder = folder
    if interrupted:
        raise KeyboardInterrupt
    return result
