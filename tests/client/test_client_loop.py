"""The clients' retry loops over a scripted transport: keys, waits, deadline, errors, bodies.

Every test runs against both ``Client`` and ``AsyncClient``; time is a fake
clock that sleeping advances, so waits are asserted exactly and cost nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from retrysafe import (
    Account,
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    IdempotencyInProgressError,
    LargeBodyPolicy,
    NotFoundError,
    Quota,
    RateLimit,
    RateLimitError,
    RawResponse,
    RetrysafeError,
    ServerError,
    UnexpectedResponseError,
    UnprocessableEntityError,
)
from retrysafe.client._retry import RetryPolicy, RetrySettings

from ._helpers import AnyClient, collect, resolve

T = TypeVar("T")


class FakeClock:
    """Monotonic time that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Script:
    """A transport handler that plays ``steps`` in order and keeps every request."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.steps:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)

    @property
    def keys(self) -> list[str | None]:
        return [request.headers.get("idempotency-key") for request in self.requests]


def error(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"errors": [{"title": "t", "details": "d", "status": str(status), "code": code}]}
    return httpx.Response(status, headers={"Request-Id": "req_1", **_dashed(headers)}, json=body)


def _dashed(headers: dict[str, str]) -> dict[str, str]:
    return {name.replace("_", "-"): value for name, value in headers.items()}


def account(account_id: str = "act_1", status: int = 201, **attributes: Any) -> httpx.Response:
    return httpx.Response(
        status,
        json={"data": {"type": "account", "id": account_id, "attributes": attributes}},
    )


def page(ids: list[str], next_link: str | None) -> httpx.Response:
    data = [{"type": "account", "id": i, "attributes": {}} for i in ids]
    return httpx.Response(200, json={"data": data, "links": {"next": next_link}})


def file_names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make(flavor: str, clock: FakeClock) -> AsyncIterator[Callable[..., AnyClient]]:
    """Build a client of this test's flavour over a scripted transport, with fake time."""
    opened: list[httpx.Client | httpx.AsyncClient] = []

    def build(script: Script, **options: Any) -> AnyClient:
        transport = httpx.MockTransport(script)
        options.setdefault("base_url", "http://api.test")
        client: AnyClient
        if flavor == "sync":
            sync_http = httpx.Client(transport=transport)
            opened.append(sync_http)
            client = Client("sk_test", http_client=sync_http, **options)
            client._sleep = clock.sleep
        else:
            async_http = httpx.AsyncClient(transport=transport)
            opened.append(async_http)
            client = AsyncClient("sk_test", http_client=async_http, **options)
            client._sleep = clock.asleep
        client._clock = clock.now

        def policy(settings: RetrySettings) -> RetryPolicy:
            return RetryPolicy(settings, random=lambda: 0.5)

        client._policy_factory = policy
        return client

    yield build
    for http in opened:
        if isinstance(http, httpx.Client):
            http.close()
        else:
            await http.aclose()


# -- keys ---------------------------------------------------------------------------------


async def test_network_failures_and_backpressure_all_reuse_one_key(
    make: Callable[..., AnyClient], clock: FakeClock
) -> None:
    """Every retry of one call — whatever the reason — carries the same Idempotency-Key."""
    script = Script(
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadTimeout("timed out"),
        error(429, "rate_limited", Retry_After="2"),
        error(409, "idempotency_request_in_progress", Retry_After="1"),
        error(503, "service_unavailable", Retry_After="3"),
        httpx.ConnectError("refused"),
        account(),
    )
    client = make(script, max_retries=3)
    created = await resolve(client.accounts.create(reference_id="u1"))
    assert created.id == "act_1"
    assert len(script.requests) == 7
    assert len(set(script.keys)) == 1
    assert script.keys[0] is not None
    # backoff: full jitter at 0.5 of [0.25, 0.5·2ⁿ]; server-directed: Retry-After + 5 % jitter;
    # the connect error draws on its own budget, so its backoff starts over at n = 0
    assert clock.sleeps == pytest.approx([0.375, 0.625, 2.1, 1.05, 3.15, 0.375])


async def test_callers_key_is_sent_as_given(make: Callable[..., AnyClient]) -> None:
    script = Script(httpx.ReadError("reset"), account())
    client = make(script)
    await resolve(client.accounts.create(idempotency_key="order-77"))
    assert script.keys == ["order-77", "order-77"]


