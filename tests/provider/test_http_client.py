"""``HttpProviderClient`` over loopback HTTP against misbehaving providers: 502 or 504, not 500."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.support.uvicorn_thread import serving

from retrysafe.provider.client import (
    MAX_ANSWER_BYTES,
    HttpProviderClient,
    ProviderFailed,
    ProviderTimedOut,
)

GOOD = b'{"id":"chk_1","status":"passed","reasons":[]}'
ANSWERS = {
    "good": GOOD,
    "huge": b'{"id":"chk_1","status":"passed","reasons":["' + b"x" * MAX_ANSWER_BYTES + b'"]}',
    "deep": b"[" * 100_000 + b"]" * 100_000,
}


async def checks(request: Request) -> Response:
    behaviour = request.headers["idempotency-key"]
    if behaviour == "slow":
        await asyncio.sleep(2)  # past the 0.3 s timeout below, short for shutdown
    return Response(ANSWERS.get(behaviour, GOOD), media_type="application/json")


@pytest.fixture(scope="module")
def provider_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/checks", checks, methods=["POST"])])
    with serving(app, lifespan="off") as server:
        yield server.url


async def test_a_good_answer_is_a_check_answer(provider_url: str) -> None:
    client = HttpProviderClient(provider_url, timeout=5)
    try:
        answer = await client.check({"kind": "database"}, idempotency_key="good")
    finally:
        await client.aclose()
    assert (answer.check_id, answer.status, answer.reasons) == ("chk_1", "passed", ())


@pytest.mark.parametrize("behaviour", ["huge", "deep"])
async def test_an_oversized_or_pathological_answer_is_a_provider_failure(
    provider_url: str, behaviour: str
) -> None:
    client = HttpProviderClient(provider_url, timeout=5)
    try:
        with pytest.raises(ProviderFailed):
            await client.check({}, idempotency_key=behaviour)
    finally:
        await client.aclose()


async def test_no_answer_within_the_timeout_is_a_timeout(provider_url: str) -> None:
    client = HttpProviderClient(provider_url, timeout=0.3)
    try:
        with pytest.raises(ProviderTimedOut):
            await client.check({}, idempotency_key="slow")
    finally:
        await client.aclose()


async def test_a_refused_connection_is_a_provider_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        client = HttpProviderClient(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=5)
        try:
            with pytest.raises(ProviderFailed):
                await client.check({}, idempotency_key="good")
        finally:
            await client.aclose()
