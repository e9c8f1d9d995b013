"""The one retry policy: what a failed attempt means, whether to retry, when, with which key.

It is pure — no I/O, no clock, no sleeping — so the sync and async clients
share it through thin loops, and tests drive it with a fake clock. It is
also the failure taxonomy of the README ("Retrying safely"): :func:`classify`
says, for every way an attempt can fail, whether the request **may have
executed** and whether the answer **was recorded** under the idempotency
key, and :meth:`RetryPolicy.decide` acts on that (SPEC §2, §3):

* Nothing was sent (connect refused or timed out, no pooled connection, the
  body never finished): retried with the same key. Connect failures are
  retried until the deadline, so a server that restarts is reached.
* The request was sent and the answer lost (read timeout, reset, closed
  mid-answer), or a 5xx came from something in front of the service (no
  envelope, no ``Request-Id``): retried with the **same** key — if the
  service ran the request it replays its recorded answer.
* 429, 409 ``idempotency_request_in_progress`` and 503 are answered before
  anything is recorded, so they are retried with the same key after the
  wait the server asked for, on their own budget (``max_backpressure_retries``):
  waiting out a rate limit is expected traffic, not a fault.
* 500/502/504 from the service are recorded under the key, so the same key
  only replays them: they are raised, unless the call may re-run under a
  **new** key (``retry_server_errors``).
* Every other status is the caller's to handle and is never retried.
"""

from __future__ import annotations

import email.utils
import enum
import math
import random as _random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

__all__ = [
    "CallState",
    "ErrorResponse",
    "FailureKind",
    "GiveUp",
    "NetworkFailure",
    "Outcome",
    "Retry",
    "RetryPolicy",
    "RetrySettings",
    "Verdict",
    "classify",
    "parse_rate_limit_reset",
    "parse_retry_after",
]

KEYED_METHODS = frozenset({"POST", "PATCH"})
"""Methods that get an ``Idempotency-Key``: the ones the server's idempotency layer covers."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Reads: repeating them changes nothing, so even a 5xx may be retried."""

_IDEMPOTENT_METHODS = SAFE_METHODS | {"PUT", "DELETE"}

UNRECORDED_STATUSES = frozenset({401, 413, 415, 429, 503})
"""Statuses the service answers before its idempotency layer (or instead of it): never recorded."""

UNRECORDED_CODES = frozenset(
    {
        "unauthenticated",
        "permission_denied",  # the scope check runs before the idempotency layer
        "rate_limited",
        "payload_too_large",
        "unsupported_media_type",
        "invalid_idempotency_key",
        "idempotency_key_mismatch",
        "idempotency_request_in_progress",
        "service_unavailable",
    }
)
"""Error codes of answers the idempotency layer does not record (SPEC §2, §3)."""


class FailureKind(enum.Enum):
    """How an attempt failed without an HTTP answer; the value is the README's wording."""

    CONNECT = "connect error"
    """The connection was refused or could not be made: nothing was sent."""
    CONNECT_TIMEOUT = "connect timeout"
    """The connection was not made in time: nothing was sent."""
    POOL_TIMEOUT = "pool timeout"
    """No pooled connection came free in time: nothing was sent."""
    WRITE_FAILED = "write failed"
    """The request could not be sent whole (write error or timeout): it cannot have run."""
    READ_TIMEOUT = "read timeout"
    """The request was sent and no answer came in time: it may have run."""
    CONNECTION_LOST = "connection lost"
    """Reset, or the server closed the connection after the request was sent: it may have run."""
    DAMAGED = "damaged download"
    """A download's bytes failed the length or SHA-256 the server announced."""

    @property
    def before_sending(self) -> bool:
        """Whether the request certainly never reached the server whole."""
        return self in _NOTHING_SENT or self is FailureKind.WRITE_FAILED

    @property
    def is_connect(self) -> bool:
        """Failures to get a connection at all: retried until the deadline."""
        return self in _NOTHING_SENT


_NOTHING_SENT = frozenset(
    {FailureKind.CONNECT, FailureKind.CONNECT_TIMEOUT, FailureKind.POOL_TIMEOUT}
)


@dataclass(frozen=True, slots=True)
class NetworkFailure:
    """An attempt that ended without an HTTP answer."""

    kind: FailureKind
    detail: str
    """The underlying error, for the log line (``"ReadTimeout: timed out"``)."""


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """The parts of a non-2xx answer the policy decides on."""

    status_code: int
    code: str | None = None
    """The first error entry's ``code``; tells a 409 in flight from a 409 duplicate."""
    retry_after: float | None = None
    """``Retry-After`` in seconds, already parsed."""
    rate_limit_reset: float | None = None
    """``RateLimit-Reset`` in seconds, already parsed."""
    from_service: bool = True
    """Whether the service produced it: the error envelope *and* a ``Request-Id``.

    A load balancer's HTML 502 has neither; it says nothing about what the
    service did or recorded, so it is treated like a lost answer.
    """


