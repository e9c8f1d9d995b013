"""RateLimiter and RateLimitLayer: keys, RateLimit-* headers on every counted response, 429s."""

from __future__ import annotations

import hashlib
import re
import uuid

import pytest
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.errors import StorageError
from structlog.typing import EventDict
from tests.support import redis_service
from tests.support.clock import Clock
from tests.support.throwaway import free_port

from retrysafe.asgi import ASGIApp, Receive, Scope, Send
from retrysafe.envelope import ApiError, send_error
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.rate_limit import (
    ProcessCounters,
    RateLimiter,
    RateLimitLayer,
    async_storage_url,
)

from .asgi_apps import EchoApp, RaisingApp, client

RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


def limited(app: ASGIApp, rate: str = "3/minute") -> tuple[ErrorEnvelopeLayer, RateLimiter]:
    limiter = RateLimiter.from_settings(rate)
    return ErrorEnvelopeLayer(RateLimitLayer(app, limiter)), limiter


class TestRateLimiterConstruction:
    def test_memory_storage_is_the_default(self) -> None:
        """Without a storage URL the counters live in this process."""
        limiter = RateLimiter.from_settings("100/second")
        assert isinstance(limiter.storage, MemoryStorage)
        assert limiter.item.amount == 100
        assert limiter.item.get_expiry() == 1

    def test_redis_url_maps_to_the_async_redis_storage(self) -> None:
        """redis:// is what users type; limits' async backend is async+redis://."""
        limiter = RateLimiter.from_settings("5/minute", "redis://localhost:6379/0")
        assert isinstance(limiter.storage, RedisStorage)

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("memory://", "async+memory://"),
            ("redis://localhost:6379/0", "async+redis://localhost:6379/0"),
            ("rediss://h:6380", "async+rediss://h:6380"),
            ("async+redis://h", "async+redis://h"),
        ],
    )
    def test_storage_urls_map_to_async_schemes(self, url: str, expected: str) -> None:
        """Every scheme is mapped to its async variant exactly once."""
        assert async_storage_url(url) == expected

    @pytest.mark.parametrize(
        ("rate", "message"),
        [
            ("lots", "Invalid rate limit 'lots'"),
            ("100/fortnight", "Invalid rate limit"),
            ("1/second;5/minute", "exactly one rate"),
            ("0/second", "at least one request"),
        ],
    )
    def test_invalid_rates_are_value_errors_with_a_clear_message(
        self, rate: str, message: str
    ) -> None:
        """A bad --rate-limit fails at startup with a message naming it."""
        with pytest.raises(ValueError, match=re.escape(message)):
            RateLimiter.from_settings(rate)

    @pytest.mark.parametrize("url", ["nosuch://x", "localhost:6379"])
    def test_invalid_storage_urls_are_value_errors(self, url: str) -> None:
        """An unknown or scheme-less storage URL fails at startup."""
        with pytest.raises(ValueError, match="storage URL"):
            RateLimiter.from_settings("1/second", url)

    async def test_keys_are_the_ones_the_limits_strategy_reads(self) -> None:
        """The hot path's precomputed keys match limits' own, so its strategy sees our counts."""
        limiter = RateLimiter.from_settings("3/minute")
        assert limiter.key_for("key:abc") == limiter.item.key_for("key:abc")
        await limiter.hit("key:abc")
        stats = await limiter.strategy.get_window_stats(limiter.item, "key:abc")
        assert stats.remaining == 2


async def test_allowed_responses_carry_decreasing_remaining_and_a_reset() -> None:
    """Limit, remaining and reset (whole seconds until the window ends) on every 2xx."""
    app, _ = limited(EchoApp())
    async with client(app) as http:
        responses = [await http.get("/things") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.headers["ratelimit-limit"] for r in responses] == ["3", "3", "3"]
    assert [r.headers["ratelimit-remaining"] for r in responses] == ["2", "1", "0"]
    for response in responses:
        assert 59 <= int(response.headers["ratelimit-reset"]) <= 60
        assert response.headers["ratelimit-policy"] == '"default";q=3;w=60'
        assert re.fullmatch(r'"default";r=[0-2];t=(59|60)', response.headers["ratelimit"])
        assert response.headers["content-type"] == "application/json"  # app headers kept


