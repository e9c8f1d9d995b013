"""The one interface every idempotency store implements (memory, SQL, later Redis).

A store that cannot reach its backend raises
:class:`~retrysafe.unavailable.StoreUnavailable`: the request did not run and
nothing was recorded, so the pipeline answers 503.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class DeferringIdempotencyStore(IdempotencyStore, Protocol):
    """A store that can also defer the claim until the request's writes commit."""

    def deferred_attempt(
        self, key: RecordKey, fingerprint: str, *, now: float, ttl: float
    ) -> AbstractAsyncContextManager[Decision]:
        """Like :meth:`attempt`, but on a new key nothing is written until it must be.

        The handler runs without the key claimed; its inserts wait for the response
        and then commit together with the record, in one unit. The claim is made
        earlier only when the handler needs the transaction (a write that must run
        now, a read of its own writes, a checkpoint). Within one process the key is
        still never run twice at once; across processes two requests with one key
        may both run, but only one commits and the other is answered from its
        record: the attempt's methods (and the handler's first transaction access)
        raise :class:`~retrysafe.idempotency.decisions.Superseded` then, and
        :class:`~retrysafe.idempotency.decisions.RunAgain` when a waiting write
        failed at the commit. Use it only for requests whose every effect goes
        through the database.
        """
        ...


class PrefetchingIdempotencyStore(Protocol):
    """A store that can start an attempt from a committed record read beforehand.

    Its backend's record for a key may be read by another layer in a round trip it
    makes anyway (the API-key lookup, on the same database): the store then starts
    from that read instead of making its own (see :class:`Prefetched`).
    """

    def prefetched_attempt(
        self, prefetched: Prefetched, fingerprint: str, *, now: float, ttl: float, deferred: bool
    ) -> AbstractAsyncContextManager[Decision]:
        """:meth:`IdempotencyStore.attempt` (or, ``deferred``, ``deferred_attempt``) of
        ``prefetched.key``, with ``prefetched.row`` standing for the store's own read of
        the committed record."""
        ...


@dataclass(frozen=True, slots=True)
class Prefetched:
    """The committed record of ``key`` in ``store``'s backend, as it was read a moment ago.

    ``row`` is the store's own row shape (``None``: no record). It is only ever a
    read of what was committed, like the read the store would make first: every
    decision the store takes from it is one it could have taken from its own read,
    and a claim is still made (and checked) by the store itself.
    """

    store: PrefetchingIdempotencyStore
    key: RecordKey
    row: tuple[Any, ...] | None


PREFETCHED_STATE_KEY = "retrysafe.prefetched_record"
"""Request-state key of the :class:`Prefetched` record read for the idempotency layer."""
