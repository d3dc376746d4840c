"""The support assistant over real HTTP: a uvicorn server started here on a free loopback port,
answers, limits, /health, the OpenAPI schema, and fuzzed request bodies that never get a 500."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyculture.errors import ConfigError
from polyculture.run import run_study
from polyculture.run.support import SupportAssistant, build_support
from test_support import intent_study, write_intent_data

pytest.importorskip("fastapi", reason="needs polyculture[serve]")
uvicorn = pytest.importorskip("uvicorn", reason="needs polyculture[serve]")

MAX_BODY = 4096
MAX_TEXT = 500


@pytest.fixture(scope="module")
def support_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    files = write_intent_data(tmp_path_factory.mktemp("serve-data"))
    out = tmp_path_factory.mktemp("serve-runs")
    results = run_study(intent_study(files["queries"]), out, workers=1, report=False)
    build_support(results, files["answers"], files["kb"], member="tfidf_logreg", encoder="tfidf")
    return results.root


@pytest.fixture(scope="module")
def base_url(support_run: Path) -> Iterator[str]:
    """The service on a loopback port the OS picked (the socket is bound before the server
    starts, so no other process can take the port in between)."""
    from polyculture.run.serve import create_app

    app = create_app(support_run, max_body_bytes=MAX_BODY, max_text_chars=MAX_TEXT)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        yield http


def test_answers_over_http_like_the_assistant(client: httpx.Client, support_run: Path) -> None:
    assistant = SupportAssistant.load(support_run)
    messages = [
        "i lost my credit card",
        "how much money is in my savings account",
        "i forgot the pin of my debit card",
        "are there fees for payments abroad?",
        "zebra quantum orchestra",
    ]
    routes = set()
    for message in messages:
        response = client.post("/answer", json={"text": message})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"intent", "confidence", "answer", "route", "source", "similarity"}
        assert body == json.loads(json.dumps(assistant.answer(message).to_dict()))
        routes.add(body["route"])
    # Each route is reachable: a confident templated intent, a known KB question, gibberish.
    assert routes == {"template", "retrieval", "human"}


def test_health_and_openapi(client: httpx.Client) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["intents"] == 4
    schema = client.get("/openapi.json").json()
    assert "/answer" in schema["paths"] and "/health" in schema["paths"]
    request = schema["components"]["schemas"]["AnswerRequest"]["properties"]["text"]
    assert request["maxLength"] == MAX_TEXT and request["minLength"] == 1
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"", 422, "Field required"),
        (b"not json", 422, "JSON decode error"),
        (b"\xff\xfe\x00", 4, ""),
        (b'{"text": ""}', 422, "at least 1 character"),
        (b'{"text": "   \\n\\t"}', 422, "blank"),
        (b'{"text": 5}', 422, "valid string"),
        (b'{"text": null}', 422, "valid string"),
        (b'{"txt": "hello"}', 422, "Field required"),
        (b'["text"]', 422, "valid dictionary"),
        (b'{"text": "\\ud800 lone surrogate"}', 422, "unicode"),
        (b'{"text": "' + b"a" * (MAX_TEXT + 1) + b'"}', 422, f"at most {MAX_TEXT}"),
        (b'{"text": "' + b"a" * MAX_BODY + b'"}', 413, f"over {MAX_BODY} bytes"),
        (b"[" * 2000 + b"]" * 2000, 4, ""),
    ],
    ids=[
        "empty",
        "not-json",
        "not-utf8",
        "empty-text",
        "blank-text",
        "number",
        "null",
        "missing-text",
        "array",
        "lone-surrogate",
        "text-too-long",
        "body-too-large",
        "deep-nesting",
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(
    client: httpx.Client, body: bytes, status: int, needle: str
) -> None:
    response = client.post("/answer", content=body, headers={"content-type": "application/json"})
    if status == 4:
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == status, response.text
    assert response.json()["error"]
    assert needle.lower() in response.text.lower()


def test_oversized_chunked_body_is_refused(client: httpx.Client) -> None:
    # No Content-Length: the limit counts the bytes as they arrive.
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    response = client.post(
        "/answer", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_missing_serve_extra_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, support_run: Path
) -> None:
    from polyculture.run.serve import create_app

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as when polyculture[serve] is missing
    with pytest.raises(ConfigError, match=r"needs polyculture\[serve\].*pip install"):
        create_app(support_run)


def test_wrong_method_and_path(client: httpx.Client) -> None:
    assert client.get("/answer").status_code == 405
    assert client.post("/nowhere", json={"text": "x"}).status_code == 404


# ---------------------------------------------------------------------------------------------
# Fuzzing: whatever the body, the answer is 200 or a 4xx, never a 500.

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
TEXTS = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40),
    st.text(min_size=MAX_TEXT - 5, max_size=MAX_TEXT + 5),
    st.sampled_from(["\x00", "\u200b", "🙂" * 100, "\ufeff", " ", "a\u0301", "\ud800"]),
)
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_not_server_error(response: httpx.Response) -> None:
    assert response.status_code == 200 or 400 <= response.status_code < 500, (
        response.status_code,
        response.text[:300],
    )
    if response.status_code == 200:
        assert response.json()["route"] in ("template", "retrieval", "human")
    else:
        assert response.json()["error"]


@FUZZ
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_fuzz_random_bytes(client: httpx.Client, body: bytes, content_type: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    assert_not_server_error(client.post("/answer", content=body, headers=headers))


@FUZZ
@given(value=JSON_VALUES)
def test_fuzz_json_of_any_shape(client: httpx.Client, value: Any) -> None:
    # json.dumps writes NaN and infinities as the tokens Python's parser reads back.
    body = json.dumps(value).encode()
    response = client.post("/answer", content=body, headers={"content-type": "application/json"})
    assert_not_server_error(response)


@FUZZ
@given(text=TEXTS, extra=st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=2))
def test_fuzz_texts(client: httpx.Client, text: str, extra: dict[str, Any]) -> None:
    # json.dumps escapes lone surrogates as \\udXXX, which the service must refuse cleanly.
    body = json.dumps({**extra, "text": text}).encode()
    response = client.post("/answer", content=body, headers={"content-type": "application/json"})
    assert_not_server_error(response)
    if response.status_code == 200:
        assert text.strip() and len(text) <= MAX_TEXT
