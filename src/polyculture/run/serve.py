"""The support assistant over HTTP: a FastAPI app factory and a uvicorn runner.

Endpoints of :func:`create_app`:

* ``POST /answer`` with ``{"text": "..."}``: the assistant's reply ``{intent, confidence, answer,
  route, source, similarity}`` (:class:`polyculture.run.support.SupportAnswer`);
* ``GET /health``: ``{"status": "ok", ...}`` with the member, encoder and thresholds;
* ``GET /docs`` and ``GET /openapi.json``: the OpenAPI documentation.

Robustness rules (the tests fuzz them): a request body over ``max_body_bytes`` is refused with
413 before it is parsed (the body is read in chunks and counted, whatever ``Content-Length``
says); invalid JSON, invalid UTF-8, a missing, empty, blank or non-string ``text``, a text over
``max_text_chars`` characters or one holding lone surrogates are 4xx with a one-line ``error``
message. The handler of unexpected errors answers 500 and logs the traceback; it is a last
resort that the fuzz tests show is never reached.

FastAPI and uvicorn come with the optional extra ``polyculture[serve]`` and are imported when an
app is made.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from polyculture.errors import ConfigError
from polyculture.run.support import SupportAssistant

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_TEXT_CHARS", "create_app", "serve"]

DEFAULT_MAX_BODY_BYTES = 16 * 1024
"""Largest request body accepted (bytes); larger ones get 413."""
DEFAULT_MAX_TEXT_CHARS = 2000
"""Longest message accepted (characters); longer ones get 422."""

logger = logging.getLogger("polyculture.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_MISSING_EXTRA = "pip install 'polyculture[serve]'"


def _fastapi() -> Any:
    try:
        import fastapi
    except ImportError as err:
        raise ConfigError(
            f"serving needs polyculture[serve] (module '{err.name}' is missing)",
            hint=_MISSING_EXTRA,
        ) from None
    return fastapi


class BodyLimit:
    """ASGI middleware: read the whole body first and refuse it with 413 past ``limit`` bytes.

    Counting the bytes received (not trusting ``Content-Length``) also catches chunked bodies;
    the app then reads the buffered body as usual.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:  # after the body, wait for the client to go away, as the server would
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        payload = (
            f'{{"error": "request body over {self.limit} bytes", "hint": "send a shorter message"}}'
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _clean(text: Any) -> str:
    """A message fit for a JSON reply: lone surrogates replaced, one line."""
    return str(text).encode("utf-8", "replace").decode("utf-8").replace("\n", " ")


def create_app(
    run_dir: str | Path | None = None,
    *,
    assistant: SupportAssistant | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> FastAPI:
    """The FastAPI app of the support assistant of ``run_dir`` (loaded once, here).

    Parameters
    ----------
    run_dir
        A run directory with a built assistant (``polyculture support``).
    assistant
        An assistant already loaded (instead of ``run_dir``).
    max_body_bytes
        Largest request body; larger ones get 413 before parsing.
    max_text_chars
        Longest ``text``; longer ones get 422.

    Raises
    ------
    ConfigError
        FastAPI is not installed (``polyculture[serve]``), or bad limits.
    RunStoreError
        The run has no built assistant.

    Examples
    --------
    >>> create_app(max_body_bytes=0)
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: max_body_bytes = 0 and max_text_chars = 2000 must be ...
    """
    if max_body_bytes < 1 or max_text_chars < 1:
        raise ConfigError(
            f"max_body_bytes = {max_body_bytes} and max_text_chars = {max_text_chars} must be "
            "at least 1",
            hint="give positive limits",
        )
    fastapi = _fastapi()
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, field_validator
    from starlette.exceptions import HTTPException

    if assistant is None:
        if run_dir is None:
            raise ConfigError("create_app needs a run directory", hint="pass run_dir")
        assistant = SupportAssistant.load(run_dir)
    loaded = assistant

    class AnswerRequest(BaseModel):
        """A customer's message."""

        model_config = ConfigDict(strict=True, extra="ignore")
        text: str = Field(
            min_length=1,
            max_length=max_text_chars,
            description="The customer's message (not blank).",
            examples=["I still have not received my new card, where is it?"],
        )

        @field_validator("text")
        @classmethod
        def _readable(cls, text: str) -> str:
            if not text.strip():
                raise ValueError("text is blank")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text holds lone surrogates (invalid Unicode)") from None
            return text

    class AnswerResponse(BaseModel):
        """The assistant's reply."""

        intent: str = Field(description="The predicted intent (on every route).")
        confidence: float | None = Field(description="Probability of the predicted intent.")
        answer: str = Field(description="The reply to send.")
        route: Literal["template", "retrieval", "human"] = Field(
            description="template: the intent's answer template; retrieval: the nearest "
            "knowledge-base entry; human: handed over to a person."
        )
        source: str | None = Field(
            description="template:<intent>, the knowledge-base entry's source, or null."
        )
        similarity: float | None = Field(
            description="Cosine similarity of the nearest knowledge-base question, when searched."
        )

    app = fastapi.FastAPI(
        title="polyculture support assistant",
        description=(
            "Intent routing with answer templates, knowledge-base retrieval, and hand-over to a "
            f"human. Member: {loaded.config.get('member')}; retrieval encoder: "
            f"{loaded.config.get('encoder')}."
        ),
        version="1",
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Any, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(_clean(part) for part in error.get("loc", ()))
            problems.append({"loc": where, "msg": _clean(error.get("msg", "invalid"))})
        first = problems[0] if problems else {"loc": "body", "msg": "invalid request"}
        return JSONResponse(
            status_code=422,
            content={
                "error": f"{first['loc']}: {first['msg']}",
                "hint": 'send JSON {"text": "..."} with a non-empty message',
                "detail": problems,
            },
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Any, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": _clean(exc.detail)},
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Any, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error while answering %s", request.url.path)
        return JSONResponse(status_code=500, content={"error": "internal error"})

    def answer(request: AnswerRequest) -> dict[str, Any]:
        """Answer a customer's message by template, retrieval or hand-over to a human."""
        return loaded.answer(request.text).to_dict()

    # The request model is local to this call (its length limit is a parameter): hand FastAPI
    # the class itself, since it resolves string annotations in the module's globals only.
    answer.__annotations__ = {"request": AnswerRequest, "return": dict[str, Any]}
    app.post("/answer", response_model=AnswerResponse)(answer)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and what is being served."""
        thresholds = loaded.config.get("thresholds", {})
        return {
            "status": "ok",
            "member": loaded.config.get("member"),
            "member_id": loaded.config.get("member_id"),
            "encoder": loaded.config.get("encoder"),
            "intents": len(loaded.class_names),
            "templates": len(loaded.templates),
            "knowledge_base_entries": len(loaded.knowledge_base),
            "template_threshold": thresholds.get("template", {}).get("value"),
            "retrieval_threshold": thresholds.get("retrieval", {}).get("value"),
        }

    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    access_log: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the support assistant of ``run_dir`` with uvicorn until interrupted.

    Raises
    ------
    ConfigError
        The serve extra is missing; a port outside 1..65535.
    RunStoreError
        The run has no built assistant.
    """
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is not in 1..65535", hint="e.g. --port 8000")
    app = create_app(run_dir, max_body_bytes=max_body_bytes, max_text_chars=max_text_chars)
    import uvicorn

    if on_ready is not None:
        exposed = "" if _is_loopback(host) else " (reachable from other machines)"
        on_ready(f"serving on http://{host}:{port}{exposed}; docs at http://{host}:{port}/docs")
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")
