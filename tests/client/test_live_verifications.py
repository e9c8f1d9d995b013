"""``client.verifications.create`` against the real server (its in-process provider)."""

from __future__ import annotations

import uuid

import pytest
from tests.support.fault_proxy import Fault, FaultProxy

from ._helpers import resolve
from .conftest import LiveServer
from .test_live_faults import Connect


async def test_a_verification_is_created_with_the_providers_verdict(
    connect: Connect, live_server: LiveServer
) -> None:
    client = connect(live_server.url, live_server.api_key)
    reference = f"user-{uuid.uuid4().hex[:8]}"
    await resolve(
        client.accounts.create(
            reference_id=reference, name_first="Ada", name_last="Lovelace", birthdate="1990-12-10"
        )
    )
    inquiry = await resolve(client.inquiries.create(reference_id=reference))
    passed = await resolve(client.verifications.create(inquiry.id))
    assert passed.id.startswith("ver_")
    assert (passed.inquiry_id, passed.kind, passed.status, passed.reasons) == (
        inquiry.id,
        "database",
        "passed",
        (),
    )
    failed = await resolve(client.verifications.create(inquiry.id, kind="document"))
    assert (failed.status, failed.reasons) == ("failed", ("document_missing",))
    assert failed.created_at is not None


@pytest.mark.parametrize("fault", [Fault.DROP_AFTER_RESPONSE, Fault.RESET])
async def test_a_lost_answer_is_retried_under_the_same_key_and_replayed(
    fault: Fault, connect: Connect, proxy: FaultProxy, live_server: LiveServer
) -> None:
    """The SDK's retry carries the first key: the same verification comes back, no second one."""
    client = connect(proxy.url, live_server.api_key)
    inquiry = await resolve(client.inquiries.create(reference_id=f"user-{uuid.uuid4().hex[:8]}"))
    proxy.plan(fault, method="POST")
    verification = await resolve(client.verifications.create(inquiry.id, idempotency_key=None))
    first, second = proxy.requests_to("POST", f"/api/v1/inquiries/{inquiry.id}/verifications")
    assert first.idempotency_key == second.idempotency_key
    assert (first.replayed, second.replayed) == (False, True)
    again = await resolve(
        client.verifications.create(inquiry.id, idempotency_key=first.idempotency_key)
    )
    assert again == verification
