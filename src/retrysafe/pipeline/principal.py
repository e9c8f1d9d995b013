"""Who is calling: set by the authentication layer, read by idempotency and handlers."""

from __future__ import annotations

from dataclasses import dataclass

from retrysafe.asgi import Scope, state

PRINCIPAL_STATE_KEY = "retrysafe.principal"
REQUEST_ID_STATE_KEY = "request_id"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated API key; idempotency records are scoped to its organization."""

    organization_id: str
    key_id: str
    scopes: frozenset[str]


def principal_of(scope: Scope) -> Principal | None:
    value = state(scope).get(PRINCIPAL_STATE_KEY)
    return value if isinstance(value, Principal) else None


def request_id_of(scope: Scope) -> str:
    value = state(scope).get(REQUEST_ID_STATE_KEY)
    return value if isinstance(value, str) else "unknown"
