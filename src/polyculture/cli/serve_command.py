"""``polyculture serve``: serve a run's application over HTTP (FastAPI + uvicorn).

Registered in :mod:`polyculture.cli.main` with ``app.command(...)(serve)``. The only application
so far is ``support`` (the assistant :mod:`polyculture.run.support` builds); see
:mod:`polyculture.run.serve` for the endpoints and limits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from polyculture.errors import PolycultureError

errors = Console(stderr=True)

APPS = ("support",)
"""Applications ``polyculture serve`` knows."""

EPILOG = (
    "Examples:\n\n"
    "  polyculture serve runs/banking77 --app support\n\n"
    "  polyculture serve runs/banking77 --app support --port 8080 --no-access-log\n\n"
    "  curl -s localhost:8000/answer -H 'content-type: application/json' "
    '-d \'{"text": "my card has not arrived"}\''
)


def serve(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a built application.")],
    app: Annotated[str, typer.Option("--app", help="Application to serve: support.")] = "support",
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="Largest request body (413 above).")
    ] = 16 * 1024,
    max_text_chars: Annotated[
        int, typer.Option("--max-text-chars", help="Longest message (422 above).")
    ] = 2000,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
) -> None:
    """Serve RUN_DIR's application over HTTP until Ctrl-C: POST /answer, GET /health, /docs.

    Needs polyculture\\[serve]. Binds to 127.0.0.1 unless --host says otherwise.
    """
    if app not in APPS:
        raise PolycultureError(f"unknown --app '{app}'", hint=f"use one of: {', '.join(APPS)}")
    from polyculture.run.serve import serve as run_server

    run_server(
        run_dir,
        host,
        port,
        max_body_bytes=max_body_bytes,
        max_text_chars=max_text_chars,
        access_log=access_log,
        on_ready=lambda line: errors.print(escape(line), highlight=False),
    )
