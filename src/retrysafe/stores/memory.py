"""An in-process idempotency store: for tests and single-process apps without a database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from retrysafe.idempotency.decisions import (
    Decision,
    Execute,
    LeaseLost,
    Resumption,
    TakeOver,
    judge,
)
from retrysafe.idempotency.records import (
    IdempotencyRecord,
    RecordKey,
    RecordStatus,
    StoredResponse,
)
from retrysafe.unique import random_hex


class MemoryIdempotencyStore:
    """Records in a dict; a claim holds a lease and a fencing token.

    There is no transaction to share, so a handler's own writes are not atomic
    with the record: use the SQL store when the handler writes to a database.
    Every method runs without awaiting, so each claim is atomic on the event loop.
    The semantics mirror the SQL store's: leaving the attempt without ``complete``
    before a checkpoint frees the key (as a rollback would), after one it leaves
    the record held until its lease runs out (as a crash would).
    """

    def __init__(self, *, lease_seconds: float = 60.0) -> None:
        self._records: dict[RecordKey, IdempotencyRecord] = {}
        self._lease = lease_seconds

    @asynccontextmanager
    async def attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AsyncIterator[Decision]:
        token = random_hex(16)
        existing = self._records.get(key)
        previous: IdempotencyRecord | None = None
        if existing is not None and not _expired(existing, now):
            verdict = judge(existing, fingerprint, now)
            if not isinstance(verdict, TakeOver):
                yield verdict
                return
            # Taken over: the recovery point, its data and created_at (and so the
            # external key) carry over to the new holder.
            previous = existing
            claimed = replace(existing, lock_token=token, locked_until=now + self._lease)
            resumption = Resumption.of(existing)
        else:
            claimed = IdempotencyRecord(
                key=key,
                fingerprint=fingerprint,
                status=RecordStatus.IN_PROGRESS,
                expires_at=now + ttl,
                locked_until=now + self._lease,
                lock_token=token,
                created_at=now,
            )
            resumption = Resumption.fresh(key, now)
        self._records[key] = claimed
        attempt = _MemoryAttempt(self, key, token, resumption, previous)
        try:
            yield Execute(attempt)
        finally:
            if not attempt.settled and not attempt.checkpointed:
                attempt.undo_claim()

    async def purge_expired(self, now: float) -> int:
        expired = [key for key, record in self._records.items() if _expired(record, now)]
        for key in expired:
            del self._records[key]
        return len(expired)


def _expired(record: IdempotencyRecord, now: float) -> bool:
    """Past its TTL and held by no lease: a live lease always wins over expiry."""
    return record.expires_at <= now and (record.locked_until is None or record.locked_until <= now)


class _MemoryAttempt:
    def __init__(
        self,
        store: MemoryIdempotencyStore,
        key: RecordKey,
        token: str,
        resumption: Resumption,
        previous: IdempotencyRecord | None,
    ) -> None:
        self._store = store
        self._records = store._records
        self._key = key
        self._token = token
        self._resumption = resumption
        self._previous = previous
        self._released_at = 0.0
        self.settled = False
        self.checkpointed = False

    @property
    def resumption(self) -> Resumption:
        return self._resumption

    def _ours(self) -> IdempotencyRecord:
        # Fencing: a holder whose lease expired and was taken over must not write.
        record = self._records.get(self._key)
        if record is None or record.lock_token != self._token:
            raise LeaseLost("another request took this idempotency record over")
        return record

    async def checkpoint(self, point: str, data: str | None, *, now: float) -> None:
        record = self._ours()
        locked_until = now + self._store._lease
        self._records[self._key] = replace(
            record,
            recovery_point=point,
            recovery_data=data,
            locked_until=locked_until,
            # The answer that follows an external call must outlive the call's lease.
            expires_at=max(record.expires_at, locked_until),
        )
        self.checkpointed = True
        self._released_at = now
        self._resumption = Resumption(point, data, self._resumption.external_key)

    async def complete(self, response: StoredResponse) -> None:
        self.settled = True
        record = self._ours()
        self._records[self._key] = replace(
            record,
            status=RecordStatus.COMPLETED,
            response=response,
            locked_until=None,
            lock_token=None,
        )

    async def abandon(self) -> None:
        self.settled = True
        if not self.checkpointed:
            self.undo_claim()
            return
        record = self._records.get(self._key)
        if record is not None and record.lock_token == self._token:
            # Keep the recovery point, end the lease: the next retry resumes at once.
            self._records[self._key] = replace(record, locked_until=self._released_at)

    def undo_claim(self) -> None:
        """Put back what the claim replaced: nothing, or the record it took over."""
        record = self._records.get(self._key)
        if record is None or record.lock_token != self._token:
            return
        if self._previous is None:
            del self._records[self._key]
        else:
            self._records[self._key] = self._previous
