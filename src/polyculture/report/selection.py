"""Report sections of the cost profiles and of ``polyculture select``.

:func:`selection_sections` returns (only where their data exists):

* **Cost profile**: per member the latency at batch 1, throughput, peak memory, FLOPs,
  parameters, size on disk and training time (the members table's cost columns), with a figure
  of test accuracy against latency and its Pareto front;
* **Selection**: the scenario, the recommendation with its reasons, the feasible set (why each
  other member is ruled out), a figure of the Pareto front, the greedy ensemble against the best
  single member with its paired test, and the choice against incumbents (from
  ``tables/selection.json`` and the tables :func:`polyculture.run.select.select_run` writes).

``report/html.py`` imports this module inside ``build_report``. Every cell is a string the
template escapes; figure text is escaped by matplotlib's SVG writer.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from polyculture.report import selection_figures
from polyculture.report.figures import short
from polyculture.report.html import (
    DASH,
    FigureView,
    Section,
    _Csv,
    _finite,
    _optional_table,
    _table,
    num,
    pct,
    sig,
)
from polyculture.run.results import RunResults

SUMMARY = "selection.json"
"""The summary :func:`polyculture.run.select.select_run` writes into ``tables/``."""


def _count(value: Any) -> str:
    return f"{round(float(value)):,}" if _finite(value) else DASH


def _mb(value: Any) -> str:
    return sig(value) if _finite(value) else DASH


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats, all NaN when the frame lacks it."""
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def _labels(members: pd.DataFrame) -> dict[str, str]:
    labels: dict[str, str] = {}
    for row in members.itertuples(index=False):
        seed = int(row.seed) if _finite(row.seed) else -1
        labels[str(row.member_id)] = f"{row.name} s{seed}" if seed >= 0 else str(row.name)
    counts = pd.Series(list(labels.values())).value_counts()
    for member_id, label in labels.items():
        if counts[label] > 1:
            labels[member_id] = f"{label} [{member_id[:6]}]"
    return labels


def selection_sections(results: RunResults, csv: _Csv) -> list[Section]:
    """The "Cost profile" and "Selection" sections of a run's report (each only when it has data).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from polyculture.run.audit import load_predictions, write_audit_run
    >>> from polyculture.run import load_run
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "p.csv").write_text("instance,label,a,b\\n1,x,x,y\\n2,y,y,y\\n")
    >>> _ = write_audit_run(load_predictions(folder / "p.csv"), folder / "demo")
    >>> selection_sections(load_run(folder / "demo"), _Csv(folder / "demo"))  # no cost, no select
    []
    """
    sections = [_cost(results, csv), _selection(results, csv)]
    return [section for section in sections if section is not None]


# ---------------------------------------------------------------------------------------------
# Cost profile


def _cost(results: RunResults, csv: _Csv) -> Section | None:
    members = results.members
    if "latency_p50_ms" not in members:
        return None
    ok = members[(members["status"] == "ok") & members["latency_p50_ms"].notna()]
    if ok.empty:
        return None
    labels = _labels(results.members)

    def get(row: dict[str, Any], column: str) -> Any:
        return row.get(column, np.nan)

    rows = []
    for row in ok.to_dict("records"):
        rows.append(
            {
                "member": labels[str(row["member_id"])],
                "test accuracy": pct(get(row, "test_accuracy")),
                "latency p50 (ms)": sig(get(row, "latency_p50_ms")),
                "latency p95 (ms)": sig(get(row, "latency_p95_ms")),
                f"throughput (/s, batch {_count(get(row, 'cost_batch_size'))})": sig(
                    get(row, "throughput_per_s")
                ),
                "peak memory (MB)": _mb(get(row, "peak_memory_mb")),
                "FLOPs / example": sig(get(row, "flops_per_example")),
                "parameters": _count(get(row, "n_parameters")),
                "size (MB)": _mb(float(get(row, "size_bytes")) / 1e6),
                "train s": num(get(row, "train_seconds"), 2),
            }
        )
    frame = pd.DataFrame(rows)
    frame = frame.drop(columns=[c for c in frame.columns if (frame[c] == DASH).all()])
    columns = [
        c
        for c in (
            "member_id",
            "name",
            "seed",
            "test_accuracy",
            "latency_p50_ms",
            "latency_p95_ms",
            "throughput_per_s",
            "peak_memory_mb",
            "memory_method",
            "flops_per_example",
            "n_parameters",
            "size_bytes",
            "train_seconds",
            "threads",
            "cost_device",
            "cost_batch_size",
        )
        if c in ok
    ]
    path = csv.add("cost", ok[columns])
    section = Section("cost", "Cost profile")
    threads = sorted({int(t) for t in ok.get("threads", pd.Series(dtype=float)).dropna()})
    devices = sorted({str(d) for d in ok.get("cost_device", pd.Series(dtype=str)).dropna()})
    methods = sorted({str(m) for m in ok.get("memory_method", pd.Series(dtype=str)).dropna()})
    section.intro.append(
        "What each member costs to serve, measured after training"
        + (f" on {', '.join(devices)}" if devices else "")
        + (f" with {', '.join(map(str, threads))} thread(s)" if threads else "")
        + ": latency of one prediction at batch 1 (median and 95th percentile of repeated calls "
        "after a warm-up), throughput at a large batch, peak memory of one large-batch call "
        "above the weights and inputs"
        + (f" ({', '.join(methods)})" if methods else "")
        + ", forward FLOPs per example (torch's flop counter; not counted for scikit-learn "
        "members), parameters and size of the stored weights (MB = 10^6 bytes). Wall-clock "
        "numbers vary between machines and runs: compare members within one run."
    )
    accuracy = _numeric(ok, "test_accuracy")
    latency = _numeric(ok, "latency_p50_ms")
    if accuracy.notna().any():
        names = list(dict.fromkeys(ok["name"].astype(str)))
        by_name = ok.assign(_acc=accuracy, _lat=latency)
        fastest = by_name.loc[by_name["_lat"].idxmin()]
        best = by_name.loc[by_name["_acc"].idxmax()]
        title = (
            f"{short(str(best['name']), 30)} is most accurate at {sig(best['_lat'])} ms; "
            f"{short(str(fastest['name']), 30)} is fastest ({sig(fastest['_lat'])} ms)"
        )
        svg = selection_figures.latency_accuracy(
            names,
            [by_name.loc[by_name["name"] == n, "_lat"].tolist() for n in names],
            [by_name.loc[by_name["name"] == n, "_acc"].tolist() for n in names],
            title,
        )
        section.figures.append(
            FigureView(
                svg,
                f"Scatter plot of test accuracy against latency at batch 1 for {len(ok)} "
                f"members of {len(names)} models; {title}",
                title + ". One marker per member (every seed); the dashed staircase is the "
                "Pareto front (no member is both faster and more accurate).",
            )
        )
    numeric = [c for c in frame.columns if c != "member"]
    section.tables.append(_table("Cost per member", frame, numeric, path))
    return section


