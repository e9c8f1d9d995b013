"""The provider's behaviour behind any transport: one check per key, counted; faults on demand."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from retrysafe.provider.client import (
    CheckAnswer,
    InProcessProviderClient,
    ProviderFailed,
    ProviderTimedOut,
    parse_answer,
)
from retrysafe.provider.upstream import Answer, ReferenceProvider

CALL = {
    "kind": "database",
    "reference": "inq_1",
    "person": {"name_first": "Ada", "name_last": "Lovelace", "birthdate": "1990-12-10"},
    "documents": 0,
}
BODY = json.dumps(CALL).encode()


async def test_a_repeated_key_is_answered_from_the_record_without_a_second_check() -> None:
    provider = ReferenceProvider()
    first = await provider.handle("key-1", BODY)
    again = await provider.handle("key-1", BODY)
    assert first.status == 200
    assert again == first  # the same check id, byte for byte
    assert provider.checks_run == 1
    await provider.handle("key-2", BODY)
    await provider.handle(None, BODY)
    await provider.handle(None, BODY)
    assert provider.checks_run == 4
    assert json.loads(provider.stats().body) == {"checks_run": 4}


async def test_a_concurrent_duplicate_waits_for_the_first_answer() -> None:
    provider = ReferenceProvider(delay=0.2)
    answers = await asyncio.gather(*(provider.handle("key-1", BODY) for _ in range(5)))
    assert len({answer.body for answer in answers}) == 1
    assert provider.checks_run == 1


async def test_a_key_reused_with_another_body_is_refused() -> None:
    provider = ReferenceProvider()
    await provider.handle("key-1", BODY)
    other = await provider.handle("key-1", BODY.replace(b"Ada", b"Grace"))
    assert other.status == 422
    assert provider.checks_run == 1


async def test_the_check_is_counted_when_it_starts_not_when_it_answers() -> None:
    provider = ReferenceProvider(delay=30)
    task = asyncio.create_task(provider.handle("key-1", BODY))
    await asyncio.sleep(0)  # one turn: the task runs up to its delay
    assert provider.checks_run == 1
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The cancelled check left no record: the key runs a check again.
    provider.delay = 0
    assert (await provider.handle("key-1", BODY)).status == 200
    assert provider.checks_run == 2


async def test_full_fail_rate_answers_only_failures_and_runs_no_check() -> None:
    provider = ReferenceProvider(fail_rate=1.0, rng=random.Random(7))
    answers = [await provider.handle("key-1", BODY) for _ in range(20)]
    assert {answer.status for answer in answers} == {200, 500}  # both kinds of failure
    for answer in answers:
        with pytest.raises(ProviderFailed):
            parse_answer(answer)
    assert provider.checks_run == 0


async def test_a_body_that_is_not_a_check_is_400_and_not_counted() -> None:
    provider = ReferenceProvider()
    assert (await provider.handle("key-1", b"{")).status == 400
    assert provider.checks_run == 0


@pytest.mark.parametrize(("delay", "fail_rate"), [(-1.0, 0.0), (0.0, -0.1), (0.0, 1.5)])
def test_knobs_out_of_range_are_refused(delay: float, fail_rate: float) -> None:
    with pytest.raises(ValueError, match=r"delay|fail_rate"):
        ReferenceProvider(delay=delay, fail_rate=fail_rate)


@pytest.mark.parametrize(
    "answer",
    [
        Answer(500, b'{"error":"x"}'),
        Answer(200, b"<html>"),
        Answer(200, b"[]"),
        Answer(200, b'{"id":"chk_1","status":"maybe","reasons":[]}'),
        Answer(200, b'{"id":"chk_1","status":"passed","reasons":"none"}'),
        Answer(200, b'{"status":"passed","reasons":[]}'),
        Answer(200, b"\xff"),
    ],
)
def test_anything_but_a_check_result_is_a_provider_failure(answer: Answer) -> None:
    with pytest.raises(ProviderFailed):
        parse_answer(answer)


async def test_in_process_client_runs_the_same_code_and_keeps_its_timeout() -> None:
    provider = ReferenceProvider()
    client = InProcessProviderClient(provider, timeout=5)
    answer = await client.check(CALL, idempotency_key="k")
    assert answer == await client.check(CALL, idempotency_key="k")
    assert answer.status == "passed"
    assert CheckAnswer.from_json(answer.to_json()) == answer
    provider.delay = 1.0
    slow = InProcessProviderClient(provider, timeout=0.05)
    with pytest.raises(ProviderTimedOut):
        await slow.check(CALL, idempotency_key="other")
