"""Both clients against the real server over loopback, behind the fault-injecting proxy.

For every fault the tests check what reached the server (how many requests,
with which idempotency keys, whether the server replayed), what the caller
got, and that the server holds exactly the accounts it should: one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.support.fault_proxy import Canned, Fault, FaultProxy, RecordedRequest, ReplaceAnswer

from retrysafe import (
    Account,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    Client,
    ConflictError,
    IdempotencyMismatchError,
    InquiryStatus,
    InvalidStateTransitionError,
    NotFoundError,
    ServerError,
    UnprocessableEntityError,
)

from ._helpers import AnyClient, collect, resolve
from .conftest import LiveServer

pytestmark = pytest.mark.slow

Connect = Callable[..., AnyClient]
ACCOUNTS = "/api/v1/accounts"
INQUIRIES = "/api/v1/inquiries"


def org_accounts(server: LiveServer) -> list[Account]:
    """Every account of the test organization, read straight from the server (no proxy)."""
    with Client(server.api_key, base_url=server.url) as direct:
        return list(direct.accounts.list(page_size=100))


@pytest.fixture
def new_accounts(live_server: LiveServer) -> Callable[[], list[Account]]:
    """Accounts created since the test started; tests run one at a time against the server."""
    before = {account.id for account in org_accounts(live_server)}

    def created_since() -> list[Account]:
        return [account for account in org_accounts(live_server) if account.id not in before]

    return created_since


def posts(proxy: FaultProxy, path: str = ACCOUNTS) -> list[RecordedRequest]:
    return [
        record for record in proxy.requests_to("POST", path) if record.path.split("?")[0] == path
    ]


def response_id(record: RecordedRequest) -> str:
    return str(json.loads(record.response_body)["data"]["id"])


# -- no fault -----------------------------------------------------------------------------


async def test_relay_creates_exactly_once(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    client = relayed()
    account = await resolve(client.accounts.create(name_first="Ada", name_last="Lovelace"))
    [post] = posts(proxy)
    assert post.forwarded
    assert post.response_status == 201
    assert post.idempotency_key is not None
    assert uuid.UUID(post.idempotency_key).version == 4
    assert account.name_first == "Ada"
    assert [a.id for a in new_accounts()] == [account.id]


# -- the answer is lost after the server committed ----------------------------------------


@pytest.mark.parametrize("fault", [Fault.DROP_AFTER_RESPONSE, Fault.RESET, Fault.STALL])
async def test_answer_lost_after_commit_is_replayed_under_the_same_key(
    fault: Fault,
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    """The retry carries the first key, so the server replays its 201 instead of re-creating."""
    proxy.plan(fault, method="POST")
    client = relayed(timeout=httpx.Timeout(10.0, read=0.5))
    account = await resolve(client.accounts.create(name_first="Grace"))
    first, second = posts(proxy)
    assert (first.forwarded, second.forwarded) == (True, True)
    assert first.idempotency_key == second.idempotency_key
    assert (first.response_status, second.response_status) == (201, 201)
    assert (first.replayed, second.replayed) == (False, True)
    assert response_id(first) == response_id(second) == account.id
    assert [a.id for a in new_accounts()] == [account.id]


async def test_lost_answer_to_an_update_is_replayed(
    relayed: Connect,
    proxy: FaultProxy,
) -> None:
    client = relayed()
    account = await resolve(client.accounts.create(name_first="Ada"))
    proxy.plan(Fault.RESET, method="PATCH")
    updated = await resolve(client.accounts.update(account.id, name_last="Lovelace"))
    assert updated.name_last == "Lovelace"
    first, second = proxy.requests_to("PATCH", f"{ACCOUNTS}/{account.id}")
    assert first.idempotency_key == second.idempotency_key
    assert (first.replayed, second.replayed) == (False, True)


async def test_lost_answer_to_a_transition_is_replayed_not_refused(
    relayed: Connect,
    proxy: FaultProxy,
) -> None:
    """Running "complete" twice would be a 422 (completed → completed); the replay is a 200."""
    client = relayed()
    inquiry = await resolve(client.inquiries.create(reference_id=f"user-{uuid.uuid4().hex[:8]}"))
    proxy.plan(Fault.DROP_AFTER_RESPONSE, method="POST")
    completed = await resolve(client.inquiries.complete(inquiry.id))
    assert completed.status == InquiryStatus.COMPLETED
    first, second = posts(proxy, f"{INQUIRIES}/{inquiry.id}/complete")
    assert first.idempotency_key == second.idempotency_key
    assert (first.response_status, second.response_status) == (200, 200)
    assert second.replayed


async def test_reset_before_the_server_saw_it_runs_on_retry(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    proxy.plan(Fault.RESET_BEFORE_FORWARD, method="POST")
    client = relayed()
    account = await resolve(client.accounts.create(name_first="Edsger"))
    first, second = posts(proxy)
    assert (first.forwarded, second.forwarded) == (False, True)
    assert first.idempotency_key == second.idempotency_key
    assert not second.replayed
    assert [a.id for a in new_accounts()] == [account.id]


async def test_retries_exhausted_raise_but_the_key_still_makes_a_later_retry_safe(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    """Three lost answers: the caller gets APIConnectionError, the server holds one account,
    and calling again with the error's key returns that account."""
    proxy.plan(*[Fault.DROP_AFTER_RESPONSE] * 3, method="POST")
    client = relayed(max_retries=2)
    with pytest.raises(APIConnectionError) as caught:
        await resolve(client.accounts.create(name_first="Barbara"))
    sent = posts(proxy)
    assert len(sent) == 3
    assert {record.idempotency_key for record in sent} == {caught.value.idempotency_key}
    assert [record.replayed for record in sent] == [False, True, True]
    [created] = new_accounts()

    again = await resolve(
        client.accounts.create(name_first="Barbara", idempotency_key=caught.value.idempotency_key)
    )
    assert again.id == created.id
    assert posts(proxy)[-1].replayed
    assert [a.id for a in new_accounts()] == [created.id]


