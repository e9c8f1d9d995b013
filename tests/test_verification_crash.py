"""SIGKILL the real server in the middle of a verification: the check still runs exactly once.

A verification commits ``started`` before it calls the provider and
``provider_called`` (with the answer) right after. These tests kill ``retrysafe
serve`` at each of those two moments, restart it and retry with the same key:

- killed while the provider works (``started`` committed): the record is held by
  its lease, so retries get 409 until the lease runs out; then one takes it over
  and calls the provider again with the same provider key, which answers from
  its record. One verification, ``checks_run == 1``.
- killed after ``provider_called`` committed (PostgreSQL, where the test can
  hold the final insert back with a table lock and watch the point commit): the
  retry does not call the provider at all. The provider is stopped before the
  retry to prove it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from tests.support.provider_process import ProviderProcess, start_provider

from server_process import ServerProcess, run_cli, start_server

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT = 4.0
"""serve's --request-timeout; the lease is this plus retrysafe's 5 s margin."""
KEY = "verify-crash-1"
BUDGET = 60.0

Processes = list[ServerProcess]


def serve(
    tmp_path: Path, db_url: str, provider: ProviderProcess, started: Processes
) -> ServerProcess:
    server = start_server(
        [
            "--database",
            db_url,
            "--provider-url",
            provider.url,
            "--request-timeout",
            str(REQUEST_TIMEOUT),
            "--provider-timeout",
            str(REQUEST_TIMEOUT - 1),
        ],
        cwd=tmp_path,
    )
    started.append(server)
    server.wait_healthy()
    return server


def new_key(tmp_path: Path, db_url: str) -> str:
    created = run_cli("keys", "create", "--org", "crash", "--database", db_url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    return created.stdout.splitlines()[-1]


def new_inquiry(server: ServerProcess, secret: str) -> str:
    with httpx.Client(
        base_url=server.base_url + "/api/v1", headers={"Authorization": f"Bearer {secret}"}
    ) as http:
        attributes = {"name_first": "Ada", "name_last": "Lovelace", "birthdate": "1990-12-10"}
        account = http.post("/accounts", json={"data": {"attributes": attributes}})
        assert account.status_code == 201, account.text
        inquiry = http.post(
            "/inquiries",
            json={"data": {"attributes": {"account_id": account.json()["data"]["id"]}}},
        )
        assert inquiry.status_code == 201, inquiry.text
        return str(inquiry.json()["data"]["id"])


async def post_verification(server: ServerProcess, secret: str, inquiry_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        return await http.post(
            f"/api/v1/inquiries/{inquiry_id}/verifications",
            headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": KEY},
        )


async def retry_until_done(
    server: ServerProcess, secret: str, inquiry_id: str, locked_until: float
) -> tuple[httpx.Response, int]:
    """Retry with KEY until an answer other than 409; return it and how many 409s came first.

    Every answer received before the lease ran out must be a 409, with Retry-After.
    """
    in_flight = 0
    deadline = time.monotonic() + BUDGET
    while True:
        response = await post_verification(server, secret, inquiry_id)
        received = time.time()
        if response.status_code != 409:
            assert received >= locked_until, "the record was taken over while its lease lived"
            return response, in_flight
        assert response.json()["errors"][0]["code"] == "idempotency_request_in_progress"
        retry_after = int(response.headers["retry-after"])
        assert 1 <= retry_after <= 5
        in_flight += 1
        assert time.monotonic() < deadline, "the lease never ran out"
        await asyncio.sleep(min(retry_after, 0.5))


def sqlite_record(db_path: Path) -> tuple[str, str | None, float]:
    with sqlite3.connect(db_path) as conn:
        row = conn.execute(
            "SELECT status, recovery_point, locked_until FROM idempotency_records WHERE key = ?",
            (KEY,),
        ).fetchone()
    assert row is not None, "nothing was committed before the provider call"
    return row[0], row[1], float(row[2])


def sqlite_verifications(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM verifications")]


async def test_sigkill_while_the_provider_runs_the_check(
    tmp_path: Path, processes: Processes
) -> None:
    """409 while the dead holder's lease lives, then a retry completes: one check, one row."""
    db_path = tmp_path / "crash.db"
    db_url = f"sqlite:///{db_path}"
    secret = new_key(tmp_path, db_url)
    provider = start_provider(tmp_path, "--delay", "2")
    processes.append(provider)
    first = serve(tmp_path, db_url, provider, processes)
    inquiry_id = new_inquiry(first, secret)

    pending = asyncio.create_task(post_verification(first, secret, inquiry_id))
    await asyncio.to_thread(provider.wait_for_checks, 1)
    first.kill()  # the provider is still working on the check
    assert first.process.returncode == -signal.SIGKILL
    with pytest.raises(httpx.TransportError):
        await pending
    status, point, locked_until = sqlite_record(db_path)
    assert (status, point) == ("in_progress", "started")

    second = serve(tmp_path, db_url, provider, processes)
    response, in_flight = await retry_until_done(second, secret, inquiry_id, locked_until)
    assert response.status_code == 201, response.text
    assert in_flight >= 1, "the restart outlived the lease; raise REQUEST_TIMEOUT"
    assert provider.checks_run() == 1
    assert sqlite_verifications(db_path) == [response.json()["data"]["id"]]
    replay = await post_verification(second, secret, inquiry_id)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == response.content


@pytest.mark.postgres
async def test_sigkill_after_the_providers_answer_was_committed(
    tmp_path: Path, postgres_url: str, processes: Processes
) -> None:
    """The retry resumes at provider_called and finishes without any provider at all."""
    secret = new_key(tmp_path, postgres_url)
    provider = start_provider(tmp_path)
    processes.append(provider)
    first = serve(tmp_path, postgres_url, provider, processes)
    inquiry_id = new_inquiry(first, secret)

    watcher = await asyncpg.connect(postgres_url)
    try:
        # Hold the final insert back (reads and the record's own updates go on), so the
        # moment between the committed answer and the finished request lasts until the kill.
        transaction = watcher.transaction()
        await transaction.start()
        await watcher.execute("LOCK TABLE verifications IN SHARE MODE")
        pending = asyncio.create_task(post_verification(first, secret, inquiry_id))
        deadline = time.monotonic() + REQUEST_TIMEOUT / 2
        while True:
            row = await watcher.fetchrow(
                "SELECT recovery_point, recovery_data, locked_until"
                " FROM idempotency_records WHERE key = $1",
                KEY,
            )
            if row is not None and row["recovery_point"] == "provider_called":
                break
            assert time.monotonic() < deadline, "provider_called was never committed"
            await asyncio.sleep(0.01)
        first.kill()
        await transaction.rollback()
    finally:
        await watcher.close()
    with pytest.raises(httpx.TransportError):
        await pending
    answer = json.loads(row["recovery_data"])["answer"]
    assert provider.checks_run() == 1
    provider.stop()  # a retry that called the provider now would get a 502

    second = serve(tmp_path, postgres_url, provider, processes)
    response, _ = await retry_until_done(second, secret, inquiry_id, row["locked_until"])
    assert response.status_code == 201, response.text
    attributes = response.json()["data"]["attributes"]
    assert attributes["provider_reference"] == answer["id"]
    count = await asyncpg_count(postgres_url)
    assert count == 1


async def asyncpg_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM verifications"))
    finally:
        await conn.close()
