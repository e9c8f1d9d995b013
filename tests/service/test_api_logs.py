"""API logs over real HTTP: every /api/v1 request recorded, searchable only by its organization."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.conftest import LiveServer

from retrysafe.database import Database
from retrysafe.database.schema import api_logs

from .api_calls import body, envelope

FAST_FLUSH = 0.05
WAIT = 10.0


@pytest.fixture
def logged(live_server: Callable[..., LiveServer]) -> LiveServer:
    """A server that writes its API-log entries every 50 ms."""
    return live_server(api_log_flush_interval=FAST_FLUSH)


def search(http: httpx.Client, **filters: str) -> list[dict[str, Any]]:
    params = {f"filter[{name}]": value for name, value in filters.items()}
    response = http.get("/api-logs", params={**params, "page[size]": "100"})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def wait_for(http: httpx.Client, count: int, **filters: str) -> list[dict[str, Any]]:
    """The entries matching ``filters`` once there are ``count`` of them (bounded wait)."""
    deadline = time.monotonic() + WAIT
    while True:
        entries = search(http, **filters)
        if len(entries) >= count or time.monotonic() > deadline:
            assert len(entries) == count, entries
            return entries
        time.sleep(FAST_FLUSH)


def test_a_request_and_its_replays_form_one_timeline(logged: LiveServer) -> None:
    """The original execution, each replay and a mismatch share the key; each has its own id."""
    key = logged.new_key()
    headers = {"Idempotency-Key": "timeline-1"}
    with logged.client(key) as http:
        first = http.post("/accounts", json=body(name_first="Ada"), headers=headers)
        replays = [
            http.post("/accounts", json=body(name_first="Ada"), headers=headers) for _ in range(2)
        ]
        mismatch = http.post("/accounts", json=body(name_first="Eve"), headers=headers)
        entries = wait_for(http, 4, idempotency_key="timeline-1")
    assert [r.status_code for r in (first, *replays, mismatch)] == [201, 201, 201, 422]
    # Newest first, as every list.
    by_request = {entry["attributes"]["request_id"]: entry for entry in entries}
    assert [entry["attributes"]["request_id"] for entry in entries] == [
        r.headers["request-id"] for r in (mismatch, *reversed(replays), first)
    ]
    original = by_request[first.headers["request-id"]]["attributes"]
    assert original["outcome"] == "executed"
    assert original["status"] == 201
    assert original["method"] == "POST"
    assert original["path"] == "/api/v1/accounts"
    assert original["route"] == "/api/v1/accounts"
    assert original["idempotency_key"] == "timeline-1"
    assert original["api_key_id"] == key.removeprefix("rsk_").partition(".")[0]
    assert original["rate_limit"] == "allowed"
    assert original["error_code"] is None
    assert original["duration_ms"] > 0
    assert original["request_body"] is None  # bodies are off by default
    for replay in replays:
        assert by_request[replay.headers["request-id"]]["attributes"]["outcome"] == "replayed"
    refused = by_request[mismatch.headers["request-id"]]["attributes"]
    assert (refused["outcome"], refused["status"]) == ("mismatch", 422)
    assert refused["error_code"] == "idempotency_key_mismatch"
    assert all(entry["type"] == "api_log" and entry["id"].startswith("log_") for entry in entries)


def test_filters_narrow_the_search(logged: LiveServer) -> None:
    """request_id, status (exact or class), outcome and a time range, alone or combined."""
    with logged.client(logged.new_key()) as http:
        created = http.post("/accounts", json=body(), headers={"Idempotency-Key": "f-1"})
        missing = http.get("/accounts/act_00000000000000000000000000")
        bad = http.post("/accounts", json=body(name_first=5))
        wait_for(http, 3)
        [one] = search(http, request_id=missing.headers["request-id"])
        assert one["attributes"]["status"] == 404
        assert one["attributes"]["route"] == "/api/v1/accounts/{account_id}"
        assert {e["attributes"]["status"] for e in search(http, status="4xx")} == {400, 404}
        assert [e["attributes"]["status"] for e in search(http, status="201")] == [201]
        [executed] = search(http, outcome="executed")
        assert executed["attributes"]["request_id"] == created.headers["request-id"]
        assert search(http, status="4xx", outcome="executed") == []
        created_at = one["attributes"]["created_at"]
        assert one in search(http, created_after=created_at, created_before="2999-01-01T00:00:00Z")
        assert one not in search(http, created_before=created_at)
        assert len(search(http, created_after="2000-01-01T00:00:00+02:00")) == 3
        assert bad.status_code == 400


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("filter[status]", "600"),
        ("filter[status]", "4XX"),
        ("filter[outcome]", "maybe"),
        ("filter[created_after]", "yesterday"),
        ("filter[created_before]", "0001-01-01T00:00:00+14:00"),
        ("filter[path]", "/api/v1/accounts"),
        ("page[size]", "0"),
        ("page[after]", "act_00000000000000000000000000"),
    ],
)
def test_bad_search_parameters_are_400(server: LiveServer, param: str, value: str) -> None:
    with server.client(server.new_key()) as http:
        response = http.get("/api-logs", params={param: value})
    [error] = envelope(response, 400)
    assert error["code"] == "invalid_parameter"
    assert param in error["details"]


def test_pages_follow_links_next_newest_first(logged: LiveServer) -> None:
    with logged.client(logged.new_key()) as http:
        sent = [http.get("/accounts").headers["request-id"] for _ in range(5)]
        wait_for(http, 5)
        seen: list[str] = []
        url: str | None = "/api-logs?page[size]=2"
        while url is not None:
            page = http.get(url.removeprefix("/api/v1")).json()
            assert len(page["data"]) <= 2
            seen.extend(entry["attributes"]["request_id"] for entry in page["data"])
            url = page["links"]["next"]
    assert seen == list(reversed(sent))


def test_another_organization_sees_none_of_it(logged: LiveServer) -> None:
    """Neither in the list, nor by id, nor by Request-Id or key filters."""
    with (
        logged.client(logged.new_key("acme")) as acme,
        logged.client(logged.new_key("globex")) as globex,
    ):
        response = acme.post("/accounts", json=body(), headers={"Idempotency-Key": "shared-key"})
        [entry] = wait_for(acme, 1)
        assert search(globex) == []
        assert search(globex, request_id=response.headers["request-id"]) == []
        assert search(globex, idempotency_key="shared-key") == []
        [error] = envelope(globex.get(f"/api-logs/{entry['id']}"), 404)
        assert error["code"] == "not_found"
        assert acme.get(f"/api-logs/{entry['id']}").json()["data"] == entry


def test_reading_logs_needs_the_logs_read_scope(server: LiveServer) -> None:
    with server.client(server.new_key(scopes=["accounts:read"])) as http:
        [error] = envelope(http.get("/api-logs"), 403)
    assert error["code"] == "permission_denied"
    assert "logs:read" in error["details"]


def test_requests_before_authentication_are_kept_without_an_organization(
    logged: LiveServer,
) -> None:
    """A 401 proves no organization: stored with none, so no organization's search shows it."""
    with logged.client("rsk_key_0000000000000000.wrong") as anonymous:
        refused = anonymous.post(
            "/accounts", json=body(), headers={"Idempotency-Key": "before-auth"}
        )
    assert refused.status_code == 401
    with logged.client(logged.new_key()) as http:
        http.get("/accounts")
        wait_for(http, 1)
        assert search(http, idempotency_key="before-auth") == []

    async def stored(db: Database) -> list[Any]:
        async with db.read() as conn:
            query = select(api_logs).where(api_logs.c.request_id == refused.headers["request-id"])
            return list((await conn.execute(query)).all())

    [row] = logged.on_database(stored)
    assert row.organization_id is None
    assert row.status == 401
    assert row.outcome == "not_recorded"
    assert row.error_code == "unauthenticated"