# ---------------------------------------------------------------------------------------------
# Selection


_CONSTRAINT_TEXT = {
    "max_latency_ms": ("latency at batch 1 ≤", lambda v: f"{v:g} ms"),
    "max_parameters": ("parameters ≤", lambda v: f"{round(v):,}"),
    "max_size_mb": ("size on disk ≤", lambda v: f"{v:g} MB"),
    "min_accuracy": ("accuracy ≥", lambda v: pct(v)),
    "max_fairness_gap": ("accuracy gap between groups ≤", lambda v: f"{100 * v:.1f} points"),
    "max_systemic_contribution": ("systemic contribution ≤", lambda v: f"{v:g}"),
}


def _selection(results: RunResults, csv: _Csv) -> Section | None:
    path = results.store.tables_dir / SUMMARY
    table = _optional_table(results, "selection")
    if not path.is_file() or table is None:
        return None
    summary = json.loads(path.read_text())
    scenario = summary["scenario"]
    section = Section("selection", "Selection")
    section.intro.extend(str(reason) for reason in summary.get("reasons", []))
    facts = section.facts
    facts.append(("scenario", str(scenario.get("name", "scenario"))))
    if scenario.get("description"):
        facts.append(("description", str(scenario["description"])))
    facts.append(("measured on", f"the {summary.get('split', 'test')} split"))
    constraints = []
    for key, (text, fmt) in _CONSTRAINT_TEXT.items():
        if scenario.get(key) is not None:
            constraints.append(f"{text} {fmt(float(scenario[key]))}")
    facts.append(("constraints", "; ".join(constraints) or "none"))
    weights = {k: v for k, v in (scenario.get("weights") or {}).items() if v}
    facts.append(("weights", ", ".join(f"{k} {v:g}" for k, v in weights.items())))
    facts.append(("feasible", f"{summary.get('feasible')} of {summary.get('members')} members"))
    facts.append(("recommended", str(summary.get("recommended_label", ""))))
    for note in summary.get("notes", []):
        section.intro.append(f"Note: {note}.")

    _front_figure(section, table, summary)
    rows = []
    ordered = table.sort_values("accuracy", ascending=False, kind="stable")
    for row in ordered.to_dict("records"):
        rows.append(
            {
                "member": ("→ " if row.get("recommended") else "") + str(row["label"]),
                "accuracy": pct(row.get("accuracy")),
                "latency p50 (ms)": sig(row.get("latency_p50_ms", np.nan)),
                "parameters": _count(row.get("n_parameters", np.nan)),
                "size (MB)": _mb(row.get("size_mb", np.nan)),
                "fairness gap": pct(row.get("fairness_gap", np.nan)),
                "systemic contribution": num(row.get("systemic_contribution", np.nan)),
                "Pareto front": "yes" if row.get("pareto") else "",
                "score": num(row.get("score", np.nan)),
                "feasible (or why not)": "yes" if row.get("feasible") else str(row["reasons"]),
            }
        )
    frame = pd.DataFrame(rows)
    frame = frame.drop(columns=[c for c in frame.columns if (frame[c] == DASH).all()])
    numeric = [
        c for c in frame.columns if c not in ("member", "Pareto front", "feasible (or why not)")
    ]
    section.tables.append(
        _table(
            "Every candidate against the scenario (→ recommended; systemic contribution: share "
            "of its errors every other system also makes)",
            frame,
            numeric,
            csv.add("selection", table),
        )
    )
    _ensemble_table(results, section, summary, csv)
    _incumbents_table(results, section, summary, csv)
    return section


