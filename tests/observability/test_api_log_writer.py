"""The batching API-log writer: bounded buffer, batches, a database outage, shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select
from structlog.typing import EventDict
from tests.support.records import request_record

from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.database.schema import api_logs
from retrysafe.observability import Metrics
from retrysafe.observability.api_log_writer import ROWS_PER_TURN, ApiLogWriter, rfc3339


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def stored(sqlite_database: Database) -> list[str]:
    async with sqlite_database.read() as conn:
        query = select(api_logs.c.request_id).order_by(api_logs.c.id)
        return list((await conn.execute(query)).scalars())


async def test_a_full_buffer_drops_new_entries_and_counts_them(sqlite_database: Database) -> None:
    metrics = Metrics()
    writer = ApiLogWriter(sqlite_database, metrics, capacity=3)
    for number in range(5):
        writer.submit(request_record(f"req_{number}"))
    assert writer.pending == 3
    assert sample(metrics, "retrysafe_api_log_entries_dropped_total") == 2
    assert await writer.flush()
    assert await stored(sqlite_database) == ["req_0", "req_1", "req_2"]
    assert sample(metrics, "retrysafe_api_log_entries_written_total") == 3


async def test_every_field_lands_in_its_own_column(empty_database_url: str) -> None:
    """Rows go positionally (executemany on SQLite, COPY on PostgreSQL): no value may shift."""
    db = Database(empty_database_url)
    await upgrade(db)
    writer = ApiLogWriter(db, Metrics(), body_limit=100)
    record = request_record(
        "req_fields",
        started_at=1_700_000_000.25,
        method="PATCH",
        path="/api/v1/inquiries/inq_1",
        query="include=verifications",
        route="/api/v1/inquiries/{inquiry_id}",
        status=409,
        duration_ms=12.34567,
        organization_id="org_fields",
        api_key_id="key_fields",
        idempotency_key="key-of-fields",
        outcome="in_flight",
        rate_limit="limited",
        error_code="idempotency_request_in_progress",
        request_body=b'{"a": 1, "password": "p"}',
        request_content_type="application/json",
        response_body=b"not json",
        response_content_type="text/plain",
    )
    writer.submit(record)
    try:
        assert await writer.flush()
        async with db.read() as conn:
            row = (await conn.execute(select(api_logs))).mappings().one()
    finally:
        await db.dispose()
    assert row["id"].startswith("log_")
    assert {name: value for name, value in row.items() if name != "id"} == {
        "organization_id": "org_fields",
        "api_key_id": "key_fields",
        "request_id": "req_fields",
        "method": "PATCH",
        "path": "/api/v1/inquiries/inq_1",
        "query": "include=verifications",
        "route": "/api/v1/inquiries/{inquiry_id}",
        "status": 409,
        "duration_ms": 12.346,
        "idempotency_key": "key-of-fields",
        "outcome": "in_flight",
        "rate_limit": "limited",
        "error_code": "idempotency_request_in_progress",
        "request_body": '{"a":1,"password":"[redacted]"}',
        "response_body": "[not stored: text/plain body]",
        "created_at": rfc3339(1_700_000_000.25),
    }


async def test_entries_are_written_in_batches_in_order(sqlite_database: Database) -> None:
    writer = ApiLogWriter(sqlite_database, Metrics(), batch_size=4)
    for number in range(10):
        writer.submit(request_record(f"req_{number:02}"))
    assert await writer.flush()
    assert await stored(sqlite_database) == [f"req_{number:02}" for number in range(10)]


async def test_a_flush_lets_requests_run_while_it_builds_a_batch(sqlite_database: Database) -> None:
    """Rows are built ROWS_PER_TURN at a time, with the event loop's turns between.

    A task that counts loop turns runs beside the flush; the count is read when the
    insert starts, so it covers only the building of the batch.
    """
    writer = ApiLogWriter(sqlite_database, Metrics())
    for number in range(4 * ROWS_PER_TURN):
        writer.submit(request_record(f"req_{number:03}"))
    turns = 0
    at_insert: list[int] = []

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    real_insert = sqlite_database.insert_many

    async def insert_many(statement: Any, columns: Any, rows: list[Any]) -> None:
        at_insert.append(turns)
        await real_insert(statement, columns, rows)

    sqlite_database.insert_many = insert_many  # type: ignore[method-assign]
    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)  # the counter's first turn
    try:
        assert await writer.flush()
    finally:
        counter.cancel()
    assert len(at_insert) == 1  # one batch, one transaction
    assert at_insert[0] >= 3  # a turn between each of the four chunks
    assert len(await stored(sqlite_database)) == 4 * ROWS_PER_TURN


async def test_a_failing_database_keeps_the_entries_for_the_next_round(
    empty_database_url: str, captured_logs: list[EventDict]
) -> None:
    """The batch goes back to the buffer; one warning per outage; the metric counts each try.

    The database has no api_logs table (never migrated), so every insert fails.
    """
    broken = Database(empty_database_url)
    metrics = Metrics()
    writer = ApiLogWriter(broken, metrics)
    writer.submit(request_record("req_a"))
    writer.submit(request_record("req_b"))
    assert not await writer.flush()
    assert not await writer.flush()
    assert writer.pending == 2
    assert sample(metrics, "retrysafe_dependency_errors_total", dependency="database") == 2
    warnings = [event for event in captured_logs if event["log_level"] == "warning"]
    assert len(warnings) == 1
    await broken.dispose()


async def test_stop_writes_what_is_still_buffered(sqlite_database: Database) -> None:
    writer = ApiLogWriter(sqlite_database, Metrics(), interval=3600)
    writer.start()
    writer.submit(request_record("req_late"))
    await writer.stop()
    assert await stored(sqlite_database) == ["req_late"]


async def test_the_background_task_flushes_every_interval(sqlite_database: Database) -> None:
    writer = ApiLogWriter(sqlite_database, Metrics(), interval=0.01)
    writer.start()
    try:
        writer.submit(request_record("req_soon"))
        for _ in range(1000):  # at most 10 s
            if await stored(sqlite_database):
                break
            await asyncio.sleep(0.01)
        assert await stored(sqlite_database) == ["req_soon"]
    finally:
        await writer.stop()


async def test_rows_keep_what_the_record_says(sqlite_database: Database) -> None:
    writer = ApiLogWriter(sqlite_database, Metrics(), body_limit=100)
    writer.submit(
        request_record(
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
    async with sqlite_database.read() as conn:
        row = (await conn.execute(select(api_logs))).one()
    assert row.id.startswith("log_")
    assert row.query == "filter[x]=1"
    assert (row.status, row.error_code, row.outcome) == (422, "invalid_value", "executed")
    assert row.request_body == '{"token":"[redacted]","name":"Ada"}'
    assert row.response_body == "[not stored: larger than 100 bytes]"
    assert row.created_at.endswith("Z")
