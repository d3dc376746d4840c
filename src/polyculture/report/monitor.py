"""Report sections of ``polyculture monitor``: sentiment trends, alerts and model agreement.

:func:`monitor_sections` returns one section per folder ``RUN_DIR/monitor/<name>/`` that holds a
``monitor.json`` (written by :func:`polyculture.run.monitor.run_monitor`):

* a trend chart per topic: the negative share per window of each member, with the baseline and
  a marker at every alert;
* the alerts (time, topic, member, share against baseline, statistic against limit, volume and
  the most negative example text);
* with two or more members, the agreement between them: shared alerts, Jaccard index of the
  alert sets, per-text label agreement and Cohen's kappa;
* the skipped lines (per reason, with their first line numbers) and the records that came too
  late.

The files are read here directly (the report reads stored files only). Every cell is a string
the template escapes; figure text is escaped by matplotlib's SVG writer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib as mpl
import pandas as pd

from polyculture.report.figures import _RC, _figure, short, style, to_svg
from polyculture.report.html import DASH, FigureView, Section, _Csv, _table, num, pct
from polyculture.run.results import RunResults

MONITOR_DIR = "monitor"
MAX_TOPICS = 8
"""Most topics drawn in the trend chart (those with alerts first, then by volume)."""


def read_monitor_outputs(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every readable monitor folder of a run: ``name``, ``info``, ``windows``, ``alerts``,
    ``agreement`` (folders without ``monitor.json`` or with unreadable tables are skipped).

    Examples
    --------
    >>> read_monitor_outputs("/nonexistent")
    []
    """
    base = Path(run_dir) / MONITOR_DIR
    if not base.is_dir():
        return []
    out = []
    for folder in sorted(p for p in base.iterdir() if (p / "monitor.json").is_file()):
        try:
            info = json.loads((folder / "monitor.json").read_text())
            windows = pd.read_parquet(folder / "windows.parquet")
            path = folder / "alerts.jsonl"
            lines = path.read_text().splitlines() if path.is_file() else []
            alerts = [json.loads(line) for line in lines if line.strip()]
            path = folder / "agreement.parquet"
            agreement = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        except (OSError, ValueError):  # a half-copied folder must not break the whole report
            continue
        out.append(
            {
                "name": folder.name,
                "info": info,
                "windows": windows,
                "alerts": alerts,
                "agreement": agreement,
            }
        )
    return out


def trend_chart(windows: pd.DataFrame, alerts: list[dict[str, Any]], title: str) -> str:
    """Negative share per window and topic (one panel per topic, one line per member), the
    baseline of each member (dotted) and its alerts (triangles)."""
    ranked = _topics(windows, alerts)
    members = list(dict.fromkeys(windows["member"].astype(str)))
    fig = _figure(7.0, 0.6 + 1.5 * len(ranked))
    with mpl.rc_context(_RC):
        axes = fig.subplots(len(ranked), 1, sharex=True, squeeze=False)[:, 0]
        for ax, topic in zip(axes, ranked, strict=True):
            for i, member in enumerate(members):
                s = style(i)
                rows = windows[(windows["topic"] == topic) & (windows["member"] == member)]
                rows = rows.sort_values("start_seconds")
                hours = (rows["start_seconds"].to_numpy(float) - _origin(windows)) / 3600
                ax.plot(hours, 100 * rows["negative_share"].to_numpy(float), color=s["color"],
                        linestyle=s["linestyle"], lw=1.0, label=short(member))  # fmt: skip
                base = rows["baseline"].dropna()
                if len(base):
                    ax.axhline(100 * float(base.iloc[-1]), color=s["color"], lw=0.7, ls=":")
                hit = rows[rows["alert"].astype(bool)]
                if len(hit):
                    x = (hit["start_seconds"].to_numpy(float) - _origin(windows)) / 3600
                    y = 100 * hit["negative_share"].to_numpy(float)
                    ax.plot(x, y, linestyle="none", marker="^", ms=7, color=s["color"],
                            markeredgecolor="black")  # fmt: skip
            ax.set_ylim(-2, 102)
            ax.set_ylabel("% negative")
            ax.set_title(short(topic, 40), loc="left", fontsize=9)
        axes[-1].set_xlabel("hours since the first window (UTC " + _origin_text(windows) + ")")
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(names)),
                   frameon=False, fontsize=8)  # fmt: skip
        fig.suptitle(title)
    return to_svg(fig, "monitor-trend")


def _origin(windows: pd.DataFrame) -> float:
    return float(windows["start_seconds"].min())


def _origin_text(windows: pd.DataFrame) -> str:
    return str(windows.sort_values("start_seconds")["window_start"].iloc[0])


def _topics(windows: pd.DataFrame, alerts: list[dict[str, Any]]) -> list[str]:
    alerted = list(dict.fromkeys(str(a["topic"]) for a in alerts))
    volume = windows.groupby("topic")["volume"].sum().sort_values(ascending=False, kind="stable")
    rest = [str(t) for t in volume.index if str(t) not in alerted]
    return (alerted + rest)[:MAX_TOPICS]