Outcome = NetworkFailure | ErrorResponse


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one failed attempt means for the request (a row of the README's taxonomy)."""

    may_have_executed: bool
    """Whether the request may have taken effect on the server through this attempt."""
    recorded: bool | None
    """Whether this answer is recorded under the key, so a retry with the same key gets it again.

    ``None``: no answer arrived, so whether the server recorded one is unknown.
    """


def classify(outcome: Outcome, *, method: str, keyed: bool) -> Verdict:
    """The taxonomy in one place: may the request have executed, and was the answer recorded?

    ``keyed`` says whether the attempt carried an ``Idempotency-Key`` (only
    then can anything be recorded).
    """
    read = method.upper() in SAFE_METHODS
    if isinstance(outcome, NetworkFailure):
        if outcome.kind.before_sending:
            return Verdict(may_have_executed=False, recorded=False)
        return Verdict(may_have_executed=not read, recorded=None if keyed else False)
    status = outcome.status_code
    if not outcome.from_service:
        # A proxy's answer: the service may have run the request behind it, but
        # did not record *this* answer. A 4xx from a proxy means it never forwarded.
        return Verdict(may_have_executed=status >= 500 and not read, recorded=False)
    unrecorded = status in UNRECORDED_STATUSES or outcome.code in UNRECORDED_CODES
    recorded = keyed and not unrecorded
    if status == 409 and outcome.code == "idempotency_request_in_progress":
        # The first attempt under this key is still running: it will record its outcome.
        return Verdict(may_have_executed=not read, recorded=False)
    if status == 503:
        # SPEC §3: the service's 503 means the request did not run (shed, or store down).
        return Verdict(may_have_executed=False, recorded=False)
    if status >= 500:
        return Verdict(may_have_executed=not read, recorded=recorded)
    return Verdict(may_have_executed=False, recorded=recorded)


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """The knobs of the policy; the defaults are the documented client defaults."""

    max_retries: int = 2
    """Retries after lost answers, proxies' 5xx and (opted-in) server errors."""
    max_backpressure_retries: int = 10
    """Retries after 429, 409 in flight and 503: waits the server asked for."""
    max_connect_retries: int | None = None
    """Retries when no connection could be made; ``None``: until the deadline (or
    ``max_retries`` times when there is no deadline)."""
    deadline: float | None = 120.0
    """Seconds for the whole call, attempts and waits included; ``None`` for no bound."""
    retry_server_errors: bool = False
    """Client-wide: re-run a create that carries a ``reference_id`` under a new key after a
    recorded 5xx. Per call (``CallState.new_key_on_server_error``) it applies to any call."""
    min_backoff: float = 0.25
    """Floor of every backoff wait: an immediate retry would only meet the same fault."""
    initial_backoff: float = 0.5
    """Upper bound of the first backoff; it doubles per retry (full jitter draws below it)."""
    max_backoff: float = 8.0
    """Cap of the backoff upper bound."""
    max_connect_backoff: float = 2.0
    """Cap of the backoff between connect attempts: a restarted server is reached within
    about this long of coming back."""
    max_retry_after: float = 60.0
    """With no deadline, a server-requested wait longer than this is raised instead of slept."""

    def __post_init__(self) -> None:
        budgets = (self.max_retries, self.max_backpressure_retries, self.max_connect_retries or 0)
        if min(budgets) < 0:
            raise ValueError("retry budgets must be zero or more")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be positive, or None for no deadline")
        waits = (
            self.min_backoff,
            self.initial_backoff,
            self.max_backoff,
            self.max_connect_backoff,
            self.max_retry_after,
        )
        if min(waits) < 0:
            raise ValueError("backoff and wait bounds must not be negative")


@dataclass(frozen=True, slots=True)
class CallState:
    """Where one call stands: which attempt comes next and what it has used."""

    method: str
    started_at: float
    idempotency_key: str | None
    new_key_on_server_error: bool = False
    """Whether a recorded 5xx is retried under a new key (``retry_server_errors``)."""
    caller_key: bool = False
    """Whether the caller chose the key; the client-wide setting never replaces it."""
    attempt: int = 1
    retries: int = 0
    backpressure_retries: int = 0
    connect_retries: int = 0
    new_keys: int = 0
    """How many times this call moved to a new key after a recorded 5xx."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry after ``wait`` seconds with ``state`` (whose key may be new)."""

    wait: float
    reason: str
    state: CallState
    new_key: bool = False


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop and raise the error for the last outcome; ``reason`` says why."""

    reason: str


def _new_uuid4() -> str:
    return str(uuid.uuid4())


class RetryPolicy:
    """Decides, per failed attempt, between :class:`Retry` and :class:`GiveUp`."""

    def __init__(
        self,
        settings: RetrySettings,
        *,
        random: Callable[[], float] = _random.random,
        new_key: Callable[[], str] = _new_uuid4,
    ) -> None:
        self.settings = settings
        self._random = random
        self._new_key = new_key

    def start(
        self,
        method: str,
        *,
        now: float,
        idempotency_key: str | None = None,
        retry_server_errors: bool | None = None,
        regroupable: bool = False,
    ) -> CallState:
        """The state of a new call; POST and PATCH get a fresh uuid4 key unless one is given.

        ``retry_server_errors`` is the caller's choice for this call (``None``:
        the client-wide setting, which covers only ``regroupable`` calls — creates
        whose ``reference_id`` makes a second execution harmless — and never a
        key the caller chose).
        """
        method = method.upper()
        caller_key = idempotency_key is not None
        if idempotency_key is None and method in KEYED_METHODS:
            idempotency_key = self._new_key()
        if retry_server_errors is None:
            new_key = self.settings.retry_server_errors and regroupable and not caller_key
        else:
            new_key = retry_server_errors
        return CallState(
            method=method,
            started_at=now,
            idempotency_key=idempotency_key,
            new_key_on_server_error=new_key and idempotency_key is not None,
            caller_key=caller_key,
        )

    def remaining(self, state: CallState, *, now: float) -> float | None:
        """Seconds left before the deadline, or ``None`` without a deadline."""
        if self.settings.deadline is None:
            return None
        return state.started_at + self.settings.deadline - now

    def backoff(self, retries_so_far: int, *, cap: float | None = None) -> float:
        """Exponential backoff with full jitter above a floor.

        Uniform in ``[floor, min(cap, initial * 2**n)]``: the jitter spreads
        clients that failed together, the floor keeps a retry from meeting the
        very fault it follows.
        """
        limit = self.settings.max_backoff if cap is None else cap
        ceiling = min(limit, self.settings.initial_backoff * 2.0**retries_so_far)
        floor = min(self.settings.min_backoff, ceiling)
        return floor + self._random() * (ceiling - floor)

    def _server_directed(self, seconds: float) -> float:
        # A little jitter above the server's figure spreads out the clients it
        # throttled at the same moment, which would otherwise return together.
        return seconds * (1.0 + 0.1 * self._random())

    def decide(
        self, state: CallState, outcome: Outcome, *, now: float, replayable: bool = True
    ) -> Retry | GiveUp:
        """Whether the attempt that just ended with ``outcome`` is followed by another.

        ``replayable`` is false when the request body cannot be produced
        again (a non-seekable upload that was already read).
        """
        if not replayable:
            return GiveUp("the request body cannot be sent again")
        if isinstance(outcome, NetworkFailure):
            return self._after_network_failure(state, outcome, now=now)
        return self._after_error_response(state, outcome, now=now)

    def _after_network_failure(
        self, state: CallState, failure: NetworkFailure, *, now: float
    ) -> Retry | GiveUp:
        reason = f"{failure.kind.value} ({failure.detail})"
        if failure.kind.is_connect:
            return self._connect_retry(state, reason, now=now)
        repeatable = (
            failure.kind.before_sending
            or state.idempotency_key is not None
            or state.method in _IDEMPOTENT_METHODS
        )
        if not repeatable:
            return GiveUp(f"{failure.kind.value} on a {state.method} without idempotency key")
        return self._budgeted_retry(state, reason, now=now)

    def _after_error_response(
        self, state: CallState, response: ErrorResponse, *, now: float
    ) -> Retry | GiveUp:
        status = response.status_code
        origin = "" if response.from_service else " not from the service"
        if status == 429:
            return self._waited_retry(state, f"429 rate limited{origin}", response, now=now)
        if status == 409 and response.code == "idempotency_request_in_progress":
            return self._waited_retry(
                state, "409 idempotency_request_in_progress", response, now=now
            )
        if status == 503 and (response.from_service or response.retry_after is not None):
            # SPEC §3: a 503 is never recorded, so the same key runs the request.
            return self._waited_retry(state, f"503 service unavailable{origin}", response, now=now)
        if status < 500:
            return GiveUp(f"{status} is not retryable")
        if state.method in SAFE_METHODS:
            return self._budgeted_retry(state, f"{status} server error on a read", now=now)
        if not response.from_service:
            # No envelope or no Request-Id: the service did not produce (or record) this
            # answer, so the same key either runs the request or replays what it did.
            return self._budgeted_retry(
                state, f"{status} without the service's envelope and Request-Id", now=now
            )
        if state.new_key_on_server_error:
            return self._budgeted_retry(
                state, f"{status} server error, retry_server_errors=True", now=now, new_key=True
            )
        if self.settings.retry_server_errors and state.caller_key:
            return GiveUp(
                f"{status} recorded under the idempotency_key you passed; the client-wide"
                " retry_server_errors never replaces it (pass retry_server_errors=True on the"
                " call to allow a new key)"
            )
        return GiveUp(
            f"{status} recorded under Idempotency-Key {state.idempotency_key}: retrying with"
            " it replays this answer"
        )

    def _waited_retry(
        self, state: CallState, reason: str, response: ErrorResponse, *, now: float
    ) -> Retry | GiveUp:
        """Backpressure: wait what the server asked (``Retry-After``, ``RateLimit-Reset``)."""
        if response.retry_after is not None:
            wait, said = response.retry_after, f"Retry-After {response.retry_after:g}"
        elif response.status_code == 429 and response.rate_limit_reset is not None:
            wait, said = response.rate_limit_reset, f"RateLimit-Reset {response.rate_limit_reset:g}"
        else:
            return self._backpressure_retry(
                state, reason, self.backoff(state.backpressure_retries), now=now
            )
        return self._backpressure_retry(
            state,
            f"{reason}, {said}",
            self._server_directed(wait),
            now=now,
            server_wait=wait,
        )

    def _connect_retry(self, state: CallState, reason: str, *, now: float) -> Retry | GiveUp:
        limit = self.settings.max_connect_retries
        if limit is None and self.settings.deadline is None:
            limit = self.settings.max_retries
        if limit is not None and state.connect_retries >= limit:
            return GiveUp(f"{reason}; {limit} connect retries used up")
        wait = self.backoff(state.connect_retries, cap=self.settings.max_connect_backoff)
        if (late := self._past_deadline(state, wait, now=now)) is not None:
            return GiveUp(f"{reason}; {late}")
        next_state = replace(
            state, attempt=state.attempt + 1, connect_retries=state.connect_retries + 1
        )
        return Retry(wait=wait, reason=reason, state=next_state)

    def _budgeted_retry(
        self, state: CallState, reason: str, *, now: float, new_key: bool = False
    ) -> Retry | GiveUp:
        if state.retries >= self.settings.max_retries:
            return GiveUp(f"{reason}; max_retries={self.settings.max_retries} used up")
        wait = self.backoff(state.retries)
        if (late := self._past_deadline(state, wait, now=now)) is not None:
            return GiveUp(f"{reason}; {late}")
        next_state = replace(
            state,
            attempt=state.attempt + 1,
            retries=state.retries + 1,
            idempotency_key=self._new_key() if new_key else state.idempotency_key,
            new_keys=state.new_keys + (1 if new_key else 0),
        )
        return Retry(wait=wait, reason=reason, state=next_state, new_key=new_key)

    def _backpressure_retry(
        self,
        state: CallState,
        reason: str,
        wait: float,
        *,
        now: float,
        server_wait: float | None = None,
    ) -> Retry | GiveUp:
        limit = self.settings.max_backpressure_retries
        if state.backpressure_retries >= limit:
            return GiveUp(f"{reason}; max_backpressure_retries={limit} used up")
        if (late := self._past_deadline(state, wait, now=now)) is not None:
            return GiveUp(f"{reason}; {late}")
        if (
            self.settings.deadline is None
            and server_wait is not None
            and server_wait > self.settings.max_retry_after
        ):
            return GiveUp(
                f"{reason}; longer than max_retry_after={self.settings.max_retry_after:g}s"
            )
        next_state = replace(
            state, attempt=state.attempt + 1, backpressure_retries=state.backpressure_retries + 1
        )
        return Retry(wait=wait, reason=reason, state=next_state)

    def _past_deadline(self, state: CallState, wait: float, *, now: float) -> str | None:
        remaining = self.remaining(state, now=now)
        if remaining is not None and wait >= remaining:
            return (
                f"waiting {wait:.2f}s would pass the {self.settings.deadline:g}s deadline "
                f"({max(remaining, 0.0):.2f}s left)"
            )
        return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now``: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).

    ``None`` when absent or unparsable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)


# Above this a RateLimit-Reset value is read as a Unix time: some servers send
# the old GitHub-style epoch instead of the draft's delta-seconds.
_EPOCH_THRESHOLD = 1_000_000_000.0


def parse_rate_limit_reset(value: str | None, *, now_epoch: float) -> float | None:
    """``RateLimit-Reset`` as seconds to wait (delta-seconds or Unix time); ``None`` if unusable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    if seconds >= _EPOCH_THRESHOLD:
        seconds -= now_epoch
    return max(seconds, 0.0)
