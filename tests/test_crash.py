"""SIGKILL the real server mid-traffic: every retried key yields exactly one account.

This is the exactly-once promise of SPEC §3 tested the hard way, on SQLite and on
PostgreSQL: the handler's writes and the recorded response commit in one database
transaction, and the response leaves only after the commit. So whatever the client saw
before the crash is durable and replays byte for byte, and whatever it did not see
either committed whole (replay) or left nothing behind (the retry executes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from server_process import ServerProcess, run_cli, start_server

pytestmark = pytest.mark.slow

KEYS = 300
KILL_AFTER = 100
CONCURRENCY = 32
BUDGET = 55.0
"""Seconds the whole test may take, server starts included; each step gets what is left."""

SERVER_ARGS = ("--rate-limit", "1000000/second", "--max-in-flight", "10000")

COUNT_ACCOUNTS = "SELECT count(*), count(DISTINCT reference_id) FROM accounts"


async def count_accounts(url: str) -> tuple[int, int]:
    """Accounts in the database, and distinct reference ids among them, read directly."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            total, distinct = conn.execute(COUNT_ACCOUNTS).fetchone()
        return total, distinct
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(COUNT_ACCOUNTS)
    finally:
        await conn.close()
    return row[0], row[1]


@dataclass(frozen=True)
class Seen:
    """What the client received for one request: the parts a replay must reproduce."""

    status: int
    body: bytes
    content_type: str | None
    location: str | None
    replayed: bool

    @classmethod
    def of(cls, response: httpx.Response) -> Seen:
        return cls(
            status=response.status_code,
            body=response.content,
            content_type=response.headers.get("content-type"),
            location=response.headers.get("location"),
            replayed=response.headers.get("idempotent-replayed") == "true",
        )


def idempotency_key(i: int) -> str:
    return f"crash-key-{i:04d}"


def reference_id(i: int) -> str:
    return f"crash-ref-{i:04d}"


def create_body(i: int) -> bytes:
    attributes = {"reference_id": reference_id(i), "name_first": "Ada", "name_last": f"N{i}"}
    return json.dumps({"data": {"attributes": attributes}}).encode()


async def post_create(client: httpx.AsyncClient, i: int) -> httpx.Response:
    return await client.post(
        "/api/v1/accounts",
        content=create_body(i),
        headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key(i)},
    )


def client_for(server: ServerProcess, secret: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
        limits=httpx.Limits(max_connections=CONCURRENCY),
    )


class Budget:
    """One deadline for the whole test, so a slow machine fails it instead of hanging CI."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self._deadline - time.monotonic()
        assert remaining > 0, "the crash test ran out of its time budget"
        return remaining


async def traffic_until_killed(
    server: ServerProcess, secret: str, budget: Budget
) -> dict[int, Seen]:
    """Send every create concurrently; SIGKILL the server once KILL_AFTER have answered."""
    seen: dict[int, Seen] = {}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        async with gate:
            try:
                response = await post_create(client, i)
            except httpx.TransportError:
                return  # in flight or not yet sent at the crash: outcome unknown
            seen[i] = Seen.of(response)
            if len(seen) == KILL_AFTER:
                # Straight from the event loop, so other requests are mid-flight.
                os.killpg(server.process.pid, signal.SIGKILL)

    async with client_for(server, secret) as client:
        await asyncio.wait_for(
            asyncio.gather(*(one(client, i) for i in range(KEYS))), budget.left()
        )
    return seen


async def retry_everything(server: ServerProcess, secret: str, budget: Budget) -> dict[int, Seen]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, Seen]:
        async with gate:
            return i, Seen.of(await post_create(client, i))

    async with client_for(server, secret) as client:
        results = await asyncio.wait_for(
            asyncio.gather(*(one(client, i) for i in range(KEYS))), budget.left()
        )
    return dict(results)


async def accounts_by_reference(
    server: ServerProcess, secret: str, budget: Budget
) -> dict[int, list[str]]:
    """For each reference id, the ids of the accounts the API lists under it."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, list[str]]:
        async with gate:
            response = await client.get(
                "/api/v1/accounts", params={"filter[reference_id]": reference_id(i)}
            )
        assert response.status_code == 200, response.text
        return i, [account["id"] for account in response.json()["data"]]

    async with client_for(server, secret) as client:
        results = await asyncio.wait_for(
            asyncio.gather(*(one(client, i) for i in range(KEYS))), budget.left()
        )
    return dict(results)


async def test_sigkill_mid_traffic_then_retry_every_key(
    tmp_path: Path, empty_database_url: str
) -> None:
    """Before the crash: answers are durable. After it: one account per key, replays exact."""
    budget = Budget(BUDGET)
    created = run_cli(
        "keys", "create", "--org", "crash", "--database", empty_database_url, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.splitlines()[-1]

    first = start_server([*SERVER_ARGS, "--database", empty_database_url], cwd=tmp_path)
    try:
        first.wait_healthy(timeout=min(30, budget.left()))
        before = await traffic_until_killed(first, secret, budget)
    finally:
        first.kill()
    assert first.process.returncode == -signal.SIGKILL
    # The kill must land mid-traffic, or this test proves nothing about crashes.
    assert KILL_AFTER <= len(before) < KEYS, len(before)
    assert {seen.status for seen in before.values()} <= {201, 503}, before

    second = start_server([*SERVER_ARGS, "--database", empty_database_url], cwd=tmp_path)
    try:
        second.wait_healthy(timeout=min(30, budget.left()))
        after = await retry_everything(second, secret, budget)
        listed = await accounts_by_reference(second, secret, budget)
    finally:
        second.stop()

    for i in range(KEYS):
        retry = after[i]
        original = before.get(i)
        if original is not None and original.status != 503:
            # Acknowledged before the crash: replayed byte for byte, never executed again.
            assert retry.replayed, (i, retry)
            assert (retry.status, retry.body, retry.content_type, retry.location) == (
                original.status,
                original.body,
                original.content_type,
                original.location,
            ), i
        else:
            # Unknown outcome (in flight, never sent) or a 503, which is never recorded:
            # it either committed whole before the crash (replay) or runs now.
            assert retry.status == 201, (i, retry)
        account_id = json.loads(retry.body)["data"]["id"]
        assert listed[i] == [account_id], (i, listed[i])

    assert await count_accounts(empty_database_url) == (KEYS, KEYS)
