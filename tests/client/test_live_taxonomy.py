"""The failure taxonomy against the real server behind the fault proxy, sync and async alike.

Each case asserts what reached the server (attempts, keys), what the caller
got (result and its metadata, or the exception's verdict), and how many
objects exist afterwards, read from the server's own database.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from tests.support.fault_proxy import (
    Canned,
    Fault,
    FaultProxy,
    ReplaceAnswer,
    SlowAnswer,
    ThrottledRequest,
)

from retrysafe import Account, APITimeoutError, Client, LargeBodyPolicy

from ._helpers import AnyClient, resolve
from .conftest import LiveServer
from .test_live_faults import ACCOUNTS, INQUIRIES, org_accounts, posts, response_id

pytestmark = pytest.mark.slow

Connect = Callable[..., AnyClient]
T = TypeVar("T")

LB_502 = Canned(
    502,
    (("Content-Type", "text/html"), ("Server", "nginx")),
    b"<html><body><h1>502 Bad Gateway</h1></body></html>",
)
"""What a load balancer answers when its upstream connection fails: no envelope, no Request-Id."""


def eventually(read: Callable[[], list[T]], seconds: float = 15.0) -> list[T]:
    """``read()`` once it is not empty: the proxy records a cut request when it notices.

    It notices a throttled upload's end only after taking, at the throttled rate, what
    the client's kernel still held to send when it gave up: 3-4 s on a quiet machine,
    over 5 s with the suite's other worker busy beside it.
    """
    deadline = time.monotonic() + seconds
    while not (found := read()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def database_rows(server: LiveServer, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Rows straight from the server's SQLite file (read-only): what really exists."""
    path = server.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return connection.execute(sql, params).fetchall()


def documents_of(server: LiveServer, inquiry_id: str) -> int:
    [(count,)] = database_rows(
        server, "SELECT count(*) FROM documents WHERE inquiry_id = ?", inquiry_id
    )
    assert isinstance(count, int)
    return count


@pytest.fixture
def new_accounts(live_server: LiveServer) -> Callable[[], list[Account]]:
    before = {account.id for account in org_accounts(live_server)}
    return lambda: [a for a in org_accounts(live_server) if a.id not in before]


# -- a load balancer's 502 after the service committed ---------------------------------------


