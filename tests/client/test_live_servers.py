"""The taxonomy against servers started for it: one that restarts, one that sheds, one whose
provider is too slow — real ``retrysafe serve`` (and ``retrysafe provider``) processes.

Each case asserts the attempts the server saw, the keys they carried, what the
caller got, and what exists afterwards, read from the server's own database.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.fault_proxy import FaultProxy, ThrottledRequest
from tests.support.provider_process import ProviderProcess, start_provider

from retrysafe import ServerError

from ._helpers import AnyClient, resolve
from .conftest import LiveServer, start_server

pytestmark = pytest.mark.slow

Connect = Callable[..., AnyClient]


def database_rows(server: LiveServer, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Rows straight from the server's SQLite file (read-only): what really exists."""
    path = server.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return connection.execute(sql, params).fetchall()


def records_with_key(server: LiveServer, key: str) -> list[tuple[object, ...]]:
    return database_rows(
        server, "SELECT status, response_status FROM idempotency_records WHERE key = ?", key
    )


# -- a server that restarts ----------------------------------------------------------------------


@pytest.fixture
def restarting_server(tmp_path: Path) -> Iterator[tuple[LiveServer, Callable[[], LiveServer]]]:
    """A server that has been stopped, and a function that starts it again on its port."""
    server = start_server(tmp_path / "server")
    server.stop()
    started: list[LiveServer] = []

    def restart() -> LiveServer:
        again = start_server(tmp_path / "server", port=server.port)
        started.append(again)
        return again

    yield server, restart
    for process in started:
        process.stop()


async def test_a_server_that_comes_back_within_the_deadline_is_reached(
    connect: Connect, restarting_server: tuple[LiveServer, Callable[[], LiveServer]]
) -> None:
    """Connection refused sent nothing, so the client keeps trying with the same key; the
    server, back a second later, runs the create exactly once."""
    server, restart = restarting_server
    client = connect(server.url, server.api_key, deadline=60.0)
    back: list[LiveServer] = []
    thread = threading.Thread(target=lambda: (time.sleep(1.0), back.append(restart())))
    thread.start()
    try:
        account = await resolve(client.accounts.create(name_first="Patience"))
    finally:
        thread.join(60)
    meta = account.last_response
    assert meta is not None
    assert meta.attempts > 1  # refused attempts before the server listened again
    [key] = meta.idempotency_keys
    assert not meta.replayed
    # The server saw one request under that key — the refused ones never reached it.
    assert records_with_key(back[0], key) == [("completed", 201)]
    assert database_rows(back[0], "SELECT id FROM accounts WHERE name_first = 'Patience'") == [
        (account.id,)
    ]


# -- a server that sheds load ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("shedding")
    with start_server(directory, "--max-in-flight", "1", "--rate-limit", "10000/second") as server:
        yield server


def wait_until_shedding(server: LiveServer, seconds: float = 10.0) -> None:
    """Until the server answers 503: the slow request holds its only slot."""
    # Give the slow request the slot first: a probe arriving before it would take the
    # slot and have *it* shed instead.
    time.sleep(0.3)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = httpx.get(
            f"{server.url}/api/v1/accounts",
            headers={"Authorization": f"Bearer {server.api_key}"},
            timeout=5,
        )
        if answer.status_code == 503:
            return
        time.sleep(0.02)
    raise AssertionError("the server never shed load")


