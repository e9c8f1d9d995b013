"""AuthenticationLayer: Bearer keys become a Principal; missing or unknown keys are 401."""

from __future__ import annotations

import pytest

from retrysafe.database.engine import DatabaseUnavailable
from retrysafe.pipeline.authentication import AuthenticationLayer, bearer_secret
from retrysafe.pipeline.envelope_layer import ErrorEnvelopeLayer
from retrysafe.pipeline.principal import PRINCIPAL_STATE_KEY, Principal

from .asgi_apps import EchoApp, client

ALICE = Principal(organization_id="org_1", key_id="key_1", scopes=frozenset({"accounts:read"}))
MISSING = "Provide an API key as 'Authorization: Bearer <key>'."
UNKNOWN = "The API key is unknown or revoked."


class FakeKeys:
    """An authenticator that knows one secret and remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, secret: str) -> Principal | None:
        self.asked.append(secret)
        return ALICE if secret == "good-secret" else None


def authenticated(app: EchoApp, keys: FakeKeys) -> ErrorEnvelopeLayer:
    return ErrorEnvelopeLayer(AuthenticationLayer(app, authenticator=keys))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"authorization": "Bearer"},
        {"authorization": "Bearer    "},
        {"authorization": "good-secret"},
    ],
)
async def test_missing_or_malformed_credentials_are_401(headers: dict[str, str]) -> None:
    """Without a Bearer key: 401 unauthenticated, WWW-Authenticate, and no lookup."""
    app, keys = EchoApp(), FakeKeys()
    async with client(authenticated(app, keys)) as http:
        response = await http.get("/accounts", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "errors": [
            {
                "title": "Unauthorized",
                "details": MISSING,
                "status": "401",
                "code": "unauthenticated",
            }
        ]
    }
    assert keys.asked == []
    assert app.calls == 0


async def test_unknown_or_revoked_key_is_401() -> None:
    """The authenticator's None is a 401 that says the key is unknown or revoked."""
    app, keys = EchoApp(), FakeKeys()
    async with client(authenticated(app, keys)) as http:
        response = await http.get("/accounts", headers={"authorization": "Bearer revoked"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    [error] = response.json()["errors"]
    assert error["code"] == "unauthenticated"
    assert error["details"] == UNKNOWN
    assert keys.asked == ["revoked"]
    assert app.calls == 0


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_valid_key_stores_the_principal(scheme: str) -> None:
    """A known key reaches the app with its Principal in the request state."""
    app, keys = EchoApp(), FakeKeys()
    async with client(authenticated(app, keys)) as http:
        response = await http.get("/accounts", headers={"authorization": f"{scheme} good-secret"})
    assert response.status_code == 200
    assert keys.asked == ["good-secret"]
    assert app.last_state[PRINCIPAL_STATE_KEY] is ALICE


@pytest.mark.parametrize("path", ["/health", "/openapi.json", "/docs", "/redoc"])
async def test_public_paths_skip_authentication(path: str) -> None:
    """Public paths run without a key, without a lookup and without a Principal."""
    app, keys = EchoApp(), FakeKeys()
    async with client(authenticated(app, keys)) as http:
        response = await http.get(path)
    assert response.status_code == 200
    assert keys.asked == []
    assert PRINCIPAL_STATE_KEY not in app.last_state


async def test_public_paths_are_configurable() -> None:
    """Only the given paths are public; the defaults are replaced, not extended."""
    app, keys = EchoApp(), FakeKeys()
    layer = AuthenticationLayer(app, authenticator=keys, public_paths=frozenset({"/ping"}))
    async with client(layer) as http:
        assert (await http.get("/ping")).status_code == 200
        assert (await http.get("/health")).status_code == 401


async def test_authenticator_failure_to_reach_the_database_is_503() -> None:
    """A key store outage is a retryable 503, not a 401 and not a 500."""

    async def unreachable(secret: str) -> Principal | None:
        raise DatabaseUnavailable("connection refused")

    async with client(ErrorEnvelopeLayer(AuthenticationLayer(EchoApp(), unreachable))) as http:
        response = await http.get("/accounts", headers={"authorization": "Bearer k"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (b"Bearer abc", "abc"),
        (b"  bearer   abc  ", "abc"),
        (b"Bearer abc def", "abc def"),
        (b"Token abc", None),
        (b"Bearer", None),
    ],
)
def test_bearer_secret_parsing(value: bytes | None, expected: str | None) -> None:
    """The secret is whatever follows the Bearer scheme, trimmed."""
    assert bearer_secret(value) == expected
