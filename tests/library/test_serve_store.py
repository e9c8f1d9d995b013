"""``retrysafe serve --idempotency-store URL``, as real processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from tests.conftest import run_sync
from tests.server_process import free_port, run_cli, start_server
from tests.support import redis_service


def test_an_unreachable_store_is_one_error_line_before_serving(tmp_path: Path) -> None:
    unreachable = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = run_cli(
        "serve", "--port", str(free_port()), "--idempotency-store", unreachable, cwd=tmp_path
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "retrysafe: error: The idempotency store (redis) at redis://:***@127.0.0.1:"
    )
    assert "unreachable" in last
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_scheme_is_refused_as_bad_input(tmp_path: Path) -> None:
    result = run_cli("serve", "--idempotency-store", "mongodb://h/db", cwd=tmp_path)
    assert result.returncode == 2
    assert "--idempotency-store" in result.stderr


async def redis_keys(prefix: str) -> list[bytes]:
    client = Redis.from_url(redis_service.URL)
    try:
        return [key async for key in client.scan_iter(match=prefix + "*")]
    finally:
        await client.aclose()


@pytest.mark.slow
@pytest.mark.redis
def test_serve_keeps_the_records_in_the_store_it_is_given(tmp_path: Path) -> None:
    if not run_sync(redis_service.reachable):
        pytest.skip(redis_service.SKIP_REASON)
    created = run_cli("keys", "create", "--org", "acme", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    with sqlite3.connect(tmp_path / "retrysafe.db") as conn:
        [(org_id,)] = conn.execute("SELECT id FROM organizations").fetchall()
    prefix = f"retrysafe:idem:{org_id}:"
    server = start_server(["--idempotency-store", redis_service.URL], cwd=tmp_path)
    try:
        server.wait_healthy()
        headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "acct-1"}
        body = {"data": {"attributes": {"reference_id": "user-1"}}}
        with httpx.Client(base_url=f"{server.base_url}/api/v1", headers=headers) as http:
            first = http.post("/accounts", json=body)
            replay = http.post("/accounts", json=body)
        kept = run_sync(lambda: redis_keys(prefix))
    finally:
        server.stop()
        run_sync(lambda: redis_service.delete_prefixed(prefix))
    assert first.status_code == 201, first.text
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert len(kept) == 1
    with sqlite3.connect(tmp_path / "retrysafe.db") as conn:
        assert conn.execute("SELECT count(*) FROM idempotency_records").fetchone() == (0,)
