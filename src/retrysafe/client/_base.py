"""What the sync and async clients share: options, request descriptions, and the attempt plumbing.

The clients' retry loops differ only in ``await``; everything they decide
on lives here or in ``_retry`` so the two cannot drift apart.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import httpx

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    RetrysafeError,
    UnexpectedResponseError,
    error_from_response,
)
from ._retry import (
    CallState,
    ErrorResponse,
    FailureKind,
    NetworkFailure,
    Retry,
    RetrySettings,
    parse_rate_limit_reset,
    parse_retry_after,
)
from ._streams import DownloadSink, MultipartUpload

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "NOT_GIVEN",
    "Call",
    "ClientOptions",
    "NotGiven",
    "logger",
]

logger = logging.getLogger("retrysafe.client")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
"""Per attempt: a connect is quick or the host is down; answers and uploads get 30 s."""

API_PREFIX = "/api/v1"
USER_AGENT = f"retrysafe-python httpx/{httpx.__version__}"

T = TypeVar("T")


class NotGiven:
    """Marks an argument the caller left out, where ``None`` is a meaningful value."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Everything a client was configured with; ``with_options`` derives a changed copy."""

    api_key: str = field(repr=False)
    """Kept out of ``repr`` so logging the options never logs the secret."""
    base_url: str
    """Ends in ``/api/v1``, without a trailing slash."""
    timeout: httpx.Timeout
    retry: RetrySettings
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout,
        retry: RetrySettings,
        headers: Mapping[str, str] | None,
    ) -> ClientOptions:
        if api_key is None:
            api_key = os.environ.get("RETRYSAFE_API_KEY")
        if not api_key:
            raise RetrysafeError("no API key: pass api_key= or set RETRYSAFE_API_KEY")
        if base_url is None:
            base_url = os.environ.get("RETRYSAFE_BASE_URL", DEFAULT_BASE_URL)
        return cls(
            api_key=api_key,
            base_url=normalize_base_url(base_url),
            timeout=as_timeout(timeout),
            retry=retry,
            headers=dict(headers or {}),
        )

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"


def normalize_base_url(base_url: str) -> str:
    """Accept the server's root or its ``/api/v1`` URL alike (SPEC §6 shows the root)."""
    base_url = base_url.rstrip("/")
    if not base_url.endswith(API_PREFIX):
        base_url += API_PREFIX
    return base_url


def as_timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


def attempt_timeout(timeout: httpx.Timeout, remaining: float | None) -> httpx.Timeout:
    """The per-attempt timeout clipped to what is left of the call's deadline.

    httpx has no whole-request timeout, so the deadline is enforced by
    giving no single network operation more time than the call has left.
    """
    if remaining is None:
        return timeout

    def clip(value: float | None) -> float:
        return remaining if value is None else min(value, remaining)

    return httpx.Timeout(
        connect=clip(timeout.connect),
        read=clip(timeout.read),
        write=clip(timeout.write),
        pool=clip(timeout.pool),
    )


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API call as the resources describe it: the loops turn it into attempts."""

    method: str
    path: str
    parse: Callable[[Any], T]
    """Turns the 2xx JSON document into the result (unused for downloads)."""
    params: Mapping[str, str] | None = None
    json: Any = None
    upload: MultipartUpload | None = None
    download: DownloadSink | None = None
    idempotency_key: str | None = None
    """The caller's key; ``None`` lets the policy make a uuid4 for POST and PATCH."""

    @property
    def replayable(self) -> bool:
        """Whether another attempt can send and receive the same bytes again."""
        upload_ok = self.upload is None or self.upload.replayable
        download_ok = self.download is None or self.download.replayable
        return upload_ok and download_ok


def request_headers(options: ClientOptions, call: Call[Any], key: str | None) -> dict[str, str]:
    headers = {
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        **options.headers,
        "Authorization": f"Bearer {options.api_key}",
    }
    if key is not None:
        headers["Idempotency-Key"] = key
    if call.upload is not None:
        headers.update(call.upload.headers)
    return headers


