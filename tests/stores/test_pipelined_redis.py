"""The Redis store's pipelined connection: replies in order, failures never left hanging.

Most tests run against a scripted stand-in (``tests/support/scripted_redis.py``)
that holds replies, resets connections or never answers, which a real Redis will
not do on cue; the rest run on the shared Redis (marked ``redis``). Each case a
real Redis would hide is here: a caller cancelled while its command is in flight
(its reply must be dropped, not handed to the next caller), a connection reset
with commands unanswered (every one retried once or failed), a server that stops
answering (a timeout within the command timeout, retry included), and the
clients this connection cannot stand in for. What the store makes of it (503s,
NOSCRIPT, the fallback to redis-py) is in ``test_redis_store.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import uvloop
from redis.asyncio import Redis, RedisCluster, Sentinel
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff, ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError, ResponseError, TimeoutError
from tests.support import redis_service
from tests.support.scripted_redis import ScriptedRedis
from tests.support.throwaway import free_port

from retrysafe.stores.pipelined_redis import PipelinedRedis, PipelineSettings

HANG_GUARD = 10.0
"""Seconds after which a test counts a command as hung (far above any timeout used here)."""


def pipeline_for(url: str, **client_options: object) -> PipelinedRedis:
    """A pipelined connection with the settings of ``Redis.from_url(url, **client_options)``."""
    settings = PipelineSettings.from_client(Redis.from_url(url, **client_options))
    assert settings is not None
    return PipelinedRedis(settings)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedRedis]:
    async with ScriptedRedis() as server:
        yield server


@pytest.fixture
async def shared_redis() -> None:
    if not await redis_service.reachable():
        pytest.skip(redis_service.SKIP_REASON)


def _tasks_besides_this_one() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def _echoes(pipeline: PipelinedRedis, values: list[str]) -> list[object]:
    return await asyncio.wait_for(
        asyncio.gather(*(pipeline.execute("ECHO", value) for value in values)), HANG_GUARD
    )


# Order


@pytest.mark.redis
async def test_200_concurrent_callers_each_get_their_own_reply(shared_redis: None) -> None:
    """All 200 commands leave in one turn, share one connection, and come back in order."""
    pipeline = pipeline_for(redis_service.URL)
    try:
        values = [f"caller-{i}" for i in range(200)]
        assert await _echoes(pipeline, values) == [value.encode() for value in values]
        # Again on the warm connection, and with replies of different lengths.
        values = ["x" * (i * 37 % 500) + str(i) for i in range(200)]
        assert await _echoes(pipeline, values) == [value.encode() for value in values]
    finally:
        await pipeline.aclose()


async def test_a_caller_cancelled_in_flight_does_not_take_the_next_callers_reply(
    scripted: ScriptedRedis,
) -> None:
    """The cancelled command's reply still arrives; it is consumed and dropped with it."""
    pipeline = pipeline_for(scripted.url)
    try:
        assert await pipeline.execute("ECHO", "warm") == b"warm"
        scripted.hold = asyncio.Event()
        first = asyncio.create_task(pipeline.execute("ECHO", "first"))
        cancelled = asyncio.create_task(pipeline.execute("ECHO", "cancelled"))
        third = asyncio.create_task(pipeline.execute("ECHO", "third"))
        await scripted.received(4)  # all three are on the wire (after "warm"), none answered
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        later = asyncio.create_task(pipeline.execute("ECHO", "later"))
        await asyncio.sleep(0.05)
        scripted.hold.set()
        replies = await asyncio.wait_for(asyncio.gather(first, third, later), HANG_GUARD)
        assert replies == [b"first", b"third", b"later"]
        assert await pipeline.execute("ECHO", "after") == b"after"
        assert scripted.connections == 1
    finally:
        await pipeline.aclose()


@pytest.mark.redis
def test_order_holds_under_uvloop_with_cancellations(shared_redis: None) -> None:
    """uvloop (what ``retrysafe serve`` runs) with every third caller cancelled at once."""

    async def run() -> list[object]:
        pipeline = pipeline_for(redis_service.URL)
        try:
            await pipeline.execute("ECHO", "connected")  # so the 300 are on the wire at once
            tasks = [asyncio.create_task(pipeline.execute("ECHO", str(i))) for i in range(300)]
            await asyncio.sleep(0)  # every task has sent its command; no reply has been read
            for task in tasks[::3]:
                task.cancel()
            done = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), HANG_GUARD
            )
            after = await pipeline.execute("ECHO", "after")
            return [*(reply for i, reply in enumerate(done) if i % 3), after]
        finally:
            await pipeline.aclose()

    replies = uvloop.run(run())
    expected = [str(i).encode() for i in range(300) if i % 3]
    assert replies == [*expected, b"after"]


