"""What only the Redis store has to prove: fencing, leases, real expiry, outages, and its keys.

The contract every store keeps runs on Redis too (``test_store_contract.py``);
these tests cover what is particular to a store without transactions: a claim
is held by a lease from the start, a slow holder is fenced off by its token,
Redis's own TTL removes records, and an unreachable Redis is a 503, not a 500.
The per-request scripts run on the store's pipelined connection: a Redis that
never answers is a 503 within the command timeout, flushed scripts are loaded
again, and a client that connection cannot stand in for runs them on redis-py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, TimeoutError
from tests.pipeline.asgi_apps import client, read_body, send_json
from tests.support import redis_service
from tests.support.scripted_redis import ScriptedRedis
from tests.support.throwaway import ThrowawayRedis, free_port, skip_without_redis_binary

from retrysafe.asgi import Receive, Scope, Send
from retrysafe.idempotency.decisions import Execute, InFlight, LeaseLost, Replay
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.pipeline import PipelineConfig, build_pipeline
from retrysafe.pipeline.principal import Principal
from retrysafe.pipeline.rate_limit import RateLimiter
from retrysafe.stores.redis import RedisIdempotencyStore
from retrysafe.unavailable import StoreUnavailable

from .conftest import redis_store

pytestmark = pytest.mark.redis

KEY = RecordKey("org_a", "key-1")
CREATED = StoredResponse(201, b'{"data":{"id":"act_1"}}', "application/json", "/api/v1/accounts/1")
TTL = 3600.0
LEASE = 5.0


@pytest.fixture
async def store() -> AsyncIterator[RedisIdempotencyStore]:
    async with redis_store(lease_seconds=LEASE) as store:
        yield store


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    skip_without_redis_binary()
    with ThrowawayRedis() as server:
        yield server


async def _raw(store: RedisIdempotencyStore, key: RecordKey) -> dict[bytes, bytes]:
    client = Redis.from_url(redis_service.URL)
    try:
        return await client.hgetall(store.redis_key(key))  # type: ignore[no-any-return]
    finally:
        await client.aclose()


async def test_a_claim_is_leased_from_the_start_and_a_retry_takes_it_over(
    store: RedisIdempotencyStore,
) -> None:
    """A holder that dies without a word (no transaction rolls it back) frees the key by lease."""
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as first:
        assert isinstance(first, Execute)
        assert first.attempt.resumption.point is None
        # The process "dies" here: nothing completes or abandons the claim.
        external_key = first.attempt.resumption.external_key
        async with store.attempt(KEY, "fp", now=1000 + LEASE - 1, ttl=TTL) as early:
            assert isinstance(early, InFlight)
        async with store.attempt(KEY, "fp", now=1000 + LEASE + 1, ttl=TTL) as retry:
            assert isinstance(retry, Execute)
            assert retry.attempt.resumption.external_key == external_key
            await retry.attempt.complete(CREATED)
        await first.attempt.abandon()  # too late: the record is no longer its to free
    async with store.attempt(KEY, "fp", now=1000 + LEASE + 2, ttl=TTL) as decision:
        assert decision == Replay(CREATED)


async def test_a_slow_holder_cannot_complete_or_checkpoint_over_the_new_holder(
    store: RedisIdempotencyStore,
) -> None:
    """Fencing: the stale holder's writes raise LeaseLost and change nothing."""
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as stale:
        assert isinstance(stale, Execute)
        async with store.attempt(KEY, "fp", now=1000 + LEASE + 1, ttl=TTL) as fresh:
            assert isinstance(fresh, Execute)
            with pytest.raises(LeaseLost):
                await stale.attempt.checkpoint("charged", '{"late":true}', now=1000 + LEASE + 1)
            with pytest.raises(LeaseLost):
                await stale.attempt.complete(StoredResponse(500, b"late", "application/json"))
            await fresh.attempt.complete(CREATED)
    async with store.attempt(KEY, "fp", now=1000 + LEASE + 2, ttl=TTL) as decision:
        assert decision == Replay(CREATED)
    assert b"recovery_point" not in await _raw(store, KEY)


