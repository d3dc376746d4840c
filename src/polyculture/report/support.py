"""Report section of the customer-service assistant (``polyculture support``).

:func:`support_section` reads ``RUN_DIR/support/`` (written by
:func:`polyculture.run.support.build_support`) and shows, when the assistant was built: the intent
member chosen and why, its test accuracy with its 95% CI, intent accuracy and macro-F1 of every
member with CIs, the thresholds with their target precision and how each was chosen, the routes'
precision and coverage on the test split (and on validation, where the thresholds were chosen)
with CIs, and a figure of the template route's precision against coverage on validation.

``report/html.py`` imports this module inside ``build_report``. Every cell is a string the
template escapes; figure text is escaped by matplotlib's SVG writer.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from polyculture.report.figures import _figure, to_svg
from polyculture.report.html import FigureView, Section, _Csv, _table, interval, num, pct
from polyculture.run.results import RunResults

FOLDER = "support"
"""The assistant's folder in a run directory."""
CONFIG = "support.json"
"""Its configuration, written last by ``build_support``."""


def _read(results: RunResults) -> tuple[dict[str, Any], dict[str, pd.DataFrame]] | None:
    folder = results.root / FOLDER
    if not (folder / CONFIG).is_file():
        return None
    try:
        config = json.loads((folder / CONFIG).read_text())
        tables = {
            name: pd.read_parquet(folder / f"{name}.parquet")
            for name in ("members", "routing", "calibration")
        }
    except (OSError, ValueError):
        return None  # a half-written or foreign folder: no section rather than a broken report
    return config, tables


def support_section(results: RunResults, csv: _Csv) -> Section | None:
    """The "Support assistant" section, or ``None`` when the run has no built assistant.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from polyculture.run.audit import load_predictions, write_audit_run
    >>> from polyculture.run import load_run
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "p.csv").write_text("instance,label,a,b\\n1,x,x,y\\n2,y,y,y\\n")
    >>> _ = write_audit_run(load_predictions(folder / "p.csv"), folder / "demo")
    >>> support_section(load_run(folder / "demo"), _Csv(folder / "demo")) is None
    True
    """
    loaded = _read(results)
    if loaded is None:
        return None
    config, tables = loaded
    thresholds = config["thresholds"]
    low, high = config.get("test_accuracy_ci") or (None, None)
    section = Section(
        "support",
        "Support assistant",
        intro=[
            "A customer's message is answered by the answer template of its predicted intent when "
            "the intent member is confident enough (template route); otherwise by the nearest "
            "knowledge-base entry with its source when it is similar enough (retrieval route); "
            "otherwise it is handed to a person (human route). Thresholds are the lowest whose "
            "precision reaches the target on the validation split; the routes are measured on "
            "the test split. Intervals are 95% bootstrap CIs over messages."
        ],
    )
    section.facts = [
        ("intent member", str(config["member"])),
        ("test accuracy [95% CI]", f"{pct(config['test_accuracy'])} {interval(low, high)}"),
        ("test macro-F1", num(config.get("test_macro_f1"))),
        ("retrieval encoder", str(config["encoder"])),
        *(
            (f"{route} threshold", _threshold(thresholds[route]))
            for route in ("template", "retrieval")
        ),
        (
            "answer templates",
            f"{len(config['class_names']) - len(config['intents_without_template'])} of "
            f"{len(config['class_names'])} intents",
        ),
        ("knowledge base", f"{config['knowledge_base_entries']} entries"),
    ]
    section.intro.append("Why this member: " + " ".join(str(r) for r in config["reasons"]))
    section.intro.extend(f"Note: {note}" for note in config.get("notes", []))
    section.tables.append(_members(tables["members"], csv))
    section.tables.append(_routing(tables["routing"], csv))
    curve = tables["calibration"]
    if not curve.empty:
        section.figures.append(_curve(curve, thresholds["template"]))
    return section


