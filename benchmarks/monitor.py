"""Sentiment monitor on a replayed Financial PhraseBank stream: detection delay, false alarms per
day and throughput, side by side for two members.

The stream: sentences of the run's *test* split (never trained on) replayed over several days with
Poisson arrivals; a share of the records carries an entity of one of the topics of
``examples/monitor/topics.toml`` (the others are matched by keywords or go to ``other``). Into
one topic (``telecom`` by default) bursts of extra negative test sentences are injected (several
hours each, after a one-day warm-up). Each member labels the same stream; an alert counts as a
detection when it is on the burst topic and falls in ``[burst start, burst end + one window]``,
otherwise as a false alarm. Reported per member: detections, median and worst detection delay
(alert window end minus burst start), false alarms per monitored day, and texts/s (scoring only,
and end to end).

    python benchmarks/monitor.py [RUN_DIR] [--members tfidf_logreg minilm-logreg] [--days 5]
                                 [--rate 60] [--bursts 3] [--detector ewma] [--threads 2]
    python benchmarks/monitor.py --calibrate   # the detectors alone, on planted counts

Without RUN_DIR it trains a small phrasebank run (tfidf_logreg and MiniLM + logistic regression;
needs the data in ../shared/data/financial-phrasebank and polyculture[text]) under
``runs/bench-monitor``. Exits with a message when the data is absent. Wall-clock numbers depend
on the machine and on what else runs on it (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from polyculture.measure.changepoint import DetectorSettings
from polyculture.run.monitor import MonitorSettings, load_topics, run_monitor

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "financial-phrasebank"
TOPICS = ROOT / "examples" / "monitor" / "topics.toml"
START = 1714521600.0  # 2024-05-01T00:00:00Z
HOUR = 3600.0


def train_run(out: Path) -> Path:
    from polyculture.run import run_study

    zoo = (
        "zoo=[{family='tfidf_logreg'}, {name='minilm-logreg', family='logreg', "
        "params={C=2, standardize=false}, backbone='minilm'}]"
    )
    overrides = [zoo, "seeds=[0]", f"data.path={json.dumps(str(DATA))}"]
    return run_study("phrasebank", out, overrides, workers=1).root


def test_sentences(run_dir: Path) -> pd.DataFrame:
    from polyculture.run.predictor import load_predictor

    task = load_predictor(run_dir, "tfidf_logreg").task
    split = task.test
    assert split.texts is not None, "the run's task is not a text task"
    labels = [task.class_names[int(y)] for y in split.y.tolist()]
    return pd.DataFrame({"text": list(split.texts), "label": labels})


def build_stream(
    sentences: pd.DataFrame, days: int, rate: float, bursts: int, burst_topic: str, seed: int
) -> tuple[list[str], list[tuple[float, float]]]:
    """JSONL lines in time order and the (start, end) of each injected burst."""
    rng = random.Random(seed)
    topics = load_topics(TOPICS)
    entities = {t.name: t.entities[0] for t in topics if t.entities}
    texts = sentences["text"].tolist()
    negatives = sentences.loc[sentences["label"] == "negative", "text"].tolist()
    records: list[tuple[float, dict[str, Any]]] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate / HOUR)
        if t >= days * 86400:
            break
        record: dict[str, Any] = {"text": rng.choice(texts), "source": "replay"}
        if rng.random() < 0.6:  # tagged with a company of a topic by the news feed
            record["entity"] = rng.choice(sorted(entities.values()))
        records.append((t, record))
    windows = []
    slots = list(range(2, days))  # after a one-day warm-up, one burst per day at most
    for day in sorted(rng.sample(slots, min(bursts, len(slots)))):
        start = day * 86400 + rng.randint(8, 16) * HOUR + rng.random() * HOUR
        end = start + 3 * HOUR
        windows.append((START + start, START + end))
        s = start
        while True:
            s += rng.expovariate(15 / HOUR)  # 15 extra negative texts per hour
            if s >= end:
                break
            text = rng.choice(negatives)
            records.append((s, {"text": text, "source": "burst", "entity": entities[burst_topic]}))
    records.sort(key=lambda item: item[0])
    lines = [json.dumps({"timestamp": START + s} | r) for s, r in records]
    return lines, windows


def score(
    alerts: list[dict[str, Any]], bursts: list[tuple[float, float]], topic: str, days: float
) -> dict[str, Any]:
    delays, false_alarms, found = [], 0, set()
    for alert in alerts:
        end = pd.Timestamp(alert["time"]).timestamp()
        hit = next(
            (
                i
                for i, (b0, b1) in enumerate(bursts)
                if alert["topic"] == topic and b0 < end <= b1 + HOUR
            ),
            None,
        )
        if hit is None:
            false_alarms += 1
        elif hit not in found:
            found.add(hit)
            delays.append((end - bursts[hit][0]) / 60)
    return {
        "detected": f"{len(found)}/{len(bursts)}",
        "median delay (min)": float(np.median(delays)) if delays else math.nan,
        "worst delay (min)": max(delays) if delays else math.nan,
        "false alarms / day": false_alarms / days,
    }


def calibrate(seeds: int = 400) -> None:
    """False alarms and detection delays of the detectors' defaults on planted binomial counts
    (no model, no data): 4 topics x 72 hourly windows of Poisson(15) texts at share 0.2; bursts
    from 0.15 to 0.7 or 0.45 at Poisson(20) texts per window."""
    from polyculture.measure.changepoint import ChangeDetector

    print("detector defaults on planted counts (warm-up 24 windows):")
    for method in ("ewma", "cusum"):
        settings = DetectorSettings(method=method)
        noisy = 0
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            alerts = 0
            for _ in range(4):
                detector = ChangeDetector(settings)
                volumes = rng.poisson(15, 72)
                for n, e in zip(volumes, rng.binomial(volumes, 0.2), strict=True):
                    alerts += detector.update(int(e), int(n)).alert
            noisy += alerts > 0
        line = f"  {method}: {noisy / seeds:.1%} of {seeds} stationary streams raise an alert"
        for share in (0.7, 0.45):
            delays = []
            for seed in range(seeds // 2):
                rng = np.random.default_rng(10_000 + seed)
                detector = ChangeDetector(settings)
                volumes = rng.poisson(20, 40)
                shares = np.where(np.arange(40) >= 30, share, 0.15)
                first = None
                for t, (n, e) in enumerate(
                    zip(volumes, rng.binomial(volumes, shares), strict=True)
                ):
                    if detector.update(int(e), int(n)).alert and first is None:
                        first = t
                delays.append(math.inf if first is None or first < 30 else first - 30 + 1)
            within = np.mean(np.array(delays) <= 2)
            line += f"; burst to {share:.2f}: {within:.0%} detected within 2 windows"
            line += f" (median {np.median(delays):g})"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--members", nargs="+", default=["tfidf_logreg", "minilm-logreg"])
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--rate", type=float, default=60.0, help="background texts per hour")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--topic", default="telecom")
    parser.add_argument("--detector", default="ewma", choices=["ewma", "cusum"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibrate", action="store_true", help="only the detector check")
    args = parser.parse_args()
    if args.calibrate:
        calibrate()
        return
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    run_dir = args.run_dir
    if run_dir is None:
        if not (DATA / "Sentences_50Agree.txt").is_file():
            print(f"skipped: Financial PhraseBank not found at {DATA}")
            sys.exit(0)
        run_dir = ROOT / "runs" / "bench-monitor" / "phrasebank"
        if not (run_dir / "tables" / "members.parquet").is_file():
            print("training a small phrasebank run (tfidf_logreg, minilm-logreg) ...", flush=True)
            run_dir = train_run(ROOT / "runs" / "bench-monitor")
    sentences = test_sentences(run_dir)
    lines, bursts = build_stream(
        sentences, args.days, args.rate, args.bursts, args.topic, args.seed
    )
    folder = Path(tempfile.mkdtemp())
    stream = folder / "replay.jsonl"
    stream.write_text("\n".join(lines) + "\n")
    print(
        f"stream: {len(lines)} texts over {args.days} days ({args.rate:g}/h background, "
        f"{len(bursts)} bursts of 3 h x 15 negative texts/h on '{args.topic}'), test split of "
        f"{len(sentences)} sentences ({(sentences['label'] == 'negative').mean():.1%} negative); "
        f"detector {args.detector}; torch threads {args.threads}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    settings = MonitorSettings(detector=DetectorSettings(method=args.detector))
    monitored_days = args.days - 1  # the first day is the warm-up
    started = time.perf_counter()
    result = run_monitor(run_dir, stream, TOPICS, args.members, settings, name="bench", write=False)
    total = time.perf_counter() - started
    info = result.info
    rows = []
    for member in info["members"]:
        alerts = [a for a in result.alerts if a["member"] == member]
        rows.append(
            {"member": member}
            | score(alerts, bursts, args.topic, monitored_days)
            | {
                "alerts": len(alerts),
                "texts/s (scoring)": info["texts_per_second_scoring"][member],
                "scoring s": info["score_seconds"][member],
            }
        )
    table = pd.DataFrame(rows).set_index("member").T
    with pd.option_context("display.float_format", "{:.3g}".format, "display.width", 120):
        print(table.to_string())
    print(
        f"end to end (all members, topics, windows, detectors): {info['records']} texts in "
        f"{total:.1f} s incl. loading the members = {info['texts_per_second']:.0f} texts/s "
        "after loading"
    )
    agreement = result.agreement
    if len(agreement):
        row = agreement.iloc[0]
        overall = info["agreement"]
        print(
            f"agreement: {row['shared_alerts']} shared alerts of {row['alerts_a']} / "
            f"{row['alerts_b']} (Jaccard {row['jaccard']:.2f}); "
            f"{overall['alerts_raised_by_every_member']} of {overall['distinct_alerts']} "
            "distinct alerts raised by every member; labels agree on "
            f"{row['label_agreement']:.1%} of texts (Cohen's kappa "
            f"{row['cohen_kappa']:.2f})"
        )


if __name__ == "__main__":
    main()
