"""A stream of time-stamped texts: JSONL or CSV lines from a file or from standard input.

Each record has a ``timestamp`` (ISO 8601, e.g. ``2024-05-01T09:30:00Z``, or epoch seconds as a
number or a numeric string; times without a zone are UTC), a ``text``, and optionally a
``source`` and an ``entity``. JSONL holds one object per line; CSV has a header line naming the
columns (``timestamp`` or ``time``, ``text``, optional ``source``, ``entity``), one record per
line (a quoted field may not span lines: the stream is read line by line).

Malformed lines never stop the stream: bad JSON, a line that is not an object, a missing or
empty timestamp or text, an unparseable time, bad UTF-8 or a CSV row of the wrong width are
counted per reason in a :class:`MalformedLog` that keeps the first line numbers of each reason
(line 1 is the first line of the input). Blank lines are skipped silently.

Follow mode (``-`` = standard input) reads the file descriptor directly, so each record is
handed on as soon as its line arrives, and :meth:`LineSource.idle` tells the consumer when no
further complete line is waiting (the moment to score a micro-batch and flush its output).
"""

from __future__ import annotations

import csv
import json
import math
import os
import select
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from polyculture.errors import ConfigError, DataError

StreamFormat = Literal["jsonl", "csv"]
MALFORMED_REASONS = (
    "bad_json",
    "not_an_object",
    "bad_encoding",
    "bad_csv",
    "missing_timestamp",
    "missing_text",
    "bad_timestamp",
)
"""Why a line was skipped (the keys of :attr:`MalformedLog.counts`)."""
TIME_COLUMNS = ("timestamp", "time")


@dataclass(frozen=True)
class StreamRecord:
    """One text of the stream.

    Attributes
    ----------
    line
        Its line number in the input (1-based).
    timestamp
        Seconds since the epoch (UTC).
    text, source, entity
        As given (stripped); source and entity may be ``None``.
    """

    line: int
    timestamp: float
    text: str
    source: str | None = None
    entity: str | None = None


@dataclass
class MalformedLog:
    """Counts of skipped lines per reason, with the first ``keep`` line numbers of each.

    Examples
    --------
    >>> log = MalformedLog(keep=2)
    >>> for line in (3, 5, 9):
    ...     log.add("bad_json", line)
    >>> log.total, log.summary()["bad_json"]
    (3, {'count': 3, 'lines': [3, 5]})
    """

    keep: int = 20
    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)

    def add(self, reason: str, line: int) -> None:
        """Count one skipped line."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        kept = self.lines.setdefault(reason, [])
        if len(kept) < self.keep:
            kept.append(line)

    @property
    def total(self) -> int:
        """All skipped lines."""
        return sum(self.counts.values())

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{reason: {"count": n, "lines": [first line numbers]}}`` for the reasons seen."""
        return {
            reason: {"count": count, "lines": list(self.lines[reason])}
            for reason, count in self.counts.items()
        }

    def describe(self) -> str:
        """One line, e.g. ``bad_json: 2 (lines 3, 7); bad_timestamp: 1 (line 9)``."""
        parts = []
        for reason, count in self.counts.items():
            kept = self.lines[reason]
            more = ", …" if count > len(kept) else ""
            where = ", ".join(map(str, kept))
            parts.append(f"{reason}: {count} (line{'s' if len(kept) > 1 else ''} {where}{more})")
        return "; ".join(parts) or "none"


MIN_SECONDS = -9_183_000_000.0
"""Earliest accepted time (1679-01-01), inside the range of pandas timestamps."""

MAX_SECONDS = 9_213_000_000.0
"""Latest accepted time (2261-12-11), inside the range of pandas timestamps."""


