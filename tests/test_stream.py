"""The stream reader: timestamps, JSONL and CSV records, malformed lines with their line numbers,
and follow mode on standard input (each record handed on as its line arrives)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from polyculture.data.stream import (
    MalformedLog,
    StreamReader,
    format_time,
    parse_timestamp,
)
from polyculture.errors import DataError

MAY_1 = datetime(2024, 5, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T00:00:00Z", MAY_1),
        ("2024-05-01T00:00:00", MAY_1),  # no zone: UTC
        ("2024-05-01 03:00:00+03:00", MAY_1),
        ("2024-05-01", MAY_1),
        (MAY_1, MAY_1),
        (int(MAY_1), MAY_1),
        (str(int(MAY_1)), MAY_1),
        ("1714521600.5", MAY_1 + 0.5),
    ],
)
def test_parse_timestamp(value: object, expected: float) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("value", ["", "yesterday", "2024-13-01", None, True, "nan", float("inf")])
def test_unparseable_timestamps_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)


def test_format_time_round_trips() -> None:
    assert parse_timestamp(format_time(MAY_1 + 3723)) == MAY_1 + 3723


def test_malformed_jsonl_lines_are_counted_with_line_numbers_and_never_stop() -> None:
    lines = [
        '{"timestamp": "2024-05-01T00:00:00Z", "text": "first", "source": "wire", "entity": "X"}',
        "{bad json",  # 2
        '{"text": "no time"}',  # 3
        '{"timestamp": "tomorrow-ish", "text": "bad time"}',  # 4
        "",  # blank: skipped silently
        '{"timestamp": 1714521600}',  # 6: no text
        "[1, 2]",  # 7
        '{"timestamp": 1714521600, "text": "   "}',  # 8: empty text
        '{"timestamp": 1714521601, "text": "second"}',
        "{also bad",  # 10
    ]
    data = ("\n".join(lines) + "\n").encode() + b'{"timestamp": 1, "text": "caf\xe9"}\n'  # 11
    data += b'{"time": 1714521602, "text": "third"}'  # 12, no final newline
    reader = StreamReader(io.BytesIO(data), "jsonl", MalformedLog(keep=1))
    records = list(reader)
    assert [r.text for r in records] == ["first", "second", "third"]
    assert [r.line for r in records] == [1, 9, 12]
    assert records[0].source == "wire" and records[0].entity == "X" and records[1].source is None
    assert reader.malformed.summary() == {
        "bad_json": {"count": 2, "lines": [2]},  # keep=1: the first line number only
        "missing_timestamp": {"count": 1, "lines": [3]},
        "bad_timestamp": {"count": 1, "lines": [4]},
        "missing_text": {"count": 2, "lines": [6]},
        "not_an_object": {"count": 1, "lines": [7]},
        "bad_encoding": {"count": 1, "lines": [11]},
    }
    assert reader.malformed.total == 8 and reader.lines_read == 12
    assert "bad_json: 2 (line 2, …)" in reader.malformed.describe()


def test_hostile_lines_are_malformed_not_fatal(tmp_path: Path) -> None:
    lines = [
        '{"timestamp": ' + "1" * 5000 + ', "text": "huge number"}',  # 1: ValueError in json
        '{"timestamp": 1714521600000, "text": "epoch milliseconds"}',  # 2: year 56301
        '{"timestamp": 1714521600, "text": 5}',  # 3: a number is text
        '{"timestamp": 1714521600, "text": ["a", "list"]}',  # 4
        '{"timestamp": 1714521600, "text": "lone \\ud800 surrogate"}',  # 5
        '{"timestamp": 1714521601, "text": "fine"}',  # 6
    ]
    reader = StreamReader(io.BytesIO("\n".join(lines).encode()), "jsonl")
    records = list(reader)
    assert [(r.line, r.text) for r in records] == [(3, "5"), (6, "fine")]
    assert reader.malformed.summary() == {
        "bad_json": {"count": 1, "lines": [1]},
        "bad_timestamp": {"count": 1, "lines": [2]},
        "missing_text": {"count": 1, "lines": [4]},
        "bad_encoding": {"count": 1, "lines": [5]},
    }
    tsv = tmp_path / "NEWS.TSV"
    tsv.write_text("timestamp\ttext\n1714521600\tAcme, Inc. rose\n")
    assert [r.text for r in StreamReader(tsv)] == ["Acme, Inc. rose"]


def test_csv_stream_with_header_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "news.csv"
    path.write_text(
        "timestamp,text,source\n"
        '2024-05-01T00:00:00Z,"Acme, Inc. fell",wire\n'
        "2024-05-01T00:01:00Z,too,many,cells\n"
        ",no time,wire\n"
        "soon,bad time,wire\n"
        "1714521700,plain,\n"
    )
    reader = StreamReader(path)
    assert reader.format == "csv"
    records = list(reader)
    assert [(r.line, r.text, r.source) for r in records] == [
        (2, "Acme, Inc. fell", "wire"),
        (6, "plain", None),
    ]
    assert reader.malformed.summary() == {
        "bad_csv": {"count": 1, "lines": [3]},
        "missing_timestamp": {"count": 1, "lines": [4]},
        "bad_timestamp": {"count": 1, "lines": [5]},
    }


def test_csv_without_header_columns_and_missing_file_raise(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("when,what\n1,a\n")
    with pytest.raises(DataError, match="no 'timestamp' and 'text' columns"):
        list(StreamReader(path))
    with pytest.raises(DataError, match="not found"):
        StreamReader(tmp_path / "absent.jsonl")


FOLLOW = textwrap.dedent(
    """
    import sys
    from polyculture.data.stream import StreamReader
    reader = StreamReader("-")
    for record in reader:
        print(record.line, record.text, reader.idle(), flush=True)
    print("end", reader.malformed.describe(), flush=True)
    """
)


def test_follow_mode_hands_on_each_record_as_it_arrives() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", FOLLOW],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        for i, text in enumerate(["one", "two"]):
            process.stdin.write(json.dumps({"timestamp": i, "text": text}) + "\n")
            process.stdin.flush()
            # The record comes out while stdin is still open, before the next one is written;
            # nothing else is waiting, so the reader reports itself idle.
            assert process.stdout.readline().split() == [str(i + 1), text, "True"]
        process.stdin.write("not json\n")
        process.stdin.write(json.dumps({"timestamp": 5, "text": "three"}) + "\n")
        process.stdin.flush()
        assert process.stdout.readline().split() == ["4", "three", "True"]
        process.stdin.close()
        assert process.stdout.readline().strip() == "end bad_json: 1 (line 3)"
    finally:
        process.kill()
        process.wait(timeout=30)
