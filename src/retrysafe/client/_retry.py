"""The one retry policy: whether a failed attempt is retried, after how long, and with which key.

It is pure — no I/O, no clock, no sleeping — so the sync and async clients
share it through thin loops, and tests drive it with a fake clock. The rules
follow what the server makes safe (SPEC §2, §3):

* Network failures are retried with the **same** idempotency key: if the
  first attempt ran, the server replays its recorded answer instead of
  running it again.
* 429, 409 ``idempotency_request_in_progress`` and 503 with ``Retry-After``
  are answered before anything is recorded, so they are retried with the
  same key after the wait the server asked for. They draw on their own,
  larger budget (``max_backpressure_retries``): waiting out a rate limit is
  expected traffic, not a fault.
* Other 5xx are recorded by the server, so the same key would only replay
  the failure: they are raised as indeterminate, unless the caller opted
  into ``retry_server_errors``, which retries with a **new** key.
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
    "parse_rate_limit_reset",
    "parse_retry_after",
]

KEYED_METHODS = frozenset({"POST", "PATCH"})
"""Methods that get an ``Idempotency-Key``: the ones the server's idempotency layer covers."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Reads: repeating them changes nothing, so even a 5xx may be retried."""

_IDEMPOTENT_METHODS = SAFE_METHODS | {"PUT", "DELETE"}


class FailureKind(enum.Enum):
    """How an attempt failed without an HTTP answer."""

    CONNECT = "connect error"
    """The connection was never made: the request certainly did not run."""
    TIMEOUT = "timeout"
    """Connect, read, write or pool timeout: the request may have run."""
    CONNECTION_LOST = "connection lost"
    """Reset, or the server closed the connection mid-answer: the request may have run."""


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


Outcome = NetworkFailure | ErrorResponse


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """The knobs of the policy; the defaults are the documented client defaults."""

    max_retries: int = 2
    """Retries after network failures and (opted-in) server errors."""
    max_backpressure_retries: int = 10
    """Retries after 429, 409 in flight, 503 with ``Retry-After``: waits the server asked for."""
    deadline: float | None = 120.0
    """Seconds for the whole call, attempts and waits included; ``None`` for no bound."""
    retry_server_errors: bool = False
    """Retry other 5xx on writes with a new key; safe only with ``reference_id`` grouping."""
    initial_backoff: float = 0.5
    """Upper bound of the first backoff; it doubles per retry (full jitter draws below it)."""
    max_backoff: float = 8.0
    """Cap of the backoff upper bound."""
    max_retry_after: float = 60.0
    """With no deadline, a server-requested wait longer than this is raised instead of slept."""

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.max_backpressure_retries < 0:
            raise ValueError("retry budgets must be zero or more")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be positive, or None for no deadline")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("backoff and wait bounds must not be negative")


@dataclass(frozen=True, slots=True)
class CallState:
    """Where one call stands: which attempt comes next and what it has used."""

    method: str
    started_at: float
    idempotency_key: str | None
    attempt: int = 1
    retries: int = 0
    backpressure_retries: int = 0


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

    def start(self, method: str, *, now: float, idempotency_key: str | None = None) -> CallState:
        """The state of a new call; POST and PATCH get a fresh uuid4 key unless one is given."""
        method = method.upper()
        if idempotency_key is None and method in KEYED_METHODS:
            idempotency_key = self._new_key()
        return CallState(method=method, started_at=now, idempotency_key=idempotency_key)

    def remaining(self, state: CallState, *, now: float) -> float | None:
        """Seconds left before the deadline, or ``None`` without a deadline."""
        if self.settings.deadline is None:
            return None
        return state.started_at + self.settings.deadline - now

    def backoff(self, retries_so_far: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(cap, initial * 2**n))."""
        ceiling = min(
            self.settings.max_backoff, self.settings.initial_backoff * 2.0**retries_so_far
        )
        return self._random() * ceiling

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
        repeatable = (
            failure.kind is FailureKind.CONNECT
            or state.idempotency_key is not None
            or state.method in _IDEMPOTENT_METHODS
        )
        if not repeatable:
            return GiveUp(f"{failure.kind.value} on a {state.method} without idempotency key")
        reason = f"{failure.kind.value} ({failure.detail})"
        return self._budgeted_retry(state, reason, now=now)

    def _after_error_response(
        self, state: CallState, response: ErrorResponse, *, now: float
    ) -> Retry | GiveUp:
        status = response.status_code
        if status == 429:
            if response.retry_after is not None:
                wait, said = response.retry_after, f"Retry-After {response.retry_after:g}"
            elif response.rate_limit_reset is not None:
                wait, said = (
                    response.rate_limit_reset,
                    f"RateLimit-Reset {response.rate_limit_reset:g}",
                )
            else:
                return self._backpressure_retry(
                    state, "429 rate limited", self.backoff(state.backpressure_retries), now=now
                )
            return self._backpressure_retry(
                state,
                f"429 rate limited, {said}",
                self._server_directed(wait),
                now=now,
                server_wait=wait,
            )
        if status == 409 and response.code == "idempotency_request_in_progress":
            reason = "409 idempotency_request_in_progress"
            if response.retry_after is None:
                return self._backpressure_retry(
                    state, reason, self.backoff(state.backpressure_retries), now=now
                )
            return self._backpressure_retry(
                state,
                f"{reason}, Retry-After {response.retry_after:g}",
                self._server_directed(response.retry_after),
                now=now,
                server_wait=response.retry_after,
            )
        if status == 503 and response.retry_after is not None:
            # SPEC §3: a 503 is never recorded, so the same key runs the request.
            return self._backpressure_retry(
                state,
                f"503 service unavailable, Retry-After {response.retry_after:g}",
                self._server_directed(response.retry_after),
                now=now,
                server_wait=response.retry_after,
            )
        if status >= 500:
            if state.method in SAFE_METHODS:
                return self._budgeted_retry(state, f"{status} server error on a read", now=now)
            if self.settings.retry_server_errors and state.idempotency_key is not None:
                return self._budgeted_retry(
                    state,
                    f"{status} server error, retry_server_errors=True",
                    now=now,
                    new_key=True,
                )
            return GiveUp(f"{status} server error: the outcome is indeterminate")
        return GiveUp(f"{status} is not retryable")

    def _budgeted_retry(
        self, state: CallState, reason: str, *, now: float, new_key: bool = False
    ) -> Retry | GiveUp:
        if state.retries >= self.settings.max_retries:
            return GiveUp(f"{reason}; max_retries={self.settings.max_retries} used up")
        wait = self.backoff(state.retries)
        if (late := self._past_deadline(state, wait, now=now)) is not None:
            return GiveUp(f"{reason}; {late}")
        key = self._new_key() if new_key else state.idempotency_key
        next_state = replace(
            state, attempt=state.attempt + 1, retries=state.retries + 1, idempotency_key=key
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
