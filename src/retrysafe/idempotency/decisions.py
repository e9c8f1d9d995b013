"""The state machine: claim first, then dispatch on the record that was already there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from retrysafe.idempotency.records import IdempotencyRecord, RecordStatus, StoredResponse


class Attempt(Protocol):
    """A claimed key: the caller runs the request and then records or abandons it."""

    async def complete(self, response: StoredResponse) -> None:
        """Record ``response`` and make it (and the handler's writes) durable together."""

    async def abandon(self) -> None:
        """Record nothing: the key is free again, as if the request never arrived."""


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