async def test_a_retry_after_a_crash_resumes_from_the_last_checkpoint(
    store: RedisIdempotencyStore,
) -> None:
    """Checkpoints renew the lease and carry point and data to whoever takes over."""
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as first:
        assert isinstance(first, Execute)
        external_key = first.attempt.resumption.external_key
        await first.attempt.checkpoint("requested", None, now=1003)
        await first.attempt.checkpoint("charged", '{"charge":"ch_1"}', now=1004)
        assert first.attempt.resumption.point == "charged"
        # The lease now runs from the last checkpoint, not from the claim.
        async with store.attempt(KEY, "fp", now=1000 + LEASE + 1, ttl=TTL) as during:
            assert isinstance(during, InFlight)
        async with store.attempt(KEY, "fp", now=1004 + LEASE + 1, ttl=TTL) as retry:
            assert isinstance(retry, Execute)
            assert retry.attempt.resumption.point == "charged"
            assert retry.attempt.resumption.data == '{"charge":"ch_1"}'
            assert retry.attempt.resumption.external_key == external_key
            await retry.attempt.complete(CREATED)


async def test_abandon_after_a_checkpoint_releases_the_lease_and_keeps_the_point(
    store: RedisIdempotencyStore,
) -> None:
    """The next retry takes over at once (no lease to wait for) and resumes."""
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as first:
        assert isinstance(first, Execute)
        await first.attempt.checkpoint("charged", "{}", now=1000)
        await first.attempt.abandon()
    async with store.attempt(KEY, "fp", now=1001, ttl=TTL) as retry:
        assert isinstance(retry, Execute)
        assert retry.attempt.resumption.point == "charged"
        assert retry.attempt.resumption.data == "{}"
        await retry.attempt.complete(CREATED)


async def test_checkpoint_without_data_clears_earlier_data(store: RedisIdempotencyStore) -> None:
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as first:
        assert isinstance(first, Execute)
        await first.attempt.checkpoint("one", "data", now=1000)
        await first.attempt.checkpoint("two", None, now=1000)
        await first.attempt.abandon()
    async with store.attempt(KEY, "fp", now=1001, ttl=TTL) as retry:
        assert isinstance(retry, Execute)
        assert (retry.attempt.resumption.point, retry.attempt.resumption.data) == ("two", None)


async def test_two_takers_of_one_expired_lease_never_both_execute(
    store: RedisIdempotencyStore,
) -> None:
    """The take-over is a compare-and-set on the stale token: exactly one wins."""
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as first:
        assert isinstance(first, Execute)
        other = RedisIdempotencyStore.from_url(
            redis_service.URL, lease_seconds=LEASE, prefix=store.prefix
        )
        try:

            async def take(s: RedisIdempotencyStore) -> str:
                async with s.attempt(KEY, "fp", now=1000 + LEASE + 1, ttl=TTL) as decision:
                    if isinstance(decision, Execute):
                        await asyncio.sleep(0.02)
                        await decision.attempt.complete(CREATED)
                    return type(decision).__name__

            outcomes = await asyncio.gather(*(take((store, other)[i % 2]) for i in range(20)))
        finally:
            await other.aclose()
        await first.attempt.abandon()
    assert outcomes.count("Execute") == 1
    assert set(outcomes) <= {"Execute", "InFlight", "Replay"}


