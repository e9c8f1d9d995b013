"""A TTL shorter than the provider call never lets a retry run the verification twice.

``retrysafe serve --idempotency-ttl 2`` in front of ``retrysafe provider --delay 4``
(real processes, SQLite and PostgreSQL): the retry sent after the TTL ran out but
while the first request still waits on the provider meets the first request's
live lease and gets 409; once the first answers, the retry replays that answer
(its checkpoint moved expiry to the lease's end). The provider counts the checks
it really ran: one. Before the fix the retry overwrote the expired record,
called the provider again with a new key and ``checks_run`` was 2.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from tests.support.provider_process import start_provider

from server_process import ServerProcess, run_cli, start_server

pytestmark = pytest.mark.slow

TTL = 2
PROVIDER_DELAY = 4.0
KEY = "short-ttl-verification"


async def test_a_retry_after_the_ttl_meets_the_live_lease_and_then_replays(
    tmp_path: Path, empty_database_url: str, processes: list[ServerProcess]
) -> None:
    provider = start_provider(tmp_path, "--delay", str(PROVIDER_DELAY))
    processes.append(provider)
    created = run_cli(
        "keys", "create", "--org", "ttl", "--database", empty_database_url, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.splitlines()[-1]
    server = start_server(
        [
            "--database",
            empty_database_url,
            "--provider-url",
            provider.url,
            "--idempotency-ttl",
            str(TTL),
            # The lease (request timeout + 5 s) outlasts both the TTL and the call.
            "--request-timeout",
            "10",
            "--provider-timeout",
            "8",
        ],
        cwd=tmp_path,
    )
    processes.append(server)
    server.wait_healthy()

    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(
        base_url=server.base_url + "/api/v1", headers=headers, timeout=30
    ) as http:
        inquiry = await http.post(
            "/inquiries", json={"data": {"attributes": {"reference_id": "ttl-user"}}}
        )
        assert inquiry.status_code == 201, inquiry.text
        path = f"/inquiries/{inquiry.json()['data']['id']}/verifications"
        keyed = {"Idempotency-Key": KEY}

        sent_at = time.monotonic()
        first = asyncio.create_task(http.post(path, headers=keyed))
        await asyncio.to_thread(provider.wait_for_checks, 1)
        # Past the TTL, well before the provider (4 s) answers the first request.
        await asyncio.sleep(max(0.0, sent_at + TTL + 0.5 - time.monotonic()))
        retry = await http.post(path, headers=keyed)
        assert retry.status_code == 409, f"the retry ran instead: {retry.text}"
        assert retry.json()["errors"][0]["code"] == "idempotency_request_in_progress"
        assert int(retry.headers["retry-after"]) >= 1
        assert not first.done(), "the first request finished before the retry; timing is off"

        answer = await first
        assert answer.status_code == 201, answer.text
        assert time.monotonic() - sent_at > TTL, "the first request did not outlast the TTL"
        replay = await http.post(path, headers=keyed)
        assert replay.status_code == 201, replay.text
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == answer.content
    assert provider.checks_run() == 1
