"""API keys are stored only as hashes, looked up by id, and compared in constant time.

The database is read row by row after a key was created by the real CLI and used
(creates, replays, a wrong variant): no table holds the secret or any part of the
presented key beyond its public id. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.conftest import LiveServer
from tests.server_process import run_cli
from tests.service.conftest import database_url, postgres_copies  # noqa: F401

from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.service import admin, api_keys
from retrysafe.service.authenticator import _ACTIVE_KEY, DatabaseAuthenticator


async def every_value(db: Database) -> list[tuple[str, str]]:
    """``(table, value as text)`` for every column of every row of every table."""
    async with db.read() as conn:
        if db.is_sqlite:
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        tables = [row[0] for row in (await conn.execute(text(query))).all()]
        values: list[tuple[str, str]] = []
        for table in tables:
            # Table names come from the catalog just read, not from any input.
            every_row = text(f'SELECT * FROM "{table}"')  # noqa: S608
            for row in (await conn.execute(every_row)).all():
                for value in row:
                    shown = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    values.append((table, shown))
    assert "api_keys" in tables
    return values


def test_no_table_holds_a_secret(
    live_server: Callable[..., LiveServer],
    database_url: str,  # noqa: F811
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="retrysafe")  # the request lines, every level
    created = run_cli("keys", "create", "--org", "acme", "--database", database_url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    presented = created.stdout.strip().splitlines()[-1]
    key_id, secret = presented.removeprefix("rsk_").split(".", 1)
    server = live_server(api_log_bodies=True, api_log_flush_interval=0.05)
    with server.client(presented) as http:
        body = {"data": {"attributes": {"reference_id": "user-1"}}}
        for _ in range(2):  # a create and its replay: both recorded
            assert http.post("/accounts", json=body, headers={"Idempotency-Key": "k"}).is_success
        wrong = presented[:-1] + ("A" if presented[-1] != "A" else "B")
        assert (
            http.get("/accounts", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        )
    server.stop()  # flushes the API log

    values = server.on_database(every_value)
    for table, value in values:
        assert secret not in value, f"the secret is stored in {table}"
        assert secret[:16] not in value, f"part of the secret is stored in {table}"
        assert presented not in value, f"the presented key is stored in {table}"
    stored = hashlib.sha256(secret.encode()).hexdigest()
    assert ("api_keys", stored) in values, "the key row holds the SHA-256 of the secret"
    assert ("api_keys", key_id) in values
    logged = capfd.readouterr()
    assert secret not in logged.out + logged.err, "the secret was logged"
    # In-process servers log through stdlib logging in tests (tests/conftest.py).
    assert "event='request'" in caplog.text, "no request line was seen to check"
    assert secret not in caplog.text, "the secret was logged"


async def test_lookup_is_by_key_id_and_the_hash_comparison_is_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key row is found by its public id; the secret only meets ``hmac.compare_digest``.

    No query ever filters on the secret or its hash, so the database's index
    walk cannot leak how much of a guess was right; the one comparison that sees
    the secret takes the same time wherever the first difference is.
    """
    where = str(_ACTIVE_KEY.compile()).split("WHERE", 1)[1]
    assert "api_keys.id =" in where
    assert "secret_hash" not in where

    compared: list[tuple[str, str]] = []
    compare_digest = hmac.compare_digest

    def recording_compare_digest(a: str, b: str) -> bool:
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", recording_compare_digest)
    db = Database(f"sqlite:///{tmp_path / 'keys.db'}")
    try:
        await upgrade(db)
        key_id, presented = await admin.create_api_key(db, "acme")
        authenticate = DatabaseAuthenticator(db)

        assert (await authenticate(presented)) is not None
        near_miss = presented[:-1] + ("A" if presented[-1] != "A" else "B")
        assert (await authenticate(near_miss)) is None
        assert len(compared) == 2
        for ours, stored in compared:
            assert len(ours) == len(stored) == 64  # two SHA-256 digests, never the secret
            assert presented.split(".", 1)[1] not in (ours, stored)

        unknown_id = presented.replace(key_id, "key_0000000000000000")
        assert (await authenticate(unknown_id)) is None
        assert len(compared) == 2  # no row, nothing to compare
    finally:
        await db.dispose()
