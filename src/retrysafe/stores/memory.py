"""An in-process idempotency store: for tests and single-process apps without a database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from retrysafe.idempotency.decisions import Decision, Execute, TakeOver, judge
from retrysafe.idempotency.records import (
    IdempotencyRecord,
    RecordKey,
    RecordStatus,
    StoredResponse,
)


class MemoryIdempotencyStore:
    """Records in a dict; a claim holds a lease and a fencing token.

    There is no transaction to share, so a handler's own writes are not atomic
    with the record: use the SQL store when the handler writes to a database.
    Every method runs without awaiting, so each claim is atomic on the event loop.
    """

    def __init__(self, *, lease_seconds: float = 60.0) -> None:
        self._records: dict[RecordKey, IdempotencyRecord] = {}
        self._lease = lease_seconds

    @asynccontextmanager
    async def attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AsyncIterator[Decision]:
        existing = self._records.get(key)
        if existing is not None and existing.expires_at > now:
            verdict = judge(existing, fingerprint, now)
            if not isinstance(verdict, TakeOver):
                yield verdict
                return
        token = uuid.uuid4().hex
        self._records[key] = IdempotencyRecord(
            key=key,
            fingerprint=fingerprint,
            status=RecordStatus.IN_PROGRESS,
            expires_at=now + ttl,
            locked_until=now + self._lease,
            lock_token=token,
        )
        attempt = _MemoryAttempt(self._records, key, token)
        try:
            yield Execute(attempt)
        finally:
            if not attempt.settled:
                await attempt.abandon()

    async def purge_expired(self, now: float) -> int:
        expired = [
            key
            for key, record in self._records.items()
            if record.expires_at <= now and (record.locked_until or 0) <= now
        ]
        for key in expired:
            del self._records[key]
        return len(expired)


class _MemoryAttempt:
    def __init__(self, records: dict[RecordKey, IdempotencyRecord], key: RecordKey, token: str):
        self._records = records
        self._key = key
        self._token = token
        self.settled = False

    def _still_ours(self) -> IdempotencyRecord | None:
        # Fencing: a holder whose lease expired and was taken over must not write.
        record = self._records.get(self._key)
        return record if record is not None and record.lock_token == self._token else None

    async def complete(self, response: StoredResponse) -> None:
        self.settled = True
        record = self._still_ours()
        if record is not None:
            self._records[self._key] = replace(
                record,
                status=RecordStatus.COMPLETED,
                response=response,
                locked_until=None,
                lock_token=None,
            )

    async def abandon(self) -> None:
        self.settled = True
        if self._still_ours() is not None:
            del self._records[self._key]