async def test_reads_carry_no_key(make: Callable[..., AnyClient]) -> None:
    script = Script(account(status=200))
    await resolve(make(script).accounts.retrieve("act_1"))
    assert script.keys == [None]
    assert script.requests[0].headers["authorization"] == "Bearer sk_test"


async def test_server_error_without_opt_in_is_raised_indeterminate(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(error(500, "internal_error"))
    with pytest.raises(ServerError) as caught:
        await resolve(make(script).accounts.create())
    assert caught.value.indeterminate is True
    assert caught.value.idempotency_key == script.keys[0]
    assert caught.value.request_id == "req_1"
    assert len(script.requests) == 1


async def test_retry_server_errors_retries_with_a_new_key(
    make: Callable[..., AnyClient], caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(error(502, "bad_gateway"), error(500, "internal_error"), account())
    client = make(script, retry_server_errors=True)
    with caplog.at_level(logging.INFO, logger="retrysafe.client"):
        await resolve(client.inquiries.create(reference_id="user-1"))
    assert len(set(script.keys)) == 3
    assert "NEW Idempotency-Key" in caplog.records[0].getMessage()


async def test_server_errors_on_reads_are_retried(make: Callable[..., AnyClient]) -> None:
    script = Script(error(503, "service_unavailable"), error(502, "bad_gateway"), account())
    assert (await resolve(make(script).accounts.retrieve("act_1"))).id == "act_1"


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [(404, "not_found", NotFoundError), (409, "duplicate_resource", ConflictError)],
)
async def test_client_errors_are_not_retried(
    make: Callable[..., AnyClient], status: int, code: str, cls: type[Exception]
) -> None:
    script = Script(error(status, code))
    with pytest.raises(cls):
        await resolve(make(script).accounts.create(reference_id="taken"))
    assert len(script.requests) == 1


# -- bounds -------------------------------------------------------------------------------


async def test_exhausted_retries_raise_connection_error_chained_with_the_key(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(*(httpx.RemoteProtocolError("closed") for _ in range(3)))
    with pytest.raises(APIConnectionError) as caught:
        await resolve(make(script, max_retries=2).accounts.create())
    assert len(script.requests) == 3
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert caught.value.idempotency_key == script.keys[0]
    assert caught.value.indeterminate
    assert any("max_retries=2" in note for note in caught.value.__notes__)


async def test_timeouts_raise_api_timeout_error(make: Callable[..., AnyClient]) -> None:
    script = Script(httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError):
        await resolve(make(script, max_retries=1).accounts.create())


async def test_in_flight_conflict_that_outlasts_the_budget_is_raised(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(*(error(409, "idempotency_request_in_progress", Retry_After="0") for _ in "12"))
    with pytest.raises(IdempotencyInProgressError):
        await resolve(make(script, max_backpressure_retries=1).accounts.create())
    assert len(script.requests) == 2


async def test_deadline_stops_waiting_and_raises_the_last_error(
    make: Callable[..., AnyClient], clock: FakeClock
) -> None:
    """With 5 s left, a second 3 s wait is not slept: the 429 is raised at once."""
    script = Script(*(error(429, "rate_limited", Retry_After="3") for _ in "12"))
    with pytest.raises(RateLimitError) as caught:
        await resolve(make(script, deadline=5.0).accounts.create())
    assert len(script.requests) == 2
    assert len(clock.sleeps) == 1
    assert caught.value.retry_after == 3.0
    assert any("deadline" in note for note in caught.value.__notes__)


async def test_attempt_timeouts_are_clipped_to_the_deadline(
    make: Callable[..., AnyClient],
) -> None:
    """httpx has no whole-call timeout: each attempt gets at most what the call has left."""
    script = Script(error(429, "rate_limited", Retry_After="3"), account())
    client = make(script, deadline=5.0, timeout=httpx.Timeout(10.0, connect=1.0))
    await resolve(client.accounts.create())
    first, second = (request.extensions["timeout"] for request in script.requests)
    assert first == {"connect": 1.0, "read": 5.0, "write": 5.0, "pool": 5.0}
    assert second["read"] == pytest.approx(5.0 - 3.15)
    assert second["connect"] == 1.0


async def test_retries_are_logged_with_reason_attempt_and_key(
    make: Callable[..., AnyClient], caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(httpx.ReadError("connection reset"), account())
    with caplog.at_level(logging.INFO, logger="retrysafe.client"):
        await resolve(make(script).accounts.create(idempotency_key="k-1"))
    [record] = [r for r in caplog.records if r.name == "retrysafe.client"]
    message = record.getMessage()
    assert "connection lost (ReadError: connection reset)" in message
    assert "attempt 2" in message
    assert "same Idempotency-Key k-1" in message
    assert record.__dict__["retry_attempt"] == 2
    assert record.__dict__["idempotency_key"] == "k-1"


# -- bodies -------------------------------------------------------------------------------


async def test_create_sends_only_given_attributes_and_update_can_clear(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(account(), account(status=200))
    client = make(script)
    await resolve(client.accounts.create(reference_id="u1", birthdate=date(1990, 2, 3)))
    await resolve(client.accounts.update("act_1", name_last=None, name_first="Ada"))
    create, update = (json.loads(request.content) for request in script.requests)
    assert create == {"data": {"attributes": {"reference_id": "u1", "birthdate": "1990-02-03"}}}
    assert update == {"data": {"attributes": {"name_last": None, "name_first": "Ada"}}}
    assert script.requests[1].method == "PATCH"
    assert script.requests[1].headers["idempotency-key"]


async def test_resource_ids_cannot_escape_their_path_segment(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(account(status=200))
    await resolve(make(script).accounts.retrieve("../inquiries?x=1"))
    assert script.requests[0].url.raw_path == b"/api/v1/accounts/..%2Finquiries%3Fx%3D1"


async def test_seekable_upload_is_resent_whole_after_a_lost_answer(
    make: Callable[..., AnyClient], tmp_path: Path
) -> None:
    path = tmp_path / "passport.png"
    path.write_bytes(b"\x89PNG" + bytes(range(256)) * 1000)
    document = {"data": {"type": "document", "id": "doc_1", "attributes": {"size": 256004}}}
    script = Script(httpx.RemoteProtocolError("closed"), httpx.Response(201, json=document))
    result = await resolve(make(script).documents.upload("inq_1", path, kind="passport"))
    assert result.size == 256004
    first, second = script.requests
    assert first.content == second.content
    assert path.read_bytes() in first.content
    assert first.headers["content-length"] == str(len(first.content))
    assert first.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="kind"\r\n\r\npassport' in first.content
    assert b'filename="passport.png"\r\nContent-Type: image/png' in first.content
    assert script.keys[0] == script.keys[1]


async def test_unseekable_upload_is_not_retried_once_sent(
    make: Callable[..., AnyClient],
) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.data = io.BytesIO(b"once")

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            chunk = self.data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    script = Script(httpx.RemoteProtocolError("closed"))
    with pytest.raises(APIConnectionError) as caught:
        await resolve(make(script).documents.upload("inq_1", Pipe(), filename="p"))  # type: ignore[arg-type]
    assert len(script.requests) == 1
    assert any("cannot be sent again" in note for note in caught.value.__notes__)


class FailingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that breaks after its first chunk, like a reset mid-download."""

    def __iter__(self) -> Iterator[bytes]:
        yield b"partial"
        raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"partial"
        raise httpx.ReadError("connection reset")


async def test_download_restarts_from_scratch_after_a_reset_mid_body(
    make: Callable[..., AnyClient], tmp_path: Path
) -> None:
    script = Script(
        httpx.Response(200, stream=FailingStream()),
        httpx.Response(200, content=b"the whole file"),
    )
    target = tmp_path / "doc.bin"
    written = await resolve(make(script).documents.download("doc_1", target))
    assert written == 14
    assert target.read_bytes() == b"the whole file"
    assert file_names(tmp_path) == ["doc.bin"]
    assert str(script.requests[0].url).endswith("/api/v1/documents/doc_1/content")


# -- pagination and responses -------------------------------------------------------------


async def test_list_follows_cursors_on_the_clients_own_base_url(
    make: Callable[..., AnyClient],
) -> None:
    """The next link's host is ignored (the server saw a proxy's Host); its cursor is used."""
    script = Script(
        page(["a", "b"], "http://internal:9999/api/v1/accounts?page%5Bsize%5D=2&page%5Bafter%5D=b"),
        page(["c"], "/api/v1/accounts?page[size]=2&page[after]=c"),
        page([], None),
    )
    items = await collect(make(script).accounts.list(page_size=2))
    assert [item.id for item in items] == ["a", "b", "c"]
    assert all(isinstance(item, Account) for item in items)
    urls = [str(request.url) for request in script.requests]
    assert all(url.startswith("http://api.test/api/v1/accounts?") for url in urls)
    assert script.requests[1].url.params["page[after]"] == "b"


async def test_list_filters_are_sent_as_json_api_filters(make: Callable[..., AnyClient]) -> None:
    script = Script(page([], None))
    await collect(make(script).inquiries.list(reference_id="u1", status="completed"))
    assert dict(script.requests[0].url.params) == {
        "filter[reference_id]": "u1",
        "filter[status]": "completed",
    }


async def test_non_json_success_is_an_unexpected_response(make: Callable[..., AnyClient]) -> None:
    script = Script(httpx.Response(200, content=b"<html>"))
    with pytest.raises(UnexpectedResponseError):
        await resolve(make(script).accounts.retrieve("act_1"))


@pytest.mark.parametrize(
    "base_url", ["http://api.test", "http://api.test/", "http://api.test/api/v1/"]
)
async def test_base_url_may_name_the_root_or_the_api(
    make: Callable[..., AnyClient], base_url: str
) -> None:
    script = Script(account(status=200))
    await resolve(make(script, base_url=base_url).accounts.retrieve("act_1"))
    assert str(script.requests[0].url) == "http://api.test/api/v1/accounts/act_1"


async def test_with_options_overrides_per_call_and_shares_the_pool(
    make: Callable[..., AnyClient], clock: FakeClock
) -> None:
    script = Script(httpx.ReadError("reset"), httpx.ReadError("reset"))
    client = make(script, max_retries=5)
    strict = client.with_options(max_retries=1)
    assert strict._http is client._http
    with pytest.raises(APIConnectionError):
        await resolve(strict.accounts.create())
    assert len(script.requests) == 2
    assert client._options.retry.max_retries == 5


def test_missing_api_key_is_refused_up_front(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETRYSAFE_API_KEY", raising=False)
    with pytest.raises(RetrysafeError, match="API key"):
        Client()


def test_api_key_and_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRYSAFE_API_KEY", "sk_env")
    monkeypatch.setenv("RETRYSAFE_BASE_URL", "http://env.test:9")
    with Client() as client:
        assert client._options.api_key == "sk_env"
        assert client._options.url("accounts") == "http://env.test:9/api/v1/accounts"


def test_options_repr_never_shows_the_api_key() -> None:
    with Client("sk_very_secret") as client:
        assert "sk_very_secret" not in repr(client._options)


# -- what each failure means, on the exception ------------------------------------------


async def test_a_refused_connection_says_nothing_ran(make: Callable[..., AnyClient]) -> None:
    """Nothing was sent, so the caller learns the write certainly did not happen."""
    script = Script(*(httpx.ConnectError("refused") for _ in range(3)))
    with pytest.raises(APIConnectionError) as caught:
        await resolve(make(script, deadline=None, max_retries=2).accounts.create())
    error = caught.value
    assert (error.may_have_executed, error.recorded, error.indeterminate) == (False, False, False)
    assert error.attempts == 3
    assert error.idempotency_keys == (script.keys[0],)


async def test_a_lost_answer_then_a_refusal_still_may_have_executed(
    make: Callable[..., AnyClient],
) -> None:
    """The verdict covers the whole call: the first attempt may have run, whatever came next."""
    script = Script(httpx.ReadError("reset"), error(401, "unauthenticated", Request_Id="req_2"))
    with pytest.raises(AuthenticationError) as caught:
        await resolve(make(script).accounts.create())
    assert (caught.value.may_have_executed, caught.value.recorded) == (True, False)
    assert caught.value.request_ids == ("req_2",)


async def test_a_replayed_client_error_settles_what_a_lost_answer_left_open(
    make: Callable[..., AnyClient],
) -> None:
    """The recorded 422 is what the server holds for the key: it did not take effect."""
    script = Script(httpx.ReadTimeout("slow"), error(422, "invalid_value"))
    with pytest.raises(UnprocessableEntityError) as caught:
        await resolve(make(script).accounts.create(birthdate="2999-01-01"))
    assert (caught.value.may_have_executed, caught.value.recorded) == (False, True)


async def test_a_recorded_server_error_is_raised_with_its_key_and_request_id(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(error(504, "gateway_timeout"))
    with pytest.raises(ServerError) as caught:
        await resolve(make(script, retry_server_errors=True).verifications.create("inq_1"))
    error_ = caught.value
    assert (error_.may_have_executed, error_.recorded, error_.from_service) == (True, True, True)
    assert error_.idempotency_keys == (script.keys[0],)
    assert error_.request_ids == ("req_1",)
    assert any("replays this answer" in note for note in error_.__notes__)
    assert len(script.requests) == 1  # a verification is never re-run under a new key


@pytest.mark.parametrize(
    "foreign",
    [
        httpx.Response(502, content=b"<html>Bad Gateway</html>", headers={"Via": "lb"}),
        httpx.Response(504, json={"errors": [{"title": "t", "details": "d", "status": "504"}]}),
    ],
    ids=["html", "no-request-id"],
)
async def test_a_proxys_server_error_is_retried_under_the_same_key(
    make: Callable[..., AnyClient], foreign: httpx.Response
) -> None:
    script = Script(foreign, account())
    client = make(script, retry_server_errors=True)
    created = await resolve(client.accounts.create(reference_id="u1"))
    assert script.keys[0] == script.keys[1]
    assert created.last_response is not None
    assert created.last_response.attempts == 2


async def test_new_key_retry_resolves_the_duplicate_by_reference_id(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(
        error(502, "bad_gateway"),
        error(409, "duplicate_resource"),
        page(["act_made"], None),
    )
    client = make(script, retry_server_errors=True)
    found = await resolve(client.accounts.create(reference_id="user-9"))
    assert found.id == "act_made"
    post_1, post_2, lookup = script.requests
    assert post_1.headers["idempotency-key"] != post_2.headers["idempotency-key"]
    assert lookup.method == "GET"
    assert dict(lookup.url.params) == {"filter[reference_id]": "user-9"}
    assert "idempotency-key" not in lookup.headers
    assert found.last_response is not None
    assert found.last_response.idempotency_keys == (script.keys[0], script.keys[1])
    assert found.last_response.attempts == 3


async def test_no_time_left_to_fetch_the_duplicate_is_a_deadline_error(
    make: Callable[..., AnyClient], clock: FakeClock
) -> None:
    def slow_duplicate(request: httpx.Request) -> httpx.Response:
        clock.time += 10.0  # the answer took the rest of the deadline
        return error(409, "duplicate_resource")

    script = Script(error(502, "bad_gateway"), slow_duplicate)
    client = make(script, retry_server_errors=True, deadline=5.0)
    with pytest.raises(
        APITimeoutError, match="before the existing object could be fetched"
    ) as caught:
        await resolve(client.accounts.create(reference_id="user-9"))
    assert caught.value.may_have_executed  # the first attempt's 502 left it open
    assert len(caught.value.idempotency_keys) == 2
    assert len(script.requests) == 2


async def test_a_duplicate_this_call_did_not_cause_is_raised(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(error(409, "duplicate_resource"))
    with pytest.raises(ConflictError) as caught:
        await resolve(make(script, retry_server_errors=True).accounts.create(reference_id="u"))
    assert (caught.value.may_have_executed, caught.value.recorded) == (False, True)
    assert len(script.requests) == 1


async def test_a_callers_key_is_never_replaced_by_the_client_wide_option(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(error(500, "internal_error"))
    with pytest.raises(ServerError) as caught:
        await resolve(
            make(script, retry_server_errors=True).accounts.create(
                reference_id="u", idempotency_key="mine"
            )
        )
    assert script.keys == ["mine"]
    assert any("never replaces it" in note for note in caught.value.__notes__)


async def test_per_call_retry_server_errors_replaces_even_the_callers_key(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(error(500, "internal_error"), account())
    client = make(script)
    created = await resolve(
        client.accounts.create(idempotency_key="mine", retry_server_errors=True)
    )
    assert script.keys[0] == "mine"
    assert script.keys[1] not in (None, "mine")
    assert created.last_response is not None
    assert created.last_response.idempotency_keys == ("mine", script.keys[1])


# -- what came back ------------------------------------------------------------------------


def created_account(**headers: str) -> httpx.Response:
    response = account()
    response.headers.update(_dashed(headers))
    return response


async def test_results_carry_the_answers_metadata(make: Callable[..., AnyClient]) -> None:
    script = Script(
        httpx.RemoteProtocolError("closed"),
        created_account(
            Request_Id="req_b",
            Idempotent_Replayed="true",
            RateLimit_Limit="100",
            RateLimit_Remaining="98",
            RateLimit_Reset="1",
            QuotaLimit_Limit="5",
            QuotaLimit_Remaining="4",
        ),
    )
    created = await resolve(make(script).accounts.create(idempotency_key="k-7"))
    meta = created.last_response
    assert meta is not None
    assert (meta.status_code, meta.request_id, meta.replayed) == (201, "req_b", True)
    assert (meta.idempotency_key, meta.idempotency_keys, meta.attempts) == ("k-7", ("k-7",), 2)
    assert meta.request_ids == ("req_b",)
    assert meta.rate_limit == RateLimit(limit=100, remaining=98, reset=1)
    assert meta.quota == Quota(limit=5, remaining=4)
    assert created == Account.from_resource(  # metadata is not part of equality
        {"id": "act_1", "attributes": {}}
    )


async def test_list_items_carry_their_pages_metadata(make: Callable[..., AnyClient]) -> None:
    first = page(["a"], "/api/v1/accounts?page[after]=a")
    first.headers["Request-Id"] = "req_p1"
    second = page(["b"], None)
    second.headers["Request-Id"] = "req_p2"
    items = await collect(make(Script(first, second)).accounts.list())
    assert [item.last_response.request_id for item in items] == ["req_p1", "req_p2"]


async def test_raw_response_gives_status_headers_and_the_parsed_result(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(created_account(Location="/api/v1/accounts/act_1", Request_Id="req_r"))
    raw = await resolve(make(script).with_raw_response.accounts.create(reference_id="u1"))
    assert isinstance(raw, RawResponse)
    assert (raw.status_code, raw.request_id) == (201, "req_r")
    assert raw.headers["location"] == "/api/v1/accounts/act_1"
    assert raw.http_response.json()["data"]["id"] == "act_1"
    parsed = raw.parse()
    assert isinstance(parsed, Account)
    assert parsed.id == "act_1"
    assert parsed.last_response == raw.metadata


async def test_raw_download_parses_to_the_byte_count(
    make: Callable[..., AnyClient], tmp_path: Path
) -> None:
    script = Script(httpx.Response(200, content=b"12345", headers={"Request-Id": "req_d"}))
    raw = await resolve(make(script).with_raw_response.documents.download("doc_1", tmp_path / "f"))
    assert (raw.parse(), raw.request_id, raw.status_code) == (5, "req_d", 200)


async def test_every_attempt_counts_its_retries_and_names_the_sdk(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(httpx.ReadError("reset"), httpx.ReadError("reset"), account())
    await resolve(make(script).accounts.create())
    assert [r.headers["retrysafe-retry-count"] for r in script.requests] == ["0", "1", "2"]
    agent = script.requests[0].headers["user-agent"]
    assert agent.startswith("retrysafe-python/")
    assert f"httpx/{httpx.__version__}" in agent


# -- per-call options ------------------------------------------------------------------------


async def test_per_call_options_apply_to_that_call_only(
    make: Callable[..., AnyClient], clock: FakeClock
) -> None:
    script = Script(httpx.ReadError("reset"), account(), httpx.ReadError("reset"), account())
    client = make(script, max_retries=0)
    await resolve(
        client.accounts.create(
            max_retries=1,
            timeout=httpx.Timeout(3.0),
            deadline=7.0,
            extra_headers={"X-Trace": "t-1"},
        )
    )
    first = script.requests[0]
    assert first.headers["x-trace"] == "t-1"
    timeout = first.extensions["timeout"]
    assert (timeout["connect"], timeout["read"], timeout["pool"]) == (3.0, 3.0, 3.0)
    assert timeout["write"] == pytest.approx(3.0, abs=0.001)  # + the body's 26 bytes
    with pytest.raises(APIConnectionError):
        await resolve(client.accounts.create())  # the client's max_retries=0 again
    assert "x-trace" not in script.requests[2].headers


async def test_a_per_call_deadline_is_the_calls_whole_bound(
    make: Callable[..., AnyClient],
) -> None:
    script = Script(account(status=200))
    await resolve(make(script).accounts.retrieve("act_1", deadline=2.0))
    assert script.requests[0].extensions["timeout"]["read"] == 2.0


async def test_a_misspelt_option_is_refused_not_ignored(make: Callable[..., AnyClient]) -> None:
    client = make(Script())
    with pytest.raises(TypeError, match="dedline"):
        await resolve(client.accounts.retrieve("act_1", dedline=5))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="idempotency_key="):
        await resolve(client.accounts.create(extra_headers={"Idempotency-Key": "k"}))


# -- large bodies -----------------------------------------------------------------------------


async def test_a_large_create_goes_as_a_form_with_time_for_its_size(
    make: Callable[..., AnyClient],
) -> None:
    """The seed's advice: give a large body time, and send it as multipart/form-data."""
    script = Script(account())
    client = make(script, large_bodies=LargeBodyPolicy(min_throughput=1000, multipart_threshold=10))
    await resolve(client.accounts.create(reference_id="u1", name_first="Ada"))
    [request] = script.requests
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = request.content
    assert b'name="data[attributes][reference_id]"\r\n\r\nu1\r\n' in body
    assert b'name="data[attributes][name_first]"\r\n\r\nAda\r\n' in body
    timeout = request.extensions["timeout"]
    assert timeout["write"] == pytest.approx(30.0 + len(body) / 1000)
    assert timeout["read"] == 45.0


async def test_a_small_create_stays_json(make: Callable[..., AnyClient]) -> None:
    script = Script(account())
    await resolve(make(script).accounts.create(reference_id="u1"))
    assert script.requests[0].headers["content-type"] == "application/json"


async def test_the_default_deadline_grows_with_the_upload(
    make: Callable[..., AnyClient], tmp_path: Path
) -> None:
    """A 300 kB upload at a 1000 B/s floor gets 300 s more; a deadline you set does not."""
    path = tmp_path / "scan.bin"
    path.write_bytes(bytes(300_000))
    document = {"data": {"type": "document", "id": "doc_1", "attributes": {}}}
    policy = LargeBodyPolicy(min_throughput=1000)
    script = Script(httpx.Response(201, json=document), httpx.Response(201, json=document))
    grown = make(script, large_bodies=policy, timeout=httpx.Timeout(1000.0))
    await resolve(grown.documents.upload("inq_1", path))
    size = int(script.requests[0].headers["content-length"])
    assert script.requests[0].extensions["timeout"]["read"] == pytest.approx(120.0 + size / 1000)
    await resolve(grown.documents.upload("inq_1", path, deadline=10.0))
    assert script.requests[1].extensions["timeout"]["read"] == 10.0


# -- the deadline while bytes move -------------------------------------------------------------


class TricklingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An answer whose every chunk arrives in time for the read timeout but 1 s after the last."""

    def __init__(self, clock: FakeClock, chunks: int) -> None:
        self.clock = clock
        self.chunks = chunks
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            self.clock.time += 1.0
            self.sent += 1
            yield b" "

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


async def test_a_trickling_answer_is_cut_at_the_deadline(
    make: Callable[..., AnyClient], clock: FakeClock
) -> None:
    stream = TricklingStream(clock, chunks=100)
    script = Script(httpx.Response(200, stream=stream))
    started = clock.time
    with pytest.raises(APITimeoutError, match="deadline of 5s passed while receiving") as caught:
        await resolve(make(script, deadline=5.0).accounts.retrieve("act_1"))
    assert not caught.value.may_have_executed  # a read changes nothing
    assert clock.time - started == 5.0
    assert stream.sent == 5
    assert len(script.requests) == 1  # no time left for another attempt


class SlowLink(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Takes the request body a chunk per (fake) second, as a throttled uplink would."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.requests: list[httpx.Request] = []
        self.chunks_taken = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for _ in request.stream:  # type: ignore[union-attr]
            self._take()
        return httpx.Response(201)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        async for _ in request.stream:  # type: ignore[union-attr]
            self._take()
        return httpx.Response(201)

    def _take(self) -> None:
        self.clock.time += 1.0
        self.chunks_taken += 1


async def test_a_trickling_upload_is_cut_at_the_deadline(
    flavor: str, clock: FakeClock, tmp_path: Path
) -> None:
    """The body never finished, so the server cannot have run it: may_have_executed is False."""
    path = tmp_path / "scan.bin"
    path.write_bytes(bytes(64 * 1024 * 20))
    link = SlowLink(clock)
    client: AnyClient
    if flavor == "sync":
        client = Client("sk", base_url="http://api.test", http_client=httpx.Client(transport=link))
    else:
        client = AsyncClient(
            "sk", base_url="http://api.test", http_client=httpx.AsyncClient(transport=link)
        )
    client._clock = clock.now
    with pytest.raises(APITimeoutError, match="while sending the request") as caught:
        await resolve(client.documents.upload("inq_1", path, deadline=3.5))
    assert link.chunks_taken == 4  # 3 chunks in time, the 4th found the deadline passed
    assert (caught.value.may_have_executed, caught.value.recorded) == (False, False)
    [request] = link.requests
    assert caught.value.idempotency_keys == (request.headers["idempotency-key"],)
    await resolve(client._http.close() if isinstance(client, Client) else client._http.aclose())


def resumable(data: bytes, cut_at: int) -> httpx.Response:
    class Cut(httpx.SyncByteStream, httpx.AsyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield data[:cut_at]
            raise httpx.RemoteProtocolError("peer closed connection")

        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield data[:cut_at]
            raise httpx.RemoteProtocolError("peer closed connection")

    return httpx.Response(
        200,
        stream=Cut(),
        headers={
            "ETag": '"v1"',
            "Content-Length": str(len(data)),
            "Repr-Digest": "sha-256=:"
            + base64.b64encode(hashlib.sha256(data).digest()).decode()
            + ":",
        },
    )


async def test_a_cut_download_resumes_with_range_and_is_verified(
    make: Callable[..., AnyClient], tmp_path: Path
) -> None:
    data = bytes(range(256)) * 100

    def rest(request: httpx.Request) -> httpx.Response:
        assert request.headers["range"] == "bytes=1000-"
        assert request.headers["if-range"] == '"v1"'
        return httpx.Response(
            206,
            content=data[1000:],
            headers={"ETag": '"v1"', "Content-Range": f"bytes 1000-{len(data) - 1}/{len(data)}"},
        )

    script = Script(resumable(data, 1000), rest)
    target = tmp_path / "doc.bin"
    assert await resolve(make(script).documents.download("doc_1", target)) == len(data)
    assert target.read_bytes() == data
    assert file_names(tmp_path) == ["doc.bin"]


async def test_a_resumed_download_that_fails_its_digest_starts_over(
    make: Callable[..., AnyClient], tmp_path: Path
) -> None:
    data = bytes(range(256)) * 100
    bad_rest = httpx.Response(
        206,
        content=b"\x00" * (len(data) - 1000),
        headers={"ETag": '"v1"', "Content-Range": f"bytes 1000-{len(data) - 1}/{len(data)}"},
    )
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"
    whole = httpx.Response(200, content=data, headers={"ETag": '"v1"', "Repr-Digest": digest})
    script = Script(resumable(data, 1000), bad_rest, whole)
    target = tmp_path / "doc.bin"
    assert await resolve(make(script).documents.download("doc_1", target)) == len(data)
    assert target.read_bytes() == data
    assert "range" not in script.requests[2].headers  # the damaged bytes were thrown away


async def test_a_download_that_stays_damaged_is_an_unexpected_response(
    make: Callable[..., AnyClient], tmp_path: Path
) -> None:
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(b"good").digest()).decode() + ":"
    script = Script(
        *(httpx.Response(200, content=b"evil", headers={"Repr-Digest": digest}) for _ in "123")
    )
    target = tmp_path / "doc.bin"
    with pytest.raises(UnexpectedResponseError, match="SHA-256"):
        await resolve(make(script, max_retries=2).documents.download("doc_1", target))
    assert not target.exists()
    assert file_names(tmp_path) == []
