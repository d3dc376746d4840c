"""``polyculture select``: a scenario's recommendation, ensemble and choice against incumbents.

A thin wrapper over :func:`polyculture.run.select.select_run`; registered in
:mod:`polyculture.cli.main` with ``app.command(...)(select)``. Errors a user can fix raise
:class:`~polyculture.errors.PolycultureError`, which the entry point turns into one line and exit
code 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from polyculture.errors import PolycultureError

console = Console()

EPILOG = (
    "Examples:\n\n"
    "  polyculture select runs/mnist1d --max-latency-ms 0.5 --min-accuracy 0.8\n\n"
    "  polyculture select runs/mnist1d --scenario edge.toml --format json\n\n"
    "  polyculture select runs/mnist1d --incumbent 'cnn(depth=3,width=32)@0' "
    "--min-accuracy 0.85\n\n"
    "  polyculture select runs/mnist1d --ensemble-budget 2   # total latency of the ensemble, ms"
)


def select(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (from `run` or `audit`).")],
    scenario: Annotated[
        Path | None,
        typer.Option("--scenario", help="Scenario TOML file (keys: docs/selection.md)."),
    ] = None,
    max_latency_ms: Annotated[
        float | None,
        typer.Option("--max-latency-ms", help="Most latency at batch 1 (ms, p50 by default)."),
    ] = None,
    min_accuracy: Annotated[
        float | None, typer.Option("--min-accuracy", help="Least accuracy, a fraction (0.9).")
    ] = None,
    max_parameters: Annotated[
        float | None, typer.Option("--max-parameters", help="Most parameters.")
    ] = None,
    incumbent: Annotated[
        list[str] | None,
        typer.Option(
            "--incumbent",
            "-i",
            help="A deployed system: a member (id, name or name@seed) or an audit run folder "
            "(repeatable).",
        ),
    ] = None,
    ensemble_budget: Annotated[
        float | None,
        typer.Option(
            "--ensemble-budget",
            help="Most total cost of the ensemble: ms of latency (or parameters when the "
            "scenario sets ensemble.cost = 'parameters').",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: table or json.")] = (
        "table"
    ),
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Rebuild RUN_DIR/report.html after.")
    ] = True,
) -> None:
    """Recommend a member for a scenario: feasible set, Pareto front, reasons, an ensemble
    against the best single member, and the best candidate against incumbents.

    Flags override the scenario file. Writes RUN_DIR/tables/selection.parquet (+ pareto,
    ensemble, incumbents and selection.json).
    """
    from polyculture.run import load_run
    from polyculture.run.select import select_run
    from polyculture.select.scenario import load_scenario

    if fmt not in ("table", "json"):
        raise PolycultureError(f"unknown --format '{fmt}'", hint="use table or json")
    loaded = load_scenario(
        scenario,
        max_latency_ms=max_latency_ms,
        min_accuracy=min_accuracy,
        max_parameters=max_parameters,
        incumbents=list(incumbent or []),
        ensemble_budget=ensemble_budget,
    )
    results = load_run(run_dir)  # a clear error when this is not a run directory
    result = select_run(results, loaded)
    if report:
        from polyculture.report import build_report

        build_report(results.root)
    if fmt == "json":
        table = result.table.drop(columns=["reasons"]).assign(reasons=result.table["reasons"])
        payload = result.summary() | {"table": json.loads(table.to_json(orient="records"))}
        console.print_json(json.dumps(payload))
        return
    _print_selection(result.summary(), result.table)
    console.print(f"tables: [bold]{escape(str(results.root / 'tables' / 'selection.parquet'))}[/]")
    if report:
        console.print(f"report: [bold]{escape(str(results.root / 'report.html'))}[/]")


_COLUMNS = (
    # column, header, format
    ("accuracy", "acc", lambda v: f"{100 * v:.1f}%"),
    ("latency_p50_ms", "p50 ms", lambda v: f"{v:.3g}"),
    ("latency_p95_ms", "p95 ms", lambda v: f"{v:.3g}"),
    ("n_parameters", "params", lambda v: f"{int(v):,}"),
    ("size_mb", "MB", lambda v: f"{v:.3g}"),
    ("fairness_gap", "fair gap", lambda v: f"{100 * v:.1f}"),
    ("systemic_contribution", "systemic", lambda v: f"{v:.3f}"),
)


def _cell(value: Any, fmt: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    return fmt(number) if math.isfinite(number) else "—"


def _print_selection(summary: dict[str, Any], table: pd.DataFrame) -> None:
    scenario = summary["scenario"]
    constraints = [
        f"{key} {scenario[key]:g}"
        for key in (
            "max_latency_ms",
            "max_parameters",
            "max_size_mb",
            "min_accuracy",
            "max_fairness_gap",
            "max_systemic_contribution",
        )
        if scenario.get(key) is not None
    ]
    title = (
        f"{scenario['name']} on the {summary['split']} split: "
        + ("; ".join(constraints) if constraints else "no constraints")
        + f" — {summary['feasible']} of {summary['members']} members feasible"
    )
    shown = Table(title=escape(title), box=box.SIMPLE_HEAD)
    shown.add_column("member", overflow="fold", min_width=14)
    columns = [c for c in _COLUMNS if c[0] in table and table[c[0]].notna().any()]
    for _, header, _ in columns:
        shown.add_column(header, justify="right", no_wrap=True)
    shown.add_column("front", justify="center")
    shown.add_column("feasible / why not", overflow="fold")
    ordered = table.sort_values("accuracy", ascending=False, kind="stable")
    for row in ordered.to_dict("records"):
        mark = "[bold green]→[/] " if row["recommended"] else ""
        shown.add_row(
            mark + escape(str(row["label"])),
            *(_cell(row.get(column), fmt) for column, _, fmt in columns),
            "*" if row["pareto"] else "",
            "yes" if row["feasible"] else escape(str(row["reasons"])),
        )
    console.print(shown)
    console.print(
        f"[bold]recommended[/]: {escape(summary['recommended_label'])} "
        f"({escape(summary['recommended'])})",
        highlight=False,
    )
    for reason in summary["reasons"]:
        console.print(f"  {escape(reason)}", highlight=False)
    ensemble = summary.get("ensemble")
    if ensemble:
        budget = ensemble["budget"]
        spent = "" if budget is None else f", budget {budget:g} ({ensemble['cost']})"
        console.print(
            f"[bold]ensemble[/] (greedy soft vote chosen on {ensemble['selected_on']}{spent}): "
            f"{escape(', '.join(ensemble['labels']))}",
            highlight=False,
        )
        console.print(f"  {escape(ensemble['sentence'])}", highlight=False)
    incumbents = summary.get("incumbents")
    if incumbents:
        console.print(
            f"[bold]against incumbents[/] ({escape(', '.join(incumbents['incumbents']))}; "
            f"required accuracy {100 * incumbents['required_accuracy']:.1f}%): "
            f"{escape(incumbents['sentence'])}",
            highlight=False,
        )
    for note in summary.get("notes", []):
        console.print(f"note: {escape(note)}", highlight=False)
