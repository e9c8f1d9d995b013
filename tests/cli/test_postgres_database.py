"""On PostgreSQL, every command creates its database when it is new, then migrates it."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_process import run_cli

pytestmark = pytest.mark.postgres

SERVER = "postgresql://postgres@127.0.0.1:5432"


async def _fetch(database: str, sql: str) -> list[tuple[object, ...]]:
    import asyncpg

    conn = await asyncpg.connect(f"{SERVER}/{database}", timeout=5)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


def fetch(database: str, sql: str) -> list[tuple[object, ...]]:
    return asyncio.run(_fetch(database, sql))


@pytest.fixture
def database_name() -> Iterator[str]:
    """A database name that does not exist yet on the local server; dropped afterwards."""
    try:
        fetch("postgres", "SELECT 1")
    except Exception:  # any failure to connect means there is no usable server
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = "retrysafe_cli_" + uuid.uuid4().hex[:12]
    yield name
    fetch("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrate_creates_a_missing_database(tmp_path: Path, database_name: str) -> None:
    """The database does not exist; migrate creates it and the schema, twice harmlessly.

    The first run says loudly that it created the database, the second only which
    one it used; neither shows the password.
    """
    url = f"postgresql://postgres:hunter2@127.0.0.1:5432/{database_name}"
    shown = f"postgresql://postgres:***@127.0.0.1:5432/{database_name}"
    said = []
    for _ in range(2):
        result = run_cli("migrate", "--database", url, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "hunter2" not in result.stderr + result.stdout
        said.append(result.stderr.strip())
    assert said[0].startswith(f"retrysafe: created a new, empty database at {shown} — ")
    assert said[1] == f"retrysafe: database {shown}"
    tables = {
        str(row[0])
        for row in fetch(
            database_name, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
    }
    assert {"organizations", "api_keys", "accounts", "idempotency_records"} <= tables


def test_keys_create_on_a_new_database(tmp_path: Path, database_name: str) -> None:
    """keys create works on a database it had to create, and stores only the hash."""
    url = f"{SERVER}/{database_name}"
    result = run_cli("keys", "create", "--org", "acme", "--database", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    key_id, _, secret = result.stdout.splitlines()[-1].removeprefix("rsk_").partition(".")
    rows = fetch(database_name, "SELECT id, secret_hash FROM api_keys")
    assert rows == [(key_id, hashlib.sha256(secret.encode()).hexdigest())]
