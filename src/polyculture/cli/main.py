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
from rich.table import Table

from polyculture.cli.budget_command import budget
from polyculture.cli.cards_command import EPILOG as CARDS_EPILOG
from polyculture.cli.cards_command import cards
from polyculture.cli.export_command import export
from polyculture.cli.monitor_command import EPILOG as MONITOR_EPILOG
from polyculture.cli.monitor_command import monitor
from polyculture.cli.progress import member_progress
from polyculture.cli.recommend_command import EPILOG as RECOMMEND_EPILOG
from polyculture.cli.recommend_command import recommend
from polyculture.cli.reevaluate_command import EPILOG as REEVALUATE_EPILOG
from polyculture.cli.reevaluate_command import reevaluate
from polyculture.cli.select_command import EPILOG as SELECT_EPILOG
from polyculture.cli.select_command import select
from polyculture.cli.serve_command import EPILOG as SERVE_EPILOG
from polyculture.cli.serve_command import serve
from polyculture.cli.support_command import EPILOG as SUPPORT_EPILOG
from polyculture.cli.support_command import support
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
        typer.Argument(
            help="Built-in study or suite (mnist1d, fashion-mnist, adult, recommend, emergence, "
            "...; see docs/studies.md) or TOML file."
        ),
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
    from polyculture.run.runner import run_suite
    from polyculture.run.study import MemberPlan, load_suite

    _check_format(fmt)
    overrides = list(set_ or [])
    if data_dir is not None:
        overrides.append(f"data.path={json.dumps(str(data_dir))}")
    if workers is not None and workers < 0:
        raise PolycultureError(f"--workers {workers} is negative", hint="use 0 (auto) or more")
    progress = member_progress(errors, disable=quiet or fmt == "json")
    bar: dict[str, Any] = {}

    def on_start(pending: int, done: int) -> None:
        label = bar.get("part", "members")
        bar["id"] = progress.add_task(escape(label), total=pending + done, last="")
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

    options: dict[str, Any] = {
        "workers": workers,
        "device": device,
        "on_member": on_member,
        "on_start": on_start,
        "scheduler": scheduler,
        "on_cluster": lambda line: (
            errors.print(escape(line), highlight=False) if not quiet and fmt == "table" else None
        ),
    }
    from polyculture.run.recommend import is_recommend_study

    if is_recommend_study(study):  # a recommendation study: its own pipeline (issue 10)
        from polyculture.cli.recommend_command import run_recommend_cli

        unused = {"--workers": workers, "--device": device, "--scheduler": scheduler}
        run_recommend_cli(study, out, overrides, fmt=fmt, quiet=quiet, unused=unused)
        return
    if load_suite(study) is not None:

        def on_part(name: str, index: int, count: int) -> None:
            bar["part"] = f"{name} ({index + 1}/{count})"

        with progress:
            parts = run_suite(study, out, overrides, on_part=on_part, **options)
        _print_suite(parts, fmt)
        return
    with progress:
        results = run_study(study, out, overrides, **options)
    _print_summary(results, fmt)
    _finish(results.root, fmt)