async def test_exceeding_the_limit_is_429_with_retry_after() -> None:
    """The request past the limit gets 429 rate_limited, Retry-After ≥ reset, and never runs."""
    echo = EchoApp()
    app, _ = limited(echo)
    async with client(app) as http:
        for _ in range(3):
            await http.get("/things")
        response = await http.get("/things")
    assert response.status_code == 429
    assert echo.calls == 3
    retry_after = int(response.headers["retry-after"])
    reset = int(response.headers["ratelimit-reset"])
    assert 1 <= retry_after <= 60
    assert retry_after >= reset
    assert response.headers["ratelimit-limit"] == "3"
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["request-id"].startswith("req_")
    [error] = response.json()["errors"]
    assert error["code"] == "rate_limited"
    assert error["status"] == "429"
    assert error["title"] == "Too Many Requests"
    assert error["details"] == (
        f"Rate limit of 3 per 1 minute exceeded; retry after {retry_after} s."
    )


async def test_retry_after_is_at_least_one_second_for_sub_second_windows() -> None:
    """A per-second window still asks for an integer wait of at least 1 s."""
    app, _ = limited(EchoApp(), "1/second")
    async with client(app) as http:
        await http.get("/x")
        response = await http.get("/x")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["errors"][0]["details"] == (
        "Rate limit of 1 per 1 second exceeded; retry after 1 s."
    )
    assert 0 <= int(response.headers["ratelimit-reset"]) <= 1


async def test_health_is_exempt_and_carries_no_rate_limit_headers() -> None:
    """/health is never counted or limited and has no RateLimit-* headers."""
    app, _ = limited(EchoApp(), "1/minute")
    async with client(app) as http:
        responses = [await http.get("/health") for _ in range(5)]
        counted = await http.get("/things")
    assert all(r.status_code == 200 for r in responses)
    for response in responses:
        for name in (*RATE_HEADERS, "ratelimit-policy", "ratelimit"):
            assert name not in response.headers
    assert counted.headers["ratelimit-remaining"] == "0"


async def test_error_responses_from_below_carry_the_headers() -> None:
    """A 4xx the app sends through ``send`` gets RateLimit-* like a 2xx."""

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(send, ApiError(404, "not_found", "No such account."))

    app, _ = limited(not_found)
    async with client(app) as http:
        response = await http.get("/accounts/act_x")
    assert response.status_code == 404
    assert response.headers["ratelimit-remaining"] == "2"


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (ApiError(422, "idempotency_key_mismatch", "Different request."), 422),
        (RuntimeError("boom"), 500),
    ],
)
async def test_exceptions_rendered_by_the_envelope_layer_carry_the_headers(
    exc: Exception, status: int
) -> None:
    """A request the limiter counted says so even when it ends in an exception."""
    app, _ = limited(RaisingApp(exc))
    async with client(app) as http:
        response = await http.post("/accounts", json={})
    assert response.status_code == status
    assert response.headers["ratelimit-limit"] == "3"
    assert response.headers["ratelimit-remaining"] == "2"


async def test_requests_with_a_key_are_limited_per_key_not_per_address() -> None:
    """Two keys from one address have separate budgets; one key from two addresses shares one."""
    app, _ = limited(EchoApp(), "2/minute")
    alice = {"authorization": "Bearer alice-secret"}
    bob = {"authorization": "Bearer bob-secret"}
    async with client(app, ("10.0.0.1", 1)) as first, client(app, ("10.0.0.2", 2)) as second:
        assert (await first.get("/x", headers=alice)).headers["ratelimit-remaining"] == "1"
        assert (await second.get("/x", headers=alice)).headers["ratelimit-remaining"] == "0"
        assert (await first.get("/x", headers=alice)).status_code == 429
        assert (await first.get("/x", headers=bob)).headers["ratelimit-remaining"] == "1"
        # The address itself is untouched by keyed requests.
        assert (await first.get("/x")).headers["ratelimit-remaining"] == "1"


async def test_requests_without_a_key_are_limited_per_client_address() -> None:
    """Without Authorization the client address is the key."""
    app, _ = limited(EchoApp(), "1/minute")
    async with client(app, ("10.0.0.1", 1)) as first, client(app, ("10.0.0.2", 2)) as second:
        assert (await first.get("/x")).status_code == 200
        assert (await first.get("/x")).status_code == 429
        assert (await second.get("/x")).status_code == 200


async def test_the_raw_key_never_reaches_the_storage() -> None:
    """Counters are keyed by the SHA-256 of the Authorization value, never the secret."""
    app, limiter = limited(EchoApp())
    async with client(app) as http:
        await http.get("/x", headers={"authorization": "Bearer s3cret-key"})
    assert isinstance(limiter.storage, MemoryStorage)
    keys = list(limiter.storage.storage)
    digest = hashlib.sha256(b"Bearer s3cret-key").hexdigest()
    assert keys == [limiter.key_for("key:" + digest)]
    assert not any("s3cret" in key for key in keys)


