"""Model-based test: random request sequences against every store, checked against a tiny model.

Hypothesis drives a :class:`RuleBasedStateMachine` through new keys, replays,
mismatches, concurrent duplicates while a key is in flight, crashes before the
commit (leaving the attempt with an exception), abandons, the clock moving past
the TTL and purges. After every step the store's decision must be the one the
reference model predicts: a dict of live records, nothing more.

The stores come from the ``store`` fixture of ``tests/stores/conftest.py``, so a
store added there (Redis, a leased variant) is checked here without any change.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from tests.stores.conftest import store  # noqa: F401  (the fixture this module runs on)

from retrysafe.idempotency.decisions import Decision, Execute, InFlight, Mismatch, Replay
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.idempotency.store import IdempotencyStore

T = TypeVar("T")

TTL = 100
"""Seconds a record lives; the clock moves by steps chosen to land on and around it."""

STEP_TIMEOUT = 30.0
"""A store call that hangs (a lock never released) fails the test instead of hanging it."""

MODEL_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    derandomize=True,  # the same sequences on every run: CI failures reproduce locally
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

ORGS = ("org_a", "org_b")
KEYS = ("k1", "k2", "k3")
FINGERPRINTS = ("fp-1", "fp-2")
OUTCOMES = ("complete", "abandon", "crash")
STATUSES = (201, 200, 400, 404, 409, 422, 500)


class HandlerCrash(Exception):
    """Raised inside an attempt, as a process dying before its commit would leave it."""


@dataclass(frozen=True, slots=True)
class ModelRecord:
    fingerprint: str
    response: StoredResponse
    expires_at: int


class IdempotencyModel(RuleBasedStateMachine):
    """The reference model: ``records`` holds what a store must replay, keyed per organization.

    Each run uses its own organization ids, so records of earlier runs on the same
    store (the fixture lives for the whole test) can never collide with this one's.
    """

    def __init__(self, target: IdempotencyStore, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.store = target
        self.loop = loop
        self.now = 1_000_000
        self.records: dict[RecordKey, ModelRecord] = {}
        self.namespace = uuid.uuid4().hex[:8]
        self.counter = itertools.count()

    # -- helpers -------------------------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the test's event loop, where the store's connections live."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(STEP_TIMEOUT)

    def key(self, org: str, name: str) -> RecordKey:
        return RecordKey(f"{org}-{self.namespace}", name)

    def live(self, key: RecordKey) -> ModelRecord | None:
        record = self.records.get(key)
        return record if record is not None and self.now < record.expires_at else None

    def response(self, status: int) -> StoredResponse:
        # A unique body per response, so a replay of the wrong record cannot pass.
        number = next(self.counter)
        body = b'{"n":%d,"bytes":"\\u00e9\x00\xff"}' % number
        location = f"/api/v1/accounts/act_{number}" if status == 201 else None
        return StoredResponse(status, body, "application/json", location)

    def expect(self, key: RecordKey, fingerprint: str, decision: Decision) -> bool:
        """Check ``decision`` against the model; True when the request was told to execute."""
        record = self.live(key)
        if record is None:
            assert isinstance(decision, Execute), f"new or expired key {key}: got {decision}"
            return True
        if record.fingerprint != fingerprint:
            assert isinstance(decision, Mismatch), f"{key} reused with another body: {decision}"
        else:
            assert decision == Replay(record.response), f"{key} must replay: {decision}"
        return False

    def settle(
        self, key: RecordKey, fingerprint: str, outcome: str, response: StoredResponse
    ) -> None:
        if outcome == "complete":
            self.records[key] = ModelRecord(fingerprint, response, self.now + TTL)
        # An abandoned or crashed attempt leaves the key as it found it: free.

    # -- rules ---------------------------------------------------------------

    @rule(
        org=st.sampled_from(ORGS),
        name=st.sampled_from(KEYS),
        fingerprint=st.sampled_from(FINGERPRINTS),
        outcome=st.sampled_from(OUTCOMES),
        status=st.sampled_from(STATUSES),
    )
    def request(self, org: str, name: str, fingerprint: str, outcome: str, status: int) -> None:
        """One request: a new key executes, a known one replays or mismatches."""
        key = self.key(org, name)
        response = self.response(status)
        decision = self.run(attempt(self.store, key, fingerprint, self.now, outcome, response))
        if self.expect(key, fingerprint, decision):
            self.settle(key, fingerprint, outcome, response)

    @rule(
        org=st.sampled_from(ORGS),
        name=st.sampled_from(KEYS),
        fingerprint=st.sampled_from(FINGERPRINTS),
        duplicate_fingerprint=st.sampled_from(FINGERPRINTS),
        outcome=st.sampled_from(OUTCOMES),
        status=st.sampled_from(STATUSES),
    )
    def concurrent_duplicate(
        self,
        org: str,
        name: str,
        fingerprint: str,
        duplicate_fingerprint: str,
        outcome: str,
        status: int,
    ) -> None:
        """A second request with the key arrives while the first one is still executing.

        The same request must be told it is in flight, never to execute. A different
        one may be told either: a store that can read the running claim (memory)
        says mismatch, one whose claim is an uncommitted row (SQL) cannot see the
        fingerprint and says in flight. Both keep it from running.
        """
        key = self.key(org, name)
        response = self.response(status)
        decision, duplicate = self.run(
            attempt_with_duplicate(
                self.store, key, fingerprint, duplicate_fingerprint, self.now, outcome, response
            )
        )
        if not self.expect(key, fingerprint, decision):
            return
        assert duplicate is not None
        if duplicate_fingerprint == fingerprint:
            assert isinstance(duplicate, InFlight), f"duplicate of running {key}: {duplicate}"
        else:
            assert isinstance(duplicate, InFlight | Mismatch), f"while {key} runs: {duplicate}"
        if isinstance(duplicate, InFlight):
            assert duplicate.retry_after >= 1
        self.settle(key, fingerprint, outcome, response)

    @rule(seconds=st.sampled_from((1, TTL // 2, TTL - 1, TTL, TTL + 1, 3 * TTL)))
    def advance_clock(self, seconds: int) -> None:
        """Time passes; records older than the TTL are gone, and their keys are new again."""
        self.now += seconds

    @rule()
    def purge(self) -> None:
        """Purging removes only expired records: every live one still replays afterwards."""
        purged = self.run(self.store.purge_expired(float(self.now)))
        assert purged >= 0
        self.records = {key: record for key, record in self.records.items() if self.live(key)}

    @rule(org=st.sampled_from(ORGS), name=st.sampled_from(KEYS))
    def replay_is_byte_identical(self, org: str, name: str) -> None:
        """Asking again with the recorded request replays it exactly (or executes a free key)."""
        key = self.key(org, name)
        record = self.live(key)
        fingerprint = record.fingerprint if record is not None else FINGERPRINTS[0]
        response = self.response(201)
        decision = self.run(attempt(self.store, key, fingerprint, self.now, "abandon", response))
        self.expect(key, fingerprint, decision)


async def attempt(
    target: IdempotencyStore,
    key: RecordKey,
    fingerprint: str,
    now: int,
    outcome: str,
    response: StoredResponse,
) -> Decision:
    """One request through the store, settled by ``outcome`` if it is told to execute."""
    try:
        async with target.attempt(key, fingerprint, now=float(now), ttl=float(TTL)) as decision:
            if isinstance(decision, Execute):
                await _settle(decision, outcome, response)
    except HandlerCrash:
        pass
    return decision


async def attempt_with_duplicate(
    target: IdempotencyStore,
    key: RecordKey,
    fingerprint: str,
    duplicate_fingerprint: str,
    now: int,
    outcome: str,
    response: StoredResponse,
) -> tuple[Decision, Decision | None]:
    """Like :func:`attempt`, with a second attempt on the key made while the first executes."""
    duplicate: Decision | None = None
    try:
        async with target.attempt(key, fingerprint, now=float(now), ttl=float(TTL)) as decision:
            if isinstance(decision, Execute):
                async with target.attempt(
                    key, duplicate_fingerprint, now=float(now), ttl=float(TTL)
                ) as duplicate:
                    if isinstance(duplicate, Execute):
                        # Settle it so the failure below is about the double execution only.
                        await duplicate.attempt.abandon()
                await _settle(decision, outcome, response)
    except HandlerCrash:
        pass
    return decision, duplicate


async def _settle(decision: Execute, outcome: str, response: StoredResponse) -> None:
    if outcome == "complete":
        await decision.attempt.complete(response)
    elif outcome == "abandon":
        await decision.attempt.abandon()
    else:
        raise HandlerCrash("the process died before its commit")


async def test_store_behaves_like_the_model(store: IdempotencyStore) -> None:  # noqa: F811
    """Every store gives the model's decision at every step of every generated sequence."""
    loop = asyncio.get_running_loop()
    # Hypothesis runs in a worker thread and hands each store call back to this
    # loop, which owns the store's connections; the loop stays free meanwhile.
    await asyncio.to_thread(
        run_state_machine_as_test,
        lambda: IdempotencyModel(store, loop),
        settings=MODEL_SETTINGS,
    )


async def test_error_answer_for_an_expired_key_is_recorded(
    store: IdempotencyStore,  # noqa: F811
) -> None:
    """The shortest sequence the model found: expire a record, answer the key with a 400, retry.

    The retry must replay the 400; executing again would run a request twice. (The SQL
    store used to lose that answer: rolling back the claim restored the expired row,
    and an INSERT ... DO NOTHING then recorded nothing.)
    """
    key = RecordKey("org-" + uuid.uuid4().hex[:8], "k1")
    created = StoredResponse(201, b"created", "application/json", "/api/v1/accounts/act_1")
    refused = StoredResponse(400, b"refused", "application/json")
    assert isinstance(await attempt(store, key, "fp", 1000, "complete", created), Execute)
    expired_at = 1000 + TTL
    assert isinstance(await attempt(store, key, "fp", expired_at, "complete", refused), Execute)
    assert await attempt(store, key, "fp", expired_at + 1, "abandon", created) == Replay(refused)