# A connection lost with commands in flight


async def test_a_reset_with_commands_in_flight_retries_every_one_once(
    scripted: ScriptedRedis,
) -> None:
    """The first connection is reset after 20 commands, none answered: all 20 come back
    from a second connection, each sent there once."""
    scripted.reset_after = 20
    pipeline = pipeline_for(scripted.url, retry=Retry(NoBackoff(), 1))
    try:
        values = [f"v{i}" for i in range(20)]
        assert await _echoes(pipeline, values) == [value.encode() for value in values]
    finally:
        await pipeline.aclose()
    assert scripted.connections == 2
    assert len(scripted.sent(0)) == 20
    assert sorted(args[1] for args in scripted.sent(1)) == sorted(v.encode() for v in values)


async def test_a_reset_without_retries_fails_every_command_in_flight(
    scripted: ScriptedRedis,
) -> None:
    """``Redis.from_url(url)`` retries nothing: every waiting caller gets ConnectionError."""
    scripted.reset_after = 20
    pipeline = pipeline_for(scripted.url)
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(pipeline.execute("ECHO", str(i)) for i in range(20)), return_exceptions=True
            ),
            HANG_GUARD,
        )
        assert all(isinstance(outcome, ConnectionError) for outcome in outcomes), outcomes
        # The next command opens a new connection by itself.
        assert await pipeline.execute("ECHO", "next") == b"next"
    finally:
        await pipeline.aclose()
    assert scripted.connections == 2


async def test_a_retry_that_fails_too_is_an_error_not_a_hang(scripted: ScriptedRedis) -> None:
    """Every connection is reset with its commands unanswered: the one retry fails too."""
    scripted.reset_after = 5
    scripted.reset_all = True
    pipeline = pipeline_for(scripted.url, retry=Retry(NoBackoff(), 1))
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(pipeline.execute("ECHO", str(i)) for i in range(5)), return_exceptions=True
            ),
            HANG_GUARD,
        )
    finally:
        await pipeline.aclose()
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes), outcomes
    assert scripted.connections == 2  # each command tried twice: once, and its one retry
    assert len(scripted.sent(1)) == 5


async def test_a_retry_waits_its_backoff_before_it_is_sent_again(scripted: ScriptedRedis) -> None:
    """The client's backoff is kept: the retry goes out after the pause, not at once."""
    scripted.reset_after = 3
    pause = 0.3
    pipeline = pipeline_for(scripted.url, retry=Retry(ConstantBackoff(pause), 1))
    try:
        started = time.monotonic()
        assert await _echoes(pipeline, ["a", "b", "c"]) == [b"a", b"b", b"c"]
        elapsed = time.monotonic() - started
    finally:
        await pipeline.aclose()
    assert elapsed >= pause
    assert scripted.connections == 2


async def test_a_backoff_longer_than_the_timeout_ends_at_the_timeout(
    scripted: ScriptedRedis,
) -> None:
    """The timeout bounds the command with its pauses: a 5 s backoff does not make it wait 5 s."""
    scripted.reset_after = 1
    scripted.reset_all = True
    timeout = 0.3
    pipeline = pipeline_for(
        scripted.url, socket_timeout=timeout, retry=Retry(ConstantBackoff(5.0), 2)
    )
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pipeline.execute("ECHO", "x"), HANG_GUARD)
        elapsed = time.monotonic() - started
    finally:
        await pipeline.aclose()
    assert timeout <= elapsed < timeout + 0.25
    assert scripted.connections == 1  # the pause took all of the time left: no second try


# Timeouts and connecting


