"""What the sync and async clients share: options, call descriptions, and one call's run.

The clients' loops differ only in ``await``: every attempt is built, judged
and turned into the next step by :class:`CallRun`, which does no I/O of its
own, and what a failure means lives in ``_retry`` — so the two clients
cannot drift apart.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata as _distribution
from typing import Any, Generic, NoReturn, TypedDict, TypeVar, cast

import httpx

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    RetrysafeError,
    UnexpectedResponseError,
    error_from_response,
)
from ._metadata import Quota, RateLimit, RawResponse, ResponseMetadata
from ._models import Account, Document, Inquiry, Verification
from ._pagination import Page
from ._retry import (
    SAFE_METHODS,
    CallState,
    ErrorResponse,
    FailureKind,
    GiveUp,
    NetworkFailure,
    Outcome,
    Retry,
    RetryPolicy,
    RetrySettings,
    Verdict,
    classify,
    parse_rate_limit_reset,
    parse_retry_after,
)
from ._streams import DamagedDownloadError, DownloadSink, MultipartUpload, encode_form

__all__ = [
    "ATTEMPT_FAILURES",
    "DEFAULT_BASE_URL",
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "NOT_GIVEN",
    "Call",
    "CallOptions",
    "CallRun",
    "ClientOptions",
    "Done",
    "Follow",
    "LargeBodyPolicy",
    "NotGiven",
    "Wait",
    "logger",
]

logger = logging.getLogger("retrysafe.client")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=45.0, write=30.0, pool=5.0)
"""Per attempt. The read timeout is longer than the server's default ``--request-timeout``
(30 s) plus the commit and the way back: a slow request then ends with the server's own
504, which is recorded and raised at once, instead of the client giving up just as the
server records that 504 and retrying only to have it replayed."""
DEFAULT_DEADLINE = 120.0
"""Seconds for a whole call when the caller sets none (grown with the body, see
:class:`LargeBodyPolicy`)."""

API_PREFIX = "/api/v1"
RETRY_COUNT_HEADER = "Retrysafe-Retry-Count"
"""Sent on every attempt: 0 on the first, then how many retries came before it."""


def _sdk_version() -> str:
    try:
        return _distribution.version("retrysafe")
    except _distribution.PackageNotFoundError:  # a source tree on PYTHONPATH
        return "0+unknown"


USER_AGENT = (
    f"retrysafe-python/{_sdk_version()} httpx/{httpx.__version__}"
    f" python/{platform.python_version()}"
)

DEADLINE_SLACK = 0.05
"""A timeout that fires with less than this left of the deadline was the deadline's doing."""

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
class LargeBodyPolicy:
    """How the client applies the advice on large bodies: give them time, or send a form.

    "POST requests with large request bodies often are the root cause of
    timeout errors … evaluate your HTTP client's timeout settings …
    multipart/form-data often also helps."
    """

    min_throughput: float = 256 * 1024
    """Bytes per second the slowest link is assumed to move (2 Mbit/s). A body of N
    bytes adds N / min_throughput seconds to the write timeout, and to the deadline
    unless the caller set one."""
    multipart_threshold: int = 64 * 1024
    """A create whose JSON body is larger than this is sent as ``multipart/form-data``
    (fields ``data[attributes][NAME]``), which the server accepts and fingerprints alike."""

    def __post_init__(self) -> None:
        if self.min_throughput <= 0:
            raise ValueError("min_throughput must be positive (bytes per second)")
        if self.multipart_threshold < 0:
            raise ValueError("multipart_threshold must be zero or more bytes")

    def extra_seconds(self, body_size: int) -> float:
        return body_size / self.min_throughput


class CallOptions(TypedDict, total=False):
    """Options every API method takes as keyword arguments, for that call only."""

    timeout: float | httpx.Timeout
    """Per attempt, like the client's ``timeout``."""
    max_retries: int
    deadline: float | None
    """Seconds for this whole call; also turns off its growth with the body size."""
    retry_server_errors: bool
    """True: retry a recorded 5xx of this call under a new key, even a key you passed."""
    extra_headers: Mapping[str, str]
    """Sent with this call (after the client's; ``Idempotency-Key`` is ``idempotency_key=``)."""


