"""The SQLite writer: group commit (savepoints only to undo a failed unit), turns, durability."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import LiveServer
from tests.database.round_trips import sqlite_statements

from retrysafe.config import ConfigError, settings_from_env
from retrysafe.database import Database, DatabaseUnavailable, sqlite_driver
from retrysafe.database.sqlite_writer import SqliteWriter
from retrysafe.pipeline.idempotency import IdempotencyLayer
from retrysafe.settings import Settings
from retrysafe.stores.sql import SqlIdempotencyStore

FULL, NORMAL = 2, 1
"""What ``PRAGMA synchronous`` reads back for FULL and NORMAL."""


def _writer(db: Database) -> SqliteWriter:
    assert db.writer is not None
    return db.writer


def _insert(org_id: str) -> Callable[[sqlite3.Connection], str]:
    def unit(raw: sqlite3.Connection) -> str:
        raw.execute(
            "INSERT INTO organizations (id, name, inquiries_used, created_at)"
            " VALUES (?, ?, 0, 't')",
            (org_id, org_id),
        )
        return org_id

    return unit


def _committed(path: Path) -> list[str]:
    """The organizations another connection (another process) sees."""
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM organizations ORDER BY id")]


async def test_units_queued_together_share_one_commit_and_fail_alone(
    sqlite_database: Database, tmp_path: Path
) -> None:
    """Three units, one COMMIT; the one that raises is rolled back and nothing else is."""
    writer = _writer(sqlite_database)
    groups = writer.groups

    def failing(raw: sqlite3.Connection) -> None:
        _insert("org_bad")(raw)
        raise ValueError("this unit fails after writing")

    outcomes = await asyncio.gather(
        writer.run(_insert("org_1")),
        writer.run(failing),
        writer.run(_insert("org_2")),
        return_exceptions=True,
    )
    assert outcomes[0] == "org_1"
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2] == "org_2"
    assert writer.groups == groups + 1
    assert _committed(tmp_path / "migrated.db") == ["org_1", "org_2"]


async def test_a_group_without_failures_sends_no_savepoints(
    sqlite_database: Database, tmp_path: Path
) -> None:
    """Savepoints are only for a group that has a failing unit: the rest pay nothing."""
    with sqlite_statements() as sent:
        traced = Database(sqlite_database.url)  # its writer opens inside: traced
        try:
            writer = _writer(traced)
            await writer.connection()
            sent.clear()  # the connection's pragmas
            await asyncio.gather(writer.run(_insert("org_1")), writer.run(_insert("org_2")))
            clean = list(sent)
            sent.clear()

            def failing(raw: sqlite3.Connection) -> None:
                _insert("org_bad")(raw)
                raise ValueError("this unit fails after writing")

            await asyncio.gather(
                writer.run(_insert("org_3")), writer.run(failing), return_exceptions=True
            )
            retried = [statement.split()[0] for statement in sent]
        finally:
            await traced.dispose()
    assert [statement.split()[0] for statement in clean] == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    # The first pass fails at its second unit and is rolled back; the second pass
    # isolates each unit in a savepoint, and the failed one undoes only itself.
    assert retried[: retried.index("ROLLBACK") + 1] == ["BEGIN", "INSERT", "INSERT", "ROLLBACK"]
    assert retried.count("SAVEPOINT") == 2
    assert retried[-1] == "COMMIT"
    assert _committed(tmp_path / "migrated.db") == ["org_1", "org_2", "org_3"]


async def test_a_unit_returns_only_after_its_commit(
    sqlite_database: Database, tmp_path: Path
) -> None:
    await _writer(sqlite_database).run(_insert("org_1"))
    assert _committed(tmp_path / "migrated.db") == ["org_1"]


async def test_a_turn_holds_the_writer_and_units_wait_for_it(
    sqlite_database: Database, tmp_path: Path
) -> None:
    """Statements that depend on each other hold the connection; groups queue behind them."""
    writer = _writer(sqlite_database)
    async with writer.turn() as connection:
        await connection.begin_immediate()
        _insert("org_turn")(connection.raw)
        queued = asyncio.ensure_future(writer.run(_insert("org_queued")))
        await asyncio.sleep(0.05)
        assert not queued.done()
        await connection.commit()
    assert await queued == "org_queued"
    assert _committed(tmp_path / "migrated.db") == ["org_queued", "org_turn"]


async def test_a_lock_held_by_another_process_fails_the_group_as_unavailable(
    sqlite_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "BUSY_TIMEOUT_MS", 50)
    other = sqlite3.connect(tmp_path / "migrated.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseUnavailable):
            await _writer(sqlite_database).run(_insert("org_1"))
    finally:
        other.rollback()
        other.close()
    assert await _writer(sqlite_database).run(_insert("org_2")) == "org_2"


async def _synchronous_of(db: Database) -> int:
    connection = await _writer(db).connection()
    return int(connection.raw.execute("PRAGMA synchronous").fetchone()[0])


async def test_writes_are_durable_by_default_and_normal_is_the_opt_out(tmp_path: Path) -> None:
    """FULL unless asked: an acknowledged commit is synced to disk before the answer."""
    assert Settings().sqlite_synchronous == "full"
    durable = Database(f"sqlite:///{tmp_path / 'full.db'}")
    faster = Database(f"sqlite:///{tmp_path / 'normal.db'}", sqlite_synchronous="normal")
    try:
        assert await _synchronous_of(durable) == FULL
        assert await _synchronous_of(faster) == NORMAL
    finally:
        await durable.dispose()
        await faster.dispose()


def test_the_opt_out_is_a_flag_and_a_variable_and_is_checked() -> None:
    env = {"RETRYSAFE_SQLITE_SYNCHRONOUS": "normal"}
    assert settings_from_env(env).sqlite_synchronous == "normal"
    with pytest.raises(ConfigError, match="RETRYSAFE_SQLITE_SYNCHRONOUS must be one of full, norm"):
        settings_from_env({"RETRYSAFE_SQLITE_SYNCHRONOUS": "off"})


def _served_database(server: LiveServer) -> Database:
    """The Database of a running server: the one its idempotency layer's store writes to."""
    layer: object = server._running.server.config.app
    while not isinstance(layer, IdempotencyLayer):
        layer = layer.app  # type: ignore[attr-defined]
    store = layer.store
    assert isinstance(store, SqlIdempotencyStore)
    return store.database