async def test_a_server_that_never_answers_is_a_timeout_within_the_command_timeout(
    scripted: ScriptedRedis,
) -> None:
    """Its retry included: the timeout bounds the command, not each try."""
    scripted.silent = True
    timeout = 0.3
    pipeline = pipeline_for(scripted.url, socket_timeout=timeout, retry=Retry(NoBackoff(), 1))
    try:
        started = time.monotonic()
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(pipeline.execute("ECHO", str(i)) for i in range(10)), return_exceptions=True
            ),
            HANG_GUARD,
        )
        elapsed = time.monotonic() - started
    finally:
        await pipeline.aclose()
    assert all(isinstance(outcome, TimeoutError) for outcome in outcomes), outcomes
    assert timeout <= elapsed < timeout + 0.25


async def test_a_command_cut_off_by_another_ones_timeout_fails_as_a_timeout_too(
    scripted: ScriptedRedis,
) -> None:
    """A command that times out closes its connection (it may be stuck), failing the ones
    behind it before their own deadline: with no retry left, they are timeouts as well.

    As a ConnectionError they raced: ten commands with one retry each, their deadlines
    microseconds apart, got a ConnectionError when another's timeout closed the
    connection their retry was on.
    """
    scripted.silent = True
    pipeline = pipeline_for(scripted.url, socket_timeout=0.3)
    try:
        first = asyncio.ensure_future(pipeline.execute("ECHO", "first"))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(pipeline.execute("ECHO", "second"))
        started = time.monotonic()
        outcomes = await asyncio.wait_for(
            asyncio.gather(first, second, return_exceptions=True), HANG_GUARD
        )
        elapsed = time.monotonic() - started
    finally:
        await pipeline.aclose()
    assert [type(outcome) for outcome in outcomes] == [TimeoutError, TimeoutError], outcomes
    assert elapsed < 0.3  # the second ended with the first, before its own deadline


async def test_a_refused_connect_is_tried_again_by_the_next_command_only() -> None:
    """No reconnect loop while the server is down: no task is left running, and the
    command after the server came back connects by itself."""
    port = free_port()
    pipeline = pipeline_for(f"redis://127.0.0.1:{port}/0", retry=Retry(NoBackoff(), 1))
    try:
        with pytest.raises(ConnectionError, match="Error connecting"):
            await asyncio.wait_for(pipeline.execute("ECHO", "down"), HANG_GUARD)
        await asyncio.sleep(0.05)
        assert _tasks_besides_this_one() == set()
        async with ScriptedRedis(port) as server:
            assert await pipeline.execute("ECHO", "back") == b"back"
            assert server.connections == 1
            await pipeline.aclose()
    finally:
        await pipeline.aclose()
    assert _tasks_besides_this_one() == set()


async def test_connecting_authenticates_names_and_selects_as_the_client_would(
    scripted: ScriptedRedis,
) -> None:
    url = f"redis://ops:s3cret@127.0.0.1:{scripted.port}/3?client_name=retrysafe"
    pipeline = pipeline_for(url)
    try:
        assert await pipeline.execute("ECHO", "hi") == b"hi"
    finally:
        await pipeline.aclose()
    assert scripted.commands[0] == [
        [b"AUTH", b"ops", b"s3cret"],
        [b"CLIENT", b"SETNAME", b"retrysafe"],
        [b"SELECT", b"3"],
        [b"ECHO", b"hi"],
    ]


async def test_aclose_leaves_no_task_and_no_socket(scripted: ScriptedRedis) -> None:
    pipeline = pipeline_for(scripted.url)
    assert await pipeline.execute("ECHO", "x") == b"x"
    scripted.hold = asyncio.Event()
    waiting = asyncio.create_task(pipeline.execute("ECHO", "in flight"))
    await asyncio.sleep(0.02)
    await pipeline.aclose()
    with pytest.raises(ConnectionError, match="aclose"):
        await asyncio.wait_for(waiting, HANG_GUARD)  # failed, not retried, not hanging
    assert _tasks_besides_this_one() - set(scripted._handlers) == set()
    assert pipeline._connection is None