def _threshold(summary: dict[str, Any]) -> str:
    value = summary.get("value")
    target = f"target precision {pct(summary['target_precision'])}"
    if value is None:
        return f"off: no threshold reaches the {target} on validation"
    rule = summary.get("rule", "calibrated")
    if rule == "given":
        return f"{num(value)} (given; {target} not checked)"
    if rule == "default":
        return f"{num(value)} (default rule, uncalibrated: the knowledge base has no intents)"
    return (
        f"{num(value)} ({target}; on validation precision {pct(summary['precision'])}, "
        f"coverage {pct(summary['coverage'])} of {summary['rows']} messages)"
    )


def _members(members: pd.DataFrame, csv: _Csv) -> Any:
    shown = pd.DataFrame(
        {
            "member": [
                f"{name} s{seed}" + (" (chosen)" if chosen else "")
                for name, seed, chosen in zip(
                    members["name"], members["seed"], members["chosen"], strict=True
                )
            ],
            "test accuracy": [pct(v) for v in members["accuracy"]],
            "95% CI": [
                interval(a, b)
                for a, b in zip(
                    members["accuracy_ci_low"], members["accuracy_ci_high"], strict=True
                )
            ],
            "test macro-F1": [num(v) for v in members["macro_f1"]],
            "macro-F1 95% CI": [
                interval(a, b, num)
                for a, b in zip(
                    members["macro_f1_ci_low"], members["macro_f1_ci_high"], strict=True
                )
            ],
            "val accuracy": [pct(v) for v in members["val_accuracy"]],
        }
    )
    return _table(
        "Intent classification per member (test split)",
        shown,
        numeric=[c for c in shown.columns if c != "member"],
        csv=csv.add("support_members", members),
    )


def _routing(routing: pd.DataFrame, csv: _Csv) -> Any:
    names = {
        "template": "template",
        "retrieval": "retrieval",
        "human": "human hand-over",
        "answered": "answered (template or retrieval)",
    }
    ordered = pd.concat([routing[routing["split"] == s] for s in ("test", "val")])
    shown = pd.DataFrame(
        {
            "split": ordered["split"].astype(str),
            "route": [names.get(str(r), str(r)) for r in ordered["route"]],
            "messages": ordered["messages"].astype(int).astype(str),
            "share (coverage)": [pct(v) for v in ordered["share"]],
            "share 95% CI": [
                interval(a, b)
                for a, b in zip(ordered["share_ci_low"], ordered["share_ci_high"], strict=True)
            ],
            "precision": [pct(v) for v in ordered["precision"]],
            "precision 95% CI": [
                interval(a, b)
                for a, b in zip(
                    ordered["precision_ci_low"], ordered["precision_ci_high"], strict=True
                )
            ],
        }
    )
    return _table(
        "Routes at the chosen thresholds: share of messages and precision (template: the intent "
        "is right; retrieval: the entry answers the message's intent)",
        shown,
        numeric=["messages", "share (coverage)", "share 95% CI", "precision", "precision 95% CI"],
        csv=csv.add("support_routing", routing),
    )


def _curve(curve: pd.DataFrame, template: dict[str, Any]) -> FigureView:
    fig = _figure(5.0, 3.2)
    ax = fig.subplots()
    ax.plot(curve["coverage"], curve["precision"], color="#1f77b4", lw=1.5)
    target = float(template["target_precision"])
    ax.axhline(target, color="#888888", ls="--", lw=1, label=f"target {100 * target:.0f}%")
    if template.get("value") is not None:
        ax.plot(
            [template["coverage"]],
            [template["precision"]],
            "o",
            color="#d62728",
            label=f"chosen threshold {template['value']:.3f}",
        )
    ax.set_xlabel("coverage (share of templated messages answered)")
    ax.set_ylabel("precision")
    ax.set_ylim(max(0.0, float(np.nanmin(curve["precision"])) - 0.05), 1.01)
    ax.legend(loc="lower left", fontsize=8)
    title = "Template route on validation: precision against coverage"
    ax.set_title(title, fontsize=9)
    return FigureView(
        to_svg(fig, "support-curve"),
        f"Line chart of the template route's precision against its coverage on the validation "
        f"split over {len(curve)} thresholds, with the target precision and the chosen threshold",
        title,
    )
