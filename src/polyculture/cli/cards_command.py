"""``polyculture cards RUN_DIR``: the fairness audit and one model card per member.

A plain function with typer options; ``polyculture.cli.main`` registers it as a command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

EPILOG = (
    "Examples:\n\n"
    "  polyculture cards runs/adult\n\n"
    "  polyculture cards runs/adult --positive '>50K' --min-group-size 50"
)


def cards(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (from `run` or `audit`).")],
    positive: Annotated[
        str | None,
        typer.Option(help="Class that is the positive decision (default: the second class)."),
    ] = None,
    min_group_size: Annotated[
        int | None,
        typer.Option(help="Groups with fewer test rows are reported, not compared."),
    ] = None,
) -> None:
    """(Re)compute the fairness tables (runs with groups) and write RUN_DIR/cards/<member>.md.

    Each card has the sections of Mitchell et al. (2019), filled from the run; the report
    (rebuilt here) shows the same cards.
    """
    from polyculture.cli.main import console
    from polyculture.errors import ConfigError
    from polyculture.report import build_report
    from polyculture.run import load_run
    from polyculture.run.cards import write_cards
    from polyculture.run.fairness import audit_fairness

    if min_group_size is not None and min_group_size < 1:
        raise ConfigError(f"--min-group-size {min_group_size} is below 1", hint="use e.g. 30")
    results = load_run(run_dir)
    tables = audit_fairness(results, positive=positive, min_group_size=min_group_size)
    paths = write_cards(results)
    report = build_report(run_dir)
    if not tables:
        console.print("no group attributes: the cards have no disaggregated figures")
    console.print(f"{len(paths)} model card(s) in [bold]{escape(str(run_dir / 'cards'))}[/]")
    console.print(f"report: [bold]{escape(str(report))}[/]")
