"""The batching API-log writer: bounded buffer, batches, a database outage, shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from structlog.typing import EventDict

from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.database.schema import api_logs
from retrysafe.observability import Metrics, RequestRecord
from retrysafe.observability.api_log_writer import ApiLogWriter


def record(request_id: str, **fields: object) -> RequestRecord:
    values: dict[str, object] = {
        "request_id": request_id,
        "started_at": time.time(),
        "method": "POST",
        "path": "/api/v1/accounts",
        "query": "",
        "route": "/api/v1/accounts",
        "status": 201,
        "duration_ms": 1.5,
        "organization_id": "org_1",
        "api_key_id": "key_1",
        "idempotency_key": "k",
        "outcome": "executed",
        "rate_limit": "allowed",
        "error_code": None,
    }
    values.update(fields)
    return RequestRecord(**values)  # type: ignore[arg-type]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'logs.db'}")
    await upgrade(database)
    yield database
    await database.dispose()


async def stored(db: Database) -> list[str]:
    async with db.read() as conn:
        query = select(api_logs.c.request_id).order_by(api_logs.c.id)
        return list((await conn.execute(query)).scalars())


async def test_a_full_buffer_drops_new_entries_and_counts_them(db: Database) -> None:
    metrics = Metrics()
    writer = ApiLogWriter(db, metrics, capacity=3)
    for number in range(5):
        writer.submit(record(f"req_{number}"))
    assert writer.pending == 3
    assert sample(metrics, "retrysafe_api_log_entries_dropped_total") == 2
    assert await writer.flush()
    assert await stored(db) == ["req_0", "req_1", "req_2"]
    assert sample(metrics, "retrysafe_api_log_entries_written_total") == 3


async def test_entries_are_written_in_batches_in_order(db: Database) -> None:
    writer = ApiLogWriter(db, Metrics(), batch_size=4)
    for number in range(10):
        writer.submit(record(f"req_{number:02}"))
    assert await writer.flush()
    assert await stored(db) == [f"req_{number:02}" for number in range(10)]


async def test_a_failing_database_keeps_the_entries_for_the_next_round(
    tmp_path: Path, captured_logs: list[EventDict]
) -> None:
    """The batch goes back to the buffer; one warning per outage; the metric counts each try.

    The database has no api_logs table (never migrated), so every insert fails.
    """
    broken = Database(f"sqlite:///{tmp_path / 'unmigrated.db'}")
    metrics = Metrics()
    writer = ApiLogWriter(broken, metrics)
    writer.submit(record("req_a"))
    writer.submit(record("req_b"))
    assert not await writer.flush()
    assert not await writer.flush()
    assert writer.pending == 2
    assert sample(metrics, "retrysafe_dependency_errors_total", dependency="database") == 2
    warnings = [event for event in captured_logs if event["log_level"] == "warning"]
    assert len(warnings) == 1
    await broken.dispose()


async def test_stop_writes_what_is_still_buffered(db: Database) -> None:
    writer = ApiLogWriter(db, Metrics(), interval=3600)
    writer.start()
    writer.submit(record("req_late"))
    await writer.stop()
    assert await stored(db) == ["req_late"]


async def test_the_background_task_flushes_every_interval(db: Database) -> None:
    writer = ApiLogWriter(db, Metrics(), interval=0.01)
    writer.start()
    try:
        writer.submit(record("req_soon"))
        for _ in range(1000):  # at most 10 s
            if await stored(db):
                break
            await asyncio.sleep(0.01)
        assert await stored(db) == ["req_soon"]
    finally:
        await writer.stop()


async def test_rows_keep_what_the_record_says(db: Database) -> None:
    writer = ApiLogWriter(db, Metrics(), body_limit=100)
    writer.submit(
        record(
            "req_full",
            query="filter[x]=1",
            status=422,
            error_code="invalid_value",
            request_body=b'{"token":"t0k3n","name":"Ada"}',
            request_content_type="application/json",
            response_body=b"x" * 200,
            response_content_type="application/json",
        )
    )
    assert await writer.flush()
    async with db.read() as conn:
        row = (await conn.execute(select(api_logs))).one()
    assert row.id.startswith("log_")
    assert row.query == "filter[x]=1"
    assert (row.status, row.error_code, row.outcome) == (422, "invalid_value", "executed")
    assert row.request_body == '{"token":"[redacted]","name":"Ada"}'
    assert row.response_body == "[not stored: larger than 100 bytes]"
    assert row.created_at.endswith("Z")
