"""What every answer says beside its body: Request-Id, replay flag, keys, rate limit, quota.

Results carry it as ``result.last_response`` (the name stripe-python uses);
``client.with_raw_response`` returns it with the status, headers and the
parsed result (the shape of openai-python's ``with_raw_response``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import httpx

__all__ = ["Quota", "RateLimit", "RawResponse", "ResponseMetadata"]

T = TypeVar("T")


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _limit_and_remaining(headers: httpx.Headers, prefix: str) -> tuple[int, int] | None:
    """``PREFIX-Limit`` and ``PREFIX-Remaining`` as integers, or ``None`` unless both are."""
    limit = _int_header(headers, f"{prefix}-limit")
    remaining = _int_header(headers, f"{prefix}-remaining")
    if limit is None or remaining is None:
        return None
    return limit, remaining


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The ``RateLimit-*`` headers of an answer (SPEC §2): how much of the window is left."""

    limit: int
    """Requests allowed per window."""
    remaining: int
    """Requests left in the current window."""
    reset: int | None
    """Seconds until the window resets."""

    @classmethod
    def from_headers(cls, headers: httpx.Headers) -> RateLimit | None:
        counts = _limit_and_remaining(headers, "ratelimit")
        reset = _int_header(headers, "ratelimit-reset")
        return None if counts is None else cls(*counts, reset=reset)


@dataclass(frozen=True, slots=True)
class Quota:
    """The ``QuotaLimit-*`` headers of an inquiry create: the organization's inquiry quota."""

    limit: int
    remaining: int

    @classmethod
    def from_headers(cls, headers: httpx.Headers) -> Quota | None:
        counts = _limit_and_remaining(headers, "quotalimit")
        return None if counts is None else cls(*counts)


@dataclass(frozen=True, slots=True)
class ResponseMetadata:
    """The answer a result came from, and the call that got it (all its attempts)."""

    status_code: int
    request_id: str | None
    """The answer's ``Request-Id``: quote it to support."""
    replayed: bool
    """``Idempotent-Replayed: true``: the server answered from its record of an earlier attempt."""
    idempotency_key: str | None
    """The key the answering attempt carried (``None`` for reads)."""
    idempotency_keys: tuple[str, ...]
    """Every key the call used, in order: more than one only after a new-key retry."""
    request_ids: tuple[str, ...]
    """Every ``Request-Id`` the call saw, failed attempts included."""
    attempts: int
    """Requests the call sent (1 when nothing was retried)."""
    rate_limit: RateLimit | None
    quota: Quota | None
    headers: httpx.Headers = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class RawResponse(Generic[T]):
    """An answer as ``client.with_raw_response.<resource>.<method>(...)`` returns it.

    ``http_response`` is the final ``httpx.Response`` (its body already
    consumed into the result); :meth:`parse` gives the typed result.
    """

    http_response: httpx.Response = field(repr=False)
    metadata: ResponseMetadata
    _parsed: Callable[[], T] = field(repr=False, compare=False)

    @property
    def status_code(self) -> int:
        return self.http_response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.http_response.headers

    @property
    def request_id(self) -> str | None:
        return self.metadata.request_id

    def parse(self) -> T:
        """The result the plain method would have returned."""
        return self._parsed()
