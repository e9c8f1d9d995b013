"""The asynchronous client and its retry loop (the sync loop in ``_client`` with ``await``).

Waits use ``anyio.sleep`` — anyio is httpx's own async backend — so the
client runs under asyncio and trio alike.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TypeVar

import anyio
import httpx

from ._base import (
    ATTEMPT_FAILURES,
    DEFAULT_DEADLINE,
    DEFAULT_TIMEOUT,
    NOT_GIVEN,
    Call,
    CallRun,
    ClientOptions,
    Done,
    Follow,
    LargeBodyPolicy,
    NotGiven,
    changed_options,
)
from ._metadata import RawResponse
from ._resources import (
    AsyncAccounts,
    AsyncAccountsWithRawResponse,
    AsyncDocuments,
    AsyncDocumentsWithRawResponse,
    AsyncInquiries,
    AsyncInquiriesWithRawResponse,
    AsyncVerifications,
    AsyncVerificationsWithRawResponse,
)
from ._retry import RetryPolicy, RetrySettings

__all__ = ["AsyncClient", "AsyncClientWithRawResponse"]

T = TypeVar("T")


class AsyncClient:
    """Asynchronous client for the retrysafe API; same options and retries as :class:`Client`.

    Every POST and PATCH carries an ``Idempotency-Key`` (a uuid4 unless you
    pass ``idempotency_key=``) that all retries of the call reuse, so a retry
    after a lost answer replays the first result instead of acting twice.
    What each failure means and what the client does about it is the table
    in the README ("Retrying safely").

    Args:
        api_key: secret from ``retrysafe keys create``; default ``$RETRYSAFE_API_KEY``.
        base_url: server root (``/api/v1`` is added); default ``$RETRYSAFE_BASE_URL``
            or ``http://127.0.0.1:8000``.
        timeout: per attempt, seconds or an ``httpx.Timeout``; default connect 5 s,
            read 45 s, write 30 s (plus the body's size over the floor throughput), pool 5 s.
        max_retries: retries after lost answers, proxies' 5xx and opted-in 5xx (default 2).
        max_backpressure_retries: retries after 429, 409 in flight and 503 (default 10)
            — waits the server asked for.
        deadline: seconds for a whole call, attempts and waits included; default 120,
            plus the body's size over the floor throughput. ``None`` for no bound.
        retry_server_errors: after a recorded 5xx, re-run creates that carry a
            ``reference_id`` under a NEW key (default False). Never replaces a key
            you passed; per call, ``retry_server_errors=True`` applies to any call.
        default_headers: extra headers sent on every request.
        large_bodies: the floor throughput and the size past which a create is sent
            as a form (:class:`LargeBodyPolicy`).
        http_client: an ``httpx.AsyncClient`` to use (its timeouts are overridden per
            attempt); the caller keeps ownership and closes it.
    """

    accounts: AsyncAccounts
    inquiries: AsyncInquiries
    documents: AsyncDocuments
    verifications: AsyncVerifications

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        max_backpressure_retries: int = 10,
        deadline: float | NotGiven | None = NOT_GIVEN,
        retry_server_errors: bool = False,
        default_headers: Mapping[str, str] | None = None,
        large_bodies: LargeBodyPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        options = ClientOptions.build(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            retry=RetrySettings(
                max_retries=max_retries,
                max_backpressure_retries=max_backpressure_retries,
                deadline=DEFAULT_DEADLINE if isinstance(deadline, NotGiven) else deadline,
                retry_server_errors=retry_server_errors,
            ),
            headers=default_headers,
            deadline_given=not isinstance(deadline, NotGiven),
            large_bodies=large_bodies,
        )
        owns_http = http_client is None
        http = http_client if http_client is not None else httpx.AsyncClient(follow_redirects=False)
        self._setup(options, http, owns_http=owns_http)

    def _setup(self, options: ClientOptions, http: httpx.AsyncClient, *, owns_http: bool) -> None:
        self._options = options
        self._http = http
        self._owns_http = owns_http
        # Seams for tests of the loop; the policy itself is tested without them.
        self._sleep: Callable[[float], Awaitable[None]] = anyio.sleep
        self._clock: Callable[[], float] = time.monotonic
        self._policy_factory: Callable[[RetrySettings], RetryPolicy] = RetryPolicy
        self.accounts = AsyncAccounts(self)
        self.inquiries = AsyncInquiries(self)
        self.documents = AsyncDocuments(self)
        self.verifications = AsyncVerifications(self)

    @property
    def with_raw_response(self) -> AsyncClientWithRawResponse:
        """The same calls, returning :class:`RawResponse`: status, headers, ``parse()``."""
        return AsyncClientWithRawResponse(self)

    def with_options(
        self,
        *,
        timeout: float | httpx.Timeout | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        max_backpressure_retries: int | NotGiven = NOT_GIVEN,
        deadline: float | NotGiven | None = NOT_GIVEN,
        retry_server_errors: bool | NotGiven = NOT_GIVEN,
    ) -> AsyncClient:
        """A client with some options changed, sharing this one's connection pool.

        For several calls alike; a single call takes the same options as keyword
        arguments (``client.documents.upload(..., deadline=600)``). Closing the
        derived client leaves the pool open.
        """
        clone = AsyncClient.__new__(AsyncClient)
        clone._setup(
            changed_options(
                self._options,
                timeout,
                max_retries,
                max_backpressure_retries,
                deadline,
                retry_server_errors,
            ),
            self._http,
            owns_http=False,
        )
        clone._sleep, clone._clock, clone._policy_factory = (
            self._sleep,
            self._clock,
            self._policy_factory,
        )
        return clone

    async def aclose(self) -> None:
        """Close the connection pool, unless it belongs to the caller or to a parent client."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _execute(self, call: Call[T]) -> T:
        return (await self._run(call)).result()

    async def _execute_raw(self, call: Call[T]) -> RawResponse[T]:
        return (await self._run(call)).raw()

    async def _run(self, call: Call[T]) -> Done[T]:
        """Run ``call`` with the retry policy: the only place the async client retries."""
        run = CallRun(self._options, call, policy_factory=self._policy_factory, clock=self._clock)
        try:
            while True:
                request = run.build_request(self._http, asynchronous=True)
                try:
                    response = await self._http.send(request, stream=True)
                    try:
                        if run.begin(response):
                            async for chunk in response.aiter_bytes():
                                run.write(chunk)
                        else:
                            await response.aread()
                    finally:
                        await response.aclose()
                    step = run.answered(response)
                except ATTEMPT_FAILURES as exc:
                    step = run.failed(exc)
                if isinstance(step, Done):
                    return step
                if isinstance(step, Follow):
                    run = run.follow(step.call)
                    continue
                await self._sleep(step.seconds)
        finally:
            run.close()


class AsyncClientWithRawResponse:
    """``client.with_raw_response`` of :class:`AsyncClient`; the methods are awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self.accounts = AsyncAccountsWithRawResponse(client)
        self.inquiries = AsyncInquiriesWithRawResponse(client)
        self.documents = AsyncDocumentsWithRawResponse(client)
        self.verifications = AsyncVerificationsWithRawResponse(client)
