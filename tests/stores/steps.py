"""One request's step against a store, for the contract suites: what it is told, or its run."""

from __future__ import annotations

from retrysafe.idempotency.decisions import Decision, Execute
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.idempotency.store import IdempotencyStore


async def completed(
    store: IdempotencyStore,
    key: RecordKey,
    answer: StoredResponse,
    *,
    now: float,
    ttl: float,
    fingerprint: str = "fp",
) -> None:
    """A request that is told to execute and records ``answer``."""
    async with store.attempt(key, fingerprint, now=now, ttl=ttl) as decision:
        assert isinstance(decision, Execute)
        await decision.attempt.complete(answer)


async def decided(
    store: IdempotencyStore, key: RecordKey, *, now: float, ttl: float, fingerprint: str = "fp"
) -> Decision:
    """What a request is told at ``now``; told to execute, it leaves at once (and abandons)."""
    async with store.attempt(key, fingerprint, now=now, ttl=ttl) as decision:
        return decision
