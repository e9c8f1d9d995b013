"""Real internal failures answer the envelope naming the Request-Id, and nothing internal.

Each failure is forced for real under a running server: the document directory
cannot be created, a document's content vanished from disk, a table was dropped.
The body must carry no stack trace, exception text, SQL, table or file path.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import structlog
from sqlalchemy import text
from tests.conftest import LiveServer
from tests.service.api_calls import body, envelope, upload
from tests.service.conftest import database_url, postgres_copies  # noqa: F401

from retrysafe.database import Database

INTERNALS = re.compile(
    r"Traceback|File \"|Errno|Error:|Exception\b|sqlalche|sqlite|asyncpg|psycopg|SELECT|INSERT"
    r"|UPDATE|DELETE|no such table|does not exist|relation|inquiries\b|/tmp|/work|site-packages"
    r"|\.py\b",
    re.IGNORECASE,
)
"""What an exception, a driver or a file system puts in its text."""

LOG_WAIT = 10.0
"""Seconds to wait for a log event emitted right after the answer (normally milliseconds)."""


@contextmanager
def logged() -> Iterator[list[dict[str, object]]]:
    """The structlog events of the block, captured instead of rendered.

    Besides letting the test look up the Request-Id, this keeps the test fast: the
    console renderer takes seconds to draw a traceback with its locals.
    """
    with structlog.testing.capture_logs() as events:
        yield events


def exception_logged(logs: list[dict[str, object]], response: httpx.Response) -> bool:
    """Whether the exception behind ``response`` was logged under its Request-Id.

    The server may log just after the answer went out, so this waits a little.
    """
    request_id = response.headers["request-id"]
    deadline = time.monotonic() + LOG_WAIT
    while time.monotonic() < deadline:
        if any(e.get("request_id") == request_id and e.get("exc_info") for e in list(logs)):
            return True
        time.sleep(0.02)
    return False


def assert_opaque(response: httpx.Response, tmp_path: Path, *secrets: str) -> None:
    """5xx envelope whose only specifics are the status and this response's Request-Id."""
    request_id = response.headers["request-id"]
    if response.status_code == 503:  # the database layer judged the failure transient
        envelope(response, 503, "service_unavailable")
    else:
        (error,) = envelope(response, 500, "internal_error")
        assert request_id in error["details"]
    stripped = response.text.replace(request_id, "")
    leak = INTERNALS.search(stripped)
    assert leak is None, f"leaks {leak.group(0)!r}: {response.text}"
    for secret in (str(tmp_path), *secrets):
        assert secret not in response.text


def test_unwritable_document_storage_is_an_opaque_500(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the document directory should be")
    server = live_server(document_dir=blocker / "documents")
    with server.client(server.new_key()) as http:
        inquiry = http.post("/inquiries", json=body(reference_id="r1")).json()["data"]
        with logged() as logs:
            response = upload(http, inquiry["id"], b"scan")
            assert exception_logged(logs, response)
    assert response.status_code == 500
    assert_opaque(response, tmp_path, "not-a-directory")


def test_missing_document_content_is_an_opaque_500(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = live_server()
    with server.client(server.new_key()) as http:
        inquiry = http.post("/inquiries", json=body(reference_id="r1")).json()["data"]
        document = upload(http, inquiry["id"], b"scan").json()["data"]
        (server.settings.document_dir / document["id"]).unlink()
        with logged() as logs:
            response = http.get(f"/documents/{document['id']}/content")
            assert exception_logged(logs, response)
    assert response.status_code == 500
    assert_opaque(response, tmp_path, document["id"])


def test_a_dropped_table_is_an_opaque_error(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = live_server()
    key = server.new_key()

    async def drop_inquiries(db: Database) -> None:
        cascade = "" if db.is_sqlite else " CASCADE"
        async with db.write() as conn:
            await conn.execute(text(f"DROP TABLE inquiries{cascade}"))

    server.on_database(drop_inquiries)
    with server.client(key) as http, logged() as logs:
        responses = [
            http.get("/inquiries"),
            http.post("/inquiries", json=body(reference_id="r1"), headers={"Idempotency-Key": "k"}),
        ]
        for response in responses:
            assert response.status_code == 503 or exception_logged(logs, response)
    for response in responses:
        assert response.status_code >= 500
        assert_opaque(response, tmp_path)
