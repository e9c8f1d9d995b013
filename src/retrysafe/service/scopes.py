"""Authorization: which API-key scope each endpoint needs (403 ``permission_denied``)."""

from __future__ import annotations

from starlette.requests import Request

from retrysafe.envelope import ApiError
from retrysafe.pipeline.principal import Principal, principal_of


def require_scope(request: Request, scope: str) -> Principal:
    """The caller, if its key carries ``scope``; raises 403 otherwise.

    A missing principal means the app runs without the authentication layer, which
    is a deployment mistake; answering 401 keeps it from serving anyone's data.
    """
    principal = principal_of(request.scope)
    if principal is None:
        raise ApiError(401, "unauthenticated", "Send an API key: Authorization: Bearer <key>.")
    if scope not in principal.scopes:
        raise ApiError(
            403,
            "permission_denied",
            f"This API key lacks the {scope} scope; create a key that has it.",
        )
    return principal
