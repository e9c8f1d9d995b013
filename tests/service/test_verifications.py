"""Verifications over real HTTP, on SQLite and PostgreSQL, against a real provider process.

The provider processes are shared by the module (one normal, one that always
fails, one that takes 3 s per check); each test counts the checks it caused by
difference. Tests without a provider URL use the in-process provider.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from tests.conftest import TEST_SETTINGS, LiveServer, migrate, with_database
from tests.support.provider_process import ProviderProcess, start_provider
from tests.support.uvicorn_thread import serving

from retrysafe.database import Database
from retrysafe.database.schema import verifications
from retrysafe.provider.client import CheckAnswer
from retrysafe.service import admin
from retrysafe.service.app import create_app

from .api_calls import body, create_account, create_inquiry, envelope, upload

COUNT = sa.select(sa.func.count()).select_from(verifications)
ADULT = {"name_first": "Ada", "name_last": "Lovelace", "birthdate": "1990-12-10"}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    with start_provider(tmp_path_factory.mktemp("provider")) as process:
        yield process


@pytest.fixture(scope="module")
def failing_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    with start_provider(tmp_path_factory.mktemp("failing"), "--fail-rate", "1") as process:
        yield process


@pytest.fixture(scope="module")
def slow_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    with start_provider(tmp_path_factory.mktemp("slow"), "--delay", "3") as process:
        yield process


def new_inquiry(http: httpx.Client, **account: Any) -> str:
    account_id = create_account(http, **{**ADULT, **account})["id"]
    return str(create_inquiry(http, account_id=account_id)["id"])


def verify(
    http: httpx.Client,
    inquiry_id: str,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    sent = {**(headers or {}), **({"Idempotency-Key": key} if key is not None else {})}
    return http.post(f"/inquiries/{inquiry_id}/verifications", headers=sent, **kwargs)


def verification_count(server: LiveServer) -> int:
    async def count(db: Database) -> int:
        async with db.read() as conn:
            return int(await conn.scalar(COUNT) or 0)

    return server.on_database(count)


# -- the endpoint --------------------------------------------------------------------------------


def test_a_verification_is_created_and_can_be_read(http: httpx.Client) -> None:
    inquiry_id = new_inquiry(http)
    response = verify(http, inquiry_id)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["type"] == "verification"
    assert data["id"].startswith("ver_")
    attributes = data["attributes"]
    assert attributes["inquiry_id"] == inquiry_id
    assert (attributes["kind"], attributes["status"], attributes["reasons"]) == (
        "database",
        "passed",
        [],
    )
    assert attributes["provider_reference"].startswith("chk_")
    assert response.headers["location"] == f"/api/v1/verifications/{data['id']}"
    read = http.get(f"/verifications/{data['id']}")
    assert read.status_code == 200
    assert read.json() == response.json()


def test_a_failed_check_carries_the_providers_reasons(http: httpx.Client) -> None:
    inquiry_id = new_inquiry(http, birthdate="2015-03-01", name_last="Moriarty")
    response = verify(http, inquiry_id, json=body(kind="document"))
    assert response.status_code == 201, response.text
    attributes = response.json()["data"]["attributes"]
    assert attributes["status"] == "failed"
    assert attributes["reasons"] == ["underage", "watchlist_match", "document_missing"]
    upload(http, inquiry_id, b"passport scan")
    again = verify(http, inquiry_id, files={"data[attributes][kind]": (None, "document")})
    assert again.json()["data"]["attributes"]["reasons"] == ["underage", "watchlist_match"]


def test_the_body_is_optional_and_checked_when_present(http: httpx.Client) -> None:
    inquiry_id = new_inquiry(http)
    envelope(verify(http, inquiry_id, json=body(kind="dna")), 422, "invalid_value")
    errors = envelope(verify(http, inquiry_id, json=body(speed="fast")), 400, "unknown_parameter")
    assert errors[0]["source"]["pointer"] == "/data/attributes/speed"
    envelope(
        verify(http, inquiry_id, content=b"{", headers={"content-type": "application/json"}),
        400,
        "invalid_json",
    )
    assert verify(http, inquiry_id, json=body()).status_code == 201


def test_unknown_and_other_organizations_inquiries_are_404(
    server: LiveServer, http: httpx.Client
) -> None:
    inquiry_id = new_inquiry(http)
    envelope(verify(http, "inq_00000000000000000000000000"), 404, "not_found")
    with server.client(server.new_key(org="other")) as stranger:
        envelope(verify(stranger, inquiry_id), 404, "not_found")
        response = verify(http, inquiry_id)
        envelope(stranger.get(f"/verifications/{response.json()['data']['id']}"), 404, "not_found")
    assert verification_count(server) == 1


# -- against a real provider process -------------------------------------------------------------


def test_a_retry_with_the_same_key_replays_and_runs_no_second_check(
    live_server: Callable[..., LiveServer], provider: ProviderProcess
) -> None:
    server = live_server(provider_url=provider.url)
    with server.client(server.new_key()) as http:
        inquiry_id = new_inquiry(http)
        before = provider.checks_run()
        first = verify(http, inquiry_id, key="verify-once")
        again = verify(http, inquiry_id, key="verify-once")
        assert first.status_code == 201, first.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
        assert provider.checks_run() == before + 1
        # Without a key every request is a new check.
        assert verify(http, inquiry_id).status_code == 201
        assert provider.checks_run() == before + 2
    assert verification_count(server) == 2


def test_a_failing_provider_is_a_recorded_502(
    live_server: Callable[..., LiveServer], failing_provider: ProviderProcess
) -> None:
    server = live_server(provider_url=failing_provider.url)
    with server.client(server.new_key()) as http:
        inquiry_id = new_inquiry(http)
        response = verify(http, inquiry_id, key="fails")
        errors = envelope(response, 502, "bad_gateway")
        assert response.headers["request-id"] in errors[0]["details"]
        replay = verify(http, inquiry_id, key="fails")
        assert replay.headers["idempotent-replayed"] == "true"
        assert (replay.status_code, replay.content) == (502, response.content)
    assert verification_count(server) == 0


def test_a_provider_slower_than_its_timeout_is_a_504(
    live_server: Callable[..., LiveServer], slow_provider: ProviderProcess
) -> None:
    server = live_server(provider_url=slow_provider.url, provider_timeout=0.5)
    with server.client(server.new_key()) as http:
        response = verify(http, new_inquiry(http), key="too-slow")
    errors = envelope(response, 504, "gateway_timeout")
    assert response.headers["request-id"] in errors[0]["details"]
    assert verification_count(server) == 0


def test_an_unreachable_provider_is_a_502(live_server: Callable[..., LiveServer]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        server = live_server(provider_url=f"http://127.0.0.1:{port}")
        with server.client(server.new_key()) as http:
            response = verify(http, new_inquiry(http))
    envelope(response, 502, "bad_gateway")


def test_while_the_provider_works_the_key_is_in_flight_and_other_writes_proceed(
    live_server: Callable[..., LiveServer], slow_provider: ProviderProcess
) -> None:
    """The started phase is committed before the call: the record answers 409 from its
    lease, and the request holds no transaction, so an account create is not held up."""
    server = live_server(provider_url=slow_provider.url, provider_timeout=10, request_timeout=20)
    with server.client(server.new_key()) as http, ThreadPoolExecutor(1) as pool:
        inquiry_id = new_inquiry(http)
        before = slow_provider.checks_run()
        pending = pool.submit(verify, http, inquiry_id, "slow-key")
        slow_provider.wait_for_checks(before + 1)
        in_flight = verify(http, inquiry_id, key="slow-key")
        envelope(in_flight, 409, "idempotency_request_in_progress")
        assert 1 <= int(in_flight.headers["retry-after"]) <= 5
        assert http.post("/accounts", json=body(name_first="Grace")).status_code == 201
        assert not pending.done()  # the account did not wait for the provider
        response = pending.result(timeout=30)
        assert response.status_code == 201, response.text
        replay = verify(http, inquiry_id, key="slow-key")
        assert replay.content == response.content
    assert slow_provider.checks_run() == before + 1


# -- an unexpected failure -----------------------------------------------------------------------


class ExplodingProvider:
    """A provider client with a bug: what an unexpected exception looks like to the handler."""

    async def check(self, payload: Mapping[str, Any], *, idempotency_key: str) -> CheckAnswer:
        raise RuntimeError("SELECT secret FROM accounts -- /srv/retrysafe/provider.py line 42")

    async def aclose(self) -> None:
        return None


def test_an_unexpected_exception_is_a_recorded_500_naming_only_the_request_id(
    database_url: str, tmp_path: Path
) -> None:
    migrate(database_url)
    settings = replace(TEST_SETTINGS, database_url=database_url, document_dir=tmp_path / "docs")
    secret = with_database(database_url, lambda db: admin.create_api_key(db, "acme"))[1]
    with serving(create_app(settings, provider=ExplodingProvider()), lifespan="on") as server:
        # Unconfigured structlog renders the logged traceback with rich, locals and all,
        # which takes seconds on a busy machine: more than httpx's default 5 s timeout.
        headers = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=server.url + "/api/v1", headers=headers, timeout=60) as http:
            inquiry_id = new_inquiry(http)
            response = verify(http, inquiry_id, key="explodes")
            errors = envelope(response, 500, "internal_error")
            assert response.headers["request-id"] in errors[0]["details"]
            for leak in ("SELECT", "secret", "/srv", "provider.py", "RuntimeError", "Traceback"):
                assert leak not in response.text
            replay = verify(http, inquiry_id, key="explodes")
            assert replay.headers["idempotent-replayed"] == "true"
            assert replay.content == response.content
