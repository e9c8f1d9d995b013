"""Tenancy: whose idempotency keys a request uses, for apps that authenticate on their own.

The reference service scopes keys to the organization of the authenticated API
key (:mod:`.authentication`). An app mounting the pipeline has its own notion of
who is calling, so a *tenant resolver* names the scope instead: a callable on the
request scope that returns the tenant's name (or an awaitable of it). Two
requests share idempotency records only when they resolve to the same tenant.

The layer never lets a keyed request through without a tenant: the idempotency
layer would then have no scope for the key and record nothing, silently. Such a
request is answered 401 instead, and is never recorded.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from retrysafe.asgi import ASGIApp, Receive, Scope, Send, header, state
from retrysafe.envelope import ApiError, send_error
from retrysafe.pipeline.idempotency import IDEMPOTENT_METHODS
from retrysafe.pipeline.principal import PRINCIPAL_STATE_KEY, Principal

__all__ = [
    "CredentialTenant",
    "SingleTenant",
    "TenantLayer",
    "TenantResolver",
    "by_credential",
    "single_tenant",
]

TenantResolver: TypeAlias = Callable[[Scope], "str | Awaitable[str | None] | None"]
"""Names the tenant of a request from its ASGI scope; ``None`` when there is none.

It is called only for the requests the idempotency layer acts on (POST and PATCH
carrying ``Idempotency-Key``), before the handler runs. It may raise
:class:`~retrysafe.envelope.ApiError` (say, a 401 for a credential it rejects):
that answer is sent and nothing is recorded. Any other exception is a 500 that
names only the Request-Id.
"""

_NO_TENANT = "This request carries an Idempotency-Key but nothing to scope the key to: {hint}."


class CredentialTenant:
    """The tenant is the SHA-256 of the credential the request presents (the default).

    Every distinct ``Authorization`` value (or the configured header's) is its own
    tenant, so two callers never share a key's record, and the raw credential is
    never kept: records hold ``cred_`` + the first 32 hex digits of its hash. A
    request without the header has no tenant.
    """

    def __init__(self, header_name: str = "Authorization") -> None:
        self.header_name = header_name
        self._header = header_name.lower().encode("latin-1")
        self.missing_hint = f"send the {header_name} header"

    def __call__(self, scope: Scope) -> str | None:
        value = header(scope, self._header)
        if not value or not value.strip():
            return None
        return "cred_" + hashlib.sha256(value.strip()).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"by_credential({self.header_name!r})"


class SingleTenant:
    """Every request belongs to one tenant: for an app with a single client, or internal use.

    Any two requests with the same key share its record, whoever sends them.
    """

    def __init__(self, name: str = "default") -> None:
        if not name:
            raise ValueError("single_tenant needs a non-empty tenant name.")
        self.name = name

    def __call__(self, _scope: Scope) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"single_tenant({self.name!r})"


def by_credential(header_name: str = "Authorization") -> CredentialTenant:
    """A resolver whose tenant is the hash of the ``header_name`` value the request sends."""
    return CredentialTenant(header_name)


def single_tenant(name: str = "default") -> SingleTenant:
    """A resolver that puts every request in the tenant ``name``."""
    return SingleTenant(name)


class TenantLayer:
    """Sets the request's :class:`Principal` from ``resolver``: step 5 for an app's own auth.

    Only keyed POST/PATCH requests are resolved; every other request passes
    untouched, since nothing below uses a tenant for them.
    """

    def __init__(self, app: ASGIApp, resolver: TenantResolver) -> None:
        if not callable(resolver):
            raise TypeError(
                f"tenant must be a callable on the request scope, got {resolver!r}; "
                "use retrysafe.asgi.by_credential() or single_tenant()."
            )
        self.app = app
        self.resolver = resolver
        self.missing_hint = str(
            getattr(resolver, "missing_hint", "the tenant resolver found no tenant")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in IDEMPOTENT_METHODS
            or header(scope, b"idempotency-key") is None
        ):
            await self.app(scope, receive, send)
            return
        tenant = self.resolver(scope)
        if inspect.isawaitable(tenant):
            tenant = await tenant
        if tenant is None:
            error = ApiError(401, "unauthenticated", _NO_TENANT.format(hint=self.missing_hint))
            await send_error(send, error)
            return
        if not isinstance(tenant, str) or not tenant:
            raise TypeError(
                f"The tenant resolver {self.resolver!r} returned {tenant!r}, not a name."
            )
        state(scope)[PRINCIPAL_STATE_KEY] = Principal(tenant, tenant, frozenset())
        await self.app(scope, receive, send)