def network_failure(exc: httpx.RequestError) -> NetworkFailure | None:
    """The policy's view of an httpx error; ``None`` when no retry could help."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        # Nothing reached the server: even a write without a key may go again.
        return NetworkFailure(FailureKind.CONNECT, detail)
    if isinstance(exc, httpx.TimeoutException):
        return NetworkFailure(FailureKind.TIMEOUT, detail)
    if isinstance(
        exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.CloseError)
    ):
        return NetworkFailure(FailureKind.CONNECTION_LOST, detail)
    # LocalProtocolError, UnsupportedProtocol, ProxyError, DecodingError,
    # TooManyRedirects: the next attempt would fail the same way.
    return None


def connection_error(exc: httpx.RequestError, key: str | None) -> APIConnectionError:
    """The public exception for an httpx error (chained by the caller with ``from exc``)."""
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    return cls(message, idempotency_key=key)


def error_response(
    response: httpx.Response, key: str | None
) -> tuple[ErrorResponse, APIStatusError]:
    """The policy's view of a non-2xx answer whose body has been read, and its exception."""
    error = error_from_response(response, idempotency_key=key)
    outcome = ErrorResponse(
        status_code=response.status_code,
        code=error.code,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        rate_limit_reset=parse_rate_limit_reset(
            response.headers.get("ratelimit-reset"), now_epoch=time.time()
        ),
    )
    return outcome, error


def deadline_error(state: CallState, deadline: float | None) -> APITimeoutError:
    return APITimeoutError(
        f"the call's deadline of {deadline:g}s passed before attempt {state.attempt}",
        idempotency_key=state.idempotency_key,
    )


def json_result(call: Call[T], response: httpx.Response) -> T:
    """Parse a fully read 2xx answer; a 204 or empty body parses as ``None``."""
    if not response.content:
        return call.parse(None)
    try:
        document = response.json()
    except ValueError as exc:
        raise UnexpectedResponseError(
            f"{response.status_code} answer to {call.method} {call.path} is not JSON"
        ) from exc
    return call.parse(document)


def log_retry(url: str, call: Call[Any], decision: Retry, previous_key: str | None) -> None:
    key = decision.state.idempotency_key
    if key is None:
        key_note = "no Idempotency-Key"
    elif decision.new_key:
        key_note = f"NEW Idempotency-Key {key} (was {previous_key})"
    else:
        key_note = f"same Idempotency-Key {key}"
    logger.info(
        "retrying %s %s after %s: attempt %d in %.2fs with %s",
        call.method,
        url,
        decision.reason,
        decision.state.attempt,
        decision.wait,
        key_note,
        extra={
            "retry_reason": decision.reason,
            "retry_attempt": decision.state.attempt,
            "retry_wait": decision.wait,
            "idempotency_key": key,
            "idempotency_key_changed": decision.new_key,
        },
    )


def give_up_note(state: CallState, reason: str) -> str:
    return f"retrysafe gave up after attempt {state.attempt}: {reason}"


def changed_options(
    options: ClientOptions,
    timeout: float | httpx.Timeout | NotGiven,
    max_retries: int | NotGiven,
    max_backpressure_retries: int | NotGiven,
    deadline: float | NotGiven | None,
    retry_server_errors: bool | NotGiven,
) -> ClientOptions:
    """``options`` with the given fields replaced; backs both clients' ``with_options``."""
    retry_changes: dict[str, Any] = {}
    if not isinstance(max_retries, NotGiven):
        retry_changes["max_retries"] = max_retries
    if not isinstance(max_backpressure_retries, NotGiven):
        retry_changes["max_backpressure_retries"] = max_backpressure_retries
    if not isinstance(deadline, NotGiven):
        retry_changes["deadline"] = deadline
    if not isinstance(retry_server_errors, NotGiven):
        retry_changes["retry_server_errors"] = retry_server_errors
    return replace(
        options,
        timeout=options.timeout if isinstance(timeout, NotGiven) else as_timeout(timeout),
        retry=replace(options.retry, **retry_changes),
    )
