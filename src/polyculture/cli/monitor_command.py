"""``polyculture monitor``: per-topic sentiment trends and change alerts over a text stream.

A thin wrapper over :func:`polyculture.run.monitor.run_monitor`; registered in
:mod:`polyculture.cli.main` with ``app.command(...)(monitor)``. Alerts are printed the moment
they are raised (one JSON object per line with ``--format json``), so ``--stream -`` can follow
a live feed; the tables land in ``RUN_DIR/monitor/<name>/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from polyculture.errors import ConfigError

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

EPILOG = (
    "Examples:\n\n"
    "  polyculture monitor runs/phrasebank --stream news.jsonl "
    "--topics examples/monitor/topics.toml\n\n"
    "  tail -f news.jsonl | polyculture monitor runs/phrasebank --stream - "
    "--topics topics.toml --format json\n\n"
    "  polyculture monitor runs/phrasebank --stream news.csv --topics topics.toml "
    "--member tfidf_logreg --member minilm-logreg --window 1h --detector cusum"
)


def _emit(kind: str, payload: dict[str, Any], fmt: str, windows: bool) -> None:
    if kind == "alert":
        if fmt == "json":
            sys.stdout.write(json.dumps({"event": "alert"} | payload, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
        example = payload["examples"][0] if payload["examples"] else ""
        console.print(
            f"[bold red]ALERT[/] {escape(payload['time'])} topic [bold]{escape(payload['topic'])}"
            f"[/] ({escape(payload['member'])}): negative share "
            f"{100 * payload['negative_share']:.0f}% of {payload['volume']} vs baseline "
            f"{100 * payload['baseline']:.0f}%, {payload['detector']} {payload['statistic']:.2f}"
            f" > {payload['threshold']:g}" + (f' — "{escape(example[:100])}"' if example else "")
        )
        sys.stdout.flush()
    elif kind == "window" and windows:
        row = {k: v for k, v in payload.items() if k != "start_seconds"}
        if fmt == "json":
            sys.stdout.write(json.dumps({"event": "window"} | _finite(row)) + "\n")
        else:
            console.print(
                f"window {escape(row['window_start'])} {escape(row['topic'])} "
                f"({escape(row['member'])}): {row['negatives']}/{row['volume']} negative, "
                f"{row['status']}"
            )
        sys.stdout.flush()


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def monitor(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a text task.")],
    stream: Annotated[
        str,
        typer.Option(
            "--stream",
            help="JSONL or CSV file of timestamp,text[,source,entity]; "
            "- reads standard input as records arrive.",
        ),
    ],
    topics: Annotated[
        Path, typer.Option("--topics", help="Topics file (TOML/JSON): topic -> keywords.")
    ],
    member: Annotated[
        list[str] | None,
        typer.Option(
            "--member",
            "-m",
            help="Member id, prefix or name[@seed]; repeat to compare members (default: the "
            "selection's recommendation).",
        ),
    ] = None,
    window: Annotated[str, typer.Option("--window", help="Window length: 1h, 30m, 1d.")] = "1h",
    lateness: Annotated[
        str, typer.Option("--lateness", help="How far out of order records may arrive.")
    ] = "10m",
    max_skew: Annotated[
        str,
        typer.Option(
            "--max-skew",
            help="Records this far ahead of the latest time seen are malformed (typos, ms).",
        ),
    ] = "1d",
    detector: Annotated[str, typer.Option("--detector", help="ewma or cusum.")] = "ewma",
    limit: Annotated[
        float | None,
        typer.Option("--limit", help="Alert limit (default: ewma 3.5 sd, cusum 4)."),
    ] = None,
    smoothing: Annotated[float, typer.Option("--smoothing", help="EWMA weight lambda.")] = 0.3,
    slack: Annotated[float, typer.Option("--slack", help="CUSUM allowance k (sd).")] = 1.0,
    warmup: Annotated[
        int, typer.Option("--warmup", help="Windows that estimate each topic's baseline.")
    ] = 24,
    baseline: Annotated[
        float | None,
        typer.Option("--baseline", help="A given baseline negative share (no warm-up)."),
    ] = None,
    min_volume: Annotated[
        int, typer.Option("--min-volume", help="Least texts for a window to be monitored.")
    ] = 5,
    cooldown: Annotated[
        int, typer.Option("--cooldown", help="Windows without a new alert after one.")
    ] = 3,
    negative_class: Annotated[
        str, typer.Option("--negative-class", help="The class whose share is watched.")
    ] = "negative",
    topic_match: Annotated[
        str,
        typer.Option(
            "--topic-match", help="keywords, or embedding (MiniLM; needs polyculture\\[text])."
        ),
    ] = "keywords",
    similarity: Annotated[
        float, typer.Option("--similarity", help="Least cosine similarity (embedding).")
    ] = 0.3,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per micro-batch.")] = 256,
    tolerance: Annotated[
        str | None,
        typer.Option("--tolerance", help="Alerts this close count as shared (default: window)."),
    ] = None,
    summary: Annotated[str, typer.Option("--summary", help="Summary period: hour or day.")] = (
        "day"
    ),
    input_format: Annotated[
        str | None, typer.Option("--input-format", help="jsonl or csv (default: from suffix).")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Output folder RUN_DIR/monitor/NAME (default: stream name)."),
    ] = None,
    show_windows: Annotated[
        bool, typer.Option("--show-windows", help="Also print every closed window.")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: table or json.")] = (
        "table"
    ),
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Rebuild RUN_DIR/report.html after.")
    ] = True,
) -> None:
    """Watch a stream of time-stamped texts: per-topic negative share per window, change alerts
    (EWMA or CUSUM), a summary, and with several --member the alerts they share.

    Writes RUN_DIR/monitor/NAME/: alerts.jsonl, windows.parquet, summary.parquet,
    malformed.json, agreement.parquet (two or more members) and monitor.json.
    """
    from polyculture.measure.changepoint import DetectorSettings
    from polyculture.run.monitor import MonitorSettings, parse_duration, run_monitor

    if fmt not in ("table", "json"):
        raise ConfigError(f"unknown --format '{fmt}'", hint="use table or json")
    if detector not in ("ewma", "cusum"):
        raise ConfigError(f"unknown --detector '{detector}'", hint="use ewma or cusum")
    if topic_match not in ("keywords", "embedding"):
        raise ConfigError(
            f"unknown --topic-match '{topic_match}'", hint="use keywords or embedding"
        )
    if summary not in ("hour", "day"):
        raise ConfigError(f"unknown --summary '{summary}'", hint="use hour or day")
    if input_format not in (None, "jsonl", "csv"):
        raise ConfigError(f"unknown --input-format '{input_format}'", hint="use jsonl or csv")
    settings = MonitorSettings(
        window=parse_duration(window),
        lateness=parse_duration(lateness),
        max_skew=parse_duration(max_skew),
        detector=DetectorSettings(
            method=detector,  # type: ignore[arg-type]  # checked above
            limit=limit,
            smoothing=smoothing,
            slack=slack,
            warmup=warmup,
            baseline=baseline,
            min_volume=min_volume,
            cooldown=cooldown,
        ),
        batch_size=batch_size,
        tolerance=None if tolerance is None else parse_duration(tolerance),
        negative_class=negative_class,
        topic_match=topic_match,  # type: ignore[arg-type]  # checked above
        similarity=similarity,
        summary=summary,  # type: ignore[arg-type]  # checked above
    )
    try:
        result = run_monitor(
            run_dir,
            stream,
            topics,
            list(member or []),
            settings,
            name=name,
            stream_format=input_format,  # type: ignore[arg-type]  # checked above
            on_event=lambda kind, payload: _emit(kind, payload, fmt, show_windows),
        )
    except KeyboardInterrupt:  # run_monitor closed the open windows and wrote the files
        folder = run_dir / "monitor" / (name or ("stdin" if stream == "-" else Path(stream).stem))
        errors.print(f"interrupted: what was read so far is in {escape(str(folder))}")
        raise typer.Exit(130) from None
    if report:
        from polyculture.report import build_report

        build_report(run_dir)
    info = result.info
    if fmt == "json":
        final = {"event": "summary"} | {
            key: info[key]
            for key in ("name", "members", "records", "malformed", "too_late", "alerts")
        }
        final |= {
            "malformed_lines": info["malformed_lines"],
            "too_late_lines": info["too_late_lines"],
            "agreement": info["agreement"],
            "texts_per_second": info["texts_per_second"],
            "folder": str(result.folder),
        }
        sys.stdout.write(json.dumps(final) + "\n")
        return
    _print_result(result)


def _line_numbers(lines: list[int], count: int) -> str:
    """``line 3`` or ``lines 3, 7, …`` (the dots when more lines than kept)."""
    more = ", …" if count > len(lines) else ""
    return f"line{'s' if count > 1 else ''} {', '.join(map(str, lines))}{more}"


def _print_result(result: Any) -> None:
    info = result.info
    console.print(
        f"[bold]{info['records']}[/] records from {escape(str(info['stream']))} "
        f"({info['lines']} lines) scored by {escape(', '.join(info['members']))}: "
        f"{info['alerts']} alert(s); {info['texts_per_second'] or 0:.0f} texts/s"
    )
    if info["malformed"]:
        parts = []
        for reason, item in info["malformed_lines"].items():
            parts.append(
                f"{reason} {item['count']} ({_line_numbers(item['lines'], item['count'])})"
            )
        console.print(
            f"[yellow]malformed lines skipped[/]: {info['malformed']}: " + "; ".join(parts)
        )
    if info["too_late"]:
        lines = _line_numbers(info["too_late_lines"], info["too_late"])
        console.print(f"[yellow]too late[/] (window already closed): {info['too_late']} ({lines})")
    summary = result.summary
    if not summary.empty:
        from rich import box
        from rich.table import Table

        table = Table(title="summary per period and topic", box=box.SIMPLE_HEAD)
        for column in ("member", "period", "topic", "texts", "negative", "alerts"):
            table.add_column(
                column, justify="right" if column in ("texts", "negative", "alerts") else "left"
            )
        for row in summary.to_dict("records"):
            table.add_row(
                escape(str(row["member"])),
                escape(str(row["period"])),
                escape(str(row["topic"])),
                str(row["texts"]),
                f"{100 * row['negative_share']:.1f}%",
                str(row["alerts"]),
            )
        console.print(table)
    agreement = info.get("agreement") or {}
    for row in result.agreement.to_dict("records"):
        jaccard = row["jaccard"]
        console.print(
            f"[bold]agreement[/] {escape(row['member_a'])} vs {escape(row['member_b'])}: "
            f"{row['shared_alerts']} shared of {row['alerts_a']} / {row['alerts_b']} alerts "
            f"(Jaccard {'—' if jaccard != jaccard else f'{jaccard:.2f}'}); labels agree on "
            f"{100 * row['label_agreement']:.1f}% of texts (Cohen's kappa {row['cohen_kappa']:.2f})"
        )
    if agreement:
        console.print(
            f"alerts raised by every member: {agreement['alerts_raised_by_every_member']} of "
            f"{agreement['distinct_alerts']} distinct alerts"
        )
    console.print(f"monitor folder: [bold]{escape(str(result.folder))}[/]")
