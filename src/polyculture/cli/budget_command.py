"""``polyculture budget [STUDY] --budget B``: successive halving against uniform allocation.

A plain function with typer options; ``polyculture.cli.main`` registers it as a command. Errors
are :class:`~polyculture.errors.PolycultureError` subclasses, which the CLI's ``main`` prints as
one line with exit code 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from polyculture.errors import PolycultureError


def budget(
    study: Annotated[
        str, typer.Argument(help="Built-in study or TOML file; its models are the candidates.")
    ] = "mnist1d",
    amount: Annotated[
        float | None,
        typer.Option(
            "--budget",
            "-b",
            help="Required: what successive halving may spend, in --unit (member-epochs or "
            "seconds).",
        ),
    ] = None,
    unit: Annotated[str, typer.Option("--unit", "-u", help="Budget unit: epochs or seconds.")] = (
        "epochs"
    ),
    eta: Annotated[
        int, typer.Option(help="Keep 1/eta of the candidates per rung, train them eta x longer.")
    ] = 2,
    min_epochs: Annotated[
        int, typer.Option("--min-epochs", help="Fewest epochs of rung 0 (seconds: exactly).")
    ] = 1,
    max_epochs: Annotated[
        int | None, typer.Option("--max-epochs", help="Most epochs any member trains for.")
    ] = None,
    uniform: Annotated[
        str,
        typer.Option(
            help="Uniform allocation compared with: budget (the same budget shared evenly) or "
            "study (every candidate trained for the study's own epochs)."
        ),
    ] = "budget",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Parent folder; writes OUT/<study>-budget.")
    ] = Path("runs"),
    seed: Annotated[
        int | None, typer.Option(help="Train each candidate with this one seed only.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a study key: key.path=value (repeatable)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", help="Worker processes (0 = one per core).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: table or json.")] = (
        "table"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Spend a training budget on a study's models by successive halving, beside uniform.

    Rung 0 trains every candidate briefly; each rung keeps the best 1/eta by validation accuracy
    and retrains them from scratch eta times longer, until one is left or the budget is spent.
    Uniform allocation trains every candidate once at the same budget. Compute is counted in
    member-epochs (epochs x seeds) or measured seconds; scikit-learn candidates have no epochs:
    they are fitted once and compete with that accuracy (their seconds are reported). Writes
    OUT/<study>-budget/ with tables/budget.parquet (one row per rung and candidate).
    """
    from polyculture.cli.main import console, errors
    from polyculture.run.budget import run_budget

    if amount is None:
        raise PolycultureError(
            "no budget given", hint="add --budget, e.g. --budget 100 (member-epochs)"
        )
    if fmt not in ("table", "json"):
        raise PolycultureError(f"unknown --format '{fmt}'", hint="use table or json")
    if unit not in ("epochs", "seconds"):
        raise PolycultureError(f"unknown --unit '{unit}'", hint="use epochs or seconds")
    if uniform not in ("budget", "study"):
        raise PolycultureError(f"unknown --uniform '{uniform}'", hint="use budget or study")
    if workers is not None and workers < 0:
        raise PolycultureError(f"--workers {workers} is negative", hint="use 0 (auto) or more")

    def on_rung(pairs: list[tuple[str, int]]) -> None:
        if quiet or fmt == "json":
            return
        epochs = sorted({r for _, r in pairs if r > 0})
        shown = ", ".join(str(r) for r in epochs) or "no"
        errors.print(f"training {len(pairs)} model(s) for {shown} epoch(s)", highlight=False)

    result = run_budget(
        study,
        amount,
        out,
        list(set_ or []),
        unit=unit,  # type: ignore[arg-type]
        eta=eta,
        min_epochs=min_epochs,
        max_epochs=max_epochs,
        uniform=uniform,  # type: ignore[arg-type]
        seed=seed,
        workers=workers,
        on_rung=on_rung,
    )
    if fmt == "json":
        console.print_json(json.dumps({"root": str(result.root), **result.to_dict()}))
        return
    _print_result(result, console)


def _print_result(result: Any, console: Any) -> None:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, title="compute-budget allocation")
    for column in ("allocation", "winner", "epochs", "val acc", "test acc", "spent epochs"):
        table.add_column(column, justify="left" if column in ("allocation", "winner") else "right")
    table.add_column("spent seconds", justify="right")
    for name, allocation in (("successive halving", result.halving), ("uniform", result.uniform)):
        final = allocation.final
        table.add_row(
            name,
            escape(allocation.winner),
            str(final.epochs),
            _fmt(final.outcome.val_accuracy),
            _fmt(final.outcome.test_accuracy),
            f"{allocation.spent_epochs:g}",
            f"{allocation.spent_seconds:.1f}",
        )
    console.print(table)
    halving = result.halving
    budget_line = f"budget {halving.budget:g} {halving.unit}, eta {result.settings['eta']}"
    console.print(
        f"{budget_line}: successive halving spent {_ratio(result.ratio('epochs'))} of uniform's "
        f"epochs and {_ratio(result.ratio('seconds'))} of its seconds "
        f"({halving.rungs} rung(s); stopped: {escape(halving.stop_reason)})",
        highlight=False,
    )
    for rung in range(halving.rungs):
        rows = [e for e in halving.evaluations if e.rung == rung]
        epochs = sorted({e.epochs for e in rows if e.epochs > 0})
        kept = ", ".join(escape(e.candidate) for e in rows if e.kept)
        console.print(
            f"  rung {rung}: {len(rows)} candidate(s) at {'/'.join(map(str, epochs)) or '-'} "
            f"epochs; kept {kept}",
            highlight=False,
        )
    if halving.fixed:
        console.print(
            "  scikit-learn candidates have no epochs: fitted once, they compete with that "
            "accuracy and cost 0 epochs (their seconds are counted)",
            highlight=False,
        )
    console.print(f"run directory: [bold]{escape(str(result.root))}[/]")


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"
