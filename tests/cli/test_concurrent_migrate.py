"""Starting on a database: processes starting together all succeed; a newer schema is refused.

A rollout starts ``retrysafe serve`` on several machines at once, and each migrates
its database on start. Without a lock each would find the schema missing, and all
but one would fail creating a table that exists by then. And a rollback of the code
alone meets a schema a newer release made, which it must refuse plainly.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path

import pytest

from server_process import CLI, clean_env, run_cli

pytestmark = pytest.mark.slow

PROCESSES = 3
TIMEOUT = 60


def revisions(url: str) -> list[str]:
    """The rows of ``alembic_version``: exactly one when the schema was made once."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]

    async def fetch() -> list[str]:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            return [row[0] for row in await conn.fetch("SELECT version_num FROM alembic_version")]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_migrations_started_at_once_all_succeed(tmp_path: Path, empty_database_url: str) -> None:
    """Every one of several simultaneous ``retrysafe migrate`` runs exits 0, one schema results."""
    processes = [
        subprocess.Popen(
            [*CLI, "migrate", "--database", empty_database_url],
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outcomes = [(process.wait(TIMEOUT), process.communicate()[1]) for process in processes]
    assert [code for code, _ in outcomes] == [0] * PROCESSES, outcomes
    assert len(revisions(empty_database_url)) == 1


def test_a_database_migrated_by_a_newer_release_is_one_error_line(tmp_path: Path) -> None:
    """Rolling the code back past a migration: serve and migrate refuse in one line, exit 1."""
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    assert run_cli("migrate", "--database", url, cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "newer.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    for command in (["migrate"], ["serve", "--port", "0"]):
        result = run_cli(*command, "--database", url, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("retrysafe: error: cannot use the database"), result.stderr
        assert "9999_from_the_future" in result.stderr
        assert "Traceback" not in result.stderr