@pytest.mark.parametrize("retry_server_errors", [False, True])
async def test_lb_502_after_commit_is_retried_under_the_same_key_and_replayed(
    retry_server_errors: bool,
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    """The 502 never came from the service, so nothing was recorded *as* a 502: the same
    key replays the 201 the service committed — even with retry_server_errors, and
    without any reference_id to group by."""
    proxy.plan(ReplaceAnswer(LB_502), method="POST")
    client = relayed(retry_server_errors=retry_server_errors)
    account = await resolve(client.accounts.create(name_first="Behind the LB"))
    first, second = posts(proxy)
    assert (first.forwarded, second.forwarded) == (True, True)
    assert first.idempotency_key == second.idempotency_key
    assert (first.response_status, second.response_status) == (201, 201)
    assert (first.replayed, second.replayed) == (False, True)
    assert response_id(first) == account.id
    meta = account.last_response
    assert meta is not None
    assert (meta.replayed, meta.attempts, meta.idempotency_keys) == (
        True,
        2,
        (first.idempotency_key,),
    )
    assert [a.id for a in new_accounts()] == [account.id]


async def test_lb_502_on_an_inquiry_does_not_regroup_it_twice(
    relayed: Connect,
    proxy: FaultProxy,
    live_server: LiveServer,
) -> None:
    reference_id = f"user-{uuid.uuid4().hex[:8]}"
    proxy.plan(ReplaceAnswer(LB_502), method="POST")
    client = relayed(retry_server_errors=True)
    inquiry = await resolve(client.inquiries.create(reference_id=reference_id))
    first, second = posts(proxy, INQUIRIES)
    assert first.idempotency_key == second.idempotency_key
    assert second.replayed
    rows = database_rows(
        live_server, "SELECT id FROM inquiries WHERE reference_id = ?", reference_id
    )
    assert rows == [(inquiry.id,)]


# -- the deadline while bytes move -------------------------------------------------------------


@pytest.fixture
def big_scan(tmp_path: Path) -> Path:
    path = tmp_path / "scan.bin"
    path.write_bytes(os.urandom(6 * 1024 * 1024))
    return path


async def test_a_throttled_upload_ends_at_the_deadline_and_nothing_is_stored(
    relayed: Connect,
    proxy: FaultProxy,
    live_server: LiveServer,
    big_scan: Path,
) -> None:
    """6 MiB through a 1 MiB/s uplink would take 6 s; the 1 s deadline cuts it while it
    is still sending. The server got half a body: no document, and the same key later
    uploads it exactly once."""
    client = relayed()
    inquiry = await resolve(client.inquiries.create(reference_id=f"user-{uuid.uuid4().hex[:8]}"))
    proxy.plan(ThrottledRequest(1024 * 1024), method="POST")
    started = time.monotonic()
    with pytest.raises(APITimeoutError) as caught:
        await resolve(client.documents.upload(inquiry.id, big_scan, deadline=1.0))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed
    error = caught.value
    assert "the call's deadline of 1s passed while sending the request" in str(error)
    assert (error.may_have_executed, error.recorded, error.attempts) == (False, False, 1)
    [cut] = eventually(lambda: posts(proxy, f"{INQUIRIES}/{inquiry.id}/documents"))
    assert not cut.body_complete
    assert cut.idempotency_key == error.idempotency_key
    assert error.idempotency_keys == (cut.idempotency_key,)
    assert documents_of(live_server, inquiry.id) == 0

    document = await resolve(
        client.documents.upload(inquiry.id, big_scan, idempotency_key=error.idempotency_key)
    )
    assert document.sha256 == sha256_of(big_scan)
    assert documents_of(live_server, inquiry.id) == 1


async def test_a_trickling_answer_ends_at_the_deadline(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    """Each chunk beats the 10 s read timeout, so only the deadline can stop it; the create
    had committed, and the same key then returns that account."""
    proxy.plan(SlowAnswer(chunk_size=16, interval=0.1, body_only=True), method="POST")
    client = relayed(deadline=1.0)
    started = time.monotonic()
    with pytest.raises(APITimeoutError, match="passed while receiving the answer") as caught:
        await resolve(client.accounts.create(name_first="Trickle"))
    assert time.monotonic() - started < 2.0
    assert (caught.value.may_have_executed, caught.value.recorded) == (True, None)
    [sent] = posts(proxy)
    assert sent.response_status == 201
    [created] = new_accounts()
    again = await resolve(
        client.accounts.create(name_first="Trickle", idempotency_key=caught.value.idempotency_key)
    )
    assert again.id == created.id
    assert again.last_response is not None
    assert again.last_response.replayed
    assert len(new_accounts()) == 1


# -- a cut download resumes ---------------------------------------------------------------------


async def test_a_cut_download_resumes_with_range_and_arrives_intact(
    relayed: Connect,
    proxy: FaultProxy,
    live_server: LiveServer,
    tmp_path: Path,
) -> None:
    content = os.urandom(3 * 1024 * 1024 + 5)
    source = tmp_path / "passport.bin"
    source.write_bytes(content)
    client = relayed()
    inquiry = await resolve(client.inquiries.create(reference_id=f"user-{uuid.uuid4().hex[:8]}"))
    document = await resolve(client.documents.upload(inquiry.id, source))
    proxy.plan(Fault.TRUNCATE_ANSWER, method="GET")
    target = tmp_path / "copy.bin"
    written = await resolve(client.documents.download(document.id, target))
    assert written == len(content)
    assert sha256_of(target) == hashlib.sha256(content).hexdigest()
    assert names_in(tmp_path) == ["copy.bin", "passport.bin"]  # no partial file left
    cut, resumed = proxy.requests_to("GET", f"/api/v1/documents/{document.id}/content")
    assert "range" not in cut.headers
    assert resumed.headers["range"] == f"bytes={len(content) // 2}-"
    assert resumed.headers["if-range"] == f'"{hashlib.sha256(content).hexdigest()}"'
    assert resumed.response_status == 206
    assert len(resumed.response_body) == len(content) - len(content) // 2
    assert documents_of(live_server, inquiry.id) == 1


# -- what came back, and what went out -------------------------------------------------------------


async def test_metadata_and_raw_response_from_the_real_server(
    relayed: Connect,
    proxy: FaultProxy,
) -> None:
    client = relayed()
    proxy.plan(Fault.DROP_AFTER_RESPONSE, method="POST")
    account = await resolve(
        client.accounts.create(
            reference_id=f"user-{uuid.uuid4().hex[:8]}", extra_headers={"X-Trace": "t-9"}
        )
    )
    first, second = posts(proxy)
    assert (first.headers["x-trace"], second.headers["x-trace"]) == ("t-9", "t-9")
    assert (first.headers["retrysafe-retry-count"], second.headers["retrysafe-retry-count"]) == (
        "0",
        "1",
    )
    assert first.headers["user-agent"].startswith("retrysafe-python/")
    meta = account.last_response
    assert meta is not None
    assert meta.request_id == second.response_headers["request-id"]
    # The first answer was lost, so its Request-Id never reached the client.
    assert meta.request_ids == (second.response_headers["request-id"],)
    assert (meta.replayed, meta.attempts, meta.status_code) == (True, 2, 201)
    assert meta.rate_limit is not None
    assert meta.rate_limit.limit == 10000

    raw = await resolve(client.with_raw_response.inquiries.create(account_id=account.id))
    assert raw.status_code == 201
    inquiry = raw.parse()
    assert raw.headers["location"] == f"/api/v1/inquiries/{inquiry.id}"
    assert raw.request_id == raw.headers["request-id"]
    assert raw.metadata.quota is None  # the test organization has no inquiry quota


async def test_quota_headers_reach_the_metadata(connect: Connect, live_server: LiveServer) -> None:
    org = f"quota-{uuid.uuid4().hex[:8]}"
    live_server.run_cli("orgs", "create", org, "--inquiry-quota", "3")
    client = connect(live_server.url, live_server.create_key(org))
    inquiry = await resolve(client.inquiries.create(reference_id="q-1"))
    assert inquiry.last_response is not None
    quota = inquiry.last_response.quota
    assert quota is not None
    assert (quota.limit, quota.remaining) == (3, 2)


async def test_a_create_sent_as_a_form_fingerprints_like_its_json(
    flavor: str,
    connect: Connect,
    relayed: Connect,
    proxy: FaultProxy,
    live_server: LiveServer,
) -> None:
    """Past the threshold a create goes as multipart/form-data; the same key sent as JSON
    then replays it instead of being a mismatch — so the encoding never changes a key."""
    key = str(uuid.uuid4())
    reference_id = f"user-{uuid.uuid4().hex[:8]}"
    as_form = connect(
        proxy.url, live_server.api_key, large_bodies=LargeBodyPolicy(multipart_threshold=0)
    )
    made = await resolve(
        as_form.accounts.create(reference_id=reference_id, name_first="Émilie", idempotency_key=key)
    )
    as_json = relayed()
    again = await resolve(
        as_json.accounts.create(reference_id=reference_id, name_first="Émilie", idempotency_key=key)
    )
    form_post, json_post = posts(proxy)
    assert form_post.headers["content-type"].startswith("multipart/form-data")
    assert json_post.headers["content-type"] == "application/json"
    assert json.loads(json_post.body)["data"]["attributes"]["name_first"] == "Émilie"
    assert (form_post.response_status, json_post.response_status) == (201, 201)
    assert json_post.replayed
    assert again.id == made.id
    assert made.name_first == "Émilie"


def test_direct_client_sees_the_same_metadata_shape(live_server: LiveServer) -> None:
    """No proxy: the first answer's metadata names one attempt and one key."""
    with Client(live_server.api_key, base_url=live_server.url) as client:
        account = client.accounts.create(name_first="Direct")
    meta = account.last_response
    assert meta is not None
    assert (meta.attempts, meta.replayed, len(meta.idempotency_keys)) == (1, False, 1)
    assert meta.request_id is not None
    assert meta.request_id.startswith("req_")
    assert meta.headers["location"] == f"{ACCOUNTS}/{account.id}"