class _SwitchableStorage(MemoryStorage):
    """A storage that can be taken down and brought back, counting what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        self.calls += 1
        if self.down:
            raise StorageError(ConnectionError("Error 111 connecting to redis:6379"))
        return await super().incr(key, expiry, amount)


def switchable(rate: str = "3/minute") -> tuple[RateLimiter, _SwitchableStorage, Clock]:
    storage, clock = _SwitchableStorage(), Clock(100.0)
    item = RateLimiter.from_settings(rate).item
    return RateLimiter(item, storage, probe_interval=2.0, clock=clock), storage, clock


async def test_unreachable_storage_degrades_to_per_process_limits_never_an_error(
    captured_logs: list[EventDict],
) -> None:
    """Redis down: requests are served, counted and limited in this process, headers intact."""
    echo = EchoApp()
    limiter, storage, _ = switchable()
    storage.down = True
    async with client(ErrorEnvelopeLayer(RateLimitLayer(echo, limiter))) as http:
        responses = [await http.get("/x") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert all(r.headers["ratelimit-limit"] == "3" for r in responses)
    assert 59 <= int(responses[0].headers["ratelimit-reset"]) <= 60
    assert responses[3].json()["errors"][0]["code"] == "rate_limited"
    assert echo.calls == 3
    assert limiter.degraded
    [warning] = [log for log in captured_logs if log["event"] == "rate_limit_storage_unreachable"]
    assert warning["log_level"] == "warning"
    assert "111" in warning["error"]


async def test_while_degraded_the_storage_is_probed_at_most_once_per_interval(
    captured_logs: list[EventDict],
) -> None:
    """No request pays for the dead storage between probes, and one outage logs once."""
    limiter, storage, clock = switchable("1000/minute")
    storage.down = True
    for _ in range(50):
        await limiter.hit("key:a")
    assert storage.calls == 1
    clock.now += 2.0
    for _ in range(50):
        await limiter.hit("key:a")
    assert storage.calls == 2
    events = [log["event"] for log in captured_logs]
    assert events.count("rate_limit_storage_unreachable") == 1
    assert "rate_limit_storage_recovered" not in events


async def test_limits_return_to_the_shared_storage_when_it_answers_again(
    captured_logs: list[EventDict],
) -> None:
    """The first probe after recovery counts in the shared storage again, and says so once."""
    limiter, storage, clock = switchable()
    storage.down = True
    await limiter.hit("key:a")
    storage.down = False
    await limiter.hit("key:a")
    assert limiter.degraded  # not probed yet: still within the interval
    assert await storage.get(limiter.key_for("key:a")) == 0
    clock.now += 2.0
    outcome = await limiter.hit("key:a")
    assert not limiter.degraded
    assert outcome.remaining == 2  # the shared count starts where the shared storage was
    await limiter.hit("key:a")
    assert await storage.get(limiter.key_for("key:a")) == 2
    events = [log["event"] for log in captured_logs]
    assert events.count("rate_limit_storage_unreachable") == 1
    assert events.count("rate_limit_storage_recovered") == 1
    [recovered] = [log for log in captured_logs if log["event"] == "rate_limit_storage_recovered"]
    assert recovered["outage_seconds"] == 2.0


async def test_a_second_outage_is_reported_again(captured_logs: list[EventDict]) -> None:
    limiter, storage, clock = switchable()
    for down in (True, False, True, False):
        storage.down = down
        clock.now += 2.0
        await limiter.hit("key:a")
    events = [log["event"] for log in captured_logs]
    assert events.count("rate_limit_storage_unreachable") == 2
    assert events.count("rate_limit_storage_recovered") == 2


@pytest.mark.redis
async def test_limits_on_redis_are_shared_by_limiters_of_different_processes() -> None:
    """Two limiters (two processes' worth) on one Redis count against one budget."""
    if not await redis_service.reachable():
        pytest.skip(redis_service.SKIP_REASON)
    first = RateLimiter.from_settings("3/minute", redis_service.URL)
    second = RateLimiter.from_settings("3/minute", redis_service.URL)
    identifier = "key:" + uuid.uuid4().hex
    try:
        outcomes = [await (first, second)[i % 2].hit(identifier) for i in range(4)]
        assert [o.allowed for o in outcomes] == [True, True, True, False]
        assert [o.remaining for o in outcomes] == [2, 1, 0, 0]
        assert not first.degraded
        assert not second.degraded
    finally:
        await first.storage.clear(first.key_for(identifier))
        await first.aclose()
        await second.aclose()


async def test_an_unreachable_redis_url_degrades_on_the_first_hit() -> None:
    """Nothing listens there: the first hit is served from this process's counters."""
    limiter = RateLimiter.from_settings("3/minute", f"redis://127.0.0.1:{free_port()}/0")
    try:
        outcome = await limiter.hit("key:a")
        assert outcome.allowed
        assert outcome.remaining == 2
        assert limiter.degraded
    finally:
        await limiter.aclose()


def test_the_redis_client_gives_up_quickly_instead_of_holding_requests() -> None:
    """Sub-second timeouts and one retry, not redis-py's 5 s timeouts and ten retries."""
    limiter = RateLimiter.from_settings("3/minute", "redis://127.0.0.1:6379/0")
    assert isinstance(limiter.storage, RedisStorage)
    pool = limiter.storage.bridge.storage.connection_pool
    options = pool.connection_kwargs
    assert options["socket_connect_timeout"] < 1
    assert options["socket_timeout"] < 1
    assert options["retry"].get_retries() == 1


async def test_lifespan_shutdown_closes_the_limiter() -> None:
    """The layer closes the limiter's Redis connections when the app shuts down."""
    closed: list[bool] = []

    class Limiter(RateLimiter):
        async def aclose(self) -> None:
            closed.append(True)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "lifespan.shutdown"
        assert closed == []
        await send({"type": "lifespan.shutdown.complete"})

    sent: list[str] = []

    async def receive() -> dict[str, object]:
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, object]) -> None:
        sent.append(str(message["type"]))

    layer = RateLimitLayer(
        app, Limiter(RateLimiter.from_settings("1/second").item, MemoryStorage())
    )
    await layer({"type": "lifespan"}, receive, send)
    assert closed == [True]
    assert sent == ["lifespan.shutdown.complete"]