def _front_figure(section: Section, table: pd.DataFrame, summary: dict[str, Any]) -> None:
    latency = _numeric(table, "latency_p50_ms")
    if latency.notna().any():
        x, xlabel = latency.to_numpy(float), "latency at batch 1, p50 (ms, log scale)"
    elif "n_parameters" in table and table["n_parameters"].notna().any():
        x, xlabel = table["n_parameters"].to_numpy(float), "parameters (log scale)"
    else:
        return
    recommended = np.flatnonzero(table["recommended"].to_numpy(bool))
    label = str(summary.get("recommended_label", ""))
    title = f"{short(label, 36)} is recommended"
    svg = selection_figures.selection_scatter(
        table["label"].astype(str).tolist(),
        x,
        table["accuracy"].to_numpy(float),
        _numeric(table, "systemic_contribution").to_numpy(float),
        table["feasible"].to_numpy(bool),
        table["pareto"].to_numpy(bool),
        int(recommended[0]) if len(recommended) else -1,
        xlabel,
        title,
    )
    section.figures.append(
        FigureView(
            svg,
            f"Scatter plot of accuracy against {xlabel.split(' (')[0]} for {len(table)} "
            f"members, coloured by systemic contribution; {title}",
            title + ". Filled: feasible; hollow: ruled out by the scenario; ringed: on the Pareto "
            "front of (accuracy up, latency down, systemic contribution down); colour: systemic "
            "contribution (grey: unknown); star: the recommendation.",
        )
    )


def _ensemble_table(
    results: RunResults, section: Section, summary: dict[str, Any], csv: _Csv
) -> None:
    ensemble = summary.get("ensemble")
    steps = _optional_table(results, "ensemble")
    if not ensemble or steps is None:
        return
    section.intro.append(
        f"Ensemble: greedy forward selection of a soft vote on the {ensemble['selected_on']} "
        "split, maximizing accuracy + λ × mean pairwise disagreement"
        + (
            f" within a budget of {ensemble['budget']:g} ({ensemble['cost']}),"
            if ensemble.get("budget") is not None
            else ","
        )
        + f" then compared with the best single member on the test split: {ensemble['sentence']}"
    )
    frame = pd.DataFrame(
        {
            "step": steps["step"].astype(int).astype(str),
            "member added": steps["label"].astype(str),
            "cost": steps["cost"].map(sig),
            "total cost": steps["total_cost"].map(sig),
            f"accuracy ({ensemble['selected_on']})": steps["accuracy"].map(pct),
            "mean disagreement": steps["disagreement"].map(num),
            "objective": steps["objective"].map(num),
        }
    )
    section.tables.append(
        _table(
            f"Greedy ensemble steps (cost: {ensemble['cost']}; stopped: {ensemble['stopped']})",
            frame,
            [c for c in frame.columns if c != "member added"],
            csv.add("ensemble", steps),
        )
    )


def _incumbents_table(
    results: RunResults, section: Section, summary: dict[str, Any], csv: _Csv
) -> None:
    incumbents = summary.get("incumbents")
    table = _optional_table(results, "incumbents")
    if not incumbents or table is None:
        return
    section.intro.append(
        f"Against the incumbents {', '.join(incumbents['incumbents'])} "
        f"({incumbents['source']}; they fail together on "
        f"{100 * incumbents['incumbents_systemic']:.2f}% of instances), the candidate with the "
        f"lowest systemic failure at accuracy ≥ {pct(incumbents['required_accuracy'])}: "
        f"{incumbents['sentence']}"
    )
    frame = pd.DataFrame(
        {
            "candidate": [
                ("→ " if chosen else "") + str(label)
                for chosen, label in zip(table["chosen"], table["label"], strict=True)
            ],
            "accuracy": table["accuracy"].map(pct),
            "failed by all (with incumbents)": table["systemic_with_incumbents"].map(
                lambda v: f"{100 * v:.2f}%"
            ),
            "if independent": table["expected_if_independent"].map(lambda v: f"{100 * v:.2f}%"),
            "eligible": table["eligible"].map(lambda v: "yes" if v else "no"),
            "pick by accuracy alone": table["by_accuracy"].map(lambda v: "yes" if v else ""),
        }
    )
    section.tables.append(
        _table(
            "Candidates against the incumbents (→ chosen)",
            frame,
            ["accuracy", "failed by all (with incumbents)", "if independent"],
            csv.add("incumbents", table),
        )
    )