def _section(item: dict[str, Any], csv: _Csv) -> Section:
    name, info, windows, alerts = item["name"], item["info"], item["windows"], item["alerts"]
    settings = info.get("settings", {})
    detector = settings.get("detector", {})
    section = Section(f"monitor-{name}", f"Sentiment monitor: {name}")
    members = ", ".join(map(str, info.get("members", [])))
    section.intro.append(
        f"The stream {info.get('stream', '?')} was assigned to topics and labelled by {members}; "
        f"per topic and {num(float(settings.get('window', 0)) / 3600, 2)} h window the share "
        f"of texts labelled {settings.get('negative_class', 'negative')} is watched by the "
        f"{str(detector.get('method', '?')).upper()} detector (limit "
        f"{num(detector.get('limit'), 2)}, baseline from "
        + (
            f"a given share {pct(detector.get('baseline'))}"
            if detector.get("baseline") is not None
            else f"the first {detector.get('warmup')} windows of each topic"
        )
        + f", windows with fewer than {detector.get('min_volume')} texts not monitored). Windows "
        f"close when the watermark (latest time seen minus "
        f"{num(float(settings.get('lateness', 0)) / 60, 0)} min) passes their end."
    )
    section.facts.extend(
        [
            ("records scored", str(info.get("records"))),
            ("lines read", str(info.get("lines"))),
            ("malformed lines skipped", str(info.get("malformed"))),
            ("records too late", str(info.get("too_late"))),
            ("alerts", str(info.get("alerts"))),
            ("texts / s (end to end)", num(info.get("texts_per_second"), 0)),
        ]
    )
    if len(windows):
        path = csv.add(f"monitor_{name}_windows", windows)
        count = len(alerts)
        title = f"{count} alert{'s' if count != 1 else ''} over {windows['topic'].nunique()} topics"
        section.figures.append(
            FigureView(
                trend_chart(windows, alerts, title),
                f"Line chart of the negative share per window for each topic and member; {title}",
                title + ": negative share per window (lines, one per member), baseline (dotted) "
                "and alerts (triangles); full data in " + path.rsplit("/", 1)[-1] + ".",
            )
        )
    if alerts:
        rows = [
            {
                "time": str(a["time"]),
                "topic": str(a["topic"]),
                "member": str(a["member"]),
                "negative": f"{a['negatives']}/{a['volume']} ({pct(a['negative_share'])})",
                "baseline": pct(a["baseline"]),
                "statistic": f"{num(a['statistic'], 2)} > {num(a['threshold'], 2)}",
                "example": str(a["examples"][0]) if a.get("examples") else DASH,
            }
            for a in alerts
        ]
        frame = pd.DataFrame(rows)
        path = csv.add(f"monitor_{name}_alerts", frame)
        section.tables.append(_table("Alerts", frame, ["negative", "baseline", "statistic"], path))
    agreement = item["agreement"]
    if len(agreement):
        frame = pd.DataFrame(
            {
                "member A": agreement["member_a"].astype(str),
                "member B": agreement["member_b"].astype(str),
                "alerts A / B": [f"{a} / {b}" for a, b in zip(agreement["alerts_a"],
                                                              agreement["alerts_b"], strict=True)],
                "shared alerts": agreement["shared_alerts"].astype(str),
                "Jaccard": [num(v, 2) for v in agreement["jaccard"]],
                "label agreement": [pct(v) for v in agreement["label_agreement"]],
                "Cohen's kappa": [num(v, 2) for v in agreement["cohen_kappa"]],
            }
        )  # fmt: skip
        path = csv.add(f"monitor_{name}_agreement", agreement)
        overall = info.get("agreement") or {}
        if overall:
            section.intro.append(
                f"Alert-level homogenization: {overall.get('alerts_raised_by_every_member')} of "
                f"{overall.get('distinct_alerts')} distinct alerts were raised by every member "
                f"(alerts of one topic within {num(overall.get('tolerance_seconds', 0) / 3600, 2)}"
                " h count as one)."
            )
        numeric = ["shared alerts", "Jaccard", "label agreement", "Cohen's kappa"]
        section.tables.append(_table("Agreement between members", frame, numeric, path))
    skipped = info.get("malformed_lines") or {}
    late = info.get("too_late_lines") or []
    if skipped or late:
        rows = [
            {"reason": reason, "lines": str(v["count"]), "first line numbers": _lines(v)}
            for reason, v in skipped.items()
        ]
        if late:
            total = int(info.get("too_late", len(late)))
            rows.append(
                {
                    "reason": "too late (window closed)",
                    "lines": str(total),
                    "first line numbers": _lines({"count": total, "lines": late}),
                }
            )
        section.tables.append(_table("Skipped lines", pd.DataFrame(rows), ["lines"]))
    return section


def _lines(item: dict[str, Any]) -> str:
    text = ", ".join(map(str, item["lines"]))
    return text + (", …" if int(item["count"]) > len(item["lines"]) else "")


def monitor_sections(results: RunResults, csv: _Csv) -> list[Section]:
    """One "Sentiment monitor" section per monitor folder of the run (none when there is none).

    Examples
    --------
    >>> import tempfile
    >>> from polyculture.run.audit import load_predictions, write_audit_run
    >>> from polyculture.run import load_run
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "p.csv").write_text("instance,label,a,b\\n1,x,x,y\\n2,y,y,y\\n")
    >>> _ = write_audit_run(load_predictions(folder / "p.csv"), folder / "demo")
    >>> monitor_sections(load_run(folder / "demo"), _Csv(folder / "demo"))
    []
    """
    return [_section(item, csv) for item in read_monitor_outputs(results.root)]
