"""Failed authentications are counted per client address: a key guesser is stopped, not refreshed.

The rate limiter keys on the presented key, so each new guess used to start a
fresh budget. Now the address's failures share one budget, and past it the key
is not even looked up.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import httpx
from tests.conftest import LiveServer
from tests.pipeline.asgi_apps import EchoApp, client

from retrysafe.pipeline.authentication import AuthenticationLayer, FailedAuthentications
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.principal import Principal
from retrysafe.pipeline.rate_limit import RateLimiter

GOOD = "rsk_key_0000000000000000.good"
ALICE = Principal("org_1", "key_0000000000000000", frozenset({"accounts:read"}))


def guess() -> str:
    """A well-formed key nobody issued: what a guesser sends."""
    return f"rsk_key_{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class CountingKeys:
    """An authenticator that knows one key and counts lookups (each one a database query)."""

    def __init__(self) -> None:
        self.lookups = 0

    async def __call__(self, secret: str) -> Principal | None:
        self.lookups += 1
        return ALICE if secret == GOOD else None


def layer(keys: CountingKeys, rate: str) -> ErrorEnvelopeLayer:
    failures = FailedAuthentications(RateLimiter.from_settings(rate))
    return ErrorEnvelopeLayer(AuthenticationLayer(EchoApp(), authenticator=keys, failures=failures))


async def test_different_guesses_share_one_budget_and_then_no_lookup_happens() -> None:
    keys = CountingKeys()
    async with client(layer(keys, "3/minute")) as http:
        statuses = [
            (await http.get("/accounts", headers=bearer(guess()))).status_code for _ in range(3)
        ]
        assert statuses == [401, 401, 401]
        assert keys.lookups == 3
        blocked = await http.get("/accounts", headers=bearer(guess()))
        good = await http.get("/accounts", headers=bearer(GOOD))
    assert blocked.status_code == 429
    assert blocked.json()["errors"][0]["code"] == "rate_limited"
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    # Blocked means blocked: even the right key is not looked up from this address now.
    assert good.status_code == 429
    assert keys.lookups == 3


async def test_other_addresses_and_good_keys_are_not_affected() -> None:
    keys = CountingKeys()
    app = layer(keys, "2/minute")
    async with client(app, ("10.0.0.1", 1000)) as guesser, client(app, ("10.0.0.2", 1000)) as user:
        for _ in range(3):
            await guesser.get("/accounts", headers=bearer(guess()))
        for _ in range(5):  # successes are not failures
            response = await user.get("/accounts", headers=bearer(GOOD))
            assert response.status_code == 200
        guessed = await guesser.get("/accounts", headers=bearer(GOOD))
    assert guessed.status_code == 429


async def test_requests_without_a_key_are_not_counted() -> None:
    """Nothing is guessed without a key; those requests get 401 however many there are."""
    keys = CountingKeys()
    async with client(layer(keys, "2/minute")) as http:
        statuses = {(await http.get("/accounts")).status_code for _ in range(5)}
    assert statuses == {401}
    assert keys.lookups == 0


async def test_the_block_ends_with_its_window() -> None:
    keys = CountingKeys()
    async with client(layer(keys, "1/second")) as http:
        assert (await http.get("/a", headers=bearer(guess()))).status_code == 401
        blocked = await http.get("/a", headers=bearer(GOOD))
        assert blocked.status_code == 429
        await asyncio.sleep(int(blocked.headers["retry-after"]) + 0.1)  # the window passes
        assert (await http.get("/a", headers=bearer(GOOD))).status_code == 200


def test_the_server_stops_a_guesser(live_server: Callable[..., LiveServer]) -> None:
    """End to end over HTTP: a few wrong keys, then 429 for the address, its real key included."""
    server = live_server(auth_failure_limit="5/minute")
    key = server.new_key()
    with httpx.Client(base_url=server.api_url, timeout=30) as http:
        for _ in range(5):
            wrong = http.get("/accounts", headers=bearer(guess()))
            assert wrong.status_code == 401
        refused = http.get("/accounts", headers=bearer(key))
    assert refused.status_code == 429
    assert "failed authentications" in refused.json()["errors"][0]["details"]