class _Lockstep(RedisIdempotencyStore):
    """Holds the first two claims until both have read the record: the race, made certain."""

    def __init__(self, client: Redis, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.barrier = asyncio.Barrier(2)
        self.claims = 0

    async def _run(self, script: Any, keys: list[str], args: list[str]) -> Any:
        result = await super()._run(script, keys, args)
        if script is self._claim:
            self.claims += 1
            if self.claims <= 2:
                await asyncio.wait_for(self.barrier.wait(), timeout=5)
        return result


async def test_two_takers_that_both_judged_the_lease_expired_cannot_both_take_it(
    store: RedisIdempotencyStore,
) -> None:
    """Both read the stale record before either writes; the compare-and-set lets one win."""
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as first:
        assert isinstance(first, Execute)
        racing = _Lockstep(
            Redis.from_url(redis_service.URL), lease_seconds=LEASE, prefix=store.prefix
        )
        try:

            async def take() -> str:
                async with racing.attempt(KEY, "fp", now=1000 + LEASE + 1, ttl=TTL) as decision:
                    if isinstance(decision, Execute):
                        await decision.attempt.complete(CREATED)
                    return type(decision).__name__

            outcomes = sorted(await asyncio.gather(take(), take()))
        finally:
            await racing.aclose()
        await first.attempt.abandon()
    assert racing.claims == 3  # the loser read the record again after losing
    assert outcomes in (["Execute", "InFlight"], ["Execute", "Replay"])


async def test_redis_expires_records_by_itself(store: RedisIdempotencyStore) -> None:
    """Each key carries a TTL covering its expiry and its lease; Redis deletes it then."""
    short = RedisIdempotencyStore.from_url(
        redis_service.URL, lease_seconds=0.2, prefix=store.prefix
    )
    try:
        async with short.attempt(KEY, "fp", now=time.time(), ttl=0.2) as decision:
            assert isinstance(decision, Execute)
            await decision.attempt.complete(CREATED)
        assert await _raw(store, KEY)
        deadline = time.monotonic() + 10
        while await _raw(store, KEY):
            assert time.monotonic() < deadline, "Redis never expired the record"
            await asyncio.sleep(0.05)
    finally:
        await short.aclose()


async def test_purge_keeps_records_under_a_lease(store: RedisIdempotencyStore) -> None:
    """An expired record whose holder still runs is not purged from under it."""
    async with store.attempt(KEY, "fp", now=1000, ttl=1) as running:
        assert isinstance(running, Execute)
        assert await store.purge_expired(now=1002) == 0
        assert await store.purge_expired(now=1000 + LEASE + 1) == 1
        with pytest.raises(LeaseLost):
            await running.attempt.complete(CREATED)


async def test_keys_are_namespaced_by_organization_and_never_hold_the_raw_key(
    store: RedisIdempotencyStore,
) -> None:
    """``org:key`` pairs that concatenate alike still get two Redis keys."""
    first, second = RecordKey("a:b", "c"), RecordKey("a", "b:c")
    assert store.redis_key(first) != store.redis_key(second)
    assert store.redis_key(first).startswith(store.prefix + "a:b:")
    secret = RecordKey("org_a", "customer-secret-key")
    assert "customer-secret-key" not in store.redis_key(secret)


async def test_unreachable_redis_is_store_unavailable_at_once() -> None:
    """Nothing listens on the port: the claim fails fast with the 503 error, not a 500."""
    store = RedisIdempotencyStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreUnavailable, match="Redis"):
            async with store.attempt(KEY, "fp", now=1000, ttl=TTL):
                pass
        with pytest.raises(StoreUnavailable):
            await store.purge_expired(now=1000)
    finally:
        await store.aclose()


async def test_the_store_recovers_when_redis_comes_back(throwaway_redis: ThrowawayRedis) -> None:
    """Redis stopped under a live client: 503s meanwhile, and the same client works after."""
    store = RedisIdempotencyStore.from_url(throwaway_redis.url, lease_seconds=LEASE)
    try:
        async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
            assert isinstance(decision, Execute)
            throwaway_redis.stop()
            with pytest.raises(StoreUnavailable):
                await decision.attempt.complete(CREATED)
        with pytest.raises(StoreUnavailable):
            async with store.attempt(KEY, "fp", now=1001, ttl=TTL):
                pass
        throwaway_redis.start()  # an empty Redis: nothing was persisted
        async with store.attempt(KEY, "fp", now=1002, ttl=TTL) as decision:
            assert isinstance(decision, Execute)
            await decision.attempt.complete(CREATED)
        async with store.attempt(KEY, "fp", now=1003, ttl=TTL) as decision:
            assert decision == Replay(CREATED)
    finally:
        await store.aclose()