class TestProcessCounters:
    """The synchronous hit on this process's counters agrees with limits' own async storage."""

    async def test_a_window_counts_up_and_limits_strategy_reads_the_same_counts(self) -> None:
        limiter = RateLimiter.from_settings("5/minute")
        assert isinstance(limiter.storage, ProcessCounters)
        outcomes = [await limiter.hit("key:a") for _ in range(3)]
        assert [o.remaining for o in outcomes] == [4, 3, 2]
        assert all(59 <= o.reset_after <= 60 for o in outcomes)
        stats = await limiter.strategy.get_window_stats(limiter.item, "key:a")
        assert stats.remaining == 2
        # limits' own async increment continues the same window.
        key = limiter.key_for("key:a")
        assert await limiter.storage.incr(key, 60) == 4
        assert (await limiter.hit("key:a")).remaining == 0
        assert not (await limiter.hit("key:a")).allowed

    async def test_an_ended_window_starts_over_and_the_sweep_drops_ended_ones(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        now = [1000.0]
        monkeypatch.setattr("retrysafe.pipeline.rate_limit.time.time", lambda: now[0])
        counters = ProcessCounters()
        assert counters.hit_window("a", 10)[:2] == (1, 1010.0)
        assert counters.hit_window("a", 10)[:2] == (2, 1010.0)
        now[0] = 1005.0
        counters.hit_window("b", 10)  # ends at 1015
        now[0] = 1010.0  # a's window ends: a new one, as limits' incr would start
        assert counters.hit_window("a", 10)[:2] == (1, 1020.0)
        assert set(counters.storage) == {"a", "b"}
        now[0] = 1025.0  # a new window of "c" starts a sweep: a and b have ended
        counters.hit_window("c", 10)
        assert set(counters.storage) == set(counters.expirations) == {"c"}

    async def test_memory_urls_get_the_process_counters(self) -> None:
        for url in (None, "memory://", "async+memory://"):
            assert isinstance(RateLimiter.from_settings("5/minute", url).storage, ProcessCounters)


@pytest.mark.redis
async def test_a_hit_on_redis_is_one_round_trip_on_limits_own_counter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Count and reset come back from one script; limits' strategy reads the same counter."""
    if not await redis_service.reachable():
        pytest.skip(redis_service.SKIP_REASON)
    limiter = RateLimiter.from_settings("5/minute", redis_service.URL)
    identifier = "key:" + uuid.uuid4().hex

    async def no_second_round_trip(key: str) -> float:
        raise AssertionError("get_expiry called: the hit took a second round trip")

    monkeypatch.setattr(limiter.storage, "get_expiry", no_second_round_trip)
    try:
        outcomes = [await limiter.hit(identifier) for _ in range(2)]
        assert [o.remaining for o in outcomes] == [4, 3]
        assert all(59 <= o.reset_after <= 60 for o in outcomes)
        monkeypatch.undo()  # the strategy reads the reset through get_expiry
        stats = await limiter.strategy.get_window_stats(limiter.item, identifier)
        assert stats.remaining == 3
    finally:
        await limiter.storage.clear(limiter.key_for(identifier))
        await limiter.aclose()
