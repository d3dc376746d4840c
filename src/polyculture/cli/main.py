"""The ``polyculture`` command line: thin wrappers over the public Python API.

Errors a user can fix (:class:`~polyculture.errors.PolycultureError`) become one line with a hint
and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from polyculture.errors import PolycultureError
from polyculture.measure.ecosystem import ecosystem_finding

app = typer.Typer(
    name="polyculture",
    help="Train a zoo of base models, measure emergence and homogenization, choose wisely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        from polyculture import __version__

        console.print(f"polyculture {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    """polyculture: base-model zoos, homogenization and emergence."""
    _state["debug"] = debug or os.environ.get("POLYCULTURE_DEBUG") == "1"


FormatOption = Annotated[str, typer.Option("--format", "-f", help="Output format: table or json.")]


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise PolycultureError(f"unknown --format '{fmt}'", hint="use table or json")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  polyculture run                                  # the default MNIST-1D study\n\n"
        "  polyculture run seed-recipe --data-dir ../shared/data/fashion-mnist\n\n"
        "  polyculture run my_study.toml --set train.epochs=5 --set seeds=[0]\n\n"
        "  polyculture run --workers 1 --out /tmp/runs\n\n"
        "  polyculture run sharing --scheduler tcp://head-node:8786"
    )
)
def run(
    study: Annotated[
        str,
        typer.Argument(help="Built-in study (mnist1d, fashion-mnist, seed-recipe) or TOML file."),
    ] = "mnist1d",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Parent folder of run directories.")
    ] = Path("runs"),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a study key: key.path=value (repeatable)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data folder/file (same as --set data.path=...)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", help="Worker processes (0 = one per core).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda[:i].")] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Run on an existing Dask scheduler (tcp://host:8786); needs polyculture\\[dist]."
        ),
    ] = None,
    fmt: FormatOption = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train (or resume) a study and write its run directory OUT/<study name>.

    With several workers the members run on a local Dask cluster (one process and one thread
    per worker) when polyculture\\[dist] is installed, else in a process pool; --scheduler runs
    them on an existing Dask cluster instead.
    """
    from polyculture.run import run_study
    from polyculture.run.study import MemberPlan

    _check_format(fmt)
    overrides = list(set_ or [])
    if data_dir is not None:
        overrides.append(f"data.path={json.dumps(str(data_dir))}")
    if workers is not None and workers < 0:
        raise PolycultureError(f"--workers {workers} is negative", hint="use 0 (auto) or more")
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=errors,
        disable=quiet or fmt == "json",
    )
    bar: dict[str, Any] = {}

    def on_start(pending: int, done: int) -> None:
        bar["id"] = progress.add_task("members", total=pending + done, last="")
        if done:
            errors.print(f"resuming: {done} finished member(s) reused, {pending} to train")

    def on_member(plan: MemberPlan, record: dict[str, Any], skipped: bool) -> None:
        test = record["metrics"].get("test", {}).get("accuracy")
        if record["status"] != "ok":
            last = f"[red]{escape(plan.label)} seed {plan.seed} failed: {escape(record['reason'])}"
            progress.console.print(last)
        else:
            last = escape(f"{plan.label} seed {plan.seed}: test acc {test:.3f}")
        progress.update(bar["id"], advance=1, last="" if skipped else last)

    with progress:
        results = run_study(
            study,
            out,
            overrides,
            workers=workers,
            device=device,
            on_member=on_member,
            on_start=on_start,
            scheduler=scheduler,
            on_cluster=lambda line: (
                errors.print(escape(line), highlight=False)
                if not quiet and fmt == "table"
                else None
            ),
        )
    _print_summary(results, fmt)
    _finish(results.root, fmt)


def _finish(root: Path, fmt: str) -> None:
    """Say what the ecosystem comparison found, and where the run directory and report are."""
    if fmt == "table":
        summary_path = root / "tables" / "ecosystems.parquet"
        comparisons_path = root / "tables" / "ecosystem_comparisons.parquet"
        if summary_path.is_file() and comparisons_path.is_file():
            summary = pd.read_parquet(summary_path)
            comparisons = pd.read_parquet(comparisons_path)
            if not summary.empty and not comparisons.empty:
                finding = ecosystem_finding(summary, comparisons)
                console.print(f"[bold]ecosystems[/]: {escape(finding)}", highlight=False)
        console.print(f"run directory: [bold]{escape(str(root))}[/]")
        console.print(f"report: [bold]{escape(str(root / 'report.html'))}[/]")


@app.command(epilog="Example:\n\n  polyculture report runs/mnist1d")
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (from `run` or `audit`).")],
) -> None:
    """Rebuild RUN_DIR/report.html (self-contained, opens offline) from the stored tables."""
    from polyculture.report import build_report
    from polyculture.run import load_run

    load_run(run_dir)  # a clear error when this is not a run directory
    console.print(f"report: [bold]{escape(str(build_report(run_dir)))}[/]")