async def test_a_connection_whose_setup_failed_does_not_hang_its_callers(
    scripted: ScriptedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``connection_made`` raising (as a transport type it did not expect once made it
    raise under uvloop) leaves the protocol without a socket: the connect fails at once
    instead of sending commands nowhere, and the socket is closed all the same."""
    from retrysafe.stores import pipelined_redis

    def broken(self: object, transport: object) -> None:
        raise AssertionError("connection_made failed")

    monkeypatch.setattr(pipelined_redis._ConnectionProtocol, "connection_made", broken)
    # No command timeout: nothing but the connection's own checks can end the wait.
    pipeline = pipeline_for(scripted.url, socket_connect_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="not set up"):
            await asyncio.wait_for(pipeline.execute("ECHO", "x"), HANG_GUARD)
        assert time.monotonic() - started < 1
    finally:
        await asyncio.wait_for(pipeline.aclose(), HANG_GUARD)
    assert _tasks_besides_this_one() - set(scripted._handlers) == set()


# Errors and scripts


@pytest.mark.redis
async def test_an_error_reply_is_raised_as_redis_py_raises_it(shared_redis: None) -> None:
    pipeline = pipeline_for(redis_service.URL)
    try:
        with pytest.raises(ResponseError, match="unknown command"):
            await pipeline.execute("NO-SUCH-COMMAND")
        assert await pipeline.execute("ECHO", "still in order") == b"still in order"
    finally:
        await pipeline.aclose()


# Which clients are pipelined


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://:pw@cache:6380/2?socket_timeout=1.5",
        "unix:///run/redis.sock?db=1",
    ],
)
def test_plain_tcp_and_unix_clients_are_pipelined(url: str) -> None:
    settings = PipelineSettings.from_client(Redis.from_url(url))
    assert settings is not None


@pytest.mark.parametrize(
    ("client", "retries", "backoff"),
    [
        pytest.param(lambda: Redis.from_url("redis://cache/0"), 0, NoBackoff(), id="from-url"),
        pytest.param(
            lambda: Redis.from_url("redis://cache/0", retry=Retry(ExponentialBackoff(), 2)),
            2,
            ExponentialBackoff(),
            id="backoff",
        ),
    ],
)
def test_a_retry_with_backoff_is_pipelined_with_its_backoff(
    client: object, retries: int, backoff: object
) -> None:
    settings = PipelineSettings.from_client(client())  # type: ignore[operator]
    assert settings is not None
    assert (settings.retries, settings.backoff) == (retries, backoff)


def test_a_plain_redis_client_is_pipelined_with_redis_pys_default_retry() -> None:
    """``Redis(host=…)``, the common client, retries 3 times backing off (redis-py's default)."""
    client = Redis(host="cache")
    settings = PipelineSettings.from_client(client)
    assert settings is not None
    assert settings.retries == client.get_retry().get_retries() == 3
    assert type(settings.backoff).__name__ == "ExponentialWithJitterBackoff"


def test_the_settings_are_the_clients() -> None:
    client = Redis.from_url(
        "redis://u:p@cache:6380/2",
        socket_timeout=2.0,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 1),
        client_name="api",
    )
    assert PipelineSettings.from_client(client) == PipelineSettings(
        host="cache",
        port=6380,
        db=2,
        username="u",
        password="p",
        client_name="api",
        command_timeout=2.0,
        connect_timeout=0.5,
        retries=1,
    )
    # Without a connect timeout, redis-py connects within the command timeout.
    unix = PipelineSettings.from_client(Redis.from_url("unix:///r.sock", socket_timeout=3.0))
    assert unix is not None
    assert (unix.path, unix.connect_timeout, unix.retries) == ("/r.sock", 3.0, 0)


@pytest.mark.parametrize(
    "client",
    [
        pytest.param(lambda: Redis.from_url("rediss://cache:6380/0"), id="tls"),
        pytest.param(lambda: Redis.from_url("redis://cache/0", decode_responses=True), id="decode"),
        pytest.param(lambda: Redis.from_url("redis://cache/0", protocol=3), id="resp3"),
        pytest.param(
            lambda: Redis.from_url("redis://cache/0", retry_on_error=[ResponseError]),
            id="retry-on-error",
        ),
        pytest.param(
            lambda: Redis.from_url("redis://cache/0", redis_connect_func=lambda conn: None),
            id="connect-func",
        ),
        pytest.param(lambda: Sentinel([("cache", 26379)]).master_for("main"), id="sentinel"),
        pytest.param(lambda: RedisCluster(host="cache", port=7000), id="cluster"),
    ],
)
def test_a_client_the_connection_cannot_stand_in_for_is_not_pipelined(
    client: object,
) -> None:
    built = client()  # type: ignore[operator]
    assert PipelineSettings.from_client(built) is None
