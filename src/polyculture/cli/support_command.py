"""``polyculture support``: build a run's customer-service assistant (intent member, thresholds).

A thin wrapper over :func:`polyculture.run.support.build_support`; registered in
:mod:`polyculture.cli.main` with ``app.command(...)(support)``. Errors a user can fix raise
:class:`~polyculture.errors.PolycultureError`, which the entry point turns into one line and exit
code 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from polyculture.errors import PolycultureError

console = Console()

EPILOG = (
    "Examples:\n\n"
    "  polyculture support runs/banking77 --answers examples/support/banking77-answers.csv "
    "--kb examples/support/knowledge-base.csv\n\n"
    "  polyculture support runs/banking77 --answers A.csv --kb KB.csv --max-latency-ms 1 "
    "--target-precision 0.95\n\n"
    "  polyculture support runs/banking77 --answers A.csv --kb KB.csv --member tfidf_logreg "
    "--encoder tfidf --format json"
)


def support(
    run_dir: Annotated[Path, typer.Argument(help="A run directory of a text study.")],
    answers: Annotated[Path, typer.Option("--answers", help="CSV of intent,answer templates.")],
    kb: Annotated[
        Path,
        typer.Option("--kb", help="Knowledge base CSV: question,answer,source[,intent]."),
    ],
    member: Annotated[
        str | None,
        typer.Option(
            "--member",
            "-m",
            help="Intent member (id, name or name@seed) instead of "
            "choosing one with the constraints.",
        ),
    ] = None,
    scenario: Annotated[
        Path | None,
        typer.Option("--scenario", help="Scenario TOML for the choice (docs/selection.md)."),
    ] = None,
    max_latency_ms: Annotated[
        float | None, typer.Option("--max-latency-ms", help="Most latency at batch 1 (ms).")
    ] = None,
    min_accuracy: Annotated[
        float | None, typer.Option("--min-accuracy", help="Least accuracy, a fraction.")
    ] = None,
    max_parameters: Annotated[
        float | None, typer.Option("--max-parameters", help="Most parameters.")
    ] = None,
    selection_split: Annotated[
        str, typer.Option("--selection-split", help="Split the choice reads: val or test.")
    ] = "val",
    target_precision: Annotated[
        float,
        typer.Option("--target-precision", help="Precision the template route must reach."),
    ] = 0.9,
    retrieval_precision: Annotated[
        float | None,
        typer.Option(
            "--retrieval-precision", help="Precision of the retrieval route (default: the same)."
        ),
    ] = None,
    retrieval_threshold: Annotated[
        float | None,
        typer.Option("--retrieval-threshold", help="Fixed cosine threshold (no calibration)."),
    ] = None,
    encoder: Annotated[
        str, typer.Option("--encoder", help="Retrieval encoder: auto, minilm or tfidf.")
    ] = "auto",
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: table or json.")] = (
        "table"
    ),
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Rebuild RUN_DIR/report.html after.")
    ] = True,
) -> None:
    """Build the customer-service assistant of a run: choose the intent member, calibrate the
    template and retrieval thresholds on validation, index the knowledge base, and measure the
    routes on test. Writes RUN_DIR/support/; serve it with `polyculture serve RUN_DIR`.
    """
    from polyculture.run import load_run
    from polyculture.run.support import build_support
    from polyculture.select.scenario import load_scenario

    if fmt not in ("table", "json"):
        raise PolycultureError(f"unknown --format '{fmt}'", hint="use table or json")
    if selection_split not in ("val", "test"):
        raise PolycultureError(
            f"unknown --selection-split '{selection_split}'", hint="use val or test"
        )
    loaded = None
    if member is None:
        loaded = load_scenario(
            scenario,
            max_latency_ms=max_latency_ms,
            min_accuracy=min_accuracy,
            max_parameters=max_parameters,
            split=selection_split,
        )
    elif scenario is not None or any(
        v is not None for v in (max_latency_ms, min_accuracy, max_parameters)
    ):
        raise PolycultureError(
            "--member names the intent member, so the constraints have nothing to choose",
            hint="give either --member or constraints (--max-latency-ms, --min-accuracy, ...)",
        )
    results = load_run(run_dir)
    built = build_support(
        results,
        answers,
        kb,
        member=member,
        scenario=loaded,
        target_precision=target_precision,
        retrieval_precision=retrieval_precision,
        retrieval_threshold=retrieval_threshold,
        encoder=encoder,
    )
    if report:
        from polyculture.report import build_report

        build_report(results.root)
    if fmt == "json":
        payload = built.config | {
            "routing": json.loads(built.routing.to_json(orient="records")),
            "members": json.loads(built.members.to_json(orient="records")),
        }
        console.print_json(json.dumps(payload))
        return
    _print(built.config, built.routing)
    console.print(f"assistant: [bold]{escape(str(built.folder))}[/]")
    console.print(f"serve it:  polyculture serve {escape(str(results.root))} --app support")


def _share(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, float) and math.isfinite(value) else "—"


def _print(config: dict[str, Any], routing: Any) -> None:
    low, high = config["test_accuracy_ci"]
    accuracy = _share(config["test_accuracy"])
    if low is not None and high is not None:
        accuracy += f" [{_share(low)}, {_share(high)}]"
    console.print(
        f"[bold]intent member[/]: {escape(config['member'])} — test accuracy {accuracy}",
        highlight=False,
    )
    for reason in config["reasons"]:
        console.print(f"  {escape(reason)}", highlight=False)
    for route in ("template", "retrieval"):
        threshold = config["thresholds"][route]
        value = threshold["value"]
        shown = "off (no threshold reaches the target)" if value is None else f"{value:.3f}"
        console.print(
            f"[bold]{route} threshold[/]: {shown} ({threshold['rule']}, target precision "
            f"{threshold['target_precision']:g})",
            highlight=False,
        )
    table = Table(title="routes on the test split [95% CI]", box=box.SIMPLE_HEAD)
    for column in ("route", "messages", "share", "precision"):
        table.add_column(column, justify="left" if column == "route" else "right")
    for row in routing[routing["split"] == "test"].to_dict("records"):
        share = f"{_share(row['share'])} [{_share(row['share_ci_low'])}, "
        share += f"{_share(row['share_ci_high'])}]"
        precision = _share(row["precision"])
        if math.isfinite(row["precision"]):
            precision += f" [{_share(row['precision_ci_low'])}, {_share(row['precision_ci_high'])}]"
        table.add_row(row["route"], str(row["messages"]), share, precision)
    console.print(table)
    for note in config["notes"]:
        console.print(f"note: {escape(note)}", highlight=False)
