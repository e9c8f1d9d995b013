"""Verifications: an inquiry's account checked by the upstream provider, exactly once per key.

The create runs in three phases, each committed with the idempotency record:

1. ``started`` — the inquiry is read (404 before anything is committed) and the
   provider call is fixed, then committed as the recovery point. From here the
   request holds no transaction while it waits on the provider.
2. ``provider_called`` — the provider's answer is committed as the point's data,
   before anything else is written.
3. finished — the verification row and the recorded 201 commit together.

A retry after a crash resumes at the last point: from ``started`` it calls the
provider again with the same idempotency key (the provider answers from its
record, so the check runs once); from ``provider_called`` it does not call at
all. Provider failures are 502, provider timeouts 504 (both recorded, SPEC §3).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import APIRouter
from sqlalchemy import bindparam, func, select
from starlette.requests import Request
from starlette.responses import Response

from retrysafe import ids
from retrysafe.database import Database
from retrysafe.database.schema import accounts, documents, inquiries, verifications
from retrysafe.envelope import ApiError, FieldErrors
from retrysafe.idempotency.recovery import recovery_of
from retrysafe.pipeline.principal import request_id_of
from retrysafe.provider.client import CheckAnswer, ProviderClient, ProviderFailed, ProviderTimedOut
from retrysafe.service import openapi
from retrysafe.service.attributes import VERIFICATION, VERIFICATION_INPUT
from retrysafe.service.bodies import BodyReader
from retrysafe.service.inquiries import not_found as inquiry_not_found
from retrysafe.service.scopes import require_scope
from retrysafe.service.serialization import Resource, created, resource, single, timestamp
from retrysafe.service.validation import validate

logger = structlog.get_logger("retrysafe.verifications")

STARTED = "started"
PROVIDER_CALLED = "provider_called"
DEFAULT_KIND = VERIFICATION_INPUT.fields["kind"].default

_ATTRIBUTES = VERIFICATION.names
_DOCUMENT_COUNT = (
    select(func.count())
    # Both columns of ix_documents_org_inquiry: an index probe, never a table scan.
    .where(
        documents.c.organization_id == inquiries.c.organization_id,
        documents.c.inquiry_id == inquiries.c.id,
    )
    .scalar_subquery()
    .label("documents")
)
_SUBJECT = (
    select(
        accounts.c.name_first,
        accounts.c.name_last,
        accounts.c.birthdate,
        _DOCUMENT_COUNT,
    )
    .join_from(inquiries, accounts, inquiries.c.account_id == accounts.c.id)
    .where(inquiries.c.id == bindparam("inquiry"), inquiries.c.organization_id == bindparam("org"))
)
_GET = select(verifications).where(
    verifications.c.id == bindparam("verification"),
    verifications.c.organization_id == bindparam("org"),
)
_INSERT = verifications.insert()


def verification_resource(values: Mapping[Any, Any]) -> Resource:
    attributes = {name: values[name] for name in _ATTRIBUTES}
    attributes["reasons"] = json.loads(values["reasons"])
    return resource("verification", values["id"], attributes)


def verifications_router(db: Database, reader: BodyReader, provider: ProviderClient) -> APIRouter:
    """``POST /inquiries/{id}/verifications`` and ``GET /verifications/{id}`` over ``db``."""
    router = APIRouter(tags=["verifications"])

    @router.post(
        "/inquiries/{inquiry_id}/verifications",
        summary="Check an inquiry's account with the upstream provider",
        description="Runs one check (kind `database` by default, or `document`) and records"
        " its result. With an Idempotency-Key a retry never runs a second check, also after"
        " a crash between the provider's answer and ours.",
        **openapi.operation(
            name="verifications_create",
            status=201,
            schema="VerificationDocument",
            description="The verification, passed or failed, with the provider's reasons.",
            errors=(403, 404, 502, 504),
            write=True,
            body=("VerificationRequest", "VerificationForm"),
            body_required=False,
            parameters=(openapi.path_parameter("inquiry_id", "An inquiry id (inq_…)."),),
        ),
    )
    async def create_verification(request: Request) -> Response:
        principal = require_scope(request, "inquiries:write")
        inquiry_id: str = request.path_params["inquiry_id"]
        attributes, errors = await _optional_attributes(reader, request)
        values = validate(attributes, VERIFICATION_INPUT, errors)
        errors.raise_if_any()
        organization_id = principal.organization_id
        recovery = recovery_of(request)
        if recovery.point is None:
            async with db.read() as conn:
                subject = (
                    await conn.execute(_SUBJECT, {"inquiry": inquiry_id, "org": organization_id})
                ).first()
            if subject is None:
                raise inquiry_not_found(inquiry_id)
            call: dict[str, Any] = {
                "kind": values.get("kind") or DEFAULT_KIND,
                "reference": inquiry_id,
                "person": {
                    "name_first": subject.name_first,
                    "name_last": subject.name_last,
                    "birthdate": subject.birthdate,
                },
                "documents": subject.documents,
            }
        elif recovery.point in (STARTED, PROVIDER_CALLED):
            call = recovery.data["call"]  # exactly what the first attempt sent
        else:  # pragma: no cover - a point written by another version of this handler
            raise RuntimeError(f"unknown recovery point {recovery.point!r}")
        if recovery.point == PROVIDER_CALLED:
            answer = CheckAnswer.from_json(recovery.data["answer"])
        else:
            # Committed before the call, also when resuming (that commits the take-over):
            # the request holds no transaction, on SQLite no write lock, while it waits.
            await recovery.checkpoint(STARTED, {"call": call})
            answer = await _ask(provider, call, recovery.external_key, request_id_of(request.scope))
            await recovery.checkpoint(PROVIDER_CALLED, {"call": call, "answer": answer.to_json()})
        row = {
            "id": ids.new_id("ver"),
            "organization_id": organization_id,
            "inquiry_id": call["reference"],
            "kind": call["kind"],
            "status": answer.status,
            "reasons": json.dumps(list(answer.reasons)),
            "provider_reference": answer.check_id,
            "created_at": timestamp(),
        }
        async with db.write() as conn:
            await conn.execute(_INSERT, row)
        return created(verification_resource(row), "verifications")

    @router.get(
        "/verifications/{verification_id}",
        summary="Get a verification",
        **openapi.operation(
            name="verifications_get",
            status=200,
            schema="VerificationDocument",
            description="The verification.",
            errors=(403, 404),
            parameters=(openapi.path_parameter("verification_id", "A verification id (ver_…)."),),
        ),
    )
    async def get_verification(request: Request) -> Response:
        principal = require_scope(request, "inquiries:read")
        verification_id: str = request.path_params["verification_id"]
        async with db.read() as conn:
            row = (
                await conn.execute(
                    _GET, {"verification": verification_id, "org": principal.organization_id}
                )
            ).first()
        if row is None:
            raise ApiError(
                404, "not_found", f"No verification {verification_id} exists in your organization."
            )
        return single(verification_resource(row._mapping))

    return router


async def _optional_attributes(
    reader: BodyReader, request: Request
) -> tuple[dict[str, object], FieldErrors]:
    """The body's attributes; no body at all means none (every attribute is optional)."""
    if not (await request.body()).strip():
        return {}, FieldErrors()
    return await reader.attributes(request)


async def _ask(
    provider: ProviderClient, call: Mapping[str, Any], key: str, request_id: str
) -> CheckAnswer:
    """The provider's answer, or the 502/504 that says it has none worth keeping."""
    try:
        return await provider.check(call, idempotency_key=key)
    except ProviderTimedOut as exc:
        logger.warning("provider timed out", request_id=request_id, error=str(exc))
        raise ApiError(
            504,
            "gateway_timeout",
            f"The verification provider did not answer in time ({exc}). "
            f"Quote Request-Id {request_id} to support.",
        ) from None
    except ProviderFailed as exc:
        logger.warning("provider failed", request_id=request_id, error=str(exc))
        raise ApiError(
            502,
            "bad_gateway",
            "The verification provider answered with an invalid or failed response. "
            f"Quote Request-Id {request_id} to support.",
        ) from None
