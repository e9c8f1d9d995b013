"""What an idempotency store keeps: frozen records with an explicit status."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class RecordStatus(Enum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class RecordKey:
    """A key is only meaningful inside one organization: two orgs never share records."""

    organization_id: str
    key: str


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The part of a response that a replay reproduces byte for byte."""

    status: int
    body: bytes
    content_type: str | None = None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    key: RecordKey
    fingerprint: str
    status: RecordStatus
    expires_at: float
    response: StoredResponse | None = None
    locked_until: float | None = None
    lock_token: str | None = None
    recovery_point: str | None = None
    recovery_data: str | None = None
    created_at: float = 0.0
    """When the record was first claimed; kept on take-over (it seeds ``external_key``)."""
