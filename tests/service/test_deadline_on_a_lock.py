"""A request whose deadline passes while it waits on a row lock is a recorded 504 (issue 15.6).

The wait is real: another connection holds the account's row lock, the PATCH
blocks on it in the database, and ``--request-timeout`` cancels it there. The
answer must say what happened (the deadline), not that the database is
unreachable, and it is the handler's answer, so it is recorded and replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
from tests.conftest import LiveServer, run_sync

pytestmark = pytest.mark.postgres

TIMEOUT = 1.0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_deadline_passing_on_a_row_lock_is_a_recorded_504(
    live_server: Callable[..., LiveServer],
) -> None:
    server = live_server(request_timeout=TIMEOUT)
    with server.client(server.new_key()) as http:
        account = http.post("/accounts", json={"data": {"attributes": {"name_first": "Ada"}}})
        assert account.status_code == 201, account.text
        account_id = account.json()["data"]["id"]
        patch = {"data": {"attributes": {"name_first": "Grace"}}}
        headers = {"Idempotency-Key": "patch-on-a-locked-row"}

        async def patched_while_locked() -> tuple[int, str]:
            blocker = await asyncpg.connect(server.database_url)
            try:
                async with blocker.transaction():
                    await blocker.execute(
                        "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account_id
                    )
                    response = await asyncio.to_thread(
                        lambda: http.patch(f"/accounts/{account_id}", json=patch, headers=headers)
                    )
                return response.status_code, response.text
            finally:
                await blocker.close()

        status, text = run_sync(patched_while_locked)
        assert status == 504, text
        assert '"code":"gateway_timeout"' in text
        replay = http.patch(f"/accounts/{account_id}", json=patch, headers=headers)
        assert replay.status_code == 504, replay.text
        assert replay.headers["idempotent-replayed"] == "true"
        unchanged = http.get(f"/accounts/{account_id}").json()["data"]["attributes"]
        assert unchanged["name_first"] == "Ada"
