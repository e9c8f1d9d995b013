"""The state machine: claim first, then dispatch on the record that was already there."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from retrysafe.idempotency.records import IdempotencyRecord, RecordKey, RecordStatus, StoredResponse


class LeaseLost(Exception):
    """Another request took this record over after our lease expired: we must not write.

    This is the fencing rule. A holder that was merely slow (not dead) learns here
    that its work belongs to someone else now; the layer answers 409 in flight.
    """


class Superseded(Exception):
    """Another request settled this key before ours could claim it: answer as ``decision`` says.

    Raised by a store whose claim waits until the handler's first database access
    or its answer (:meth:`~retrysafe.idempotency.store.DeferringIdempotencyStore.deferred_attempt`):
    the request ran without holding the key, and nothing it wrote was kept. The
    layer answers the replay, the mismatch or the 409 instead of its own response.
    """

    def __init__(self, decision: Replay | Mismatch | InFlight) -> None:
        super().__init__(f"the idempotency key was settled by another request: {decision}")
        self.decision = decision


class RunAgain(Exception):
    """A write that waited for the commit failed there (a unique key taken meanwhile).

    Nothing of the request was kept, and the key is not claimed. The layer runs the
    request once more under the same attempt, which now claims first and writes at
    once, so the handler meets the failure itself and answers it (a 409, say).
    """


@dataclass(frozen=True, slots=True)
class Resumption:
    """What earlier holders of a record committed before they stopped.

    A request that takes over a record whose holder died starts from here instead
    of from scratch, so an effect outside the database is not repeated.
    """

    point: str | None
    """The last recovery point committed; ``None`` when nothing was committed yet."""

    data: str | None
    """JSON text saved with that point (e.g. the upstream provider's answer)."""

    external_key: str
    """A key that is the same for every holder of this record and differs from any
    other record's (also after expiry): the idempotency key for an upstream call."""

    @classmethod
    def fresh(cls, key: RecordKey, created_at: float) -> Resumption:
        """Where a request that just claimed ``key`` at ``created_at`` starts: nowhere yet."""
        return cls(None, None, external_key_for(key, created_at))

    @classmethod
    def of(cls, record: IdempotencyRecord) -> Resumption:
        """Where a request that takes ``record`` over resumes."""
        return cls(
            record.recovery_point,
            record.recovery_data,
            external_key_for(record.key, record.created_at),
        )


def external_key_for(key: RecordKey, created_at: float) -> str:
    """A stable hash of the organization, the key and when the record was first claimed.

    Every holder of one record computes the same value from what the record keeps;
    a record claimed again after expiry has a new ``created_at`` and so a new key,
    so an upstream service never answers a new request from an old one's record.
    The organization is part of it because upstream keys are not scoped per tenant.
    """
    material = f"{key.organization_id}\x1f{key.key}\x1f{float(created_at).hex()}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


class Attempt(Protocol):
    """A claimed key: the caller runs the request and then records or abandons it."""

    @property
    def resumption(self) -> Resumption:
        """Where this request resumes; ``point`` is ``None`` for a fresh claim."""

    async def checkpoint(self, point: str, data: str | None, *, now: float) -> None:
        """Commit the handler's writes so far together with a recovery point.

        From the first checkpoint on, the record is held by a lease (``locked_until``)
        renewed by each checkpoint, and it survives a crash: a retry after the lease
        expired takes it over and resumes from ``point``. Raises :class:`LeaseLost`
        when another request holds the record now.
        """

    async def complete(self, response: StoredResponse) -> None:
        """Record ``response`` and make it (and the handler's writes) durable together.

        Raises :class:`LeaseLost` when the record was taken over meanwhile.
        """

    async def abandon(self) -> None:
        """Record nothing.

        Before any checkpoint the key is free again, as if the request never
        arrived. After one, the record keeps its recovery point and its lease is
        released, so the next retry takes it over at once and resumes.
        """


@dataclass(frozen=True, slots=True)
class Execute:
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class Replay:
    response: StoredResponse


@dataclass(frozen=True, slots=True)
class Mismatch:
    pass


@dataclass(frozen=True, slots=True)
class InFlight:
    retry_after: int


@dataclass(frozen=True, slots=True)
class TakeOver:
    """The holder's lease expired: the store may claim the record for this request."""

    stale: IdempotencyRecord


Decision = Execute | Replay | Mismatch | InFlight
Verdict = Replay | Mismatch | InFlight | TakeOver


def judge(existing: IdempotencyRecord, fingerprint: str, now: float) -> Verdict:
    """Decide what a request meets when its key is already claimed and not expired.

    The fingerprint is compared first: reusing a key for a different request is an
    error even while the original still runs, because no answer to it can be right.
    """
    if existing.fingerprint != fingerprint:
        return Mismatch()
    if existing.status is RecordStatus.COMPLETED and existing.response is not None:
        return Replay(existing.response)
    if existing.locked_until is not None and existing.locked_until <= now:
        return TakeOver(existing)
    remaining = 1 if existing.locked_until is None else int(existing.locked_until - now) + 1
    return InFlight(retry_after=max(1, min(remaining, 5)))
