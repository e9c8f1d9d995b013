"""Redis store: ``complete`` by the same lock token is idempotent, so a lost reply is not a 409.

A command is retried once when its connection fails (``from_url`` asks redis-py
for that, to survive a Redis restart, and the store's pipelined connection
retries as the client's ``Retry`` says). When the reply to ``complete`` is lost
after Redis ran it, the retry runs the script again on a record that is already
complete with this very response. Before the fix the fence failed there
(``LeaseLost``) and the client got 409 for a request that had succeeded. The
lost reply is tested on both paths: the pipelined connection and redis-py (for
a client the pipelined connection does not stand in for).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff, NoBackoff
from redis.exceptions import ConnectionError, TimeoutError
from tests.support.reply_dropping_proxy import ReplyDroppingProxy

from retrysafe.idempotency.decisions import Execute, LeaseLost, Replay
from retrysafe.idempotency.records import RecordKey, StoredResponse
from retrysafe.stores.redis import COMMAND_TIMEOUT, CONNECT_TIMEOUT, RedisIdempotencyStore

from .conftest import redis_store

pytestmark = pytest.mark.redis

KEY = RecordKey("org_a", "lost-reply")
TTL = 3600.0
MARKER = b"lost-reply-marker-7f3a"
CREATED = StoredResponse(201, b'{"data":{"id":"' + MARKER + b'"}}', "application/json", "/a/1")


@pytest.fixture
async def store() -> AsyncIterator[RedisIdempotencyStore]:
    async with redis_store() as store:
        yield store


@pytest.fixture
def proxy() -> Iterator[ReplyDroppingProxy]:
    with ReplyDroppingProxy("127.0.0.1", 6379) as proxy:
        yield proxy


@pytest.mark.parametrize(
    ("retry", "pipelined"),
    [
        pytest.param(Retry(NoBackoff(), 1), True, id="pipelined"),
        pytest.param(Retry(ConstantBackoff(0.01), 1), True, id="pipelined-backoff"),
        # A retry on more errors than the defaults is redis-py's to make: the store runs
        # its scripts there.
        pytest.param(
            Retry(NoBackoff(), 1, supported_errors=(ConnectionError, TimeoutError, OSError)),
            False,
            id="redis-py",
        ),
    ],
)
async def test_complete_whose_reply_is_lost_succeeds_on_the_automatic_retry(
    store: RedisIdempotencyStore, proxy: ReplyDroppingProxy, retry: Retry, pipelined: bool
) -> None:
    """The reply is really lost (a proxy drops it after Redis ran the script), the command
    is retried on a new connection, and ``complete`` still succeeds; the record replays."""
    client = Redis.from_url(
        proxy.url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        retry=retry,
    )
    through_proxy = RedisIdempotencyStore(client, lease_seconds=30, prefix=store.prefix)
    assert through_proxy.pipelined == pipelined
    try:
        async with through_proxy.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
            assert isinstance(decision, Execute)
            proxy.drop_reply_to(MARKER)  # only complete() carries the response body
            await decision.attempt.complete(CREATED)
    finally:
        await through_proxy.aclose()
    assert proxy.dropped == 1, "the proxy never lost a reply: the test proved nothing"
    assert proxy.connections >= 2, "the store did not reconnect to retry"
    async with store.attempt(KEY, "fp", now=1001, ttl=TTL) as replay:
        assert replay == Replay(CREATED)


async def test_a_second_complete_by_the_same_holder_is_accepted_only_with_the_same_answer(
    store: RedisIdempotencyStore,
) -> None:
    """The script run twice with one token: the same response is a no-op, another is refused."""
    other = StoredResponse(500, b'{"errors":[]}', "application/json")
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as decision:
        assert isinstance(decision, Execute)
        await decision.attempt.complete(CREATED)
        await decision.attempt.complete(CREATED)
        with pytest.raises(LeaseLost):
            await decision.attempt.complete(other)
    async with store.attempt(KEY, "fp", now=1001, ttl=TTL) as replay:
        assert replay == Replay(CREATED)


async def test_a_taken_over_holder_still_cannot_complete(store: RedisIdempotencyStore) -> None:
    """Idempotence is per token: a holder whose lease was taken over stays fenced off,
    even when it offers the very answer the new holder recorded."""
    async with store.attempt(KEY, "fp", now=1000, ttl=TTL) as slow:
        assert isinstance(slow, Execute)
        async with store.attempt(KEY, "fp", now=1000 + 31, ttl=TTL) as retry:
            assert isinstance(retry, Execute)
            await retry.attempt.complete(CREATED)
        with pytest.raises(LeaseLost):
            await slow.attempt.complete(CREATED)
    async with store.attempt(KEY, "fp", now=1000 + 32, ttl=TTL) as replay:
        assert replay == Replay(CREATED)
