"""``polyculture reevaluate RUN_DIR --data NEW``: re-check a run's members on new data.

A plain function with typer options; ``polyculture.cli.main`` registers it as a command. Exit
codes: 0 when no member degraded, 3 when the alert fires (so cron or CI can act on it), 2 for
errors a user can fix (printed as one line by the CLI's ``main``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

ALERT_EXIT_CODE = 3
"""Exit code of ``polyculture reevaluate`` when a member degraded significantly."""

EPILOG = (
    "Examples:\n\n"
    "  polyculture reevaluate runs/adult --data new_month.csv\n\n"
    "  polyculture reevaluate runs/adult --data new.csv --retrain --alpha 0.01\n\n"
    "  polyculture reevaluate runs/adult --data new.csv --format json || notify-team   # cron"
)


def reevaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `polyculture run`.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data", "-d", help="New labelled data, in the format of the study's test file."
        ),
    ],
    retrain: Annotated[
        bool,
        typer.Option(help="Retrain flagged members on old + half the new data and compare."),
    ] = False,
    alpha: Annotated[
        float, typer.Option(help="Family-wise level of the degradation tests (Holm).")
    ] = 0.05,
    tolerance: Annotated[
        float, typer.Option(help="Accuracy drop tolerated before a member counts as degraded.")
    ] = 0.01,
    name: Annotated[
        str | None,
        typer.Option(help="Folder under RUN_DIR/reevaluations/ (default: the UTC time)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: table or json.")] = (
        "table"
    ),
) -> None:
    """Score every member on new data, test input drift and accuracy change; alert with exit 3.

    A member is flagged when its accuracy dropped by more than --tolerance with a one-sided
    Holm-adjusted p-value below --alpha. Results go to RUN_DIR/reevaluations/NAME/ and to a
    section of RUN_DIR/report.html.
    """
    from polyculture.cli.main import _check_format, console
    from polyculture.report import build_report
    from polyculture.run.reevaluate import reevaluate as run_reevaluation

    _check_format(fmt)
    result = run_reevaluation(
        run_dir, data, alpha=alpha, tolerance=tolerance, retrain=retrain, name=name
    )
    report = build_report(run_dir)
    if fmt == "json":
        payload: dict[str, Any] = {
            **result.summary,
            "folder": str(result.folder),
            "report": str(report),
            "members": json.loads(result.performance.to_json(orient="records")),
        }
        if result.retrained is not None:
            payload["retrained_members"] = json.loads(result.retrained.to_json(orient="records"))
        console.print_json(json.dumps(payload))
    else:
        _print(result, report)
    if result.alert:
        raise typer.Exit(ALERT_EXIT_CODE)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _print(result: Any, report: Path) -> None:
    from polyculture.cli.main import console

    table = Table(title=f"re-evaluation on {escape(result.summary['data_name'])}")
    for column in ("member", "before", "new data [95% CI]", "change [95% CI]", "p (Holm)", ""):
        table.add_column(column)
    for row in result.performance.to_dict("records"):
        table.add_row(
            escape(f"{row['name']} seed {row['seed']}"),
            _pct(row["old_accuracy"]),
            f"{_pct(row['new_accuracy'])} [{_pct(row['new_ci_low'])}, {_pct(row['new_ci_high'])}]",
            f"{_pct(row['change'])} [{_pct(row['change_ci_low'])}, {_pct(row['change_ci_high'])}]",
            f"{row['p_holm']:.3g}",
            "[bold red]DEGRADED[/]" if row["flagged"] else "ok",
        )
    console.print(table)
    if result.retrained is not None:
        for row in result.retrained.to_dict("records"):
            if row.get("status") != "ok":
                console.print(f"retrain {escape(str(row['name']))}: {escape(str(row['reason']))}")
                continue
            console.print(
                f"retrained {escape(str(row['name']))}: {_pct(row['old_accuracy'])} -> "
                f"{_pct(row['retrained_accuracy'])} on {row['instances']} held-out new rows "
                f"(McNemar p {row['mcnemar_p']:.3g})",
                highlight=False,
            )
    style = "bold red" if result.alert else "bold"
    console.print(f"[{style}]{escape(result.summary['verdict'])}[/]", highlight=False)
    console.print(f"re-evaluation: [bold]{escape(str(result.folder))}[/]")
    console.print(f"report: [bold]{escape(str(report))}[/]")