def _print_suite(parts: list[Any], fmt: str) -> None:
    """Per study of a suite: members, and each sweep's metric-swap verdict; then the report."""
    folder = parts[0].root.parent
    summary = []
    for results in parts:
        path = results.root / "tables" / "emergence_verdicts.parquet"
        verdicts = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        summary.append(
            {
                "study": results.root.name,
                "members": len(results.members),
                "failed": int((results.members["status"] != "ok").sum()),
                "verdicts": [] if verdicts.empty else verdicts["text"].astype(str).tolist(),
            }
        )
    if fmt == "json":
        console.print_json(json.dumps({"suite": str(folder), "studies": summary}))
        return
    for item in summary:
        failed = f", {item['failed']} failed" if item["failed"] else ""
        console.print(f"[bold]{escape(item['study'])}[/]: {item['members']} members{failed}")
        for text in item["verdicts"]:
            console.print(f"  metric swap: {escape(text)}")
    console.print(f"suite folder: [bold]{escape(str(folder))}[/]")
    console.print(f"report: [bold]{escape(str(folder / 'report.html'))}[/]")


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
    """Rebuild RUN_DIR/report.html (self-contained, opens offline) from the stored tables.

    RUN_DIR may also be the folder of a suite (it holds suite.json).
    """
    from polyculture.report import build_report, build_suite_report
    from polyculture.run import load_run

    if (run_dir / "suite.json").is_file():
        console.print(f"report: [bold]{escape(str(build_suite_report(run_dir)))}[/]")
        return
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
    if results.study.get("kind") == "recommend" and not members:
        from polyculture.cli.recommend_command import print_recommend_summary

        print_recommend_summary(results, fmt)
        return
    if members:
        from polyculture.measure.performance import BUILTIN_METRICS
        from polyculture.run.emergence import metric_names

        frame = results.members
        # Answer metrics (exact match, ...) and plugin metrics join accuracy.
        extra = [f"test_{m}" for m in metric_names(frame) if m not in BUILTIN_METRICS]
        columns = [
            c
            for c in (
                "name",
                "seed",
                "status",
                "test_accuracy",
                "test_accuracy_ci_low",
                "test_accuracy_ci_high",
                *extra,
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
        "  polyculture emergence runs/emergence-addition\n\n"
        "  polyculture emergence runs/emergence-addition --axis params --metric exact_match "
        "--swap exact_match,accuracy\n\n"
        "  polyculture emergence runs/sweep --model mlp --axis data --metric accuracy"
    )
)
def emergence(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a sweep.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Zoo entry to analyse (default: the study's [[sweeps]])."
        ),
    ] = None,
    axis: Annotated[
        str | None, typer.Option(help="Scale axis: params, data, steps or flops.")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="Test metric to fit (repeatable), e.g. exact_match."),
    ] = None,
    swap: Annotated[
        str | None,
        typer.Option(help="Metric-swap test: DISCONTINUOUS,CONTINUOUS, e.g. exact_match,accuracy."),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap replicates for break CIs (0 skips them).")
    ] = 200,
    fmt: FormatOption = "table",
) -> None:
    """Fit each metric of a sweep against scale: shape, break with CIs, breakthroughness,
    extrapolation error, and the metric-swap verdict."""
    from polyculture.run import load_run
    from polyculture.run.emergence import Sweep, analyze_sweep, sweep_entries
    from polyculture.run.study import SweepSpec

    _check_format(fmt)
    if (run_dir / "suite.json").is_file():
        studies = json.loads((run_dir / "suite.json").read_text())["studies"]
        with_sweeps = [
            name
            for name in studies
            if model is not None or load_run(run_dir / name).study.get("sweeps")
        ]
        raise PolycultureError(
            f"'{run_dir}' is a suite folder; analyse one of its studies",
            hint="e.g. polyculture emergence "
            + " or ".join(str(run_dir / name) for name in with_sweeps[:2]),
        )
    results = load_run(run_dir)
    pair: tuple[str, str] | None = None
    if swap is not None:
        names = [name.strip() for name in swap.split(",")]
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise PolycultureError(
                f"--swap '{swap}' is not two different metrics",
                hint="write DISCONTINUOUS,CONTINUOUS, e.g. --swap exact_match,accuracy",
            )
        pair = (names[0], names[1])
    declared = [SweepSpec.model_validate(raw) for raw in results.study.get("sweeps", [])]
    if model is not None:
        declared = [s for s in declared if s.zoo == model] or [SweepSpec(name=model, zoo=model)]
    if not declared:
        known = ", ".join(sweep_entries(results.members)) or "(none with 4 or more grid points)"
        raise PolycultureError(
            f"'{run_dir}' declares no [[sweeps]]; name the zoo entry to analyse",
            hint=f"pass --model ENTRY; sweepable entries: {known}",
        )
    output: list[dict[str, Any]] = []
    for spec in declared:
        base = Sweep.from_spec(spec, n_boot=bootstrap)
        metrics = tuple(metric) if metric else base.metrics
        if pair is not None or metric:
            metrics = tuple(dict.fromkeys([*metrics, *(pair or ())]))
        sweep = Sweep(
            base.name,
            base.zoo,
            axis or base.axis,
            metrics,
            pair if pair is not None else (base.swap if not metric else None),
            bootstrap,
        )
        tables = analyze_sweep(results.members, sweep)
        output.append({"sweep": sweep, "tables": tables})
    if fmt == "json":
        console.print_json(
            json.dumps(
                [
                    {
                        "sweep": item["sweep"].name,
                        "zoo": item["sweep"].zoo,
                        "axis": item["sweep"].axis,
                        "curves": json.loads(item["tables"]["curves"].to_json(orient="records")),
                        "verdicts": json.loads(
                            item["tables"]["verdicts"].to_json(orient="records")
                        ),
                        "fits": json.loads(item["tables"]["fits"].to_json(orient="records")),
                    }
                    for item in output
                ]
            )
        )
        return
    for item in output:
        _print_sweep(item["sweep"], item["tables"])


def _print_sweep(sweep: Any, tables: dict[str, pd.DataFrame]) -> None:
    from polyculture.run.emergence import AXIS_TITLES

    title = escape(f"sweep '{sweep.name}': zoo entry '{sweep.zoo}' over {AXIS_TITLES[sweep.axis]}")
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in ("metric", "shape", "break at [95% CI]", "B/step", "linearity", "extrap. err"):
        table.add_column(column)
    for row in tables["curves"].itertuples(index=False):
        where = "none"
        if row.has_break:
            where = (
                f"{_count(row.break_location)} [{_count(row.break_location_ci_low)}, "
                f"{_count(row.break_location_ci_high)}]"
            )
        table.add_row(
            escape(str(row.metric)),
            escape(str(row.shape)),
            where,
            _fmt(row.breakthroughness_per_step, 2),
            _fmt(row.linearity, 2),
            _fmt(row.extrapolation_abs_error),
        )
    console.print(table)
    for row in tables["curves"].itertuples(index=False):
        console.print(f"  {escape(str(row.metric))}: {row.shape} ({escape(str(row.reason))})")
    for verdict in tables["verdicts"].itertuples(index=False):
        console.print(f"metric swap: [bold]{escape(str(verdict.text))}[/]")


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


PluginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin", "-p", help="Load a plugin first: a module or a .py file (repeatable)."
    ),
]


def _load_plugins(plugins: list[str] | None) -> None:
    """Installed (entry-point) plugins, then the ones named on the command line."""
    from polyculture.plugins import load_entry_point_plugins, load_plugins

    load_entry_point_plugins()
    load_plugins(list(plugins or []), Path.cwd())


@app.command(epilog="Example:\n\n  polyculture datasets --plugin my_plugins.py")
def datasets(fmt: FormatOption = "table", plugin: PluginOption = None) -> None:
    """List the registered datasets with their options and where each comes from."""
    from polyculture.data import DATASETS

    _check_format(fmt)
    _load_plugins(plugin)
    rows = []
    for name in DATASETS.names():
        entry = DATASETS.get(name)
        options = {k: _default(f) for k, f in entry.options.model_fields.items()}
        rows.append(
            {
                "name": name,
                "origin": DATASETS.origin(name),
                "modality": entry.modality,
                "needs_path": entry.needs_path,
                "description": entry.description,
                "options": options,
            }
        )
    _print_registry(rows, fmt, "datasets", "options")


@app.command(epilog="Example:\n\n  polyculture models --plugin my_package.families")
def models(fmt: FormatOption = "table", plugin: PluginOption = None) -> None:
    """List the registered model families with their knobs, defaults and origin."""
    import polyculture.zoo as zoo

    _check_format(fmt)
    _load_plugins(plugin)
    rows = []
    for name in zoo.FAMILIES.names():
        entry = zoo.FAMILIES.get(name)
        knobs = {k: _default(f) for k, f in entry.knobs.model_fields.items()}
        rows.append(
            {
                "name": name,
                "origin": zoo.FAMILIES.origin(name),
                "kind": entry.kind,
                "modalities": sorted(entry.modalities),
                "description": entry.description,
                "knobs": knobs,
            }
        )
    _print_registry(rows, fmt, "model families", "knobs")


@app.command(epilog="Example:\n\n  polyculture metrics --format json")
def metrics(fmt: FormatOption = "table", plugin: PluginOption = None) -> None:
    """List the per-split metrics every member gets (built-in and from plugins)."""
    from polyculture.measure.performance import ANSWER_METRICS, METRICS

    _check_format(fmt)
    _load_plugins(plugin)
    rows = []
    for name in METRICS.names_in_order():
        entry = METRICS.get(name)
        rows.append(
            {
                "name": name,
                "origin": METRICS.origin(name),
                "direction": "higher is better" if entry.higher_is_better else "lower is better",
                "needs_groups": entry.needs_groups,
                "description": entry.description,
            }
        )
    for name in ANSWER_METRICS:
        rows.append(
            {
                "name": name,
                "origin": "polyculture",
                "direction": "lower is better" if name == "edit_distance" else "higher is better",
                "needs_groups": False,
                "description": "tasks whose answers span several tokens (e.g. addition)",
            }
        )
    _print_registry(rows, fmt, "metrics", "")


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


app.command(
    epilog=(
        "Examples:\n\n"
        "  polyculture export runs/mnist1d cnn\n\n"
        "  polyculture export runs/mnist1d 'cnn(depth=3,width=32)@1' --quantize int8\n\n"
        "  polyculture export runs/mnist1d 3f2a91 --out model.onnx --json"
    )
)(export)


app.command(epilog=SELECT_EPILOG)(select)
app.command(epilog=REEVALUATE_EPILOG)(reevaluate)
app.command(epilog=CARDS_EPILOG)(cards)
app.command(epilog=RECOMMEND_EPILOG)(recommend)
app.command(
    epilog=(
        "Examples:\n\n"
        "  polyculture budget --budget 135 --eta 3 --max-epochs 60 --uniform study --seed 0\n\n"
        "  polyculture budget my_study.toml --budget 600 --unit seconds --format json"
    )
)(budget)

app.command(epilog=SUPPORT_EPILOG)(support)
app.command(epilog=SERVE_EPILOG)(serve)

app.command(epilog=MONITOR_EPILOG)(monitor)


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
        # typer 0.29 vendors its own click: its usage errors are not click's classes.
        usage, abort = _click_errors()
        if isinstance(err, usage):
            err.show()  # type: ignore[attr-defined]
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        if isinstance(err, abort):
            sys.exit(130)
        raise


def _click_errors() -> tuple[tuple[type[Exception], ...], tuple[type[BaseException], ...]]:
    """Usage-error and abort classes of click and of the click copy typer may ship."""
    import click

    usage: list[type[Exception]] = [click.ClickException]
    abort: list[type[BaseException]] = [click.exceptions.Abort]
    try:
        from typer._click import exceptions as vendored

        usage.append(vendored.ClickException)
    except (ImportError, AttributeError):
        pass
    return tuple(usage), tuple(abort)