async def test_a_shed_503_is_waited_out_under_the_same_key(
    connect: Connect, one_at_a_time: LiveServer
) -> None:
    """The service's 503 is never recorded: the client waits its Retry-After and the same
    key runs the create once the slot is free — one account, no replay."""
    server = one_at_a_time
    marker = f"shed-{uuid.uuid4().hex[:8]}"
    slow_body = {"data": {"attributes": {"name_first": "Slow", "name_last": "x" * 150}}}
    with (
        FaultProxy("127.0.0.1", server.port) as throttle,
        FaultProxy("127.0.0.1", server.port) as relay,
    ):
        throttle.plan(ThrottledRequest(bytes_per_second=100, chunk_size=10), method="POST")
        slow = threading.Thread(
            target=lambda: httpx.post(
                f"{throttle.url}/api/v1/accounts",
                json=slow_body,
                headers={"Authorization": f"Bearer {server.api_key}"},
                timeout=30,
            )
        )
        slow.start()
        try:
            wait_until_shedding(server)
            client = connect(relay.url, server.api_key)
            account = await resolve(client.accounts.create(name_first=marker))
        finally:
            slow.join(30)
        attempts = relay.requests_to("POST", "/api/v1/accounts")
    assert len(attempts) >= 2
    assert len({attempt.idempotency_key for attempt in attempts}) == 1
    *shed, last = attempts
    assert {attempt.response_status for attempt in shed} == {503}
    assert all(attempt.response_headers["retry-after"] == "1" for attempt in shed)
    assert all(attempt.response_headers["request-id"].startswith("req_") for attempt in shed)
    assert (last.response_status, last.replayed) == (201, False)
    assert account.last_response is not None
    assert account.last_response.attempts == len(attempts)
    assert len(account.last_response.request_ids) == len(attempts)
    key = attempts[0].idempotency_key
    assert key is not None
    assert records_with_key(server, key) == [("completed", 201)]
    assert database_rows(server, "SELECT id FROM accounts WHERE name_first = ?", marker) == [
        (account.id,)
    ]


# -- a recorded 5xx: the provider is too slow ---------------------------------------------------


@pytest.fixture(scope="module")
def slow_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    with start_provider(tmp_path_factory.mktemp("provider"), "--delay", "2") as provider:
        yield provider


@pytest.fixture(scope="module")
def impatient_server(
    tmp_path_factory: pytest.TempPathFactory, slow_provider: ProviderProcess
) -> Iterator[LiveServer]:
    args = ["--provider-url", slow_provider.url, "--provider-timeout", "0.5"]
    with start_server(
        tmp_path_factory.mktemp("impatient"), *args, "--rate-limit", "10000/second"
    ) as server:
        yield server


async def test_a_recorded_504_is_raised_not_rerun_even_with_retry_server_errors(
    connect: Connect, impatient_server: LiveServer, slow_provider: ProviderProcess
) -> None:
    """The provider took longer than the server waits: 504, recorded. Each new key would be
    another real check, so the client-wide opt-in does not apply to verifications: one
    check, and the same key then replays the 504 without a second one."""
    server = impatient_server
    client = connect(server.url, server.api_key, retry_server_errors=True)
    reference = f"user-{uuid.uuid4().hex[:8]}"
    await resolve(client.accounts.create(reference_id=reference, name_first="Ada"))
    inquiry = await resolve(client.inquiries.create(reference_id=reference))
    checks_before = slow_provider.checks_run()

    with pytest.raises(ServerError) as caught:
        await resolve(client.verifications.create(inquiry.id))
    error = caught.value
    assert (error.status_code, error.code, error.from_service) == (504, "gateway_timeout", True)
    assert (error.may_have_executed, error.recorded, error.attempts) == (True, True, 1)
    [key] = error.idempotency_keys
    assert error.request_ids == (error.request_id,)
    assert slow_provider.checks_run() == checks_before + 1

    with pytest.raises(ServerError) as replayed:
        await resolve(client.verifications.create(inquiry.id, idempotency_key=key))
    assert replayed.value.headers.get("idempotent-replayed") == "true"
    assert replayed.value.recorded is True
    assert slow_provider.checks_run() == checks_before + 1
    assert [status for status, _ in records_with_key(server, key)] == ["completed"]
    assert database_rows(
        server, "SELECT count(*) FROM verifications WHERE inquiry_id = ?", inquiry.id
    ) == [(0,)]
