"""``polyculture recommend``, and the ``polyculture run`` path for recommend studies.

``polyculture run recommend --data-dir DIR`` (or ``run my_recommend.toml``) trains the study's
recommenders (:func:`polyculture.run.recommend.run_recommend`); ``polyculture recommend RUN_DIR
--user ID`` prints one member's top-k list for a user with item texts and scores.
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

from polyculture.cli.progress import member_progress
from polyculture.errors import PolycultureError

console = Console()
errors = Console(stderr=True)

EPILOG = (
    "Examples:\n\n"
    "  polyculture recommend runs/recommend --user 196\n\n"
    "  polyculture recommend runs/recommend --user 196 -k 5 --member cnn\n\n"
    "  polyculture recommend runs/recommend --user 196 --member tfidf@0 --format json"
)


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise PolycultureError(f"unknown --format '{fmt}'", hint="use table or json")


def _fmt(value: Any, digits: int = 3) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(number) else f"{number:.{digits}f}"


def run_recommend_cli(
    study: str,
    out: Path,
    overrides: list[str],
    *,
    fmt: str = "table",
    quiet: bool = False,
    unused: dict[str, Any] | None = None,
) -> None:
    """Run a recommend study with a progress bar, then print its summary (``polyculture run``).

    ``unused`` holds ``polyculture run`` options a recommend study does not use (it trains in
    this process on the CPU): any that is set is named in a note, never silently dropped.
    """
    from polyculture.run.recommend import RecommendPlan, run_recommend

    _check_format(fmt)
    given = [option for option, value in (unused or {}).items() if value is not None]
    if given:
        errors.print(
            f"note: {', '.join(given)} not used: a recommend study trains in this process on "
            "the CPU, one member after the other",
            highlight=False,
        )
    progress = member_progress(errors, disable=quiet or fmt == "json")
    bar: dict[str, Any] = {}

    def on_start(pending: int, done: int) -> None:
        bar["id"] = progress.add_task("recommenders", total=pending + done, last="")
        if done:
            errors.print(f"resuming: {done} finished member(s) reused, {pending} to train")

    def on_member(plan: RecommendPlan, record: dict[str, Any], reused: bool) -> None:
        if record["status"] != "ok":
            last = f"[red]{escape(plan.label)} seed {plan.seed} failed: {escape(record['reason'])}"
            progress.console.print(last)
        else:
            last = escape(f"{plan.label} seed {plan.seed}: NDCG {_fmt(record.get('test_ndcg'))}")
        progress.update(bar["id"], advance=1, last="" if reused else last)

    with progress:
        results = run_recommend(study, out, overrides, on_start=on_start, on_member=on_member)
    print_recommend_summary(results, fmt)
    if fmt == "table":
        console.print(f"run directory: [bold]{escape(str(results.root))}[/]")
        console.print(f"report: [bold]{escape(str(results.root / 'report.html'))}[/]")


def print_recommend_summary(results: Any, fmt: str) -> None:
    """Per member: HitRate@k, NDCG@k (95% CI over users), MRR, coverage, Gini, novelty."""
    members = results.members
    k = results.task.get("k", 10)
    columns = [
        "name",
        "seed",
        "status",
        "test_hit_rate",
        "test_ndcg",
        "test_ndcg_ci_low",
        "test_ndcg_ci_high",
        "test_mrr",
        "test_coverage",
        "test_gini",
        "test_novelty",
        "test_user_overlap",
        "reason",
    ]
    frame = members[[c for c in columns if c in members]]
    if fmt == "json":
        records = json.loads(frame.to_json(orient="records"))
        console.print_json(json.dumps({"k": k, "members": records, "task": results.task}))
        return
    sizes = results.task.get("sizes", {})
    table = Table(
        title=escape(
            f"{results.study.get('name')}: test ranking of all unseen items, "
            f"{sizes.get('users', '?')} users x {sizes.get('items', '?')} items"
        ),
        box=box.SIMPLE_HEAD,
    )
    table.add_column("member", overflow="fold", min_width=14)
    for column in (
        f"HR@{k}",
        f"NDCG@{k} [95% CI]",
        "MRR",
        "coverage",
        "Gini",
        "novelty",
        "overlap between users",
    ):
        table.add_column(column, justify="right")
    for row in frame.to_dict(orient="records"):
        if row["status"] != "ok":
            continue
        table.add_row(
            escape(f"{row['name']} s{row['seed']}"),
            _fmt(row.get("test_hit_rate")),
            f"{_fmt(row.get('test_ndcg'))} [{_fmt(row.get('test_ndcg_ci_low'))}, "
            f"{_fmt(row.get('test_ndcg_ci_high'))}]",
            _fmt(row.get("test_mrr")),
            _fmt(row.get("test_coverage")),
            _fmt(row.get("test_gini")),
            _fmt(row.get("test_novelty"), 2),
            _fmt(row.get("test_user_overlap")),
        )
    console.print(table)
    excluded = results.task.get("users_excluded", 0)
    if excluded:
        console.print(
            f"{excluded} user(s) excluded (no or too few liked interactions): "
            "see tables/recommend_users.parquet",
            highlight=False,
        )
    for row in frame.to_dict(orient="records"):
        if row["status"] != "ok":
            console.print(
                f"[red]failed[/] {escape(str(row['name']))} seed {row['seed']}: "
                f"{escape(str(row['reason']))}"
            )


def recommend(
    run_dir: Annotated[Path, typer.Argument(help="A run directory of a recommend study.")],
    user: Annotated[str, typer.Option("--user", "-u", help="The user id to recommend for.")],
    k: Annotated[int, typer.Option("-k", help="How many items to list.")] = 10,
    member: Annotated[
        str | None,
        typer.Option(
            "--member", "-m", help="Member name[@seed], id or id prefix (default: best NDCG)."
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Output format: table or json.")
    ] = "table",
) -> None:
    """Print the top-k unseen items for a user, with item texts and scores.

    A user without any liked interaction gets the most popular items (a cold start, said so).
    """
    from polyculture.run.recommend import recommend_for_user

    _check_format(fmt)
    answer = recommend_for_user(run_dir, user, k, member)
    if fmt == "json":
        payload = {
            "user": answer.user,
            "member": answer.member,
            "member_id": answer.member_id,
            "cold_start": answer.cold_start,
            "message": answer.message,
            "items": json.loads(answer.items.to_json(orient="records")),
        }
        console.print_json(json.dumps(payload))
        return
    console.print(escape(answer.message), highlight=False)
    table = Table(box=box.SIMPLE_HEAD)
    for column, justify in (("rank", "right"), ("item", "right"), ("title", "left"),
                            ("genres", "left"), ("score", "right")):  # fmt: skip
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in answer.items.itertuples(index=False):
        table.add_row(
            str(row.rank),
            escape(str(row.item)),
            escape(str(row.title)),
            escape(str(row.genres)),
            _fmt(row.score, 4),
        )
    console.print(table)