def parse_timestamp(value: Any) -> float:
    """Seconds since the epoch of an ISO 8601 string or of epoch seconds (number or string).

    Times without a zone are taken as UTC.

    Raises
    ------
    ValueError
        Empty, NaN/inf, a boolean, or text that is neither ISO 8601 nor a number.

    Examples
    --------
    >>> parse_timestamp("2024-05-01T00:00:00Z"), parse_timestamp(1714521600)
    (1714521600.0, 1714521600.0)
    >>> parse_timestamp("2024-05-01 02:00:00+02:00")
    1714521600.0
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        if not text:
            raise ValueError("empty time")
        try:
            seconds = float(text)
        except ValueError:
            parsed = datetime.fromisoformat(text)  # Python 3.11 accepts "Z" and most forms
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite time: {value!r}")
    # Epoch milliseconds or typos far in the future must be malformed lines, not a crash later
    # when a window is named: pandas timestamps (used for windows) end in 2262.
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise ValueError(f"time out of range (years 1678-2261): {value!r}")
    return seconds


def format_time(seconds: float) -> str:
    """ISO 8601 UTC text of epoch seconds.

    Examples
    --------
    >>> format_time(1714521600)
    '2024-05-01T00:00:00Z'
    """
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _optional(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _record(fields: dict[str, Any], line: int, log: MalformedLog) -> StreamRecord | None:
    """A record from parsed fields, or ``None`` after logging why the line is malformed."""
    raw_time = next((fields[c] for c in TIME_COLUMNS if fields.get(c) not in (None, "")), None)
    if raw_time is None:
        log.add("missing_timestamp", line)
        return None
    text = fields.get("text")
    if not isinstance(text, str | int | float) or isinstance(text, bool) or not str(text).strip():
        log.add("missing_text", line)  # absent, empty, or a list/object instead of text
        return None
    for value in (text, fields.get("source"), fields.get("entity")):
        try:
            str(value).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") cannot be written out later
            log.add("bad_encoding", line)
            return None
    try:
        timestamp = parse_timestamp(raw_time)
    except (ValueError, OverflowError, OSError):
        log.add("bad_timestamp", line)
        return None
    return StreamRecord(
        line,
        timestamp,
        str(text).strip(),
        _optional(fields.get("source")),
        _optional(fields.get("entity")),
    )


class LineSource:
    """Byte lines of a file or of a file descriptor, with their 1-based line numbers.

    For a pipe (standard input) it reads the descriptor directly, so that a line is handed on
    as soon as it arrives; :meth:`idle` says whether no complete line is waiting right now.
    """

    def __init__(self, handle: IO[bytes], follow: bool) -> None:
        self.handle = handle
        self.follow = follow
        self._buffer = b""
        self._eof = False
        self._fd = handle.fileno() if follow else -1

    def __iter__(self) -> Iterator[bytes]:
        if not self.follow:
            yield from self.handle
            return
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line, self._buffer = self._buffer[: newline + 1], self._buffer[newline + 1 :]
                yield line
                continue
            if self._eof:
                if self._buffer:
                    line, self._buffer = self._buffer, b""
                    yield line
                return
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self._eof = True
            self._buffer += chunk

    def idle(self) -> bool:
        """No complete line is buffered and none can be read without waiting (follow mode)."""
        if not self.follow:
            return False
        if b"\n" in self._buffer or self._eof:
            return False
        try:
            ready, _, _ = select.select([self._fd], [], [], 0)
        except (OSError, ValueError):  # select does not take this descriptor (Windows)
            return True
        return not ready


class StreamReader:
    """Records of a JSONL or CSV stream, skipping (and logging) malformed lines.

    Parameters
    ----------
    source
        A path, ``"-"`` for standard input (follow mode), or an open binary handle.
    fmt
        ``jsonl`` or ``csv``; default from the file suffix (``.csv``/``.tsv``), else JSONL.
    malformed
        Where skipped lines are counted (a new log by default).

    Examples
    --------
    >>> import io
    >>> data = b'{"timestamp": 0, "text": "up"}\\nnot json\\n{"text": "no time"}\\n'
    >>> reader = StreamReader(io.BytesIO(data), "jsonl")
    >>> [r.text for r in reader], reader.malformed.describe()
    (['up'], 'bad_json: 1 (line 2); missing_timestamp: 1 (line 3)')
    """

    def __init__(
        self,
        source: str | Path | IO[bytes],
        fmt: StreamFormat | None = None,
        malformed: MalformedLog | None = None,
    ) -> None:
        self.malformed = malformed if malformed is not None else MalformedLog()
        self.lines_read = 0
        self._owned: IO[bytes] | None = None
        follow = False
        if isinstance(source, str | Path) and str(source) == "-":
            handle: IO[bytes] = sys.stdin.buffer
            follow = True
            self.name = "stdin"
        elif isinstance(source, str | Path):
            path = Path(source)
            if not path.is_file():
                raise DataError(
                    f"stream file '{path}' not found", hint="give a JSONL/CSV file or - for stdin"
                )
            handle = self._owned = path.open("rb")
            self.name = path.name
            if fmt is None and path.suffix.lower() in (".csv", ".tsv"):
                fmt = "csv"
        else:
            handle = source
            self.name = "stream"
        if fmt not in (None, "jsonl", "csv"):
            raise ConfigError(f"unknown stream format '{fmt}'", hint="use jsonl or csv")
        self.format: StreamFormat = fmt or "jsonl"
        self.delimiter = (
            "\t"
            if isinstance(source, str | Path) and Path(source).suffix.lower() == ".tsv"
            else ","
        )
        self.lines = LineSource(handle, follow)
        self._header: list[str] | None = None

    def idle(self) -> bool:
        """See :meth:`LineSource.idle`."""
        return self.lines.idle()

    def close(self) -> None:
        """Close the file this reader opened (never standard input)."""
        if self._owned is not None:
            self._owned.close()

    def __iter__(self) -> Iterator[StreamRecord]:
        for raw in self.lines:
            self.lines_read += 1
            number = self.lines_read
            try:
                line = raw.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
            except UnicodeDecodeError:
                self.malformed.add("bad_encoding", number)
                continue
            if not line.strip():
                continue
            record = self._parse(line, number)
            if record is not None:
                yield record

    def _parse(self, line: str, number: int) -> StreamRecord | None:
        if self.format == "jsonl":
            try:
                fields = json.loads(line)
            except (ValueError, RecursionError):  # JSONDecodeError, or a 5,000-digit number
                self.malformed.add("bad_json", number)
                return None
            if not isinstance(fields, dict):
                self.malformed.add("not_an_object", number)
                return None
            return _record(fields, number, self.malformed)
        try:
            cells = next(csv.reader([line], delimiter=self.delimiter))
        except (csv.Error, StopIteration):
            self.malformed.add("bad_csv", number)
            return None
        if self._header is None:
            header = [cell.strip().lower() for cell in cells]
            if "text" not in header or not any(c in header for c in TIME_COLUMNS):
                raise DataError(
                    f"the CSV stream's header (line {number}) has no 'timestamp' and 'text' "
                    f"columns (it has: {', '.join(header)})",
                    hint="start the CSV with a header line such as timestamp,text,source,entity",
                )
            self._header = header
            return None
        if len(cells) != len(self._header):
            self.malformed.add("bad_csv", number)
            return None
        return _record(dict(zip(self._header, cells, strict=True)), number, self.malformed)
