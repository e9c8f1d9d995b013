"""The final database, read straight from its tables (not through the API under test)."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from typing import Any

import asyncpg

__all__ = ["AccountRow", "InquiryRow", "RecordRow", "Snapshot", "read_snapshot"]

ACCOUNTS = "SELECT id, reference_id, name_first, name_last FROM accounts"
INQUIRIES = "SELECT id, account_id, reference_id, status FROM inquiries"
RECORDS = "SELECT key, status, response_status, response_body FROM idempotency_records"


@dataclass(frozen=True)
class AccountRow:
    id: str
    reference_id: str | None
    name_first: str | None
    name_last: str | None


@dataclass(frozen=True)
class InquiryRow:
    id: str
    account_id: str
    reference_id: str | None
    status: str


@dataclass(frozen=True)
class RecordRow:
    """An idempotency record: what the server replays for its key."""

    key: str
    status: str
    response_status: int | None
    response_body: bytes | None


@dataclass(frozen=True)
class Snapshot:
    accounts: list[AccountRow]
    inquiries: list[InquiryRow]
    records: dict[str, RecordRow]
    """By key; the run has one organization, so the key alone names a record."""


def _snapshot(accounts: list[Any], inquiries: list[Any], records: list[Any]) -> Snapshot:
    return Snapshot(
        accounts=[AccountRow(*row) for row in accounts],
        inquiries=[InquiryRow(*row) for row in inquiries],
        records={
            row[0]: RecordRow(row[0], row[1], row[2], bytes(row[3]) if row[3] is not None else None)
            for row in records
        },
    )


async def read_snapshot(database_url: str) -> Snapshot:
    """Every account, inquiry and idempotency record of the run's database."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return _snapshot(
                conn.execute(ACCOUNTS).fetchall(),
                conn.execute(INQUIRIES).fetchall(),
                conn.execute(RECORDS).fetchall(),
            )
    conn = await asyncpg.connect(database_url)
    try:
        return _snapshot(
            [tuple(row) for row in await conn.fetch(ACCOUNTS)],
            [tuple(row) for row in await conn.fetch(INQUIRIES)],
            [tuple(row) for row in await conn.fetch(RECORDS)],
        )
    finally:
        await conn.close()