async def test_deadline_bounds_the_whole_call(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    """A stalled answer with a 10 s read timeout still ends at the 1 s deadline."""
    proxy.plan(Fault.STALL, method="POST")
    client = relayed(deadline=1.0)
    started = time.monotonic()
    with pytest.raises(APITimeoutError) as caught:
        await resolve(client.accounts.create(name_first="Alan"))
    assert time.monotonic() - started < 2.5
    assert "deadline of 1s passed while waiting for the answer" in str(caught.value)
    # The request reached the server whole: it may have run, and its answer may be recorded.
    assert (caught.value.may_have_executed, caught.value.recorded) == (True, None)
    [sent] = posts(proxy)
    assert caught.value.idempotency_keys == (sent.idempotency_key,)
    assert len(new_accounts()) == 1


# -- answers that say "come back later" ----------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        Canned.error(503, "service_unavailable", retry_after=0.1),
        Canned.error(429, "rate_limited", retry_after=0.1),
        Canned.error(409, "idempotency_request_in_progress", retry_after=0.1),
    ],
    ids=["503", "429", "409-in-flight"],
)
async def test_backpressure_is_waited_out_under_the_same_key(
    answer: Canned,
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    proxy.plan(answer, method="POST")
    client = relayed()
    account = await resolve(client.accounts.create(name_first="Katherine"))
    first, second = posts(proxy)
    assert (first.forwarded, second.forwarded) == (False, True)
    assert first.idempotency_key == second.idempotency_key
    assert [a.id for a in new_accounts()] == [account.id]


# -- 5xx: indeterminate ---------------------------------------------------------------------


async def test_server_error_after_commit_is_indeterminate_and_same_key_recovers(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    """The caller sees a 500 although the write happened: it is told the outcome is unknown,
    and retrying with the same key reveals it without writing twice."""
    proxy.plan(ReplaceAnswer(Canned.error(500, "internal_error")), method="POST")
    client = relayed()
    with pytest.raises(ServerError) as caught:
        await resolve(client.accounts.create(name_first="Hedy"))
    assert caught.value.indeterminate
    [sent] = posts(proxy)
    assert sent.idempotency_key == caught.value.idempotency_key
    [created] = new_accounts()

    again = await resolve(
        client.accounts.create(name_first="Hedy", idempotency_key=caught.value.idempotency_key)
    )
    assert again.id == created.id
    assert [a.id for a in new_accounts()] == [created.id]


async def test_server_error_before_the_server_is_raised_and_nothing_happened(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    proxy.plan(Canned.error(500, "internal_error"), method="POST")
    client = relayed()
    with pytest.raises(ServerError):
        await resolve(client.accounts.create(name_first="Radia"))
    assert [record.forwarded for record in posts(proxy)] == [False]
    assert new_accounts() == []


async def test_retry_server_errors_with_reference_id_groups_inquiries_under_one_account(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    """The opt-in retry uses a NEW key, so the inquiry is created twice — but both join the
    account with the caller's reference_id: one account, as the docs promise."""
    reference_id = f"user-{uuid.uuid4().hex[:8]}"
    proxy.plan(ReplaceAnswer(Canned.error(502, "bad_gateway")), method="POST")
    client = relayed(retry_server_errors=True)
    inquiry = await resolve(client.inquiries.create(reference_id=reference_id))
    first, second = posts(proxy, INQUIRIES)
    assert (first.forwarded, second.forwarded) == (True, True)
    assert first.idempotency_key != second.idempotency_key
    assert response_id(second) == inquiry.id
    inquiries = await collect(client.inquiries.list(reference_id=reference_id))
    assert len(inquiries) == 2
    assert len({found.account_id for found in inquiries}) == 1
    [account] = new_accounts()
    assert account.reference_id == reference_id
    assert inquiry.account_id == account.id


async def test_retry_server_errors_resolves_the_duplicate_to_the_account_it_made(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    """The 502 hid a commit; the new-key retry meets its reference_id (409 duplicate), and the
    client fetches that account instead of raising: one account, returned to the caller."""
    reference_id = f"user-{uuid.uuid4().hex[:8]}"
    proxy.plan(ReplaceAnswer(Canned.error(502, "bad_gateway")), method="POST")
    client = relayed(retry_server_errors=True)
    account = await resolve(client.accounts.create(reference_id=reference_id))
    first, second = posts(proxy)
    assert first.idempotency_key != second.idempotency_key
    assert (first.response_status, second.response_status) == (201, 409)
    [lookup] = proxy.requests_to("GET", ACCOUNTS)
    assert "reference_id" in lookup.path
    assert account.id == response_id(first)
    assert account.last_response is not None
    assert account.last_response.idempotency_keys == (
        first.idempotency_key,
        second.idempotency_key,
    )
    assert account.last_response.attempts == 3
    assert [a.id for a in new_accounts()] == [account.id]


async def test_client_wide_retry_server_errors_leaves_ungrouped_creates_alone(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    """Without a reference_id a second execution would be a second account: not retried."""
    proxy.plan(ReplaceAnswer(Canned.error(502, "bad_gateway")), method="POST")
    client = relayed(retry_server_errors=True)
    with pytest.raises(ServerError) as caught:
        await resolve(client.accounts.create(name_first="Once"))
    assert (caught.value.may_have_executed, caught.value.recorded) == (True, True)
    assert len(posts(proxy)) == 1
    assert len(new_accounts()) == 1


async def test_per_call_retry_server_errors_without_grouping_duplicates_the_write(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    """The hazard the docs warn about, asked for explicitly: a new key, two accounts."""
    proxy.plan(ReplaceAnswer(Canned.error(502, "bad_gateway")), method="POST")
    client = relayed()
    await resolve(client.accounts.create(name_first="Twice", retry_server_errors=True))
    first, second = posts(proxy)
    assert first.idempotency_key != second.idempotency_key
    assert len(new_accounts()) == 2


# -- errors that are the caller's -----------------------------------------------------------


async def test_unknown_key_is_401_at_once(connect: Connect, proxy: FaultProxy) -> None:
    client = connect(proxy.url, "rsk_key_nope.not-a-secret")
    with pytest.raises(AuthenticationError) as caught:
        await resolve(client.accounts.create(name_first="Eve"))
    assert caught.value.status_code == 401
    assert caught.value.request_id
    assert len(posts(proxy)) == 1


async def test_not_found_duplicate_mismatch_and_invalid_value_are_not_retried(
    relayed: Connect,
    proxy: FaultProxy,
    new_accounts: Callable[[], list[Account]],
) -> None:
    client = relayed()
    reference_id = f"user-{uuid.uuid4().hex[:8]}"
    key = str(uuid.uuid4())
    await resolve(client.accounts.create(reference_id=reference_id, idempotency_key=key))

    with pytest.raises(NotFoundError):
        await resolve(client.accounts.retrieve("act_does_not_exist"))
    with pytest.raises(ConflictError) as duplicate:
        await resolve(client.accounts.create(reference_id=reference_id))
    assert duplicate.value.code == "duplicate_resource"
    with pytest.raises(IdempotencyMismatchError):
        await resolve(client.accounts.create(reference_id=f"{reference_id}-x", idempotency_key=key))
    with pytest.raises(UnprocessableEntityError) as invalid:
        await resolve(client.accounts.create(birthdate="2999-01-01"))
    assert invalid.value.errors[0].pointer == "/data/attributes/birthdate"

    assert len(proxy.requests) == 5
    assert len(new_accounts()) == 1


# -- resources end to end --------------------------------------------------------------------


async def test_list_paginates_through_every_page(
    relayed: Connect,
    proxy: FaultProxy,
) -> None:
    client = relayed()
    created = [await resolve(client.accounts.create(name_first=f"n{i}")) for i in range(5)]
    listed = await collect(client.accounts.list(page_size=2))
    ids = [account.id for account in listed]
    assert len(ids) == len(set(ids))
    positions = [ids.index(account.id) for account in created]
    assert positions == sorted(positions, reverse=True)  # newest first
    assert len(proxy.requests_to("GET", ACCOUNTS)) >= 3


async def test_inquiry_lifecycle(
    relayed: Connect,
) -> None:
    client = relayed()
    reference_id = f"user-{uuid.uuid4().hex[:8]}"
    inquiry = await resolve(client.inquiries.create(reference_id=reference_id))
    assert inquiry.status == InquiryStatus.CREATED
    assert (await resolve(client.inquiries.complete(inquiry.id))).status == InquiryStatus.COMPLETED
    assert (await resolve(client.inquiries.approve(inquiry.id))).status == InquiryStatus.APPROVED
    with pytest.raises(InvalidStateTransitionError):
        await resolve(client.inquiries.decline(inquiry.id))
    assert (await resolve(client.inquiries.retrieve(inquiry.id))).status == InquiryStatus.APPROVED
    approved = await collect(client.inquiries.list(reference_id=reference_id, status="approved"))
    assert [found.id for found in approved] == [inquiry.id]


@pytest.fixture
def scan(tmp_path: Path) -> tuple[Path, bytes]:
    """A 300 kB file to upload, and its content."""
    content = os.urandom(300_000)
    path = tmp_path / "passport.bin"
    path.write_bytes(content)
    return path, content


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


async def test_document_upload_survives_a_lost_answer_and_downloads_intact(
    relayed: Connect,
    proxy: FaultProxy,
    scan: tuple[Path, bytes],
    tmp_path: Path,
) -> None:
    path, content = scan
    client = relayed()
    inquiry = await resolve(client.inquiries.create(reference_id=f"user-{uuid.uuid4().hex[:8]}"))
    proxy.plan(Fault.DROP_AFTER_RESPONSE, method="POST")
    document = await resolve(client.documents.upload(inquiry.id, path, kind="passport"))
    uploads = posts(proxy, f"{INQUIRIES}/{inquiry.id}/documents")
    assert len(uploads) == 2
    assert uploads[0].idempotency_key == uploads[1].idempotency_key
    assert uploads[1].replayed
    assert response_id(uploads[0]) == document.id
    assert document.size == len(content)
    assert document.sha256 == hashlib.sha256(content).hexdigest()
    assert (await resolve(client.documents.retrieve(document.id))).id == document.id

    target = tmp_path / "downloaded.bin"
    assert await resolve(client.documents.download(document.id, target)) == len(content)
    assert read_bytes(target) == content


# -- a real rate limit -------------------------------------------------------------------------


async def test_rate_limited_loop_finishes_without_errors_or_duplicates(
    connect: Connect, throttled_server: LiveServer
) -> None:
    """15 creates against 3 requests/second: every 429 is waited out under the same key."""
    prefix = uuid.uuid4().hex[:8]
    with FaultProxy("127.0.0.1", throttled_server.port) as proxy:
        client = connect(proxy.url, throttled_server.api_key)
        created = [
            await resolve(client.accounts.create(reference_id=f"{prefix}-{i}")) for i in range(15)
        ]
        sent = posts(proxy)
    assert 429 in [record.response_status for record in sent]
    by_key: dict[str | None, list[int | None]] = {}
    for record in sent:
        by_key.setdefault(record.idempotency_key, []).append(record.response_status)
    assert len(by_key) == 15
    for statuses in by_key.values():
        assert statuses[-1] == 201
        assert set(statuses[:-1]) <= {429}
    stored = [
        a for a in org_accounts(throttled_server) if (a.reference_id or "").startswith(prefix)
    ]
    assert sorted(a.id for a in stored) == sorted(a.id for a in created)
    assert len({a.reference_id for a in stored}) == 15
