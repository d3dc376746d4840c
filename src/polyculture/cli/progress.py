"""The progress bar of commands that train members (``polyculture run``, recommend studies)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def member_progress(console: Console, disable: bool) -> Progress:
    """A bar per batch of members: description, bar, done/total, elapsed, the last member's line.

    Tasks added to it need the field ``last`` (the latest member's one-line result).

    Examples
    --------
    >>> progress = member_progress(Console(stderr=True), disable=True)
    >>> task = progress.add_task("members", total=3, last="")
    >>> progress.update(task, advance=1, last="cnn seed 0: test acc 0.950")
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
        disable=disable,
    )