def test_reading_the_logs_is_not_itself_logged(logged: LiveServer) -> None:
    with logged.client(logged.new_key()) as http:
        for _ in range(3):
            search(http)
        marker = http.get("/accounts")
        [entry] = wait_for(http, 1)
    assert entry["attributes"]["request_id"] == marker.headers["request-id"]


def test_bodies_are_kept_redacted_when_switched_on(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(api_log_flush_interval=FAST_FLUSH, api_log_bodies=True)
    with server.client(server.new_key()) as http:
        sent = {"data": {"attributes": {"name_first": "Ada"}}, "password": "hunter2"}
        response = http.post("/accounts", json=sent)
        [entry] = wait_for(http, 1)
    attributes = entry["attributes"]
    assert attributes["request_body"] == (
        '{"data":{"attributes":{"name_first":"Ada"}},"password":"[redacted]"}'
    )
    assert attributes["response_body"] == response.text
    assert "hunter2" not in str(entry)


def test_a_graceful_shutdown_writes_what_is_buffered(
    live_server: Callable[..., LiveServer],
) -> None:
    """Entries waiting for the next flush are written when the server stops."""
    server = live_server(api_log_flush_interval=3600.0)
    with server.client(server.new_key()) as http:
        ids = [http.get("/accounts").headers["request-id"] for _ in range(3)]
    server.stop()

    async def stored(db: Database) -> set[str]:
        async with db.read() as conn:
            return set((await conn.execute(select(api_logs.c.request_id))).scalars())

    assert server.on_database(stored) == set(ids)


def test_a_retention_of_zero_records_nothing(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(api_log_flush_interval=FAST_FLUSH, api_log_retention=0)
    with server.client(server.new_key()) as http:
        assert http.get("/accounts").status_code == 200
    server.stop()

    async def count(db: Database) -> int:
        async with db.read() as conn:
            return len((await conn.execute(select(api_logs.c.id))).all())

    assert server.on_database(count) == 0
