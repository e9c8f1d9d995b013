"""The clients' retry loops over a scripted transport: keys, waits, deadline, errors, bodies.

Every test runs against both ``Client`` and ``AsyncClient``; time is a fake
clock that sleeping advances, so waits are asserted exactly and cost nothing.
"""

from __future__ import annotations

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
    Client,
    ConflictError,
    IdempotencyInProgressError,
    NotFoundError,
    RateLimitError,
    RetrysafeError,
    ServerError,
    UnexpectedResponseError,
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
    # backoff: full jitter at 0.5 of 0.5·2ⁿ; server-directed: Retry-After + 5 % jitter
    assert clock.sleeps == pytest.approx([0.25, 0.5, 2.1, 1.05, 3.15, 1.0])


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
