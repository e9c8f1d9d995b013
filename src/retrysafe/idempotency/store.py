"""The one interface every idempotency store implements (memory, SQL, later Redis).

A store that cannot reach its backend raises
:class:`~retrysafe.unavailable.StoreUnavailable`: the request did not run and
nothing was recorded, so the pipeline answers 503.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from retrysafe.idempotency.decisions import Decision
from retrysafe.idempotency.records import RecordKey


class IdempotencyStore(Protocol):
    def attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AbstractAsyncContextManager[Decision]:
        """Claim ``key`` atomically and say what the request should do.

        On :class:`Execute`, the request runs inside the context. Transactional
        stores make their transaction ambient there, so the handler's writes
        commit with the record. Leaving the context without ``complete`` or
        ``abandon`` is what a crash looks like: before any checkpoint the claim
        vanishes (the key is free again, as after a rollback); after one the
        record stays held until its lease lapses, and then the next retry takes
        it over and resumes from the last recovery point.
        """
        ...

    async def purge_expired(self, now: float) -> int:
        """Delete records past their expiry; return how many went."""
        ...
