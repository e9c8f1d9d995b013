"""The client's log of a chaos run: every operation, how it ended, and every answer seen.

The checker compares this log with the final database, so it records what a
Jepsen history records: what was asked, and what the client was told —
acknowledged, refused as expected, or indeterminate (the client cannot know
whether the write happened).
"""

from __future__ import annotations

import enum
import json
from collections import defaultdict
from dataclasses import dataclass

import httpx

__all__ = [
    "NOT_RECORDED_CODES",
    "TRANSITIONS",
    "Answer",
    "AnswerLog",
    "Kind",
    "Operation",
    "Outcome",
    "error_code",
]

INJECTED_REQUEST_ID = "req_fault_proxy"
"""The ``Request-Id`` of answers the fault proxy made up instead of the server."""

NOT_RECORDED_CODES = frozenset({"idempotency_request_in_progress", "idempotency_key_mismatch"})
"""Codes of the idempotency layer's own 409/422, which never replace a record (SPEC §3)."""

NOT_RECORDED_STATUSES = frozenset({401, 413, 415, 429, 503})
"""Statuses answered before the idempotency layer records anything (SPEC §2, §3)."""

TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "complete": (frozenset({"created"}), "completed"),
    "approve": (frozenset({"completed"}), "approved"),
    "decline": (frozenset({"completed"}), "declined"),
    "expire": (frozenset({"created", "completed"}), "expired"),
}
"""Inquiry transitions (SPEC §4): action → (statuses it may start from, status it ends in)."""


class Kind(enum.Enum):
    """What an operation does; the value names it in the summary."""

    CREATE_ACCOUNT = "create account with reference_id"
    CREATE_ACCOUNT_UNREFERENCED = "create account without reference_id"
    CREATE_INQUIRY = "create inquiry with a new reference_id"
    CREATE_INQUIRY_FOR_ACCOUNT = "create inquiry for an account_id"
    UPDATE_ACCOUNT = "update account (PATCH)"
    TRANSITION = "inquiry transition"
    DUPLICATE_REFERENCE = "create account, reference_id taken (409 expected)"
    INVALID_TRANSITION = "invalid inquiry transition (422 expected)"

    @property
    def creates_account(self) -> bool:
        """Whether the operation carries a tag in ``name_last`` of the account it creates."""
        return self in (
            Kind.CREATE_ACCOUNT,
            Kind.CREATE_ACCOUNT_UNREFERENCED,
            Kind.DUPLICATE_REFERENCE,
        )

    @property
    def expects_refusal(self) -> bool:
        return self in (Kind.DUPLICATE_REFERENCE, Kind.INVALID_TRANSITION)


class Outcome(enum.Enum):
    """How an operation ended, as the client saw it."""

    OK = "ok"
    """Acknowledged: the expected 2xx."""
    REJECTED = "rejected"
    """Acknowledged: the expected 4xx (a taken reference_id, an invalid transition)."""
    INDETERMINATE = "indeterminate"
    """No answer after every retry, or a 5xx: the write may or may not have happened."""
    UNEXPECTED = "unexpected"
    """An answer the model rules out (a 409 on a fresh reference_id: a second execution)."""


@dataclass
class Operation:
    """One SDK call of the run, with every retry it made, and what it ended in."""

    index: int
    worker: int
    kind: Kind
    key: str
    """The ``Idempotency-Key`` every attempt of the call sent."""
    tag: str
    """Unique per operation; the ``name_last`` of an account the operation creates."""
    reference_id: str | None = None
    target: str | None = None
    """The account or inquiry the operation acts on."""
    value: str | None = None
    """``name_first`` for account creates and updates, the action for transitions."""
    outcome: Outcome | None = None
    result_id: str | None = None
    result_account_id: str | None = None
    """For inquiry creates: the account the inquiry joined or created."""
    detail: str = ""
    """The error, for indeterminate and unexpected outcomes."""
    settled: Outcome | None = None
    """The outcome of retrying an indeterminate operation with its key once all was calm."""
    settled_by_replay: bool | None = None
    """Whether that retry was answered by a replay (the write had happened during the chaos)."""

    @property
    def final(self) -> Outcome | None:
        """The outcome the checker holds the database to: the settled one when there is one."""
        return self.settled if self.settled is not None else self.outcome

    @property
    def target_status(self) -> str | None:
        """For transitions: the status the inquiry ends in when the operation takes effect."""
        if self.kind is Kind.TRANSITION and self.value is not None:
            return TRANSITIONS[self.value][1]
        return None

    def describe(self) -> str:
        subject = self.target or self.reference_id or self.tag
        return f"op {self.index} ({self.kind.value}, {subject}, key {self.key})"


def error_code(body: bytes) -> str | None:
    """The ``code`` of the first error in an envelope, or ``None`` for any other body."""
    try:
        document = json.loads(body)
        return str(document["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


@dataclass(frozen=True)
class Answer:
    """One HTTP answer to a keyed request: what a replay must reproduce, byte for byte."""

    status: int
    body: bytes
    content_type: str | None
    location: str | None
    replayed: bool
    injected: bool
    """Made up by the fault proxy, not sent by a server."""

    @classmethod
    def of(cls, status: int, headers: httpx.Headers | dict[str, str], body: bytes) -> Answer:
        lowered = {name.lower(): value for name, value in headers.items()}
        return cls(
            status=status,
            body=body,
            content_type=lowered.get("content-type"),
            location=lowered.get("location"),
            replayed=lowered.get("idempotent-replayed", "").lower() == "true",
            injected=lowered.get("request-id") == INJECTED_REQUEST_ID,
        )

    @property
    def recorded_kind(self) -> bool:
        """Whether the server records an answer like this one, so every retry must match it.

        5xx are left out: a 500 while PostgreSQL was down cannot be recorded, and
        SPEC §3 lets the retry execute then.
        """
        if self.injected or self.status in NOT_RECORDED_STATUSES or self.status >= 500:
            return False
        return error_code(self.body) not in NOT_RECORDED_CODES

    @property
    def identity(self) -> tuple[int, bytes, str | None, str | None]:
        """The parts a replay repeats exactly (SPEC §3): status, body, type, ``Location``."""
        return (self.status, self.body, self.content_type, self.location)


class AnswerLog:
    """Every answer the client received for a keyed request, by key.

    ``hook`` is an httpx response event hook, given to the SDK through its
    documented ``http_client=`` option: it reads the body (the SDK then
    reuses what was read) and keeps it, so no SDK change is needed.
    """

    def __init__(self) -> None:
        self.by_key: defaultdict[str, list[Answer]] = defaultdict(list)

    async def hook(self, response: httpx.Response) -> None:
        key = response.request.headers.get("idempotency-key")
        if key is None:
            return
        body = await response.aread()
        self.by_key[key].append(Answer.of(response.status_code, response.headers, body))

    def replays(self) -> int:
        return sum(answer.replayed for answers in self.by_key.values() for answer in answers)
