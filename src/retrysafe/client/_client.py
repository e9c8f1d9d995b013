"""The synchronous client and its retry loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TypeVar

import httpx

from ._base import (
    DEFAULT_TIMEOUT,
    NOT_GIVEN,
    Call,
    ClientOptions,
    NotGiven,
    attempt_timeout,
    changed_options,
    connection_error,
    deadline_error,
    error_response,
    give_up_note,
    json_result,
    log_retry,
    network_failure,
    request_headers,
)
from ._errors import RetrysafeError
from ._resources import Accounts, Documents, Inquiries, Verifications
from ._retry import GiveUp, Outcome, RetryPolicy, RetrySettings

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Synchronous client for the retrysafe API; create one and reuse it (it pools connections).

    Every POST and PATCH carries an ``Idempotency-Key`` (a uuid4 unless you
    pass ``idempotency_key=``) that all retries of the call reuse, so a retry
    after a lost answer replays the first result instead of acting twice.
    What is retried, and how, is the table in the README ("Retrying safely").

    Args:
        api_key: secret from ``retrysafe keys create``; default ``$RETRYSAFE_API_KEY``.
        base_url: server root (``/api/v1`` is added); default ``$RETRYSAFE_BASE_URL``
            or ``http://127.0.0.1:8000``.
        timeout: per attempt, seconds or an ``httpx.Timeout``; default connect 5 s,
            read 30 s, write 30 s, pool 5 s.
        max_retries: retries after network failures and opted-in 5xx (default 2).
        max_backpressure_retries: retries after 429, 409 in flight and 503 with
            ``Retry-After`` (default 10) — waits the server asked for.
        deadline: seconds for a whole call, attempts and waits included
            (default 120); ``None`` for no bound.
        retry_server_errors: retry other 5xx on writes with a NEW key
            (default False); safe only when you group by ``reference_id``.
        default_headers: extra headers sent on every request.
        http_client: an ``httpx.Client`` to use (its timeouts are overridden per
            attempt); the caller keeps ownership and closes it.
    """

    accounts: Accounts
    inquiries: Inquiries
    documents: Documents
    verifications: Verifications

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        max_backpressure_retries: int = 10,
        deadline: float | None = 120.0,
        retry_server_errors: bool = False,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        options = ClientOptions.build(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            retry=RetrySettings(
                max_retries=max_retries,
                max_backpressure_retries=max_backpressure_retries,
                deadline=deadline,
                retry_server_errors=retry_server_errors,
            ),
            headers=default_headers,
        )
        owns_http = http_client is None
        http = http_client if http_client is not None else httpx.Client(follow_redirects=False)
        self._setup(options, http, owns_http=owns_http)

    def _setup(self, options: ClientOptions, http: httpx.Client, *, owns_http: bool) -> None:
        self._options = options
        self._http = http
        self._owns_http = owns_http
        # Seams for tests of the loop; the policy itself is tested without them.
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic
        self._policy_factory: Callable[[RetrySettings], RetryPolicy] = RetryPolicy
        self.accounts = Accounts(self)
        self.inquiries = Inquiries(self)
        self.documents = Documents(self)
        self.verifications = Verifications(self)

    def with_options(
        self,
        *,
        timeout: float | httpx.Timeout | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        max_backpressure_retries: int | NotGiven = NOT_GIVEN,
        deadline: float | NotGiven | None = NOT_GIVEN,
        retry_server_errors: bool | NotGiven = NOT_GIVEN,
    ) -> Client:
        """A client with some options changed, sharing this one's connection pool.

        For one-off calls: ``client.with_options(deadline=600).documents.upload(...)``.
        Closing the derived client leaves the pool open.
        """
        clone = Client.__new__(Client)
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

    def close(self) -> None:
        """Close the connection pool, unless it belongs to the caller or to a parent client."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _execute(self, call: Call[T]) -> T:
        """Run ``call`` with the retry policy: the only place the sync client retries."""
        policy = self._policy_factory(self._options.retry)
        state = policy.start(call.method, now=self._clock(), idempotency_key=call.idempotency_key)
        url = self._options.url(call.path)
        while True:
            remaining = policy.remaining(state, now=self._clock())
            if remaining is not None and remaining <= 0:
                raise deadline_error(state, policy.settings.deadline)
            request = self._http.build_request(
                call.method,
                url,
                params=call.params,
                json=call.json,
                content=call.upload.iter_bytes() if call.upload is not None else None,
                headers=request_headers(self._options, call, state.idempotency_key),
                timeout=attempt_timeout(self._options.timeout, remaining),
            )
            outcome: Outcome | None
            error: RetrysafeError
            cause: BaseException | None = None
            try:
                response = self._http.send(request, stream=True)
                try:
                    if response.is_success:
                        return self._result(call, response)
                    response.read()
                finally:
                    response.close()
                outcome, error = error_response(response, state.idempotency_key)
            except httpx.RequestError as exc:
                outcome, error, cause = (
                    network_failure(exc),
                    connection_error(exc, state.idempotency_key),
                    exc,
                )
            if outcome is None:
                raise error from cause
            decision = policy.decide(state, outcome, now=self._clock(), replayable=call.replayable)
            if isinstance(decision, GiveUp):
                error.add_note(give_up_note(state, decision.reason))
                raise error from cause
            log_retry(url, call, decision, state.idempotency_key)
            self._sleep(decision.wait)
            state = decision.state

    @staticmethod
    def _result(call: Call[T], response: httpx.Response) -> T:
        if call.download is not None:
            try:
                written = call.download.write_all(response.iter_bytes())
            except BaseException:
                call.download.abort()
                raise
            return call.parse(written)
        response.read()
        return json_result(call, response)