_CALL_OPTION_NAMES = frozenset(CallOptions.__annotations__)


def check_call_options(options: Mapping[str, Any]) -> CallOptions:
    """Refuse a misspelt option at once: ``**options`` would otherwise swallow it silently."""
    unknown = sorted(set(options) - _CALL_OPTION_NAMES)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument {unknown[0]!r}; call options are"
            f" {', '.join(sorted(_CALL_OPTION_NAMES))}"
        )
    headers = options.get("extra_headers") or {}
    if any(name.lower() == "idempotency-key" for name in headers):
        raise ValueError("pass the key as idempotency_key=…, not in extra_headers")
    return cast(CallOptions, options)


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
    deadline_given: bool = False
    """Whether the caller chose the deadline: only the default one grows with the body."""
    large_bodies: LargeBodyPolicy = field(default_factory=LargeBodyPolicy)

    @classmethod
    def build(
        cls,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout,
        retry: RetrySettings,
        headers: Mapping[str, str] | None,
        deadline_given: bool,
        large_bodies: LargeBodyPolicy | None,
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
            deadline_given=deadline_given,
            large_bodies=large_bodies or LargeBodyPolicy(),
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

    httpx has no whole-request timeout, so no single network operation may
    wait longer than the call has left; between chunks the run checks the
    deadline itself (:meth:`CallRun.check_deadline`).
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
    """Turns the 2xx JSON document into the result (for downloads: the byte count)."""
    params: Mapping[str, str] | None = None
    json: Any = None
    upload: MultipartUpload | None = None
    download: DownloadSink | None = None
    idempotency_key: str | None = None
    """The caller's key; ``None`` lets the policy make a uuid4 for POST and PATCH."""
    form: bool = False
    """The endpoint also takes the body as ``multipart/form-data`` (every create does)."""
    regroupable: bool = False
    """Running it again under a new key is harmless: a create grouped by ``reference_id``."""
    on_duplicate: Call[T] | None = None
    """After a new-key retry, a 409 ``duplicate_resource`` means an earlier attempt made
    the object: this call fetches it (by ``reference_id``) instead of raising."""
    options: CallOptions = field(default_factory=lambda: CallOptions())

    @property
    def replayable(self) -> bool:
        """Whether another attempt can send the same bytes and take the answer again."""
        upload_ok = self.upload is None or self.upload.replayable
        download_ok = self.download is None or self.download.replayable
        return upload_ok and download_ok


def encode_body(call: Call[Any], policy: LargeBodyPolicy) -> tuple[bytes | None, str | None]:
    """The request body and its ``Content-Type``: JSON, or a form when a create's JSON is large."""
    if call.json is None:
        return None, None
    content = json.dumps(call.json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    encoded = content.encode("utf-8")
    if call.form and len(encoded) > policy.multipart_threshold:
        fields = form_fields(call.json)
        if fields is not None:
            boundary = uuid.uuid4().hex
            return encode_form(fields, boundary), f"multipart/form-data; boundary={boundary}"
    return encoded, "application/json"


def form_fields(document: Any) -> list[tuple[str, str]] | None:
    """``{"data": {"attributes": {...}}}`` as form fields, or ``None`` when a value is no string.

    SPEC §3: a form field and a JSON string with the same value fingerprint
    alike, so only strings can move from JSON to the form unchanged.
    """
    attributes = document.get("data", {}).get("attributes") if isinstance(document, dict) else None
    if not isinstance(attributes, dict):
        return None
    if not all(isinstance(value, str) for value in attributes.values()):
        return None
    return [(f"data[attributes][{name}]", value) for name, value in attributes.items()]


def network_failure(exc: httpx.RequestError) -> NetworkFailure | None:
    """The policy's view of an httpx error; ``None`` when no retry could help."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    kinds: tuple[tuple[type[httpx.RequestError], FailureKind], ...] = (
        (httpx.ConnectTimeout, FailureKind.CONNECT_TIMEOUT),
        (httpx.ConnectError, FailureKind.CONNECT),
        (httpx.PoolTimeout, FailureKind.POOL_TIMEOUT),
        (httpx.WriteTimeout, FailureKind.WRITE_FAILED),
        (httpx.WriteError, FailureKind.WRITE_FAILED),
        (httpx.ReadTimeout, FailureKind.READ_TIMEOUT),
        (httpx.ReadError, FailureKind.CONNECTION_LOST),
        (httpx.RemoteProtocolError, FailureKind.CONNECTION_LOST),
        (httpx.CloseError, FailureKind.CONNECTION_LOST),
    )
    for cls, kind in kinds:
        if isinstance(exc, cls):
            return NetworkFailure(kind, detail)
    # LocalProtocolError, UnsupportedProtocol, ProxyError, DecodingError,
    # TooManyRedirects: the next attempt would fail the same way.
    return None


class DeadlinePassed(Exception):
    """The call's deadline passed between two chunks of a body; the attempt is abandoned."""

    def __init__(self, *, sending: bool) -> None:
        super().__init__("deadline passed")
        self.sending = sending


ATTEMPT_FAILURES: tuple[type[BaseException], ...] = (
    httpx.RequestError,
    DeadlinePassed,
    DamagedDownloadError,
)
"""What ends one attempt without ending the call: the loops hand these to :meth:`CallRun.failed`."""


class _DeadlineStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that checks the call's deadline after every chunk it yields.

    A body trickling in never trips the read timeout (each chunk comes in
    time), so without this a slow answer could run far past the deadline.
    """

    def __init__(
        self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, check: Callable[[], None]
    ) -> None:
        self._inner = inner
        self._check = check

    def __iter__(self) -> Iterator[bytes]:
        assert isinstance(self._inner, httpx.SyncByteStream)
        for chunk in self._inner:
            self._check()
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert isinstance(self._inner, httpx.AsyncByteStream)
        async for chunk in self._inner:
            self._check()
            yield chunk

    def close(self) -> None:
        if isinstance(self._inner, httpx.SyncByteStream):
            self._inner.close()

    async def aclose(self) -> None:
        if isinstance(self._inner, httpx.AsyncByteStream):
            await self._inner.aclose()


@dataclass
class CallHistory:
    """Everything a call's attempts have seen, for its result's metadata and its exception."""

    attempts: int = 0
    keys: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    _executed: dict[str | None, bool] = field(default_factory=dict)

    def sent(self, key: str | None) -> None:
        self.attempts += 1
        if key is not None and key not in self.keys:
            self.keys.append(key)

    def saw(self, response: httpx.Response) -> None:
        request_id = response.headers.get("request-id")
        if request_id and request_id not in self.request_ids:
            self.request_ids.append(request_id)

    def judged(self, key: str | None, verdict: Verdict) -> None:
        """Fold one attempt's verdict into what is known about its key.

        A recorded answer settles the key (it is what the server holds);
        anything else can only add the possibility that the request ran.
        """
        if verdict.recorded:
            self._executed[key] = verdict.may_have_executed
        else:
            self._executed[key] = self._executed.get(key, False) or verdict.may_have_executed

    @property
    def may_have_executed(self) -> bool:
        return any(self._executed.values())


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """The call succeeded: ``value`` parsed from ``response``, described by ``metadata``."""

    value: T
    response: httpx.Response
    metadata: ResponseMetadata

    def result(self) -> T:
        return with_metadata(self.value, self.metadata)

    def raw(self) -> RawResponse[T]:
        value = self.result()
        return RawResponse(self.response, self.metadata, lambda: value)


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep ``seconds``, then send the next attempt."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Follow(Generic[T]):
    """Finish the call with another one (fetch the object a 409 duplicate says exists)."""

    call: Call[T]


Step = Done[T] | Wait | Follow[T]


def with_metadata(value: T, metadata: ResponseMetadata) -> T:
    """``value`` with ``last_response`` set (on a model, or on every item of a page)."""
    if isinstance(value, Account | Inquiry | Document | Verification):
        return cast(T, replace(value, last_response=metadata))
    if isinstance(value, Page):
        items = tuple(with_metadata(item, metadata) for item in value.items)
        return cast(T, Page(items=items, next_params=value.next_params))
    return value


class CallRun(Generic[T]):
    """One call from its first attempt to its result: builds requests, judges what came back.

    No I/O: the sync and async loops send the requests it builds, feed it
    what arrives, and sleep or stop as it says. It raises the call's final
    exception itself, with the whole history attached.
    """

    def __init__(
        self,
        options: ClientOptions,
        call: Call[T],
        *,
        policy_factory: Callable[[RetrySettings], RetryPolicy],
        clock: Callable[[], float],
        history: CallHistory | None = None,
        deadline: float | NotGiven | None = NOT_GIVEN,
    ) -> None:
        self.call = call
        self._options = options
        self._clock = clock
        per_call = check_call_options(call.options)
        self._extra_headers = dict(per_call.get("extra_headers") or {})
        self._content, self._content_type = encode_body(call, options.large_bodies)
        if self._content is not None:
            body_size = len(self._content)
        elif call.upload is not None:
            body_size = call.upload.content_length or 0
        else:
            body_size = 0
        extra = options.large_bodies.extra_seconds(body_size)
        timeout = as_timeout(per_call.get("timeout", options.timeout))
        if extra and timeout.write is not None:
            timeout = httpx.Timeout(
                connect=timeout.connect,
                read=timeout.read,
                write=timeout.write + extra,
                pool=timeout.pool,
            )
        self._timeout = timeout
        settings = options.retry
        if "max_retries" in per_call:
            settings = replace(settings, max_retries=per_call["max_retries"])
        if not isinstance(deadline, NotGiven):
            settings = replace(settings, deadline=deadline)
        elif "deadline" in per_call:
            settings = replace(settings, deadline=per_call["deadline"])
        elif not options.deadline_given and settings.deadline is not None:
            settings = replace(settings, deadline=settings.deadline + extra)
        self.policy = policy_factory(settings)
        self.state: CallState = self.policy.start(
            call.method,
            now=clock(),
            idempotency_key=call.idempotency_key,
            retry_server_errors=per_call.get("retry_server_errors"),
            regroupable=call.regroupable,
        )
        self.url = options.url(call.path)
        self.history = history if history is not None else CallHistory()
        self._policy_factory = policy_factory

    @property
    def timeout(self) -> httpx.Timeout:
        """The per-attempt timeout before clipping (grown with the body size)."""
        return self._timeout

    # -- building attempts ----------------------------------------------------------------

    def build_request(
        self, http: httpx.Client | httpx.AsyncClient, *, asynchronous: bool
    ) -> httpx.Request:
        """The next attempt's request; raises the deadline error when no time is left."""
        remaining = self.policy.remaining(self.state, now=self._clock())
        if remaining is not None and remaining <= 0:
            self._raise_deadline(f"before attempt {self.state.attempt} could start", sent=False)
        content: bytes | Iterator[bytes] | AsyncIterator[bytes] | None = self._content
        if self.call.upload is not None:
            content = self._aupload_chunks() if asynchronous else self._upload_chunks()
        request = http.build_request(
            self.call.method,
            self.url,
            params=self.call.params,
            content=content,
            headers=self._headers(),
            timeout=attempt_timeout(self._timeout, remaining),
        )
        self.history.sent(self.state.idempotency_key)
        return request

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            **self._options.headers,
            "Authorization": f"Bearer {self._options.api_key}",
            **self._extra_headers,
            RETRY_COUNT_HEADER: str(self.state.attempt - 1),
        }
        if self.state.idempotency_key is not None:
            headers["Idempotency-Key"] = self.state.idempotency_key
        if self._content_type is not None:
            headers["Content-Type"] = self._content_type
        if self.call.upload is not None:
            headers.update(self.call.upload.headers)
        if self.call.download is not None:
            headers.update(self.call.download.request_headers())
        return headers

    def check_deadline(self, *, sending: bool) -> None:
        """Abandon the attempt when the deadline passed while a body was moving."""
        remaining = self.policy.remaining(self.state, now=self._clock())
        if remaining is not None and remaining <= 0:
            raise DeadlinePassed(sending=sending)

    def _upload_chunks(self) -> Iterator[bytes]:
        assert self.call.upload is not None
        for chunk in self.call.upload.iter_bytes():
            self.check_deadline(sending=True)
            yield chunk

    async def _aupload_chunks(self) -> AsyncIterator[bytes]:
        assert self.call.upload is not None
        async for chunk in self.call.upload.aiter_bytes():
            self.check_deadline(sending=True)
            yield chunk

    # -- taking answers -------------------------------------------------------------------

    def begin(self, response: httpx.Response) -> bool:
        """Take the answer's head; ``True`` means: stream the body into :meth:`write`."""
        response.stream = _DeadlineStream(
            response.stream, lambda: self.check_deadline(sending=False)
        )
        self.history.saw(response)
        if self.call.download is not None and response.is_success:
            self.call.download.begin(response.status_code, response.headers)
            return True
        return False

    def write(self, chunk: bytes) -> None:
        assert self.call.download is not None
        self.call.download.write(chunk)

    def answered(self, response: httpx.Response) -> Step[T]:
        """The body has been read (or streamed to the download): success, or a failed attempt."""
        if response.is_success:
            try:
                value = self._parse(response)
            except DamagedDownloadError as exc:
                return self.failed(exc)
            except UnexpectedResponseError as exc:
                self._finish(exc, Verdict(may_have_executed=True, recorded=None), None)
                raise
            return Done(value, response, self._metadata(response))
        error = error_from_response(response, idempotency_key=self.state.idempotency_key)
        outcome = ErrorResponse(
            status_code=response.status_code,
            code=error.code,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            rate_limit_reset=parse_rate_limit_reset(
                response.headers.get("ratelimit-reset"), now_epoch=time.time()
            ),
            from_service=error.from_service,
        )
        return self._judge(outcome, error, cause=None)

    def _parse(self, response: httpx.Response) -> T:
        if self.call.download is not None:
            return self.call.parse(self.call.download.finish())
        if not response.content:
            return self.call.parse(None)
        try:
            document = response.json()
        except ValueError as exc:
            raise UnexpectedResponseError(
                f"{response.status_code} answer to {self.call.method} {self.call.path} is not JSON"
            ) from exc
        return self.call.parse(document)

    def failed(self, exc: BaseException) -> Step[T]:
        """An attempt ended without a usable answer: retry, or raise the call's error."""
        if isinstance(exc, DeadlinePassed):
            phase = "sending the request" if exc.sending else "receiving the answer"
            self._raise_deadline(phase, sent=not exc.sending, cause=exc)
        if isinstance(exc, DamagedDownloadError):
            outcome: Outcome = NetworkFailure(FailureKind.DAMAGED, str(exc))
            damaged = UnexpectedResponseError(f"the download was damaged: {exc}")
            return self._judge(outcome, damaged, cause=exc)
        assert isinstance(exc, httpx.RequestError)
        failure = network_failure(exc)
        if isinstance(exc, httpx.TimeoutException):
            remaining = self.policy.remaining(self.state, now=self._clock())
            if remaining is not None and remaining <= DEADLINE_SLACK:
                phase, sent = _TIMEOUT_PHASES.get(type(exc), ("waiting for the answer", True))
                self._raise_deadline(phase, sent=sent, cause=exc)
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
        error = cls(message, idempotency_key=self.state.idempotency_key)
        if failure is None:
            self._finish(error, Verdict(may_have_executed=True, recorded=None), None)
            raise error from exc
        return self._judge(failure, error, cause=exc)

    def _judge(
        self, outcome: Outcome, error: RetrysafeError, *, cause: BaseException | None
    ) -> Step[T]:
        key = self.state.idempotency_key
        verdict = classify(outcome, method=self.state.method, keyed=key is not None)
        self.history.judged(key, verdict)
        decision = self.policy.decide(
            self.state, outcome, now=self._clock(), replayable=self.call.replayable
        )
        if isinstance(decision, GiveUp):
            if (
                isinstance(error, APIStatusError)
                and error.status_code == 409
                and error.code == "duplicate_resource"
                and self.state.new_keys > 0
                and self.call.on_duplicate is not None
            ):
                log_duplicate(self.url, self.call, self.state)
                return Follow(self.call.on_duplicate)
            self._finish(error, verdict, decision.reason)
            raise error from cause
        log_retry(self.url, self.call, decision, key)
        self.state = decision.state
        return Wait(decision.wait)

    def _raise_deadline(
        self, phase: str, *, sent: bool, cause: BaseException | None = None
    ) -> NoReturn:
        read = self.state.method in SAFE_METHODS
        keyed = self.state.idempotency_key is not None
        verdict = Verdict(
            may_have_executed=sent and not read, recorded=None if sent and keyed else False
        )
        self.history.judged(self.state.idempotency_key, verdict)
        error = APITimeoutError(
            f"the call's deadline of {self.policy.settings.deadline:g}s passed while {phase}"
            f" (attempt {self.state.attempt})",
            idempotency_key=self.state.idempotency_key,
        )
        self._finish(error, verdict, None)
        raise error from cause

    def _finish(self, error: RetrysafeError, verdict: Verdict, reason: str | None) -> None:
        """Give the call's exception its whole history (every attempt, every key)."""
        if reason is not None:
            error.add_note(f"retrysafe gave up after attempt {self.state.attempt}: {reason}")
        error.may_have_executed = self.history.may_have_executed
        error.recorded = verdict.recorded
        error.idempotency_key = self.state.idempotency_key
        error.idempotency_keys = tuple(self.history.keys)
        error.request_ids = tuple(self.history.request_ids)
        error.attempts = self.history.attempts

    def _metadata(self, response: httpx.Response) -> ResponseMetadata:
        headers = response.headers
        return ResponseMetadata(
            status_code=response.status_code,
            request_id=headers.get("request-id"),
            replayed=headers.get("idempotent-replayed", "").lower() == "true",
            idempotency_key=self.state.idempotency_key,
            idempotency_keys=tuple(self.history.keys),
            request_ids=tuple(self.history.request_ids),
            attempts=self.history.attempts,
            rate_limit=RateLimit.from_headers(headers),
            quota=Quota.from_headers(headers),
            headers=headers,
        )

    # -- ending ---------------------------------------------------------------------------

    def follow(self, call: Call[T]) -> CallRun[T]:
        """``call`` run as the rest of this one: same history, what is left of the deadline."""
        self.close()
        remaining = self.policy.remaining(self.state, now=self._clock())
        if remaining is not None and remaining <= 0:
            self._raise_deadline("before the existing object could be fetched", sent=False)
        return CallRun(
            self._options,
            call,
            policy_factory=self._policy_factory,
            clock=self._clock,
            history=self.history,
            deadline=remaining,
        )

    def close(self) -> None:
        """Remove a download's partial file unless it finished (then this does nothing)."""
        if self.call.download is not None:
            self.call.download.abort()


_TIMEOUT_PHASES: Mapping[type[httpx.TimeoutException], tuple[str, bool]] = {
    httpx.ConnectTimeout: ("connecting", False),
    httpx.PoolTimeout: ("waiting for a pooled connection", False),
    httpx.WriteTimeout: ("sending the request", False),
    httpx.ReadTimeout: ("waiting for the answer", True),
}
"""What the attempt was doing when a timeout cut it, and whether the request was sent whole."""


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


def log_duplicate(url: str, call: Call[Any], state: CallState) -> None:
    logger.info(
        "%s %s: 409 duplicate_resource after a new-key retry; an earlier attempt created it,"
        " fetching it by reference_id",
        call.method,
        url,
        extra={"idempotency_key": state.idempotency_key},
    )


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
        deadline_given=options.deadline_given or not isinstance(deadline, NotGiven),
    )