async def test_a_pipeline_without_a_database_runs_a_key_once_across_two_processes(
    store: RedisIdempotencyStore,
) -> None:
    """Two pipelines (two processes' worth) on one Redis: 20 racing duplicates, one execution."""
    executed: list[int] = []
    release = asyncio.Event()

    async def create(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        executed.append(1)
        await release.wait()
        await send_json(send, 201, {"id": f"thing_{len(executed)}"})

    async def authenticate(secret: str) -> Principal | None:
        return Principal("org_1", "key_1", frozenset()) if secret == "good" else None

    other = RedisIdempotencyStore.from_url(redis_service.URL, prefix=store.prefix)
    apps = [
        build_pipeline(
            create,
            config=PipelineConfig(),
            authenticator=authenticate,
            idempotency_store=each,
            rate_limiter=RateLimiter.from_settings("1000/second"),
        )
        for each in (store, other)
    ]
    headers = {"authorization": "Bearer good", "idempotency-key": "order-7"}
    try:
        async with client(apps[0]) as first, client(apps[1]) as second:

            async def post(http: httpx.AsyncClient) -> httpx.Response:
                return await http.post("/things", json={"amount": 7}, headers=headers)

            racing = [asyncio.create_task(post((first, second)[i % 2])) for i in range(20)]
            # The one that runs is held; every duplicate must be answered meanwhile.
            pending = set(racing)
            while len(pending) > 1:
                done, pending = await asyncio.wait(
                    pending, timeout=10, return_when=asyncio.FIRST_COMPLETED
                )
                assert done, "a duplicate was left waiting behind the running request"
            release.set()
            answers = await asyncio.gather(*racing)
            replay = await post(second)
    finally:
        await other.aclose()
    assert len(executed) == 1
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] + [409] * 19
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == {"id": "thing_1"}


# The pipelined connection under the store


async def test_the_store_on_a_silent_server_answers_503_within_the_timeout() -> None:
    """Redis accepts and never answers: 503 within the command timeout, its retry included."""
    async with ScriptedRedis() as scripted:
        scripted.silent = True
        await _claim_on_silent(scripted)


async def _claim_on_silent(scripted: ScriptedRedis) -> None:
    client = Redis.from_url(scripted.url, socket_timeout=0.3, retry=Retry(NoBackoff(), 1))
    store = RedisIdempotencyStore(client)
    assert store.pipelined
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            async with store.attempt(KEY, "fp", now=1000, ttl=TTL):
                pass
        assert time.monotonic() - started < 0.3 + 0.25
    finally:
        await store.aclose()


async def test_a_claim_after_script_flush_loads_the_script_again(
    store: RedisIdempotencyStore,
) -> None:
    """Redis restarted or flushed its scripts: NOSCRIPT, then EVAL, and the claim stands."""
    admin = Redis.from_url(redis_service.URL)
    assert store.pipelined
    try:
        async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
            assert isinstance(decision, Execute)
            await admin.script_flush()
            await decision.attempt.complete(CREATED)
        await admin.script_flush()
        async with store.attempt(KEY, "fp", now=1001, ttl=TTL) as replay:
            assert replay == Replay(CREATED)
        [cached] = await admin.script_exists(store._claim.sha)
        assert cached  # EVAL cached it: the next claim is an EVALSHA again
    finally:
        await admin.aclose()


async def test_a_store_on_a_client_it_cannot_pipeline_still_works_through_redis_py(
    store: RedisIdempotencyStore,
) -> None:
    """The fallback: redis-py runs the same scripts (here: a retry on more errors than the
    pipelined connection knows how to retry)."""
    retry = Retry(NoBackoff(), 1, supported_errors=(ConnectionError, TimeoutError, OSError))
    fallback = RedisIdempotencyStore(
        Redis(host="127.0.0.1", port=6379, retry=retry), prefix=store.prefix
    )
    assert not fallback.pipelined
    try:
        async with fallback.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
            assert isinstance(decision, Execute)
            await decision.attempt.complete(CREATED)
        async with fallback.attempt(KEY, "fp", now=1001, ttl=TTL) as replay:
            assert replay == Replay(CREATED)
    finally:
        await fallback.aclose()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(lambda port: f"redis://127.0.0.1:{port}/0", id="refused"),
        pytest.param(lambda port: "redis://:wrong-password@127.0.0.1:6379/0", id="auth-refused"),
    ],
)
async def test_a_pipelined_store_that_cannot_connect_is_store_unavailable(
    store: RedisIdempotencyStore, url: Callable[[int], str]
) -> None:
    """Nothing listens, or Redis refuses the handshake: 503, as on redis-py."""
    failing = RedisIdempotencyStore.from_url(url(free_port()), prefix=store.prefix)
    assert failing.pipelined
    try:
        with pytest.raises(StoreUnavailable, match="Redis"):
            async with failing.attempt(KEY, "fp", now=1000, ttl=TTL):
                pass
    finally:
        await failing.aclose()