@pytest.mark.parametrize(
    ("setting", "expected"), [({}, FULL), ({"sqlite_synchronous": "normal"}, NORMAL)]
)
def test_a_served_app_writes_with_the_configured_durability(
    live_server: Callable[..., LiveServer], setting: dict[str, str], expected: int
) -> None:
    """The live writer connection of a running server reads back the setting."""
    server = live_server(**setting)
    with server.client(server.new_key()) as http:
        response = http.post("/accounts", json={"data": {"attributes": {"name_first": "Ada"}}})
        assert response.status_code == 201, response.text
    db = _served_database(server)
    writer = db.writer
    assert writer is not None
    connection = writer._connection
    assert connection is not None
    # The server's own connection, read from its thread's point of view: nothing else
    # uses it between requests, and this read changes nothing.
    assert connection.raw.execute("PRAGMA synchronous").fetchone()[0] == expected


async def test_a_cancelled_caller_waits_until_the_thread_is_done_with_the_connection(
    sqlite_database: Database,
) -> None:
    """A COMMIT on the thread outlives its caller's cancellation: the writer is not handed on
    while the thread still uses the connection."""
    connection = await _writer(sqlite_database).connection()
    running = asyncio.ensure_future(connection.on_thread(time.sleep, 0.3))
    await asyncio.sleep(0.05)
    running.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert time.monotonic() - cancelled_at >= 0.2
