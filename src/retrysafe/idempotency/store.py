"""The one interface every idempotency store implements (memory, SQL, later Redis)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from retrysafe.idempotency.decisions import Decision
from retrysafe.idempotency.records import RecordKey


class StoreUnavailable(Exception):
    """The store could not be reached: nothing was recorded and the request did not run."""


class IdempotencyStore(Protocol):
    def attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AbstractAsyncContextManager[Decision]:
        """Claim ``key`` atomically and say what the request should do.

        On :class:`Execute`, the request runs inside the context; leaving it
        without ``complete`` abandons the claim. Transactional stores make their
        transaction ambient there, so the handler's writes commit with the record.
        """
        ...

    async def purge_expired(self, now: float) -> int:
        """Delete records past their expiry; return how many went."""
        ...