@app.command(epilog="Example:\n\n  polyculture show runs/mnist1d --format json")
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `polyculture run`.")],
    fmt: FormatOption = "table",
    members: Annotated[bool, typer.Option("--members", help="One row per member.")] = False,
) -> None:
    """Summarize a run: per-model test accuracy (mean +- std over seeds) beside published ones."""
    from polyculture.run import load_run

    _check_format(fmt)
    results = load_run(run_dir)
    if members:
        frame = results.members
        columns = [
            c
            for c in (
                "name",
                "seed",
                "status",
                "test_accuracy",
                "test_accuracy_ci_low",
                "test_accuracy_ci_high",
                "n_parameters",
                "train_seconds",
                "reason",
            )
            if c in frame
        ]
        _print_frame(frame[columns], fmt, title=escape(f"members of {results.root}"))
        return
    _print_summary(results, fmt)


def _print_summary(results: Any, fmt: str) -> None:
    summary: pd.DataFrame = results.summary()
    headline = results.headline()
    if fmt == "json":
        models = json.loads(summary.to_json(orient="records"))
        console.print_json(json.dumps({"models": models, "homogenization": _nan_to_none(headline)}))
        return
    shifted = [c for c in summary.columns if c.startswith("test_") and c.endswith("_accuracy_mean")]
    # On narrow terminals keep what the summary is for: accuracy beside the published number.
    wide = console.width >= 110
    over_seeds = bool((summary["members"] > 1).any())
    spread = "over seeds (mean ± std)" if over_seeds else "[95% bootstrap CI]"
    table = Table(
        title=f"{escape(str(results.study.get('name')))}: test accuracy {spread}",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("model", overflow="fold", min_width=18)
    for column in ("seeds", "test acc", "published"):
        table.add_column(column, justify="right", no_wrap=True)
    for column in shifted:  # accuracy on each shifted test set: test_noise -> "noise"
        table.add_column(
            column.removeprefix("test_").removesuffix("_accuracy_mean"), justify="right"
        )
    extra = ("ECE", "params", "train s") if wide else ()
    for column in extra:
        table.add_column(column, justify="right", no_wrap=True)
    for row in summary.itertuples(index=False):
        accuracy = _fmt(row.accuracy_mean)
        if not math.isnan(row.accuracy_std):  # undefined with a single seed
            accuracy += f" ± {row.accuracy_std:.3f}"
        elif not math.isnan(row.accuracy_ci_low):
            accuracy += f" [{row.accuracy_ci_low:.3f}, {row.accuracy_ci_high:.3f}]"
        published = "" if math.isnan(row.published) else f"{row.published:.2f}"
        table.add_row(
            escape(str(row.name)),
            f"{row.members - row.failed}/{row.members}",
            accuracy,
            published,
            *(_fmt(getattr(row, c)) for c in shifted),
            *(
                (_fmt(row.ece_mean), _count(row.n_parameters), _fmt(row.train_seconds_mean, 1))
                if wide
                else ()
            ),
        )
    console.print(table)
    source = results.task.get("reference_source")
    if source:
        console.print(f"published: {source}")
    if headline:
        _print_headline(headline)
    failed = results.members[results.members["status"] != "ok"]
    for row in failed.itertuples(index=False):
        console.print(
            f"[red]failed[/] {escape(str(row.name))} seed {row.seed}: {escape(row.reason)}"
        )


def _nan_to_none(value: Any) -> Any:
    """JSON has no NaN: undefined numbers become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def _print_headline(headline: dict[str, Any]) -> None:
    low, high = headline["systemic_ratio_ci"]
    obs_low, obs_high = headline["systemic_observed_ci"]
    console.print(
        f"[bold]homogenization[/] ({headline['split']}, {headline['members']} members): "
        f"{headline['systemic_observed']:.3f} [{obs_low:.3f}, {obs_high:.3f}] of instances are "
        f"failed by every member vs {headline['systemic_expected']:.3g} expected if errors were "
        f"independent: systemic-failure ratio {headline['systemic_ratio']:.3g} "
        f"[{low:.3g}, {high:.3g}] (95% bootstrap CI)",
        highlight=False,
    )
    within, across = headline["error_consistency_within"], headline["error_consistency_across"]
    if math.isnan(across):  # one family (e.g. an audit): every pair is "within"
        consistency = f"{_fmt(within)} between members"
    else:
        consistency = f"{_fmt(within)} within families, {_fmt(across)} across families"
    console.print(f"mean error consistency (Geirhos kappa): {consistency}", highlight=False)
    if headline["note"]:
        console.print(f"note: {escape(headline['note'])}", highlight=False)


def _fmt(value: float, digits: int = 3) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def _count(value: float) -> str:
    return "—" if math.isnan(value) else f"{int(value):,}"


def _print_frame(frame: pd.DataFrame, fmt: str, title: str) -> None:
    if fmt == "json":
        console.print_json(frame.to_json(orient="records"))
        return
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*(_fmt(v) if isinstance(v, float) else escape(str(v)) for v in row))
    console.print(table)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  polyculture audit vendors.csv                  # long or wide layout, detected\n\n"
        "  polyculture audit preds.parquet --group sex --group race --intersect\n\n"
        "  polyculture audit scores.csv --model-col system --prediction-col decision"
    )
)
def audit(
    predictions: Annotated[Path, typer.Argument(help="CSV or Parquet file of predictions.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Parent folder of run directories.")] = (
        Path("runs")
    ),
    name: Annotated[
        str | None, typer.Option(help="Run directory name (default: the file's name).")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Group attribute column (repeatable).")
    ] = None,
    intersect: Annotated[
        bool, typer.Option(help="Keep only instances every model predicted (else an error).")
    ] = False,
    instance_col: Annotated[str, typer.Option(help="Instance id column.")] = "instance",
    label_col: Annotated[str, typer.Option(help="True label column.")] = "label",
    model_col: Annotated[str, typer.Option(help="Model name column (long layout).")] = "model",
    prediction_col: Annotated[
        str, typer.Option(help="Prediction column (long layout).")
    ] = "prediction",
    probability_col: Annotated[
        str, typer.Option(help="Confidence column (long layout, optional).")
    ] = "probability",
    fmt: FormatOption = "table",
) -> None:
    """Measure homogenization of predictions from anywhere; writes a run directory OUT/NAME.

    Long layout: instance, model, prediction, label[, probability][, groups]. Wide layout:
    instance, label, then one column of predictions per model.
    """
    from polyculture.run import load_run
    from polyculture.run.audit import run_audit

    _check_format(fmt)
    store = run_audit(
        predictions,
        out,
        name,
        instance_col=instance_col,
        label_col=label_col,
        model_col=model_col,
        prediction_col=prediction_col,
        probability_col=probability_col,
        group_cols=list(group or []),
        intersect=intersect,
    )
    results = load_run(store.root)
    if results.task["cleaning"] and fmt == "table":
        dropped = results.task["cleaning"][0]["removed"]
        errors.print(f"--intersect: dropped {dropped} instance(s) not predicted by every model")
    _print_summary(results, fmt)
    _finish(results.root, fmt)


@app.command()
def datasets(fmt: FormatOption = "table") -> None:
    """List the registered datasets with their options."""
    from polyculture.data import DATASETS

    _check_format(fmt)
    rows = []
    for name in DATASETS.names():
        entry = DATASETS.get(name)
        options = {k: _default(f) for k, f in entry.options.model_fields.items()}
        rows.append(
            {
                "name": name,
                "modality": entry.modality,
                "needs_path": entry.needs_path,
                "description": entry.description,
                "options": options,
            }
        )
    _print_registry(rows, fmt, "datasets", "options")


@app.command()
def models(fmt: FormatOption = "table") -> None:
    """List the registered model families with their knobs and defaults."""
    import polyculture.zoo as zoo

    _check_format(fmt)
    rows = []
    for name in zoo.FAMILIES.names():
        entry = zoo.FAMILIES.get(name)
        knobs = {k: _default(f) for k, f in entry.knobs.model_fields.items()}
        rows.append(
            {
                "name": name,
                "kind": entry.kind,
                "modalities": sorted(entry.modalities),
                "description": entry.description,
                "knobs": knobs,
            }
        )
    _print_registry(rows, fmt, "model families", "knobs")


def _default(field: Any) -> Any:
    return "(required)" if field.is_required() else field.default


def _print_registry(rows: list[dict[str, Any]], fmt: str, title: str, knob_key: str) -> None:
    if fmt == "json":
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        cells = []
        for key, value in row.items():
            if key == knob_key:
                value = ", ".join(f"{k}={v!r}" for k, v in value.items()) or "—"
            elif isinstance(value, list):
                value = ", ".join(value)
            cells.append(escape(str(value)))
        table.add_row(*cells)
    console.print(table)


def main() -> None:
    """Entry point of the console script: run the app, turning known errors into one line."""
    try:
        # Outside standalone mode typer returns exit codes instead of exiting, and turns
        # Ctrl-C into 130.
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except PolycultureError as err:
        if _state["debug"]:
            raise
        # One line: what is wrong, then how to fix it (run with --debug for the traceback).
        errors.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        errors.print("interrupted; rerun the same command to resume (finished members are kept)")
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except Exception as err:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        raise
