"""Inquiries: create (with account grouping and the quota), get, list and the state machine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from retrysafe import ids
from retrysafe.database import Database
from retrysafe.database.schema import accounts, inquiries, organizations
from retrysafe.envelope import ApiError
from retrysafe.service import openapi
from retrysafe.service.attributes import ACCOUNT_INPUT, INQUIRY, INQUIRY_INPUT, INQUIRY_STATUSES
from retrysafe.service.bodies import BodyReader
from retrysafe.service.pagination import any_value, newest_first, page_request
from retrysafe.service.scopes import require_scope
from retrysafe.service.serialization import Resource, created, resource, single, timestamp
from retrysafe.service.statements import insert_unless_conflict
from retrysafe.service.validation import validate

TRANSITIONS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "complete": ("completed", ("created",)),
    "approve": ("approved", ("completed",)),
    "decline": ("declined", ("completed",)),
    "expire": ("expired", ("created", "completed")),
}
"""action → (status it leads to, statuses it may start from)."""

_ATTRIBUTES = INQUIRY.names
COLUMNS = (inquiries.c.id, *(inquiries.c[name] for name in _ATTRIBUTES))
_QUOTA_COLUMNS = (organizations.c.inquiry_quota, organizations.c.inquiries_used)
_ACCOUNT_POINTER = "/data/attributes/account_id"
_EMPTY_ACCOUNT = dict.fromkeys(ACCOUNT_INPUT.fields)

# Bind names must differ from column names: in an UPDATE, SQLAlchemy reads
# parameters named after columns as values for the SET clause.
_GET = (
    select(*COLUMNS, *_QUOTA_COLUMNS)
    .join_from(inquiries, organizations, inquiries.c.organization_id == organizations.c.id)
    .where(inquiries.c.id == bindparam("inquiry"), inquiries.c.organization_id == bindparam("org"))
)
_STATUS = select(inquiries.c.status).where(
    inquiries.c.id == bindparam("inquiry"), inquiries.c.organization_id == bindparam("org")
)
_ACCOUNT_BY_ID = select(accounts.c.reference_id).where(
    accounts.c.id == bindparam("account"), accounts.c.organization_id == bindparam("org")
)
_ACCOUNT_BY_REFERENCE = select(accounts.c.id).where(
    accounts.c.organization_id == bindparam("org"), accounts.c.reference_id == bindparam("ref")
)
# The quota is taken in the same statement that checks it, so two concurrent creates
# can never both take the last one; NULL means unlimited (the count still grows).
_TAKE_QUOTA = (
    update(organizations)
    .where(
        organizations.c.id == bindparam("org"),
        or_(
            organizations.c.inquiry_quota.is_(None),
            organizations.c.inquiries_used < organizations.c.inquiry_quota,
        ),
    )
    .values(inquiries_used=organizations.c.inquiries_used + 1)
    .returning(*_QUOTA_COLUMNS)
)
_QUOTA = select(*_QUOTA_COLUMNS).where(organizations.c.id == bindparam("org"))
_INSERT = inquiries.insert()


def inquiry_resource(values: Mapping[Any, Any]) -> Resource:
    return resource("inquiry", values["id"], {name: values[name] for name in _ATTRIBUTES})


def quota_headers(quota: int | None, used: int) -> dict[str, str]:
    """``QuotaLimit-*`` for an organization with a quota; none for an unlimited one."""
    if quota is None:
        return {}
    return {"QuotaLimit-Limit": str(quota), "QuotaLimit-Remaining": str(max(0, quota - used))}


def not_found(inquiry_id: str) -> ApiError:
    return ApiError(404, "not_found", f"No inquiry {inquiry_id} exists in your organization.")


def _valid_status(value: str) -> str | None:
    if value in INQUIRY_STATUSES:
        return None
    return "must be one of " + ", ".join(INQUIRY_STATUSES)


async def _account_for_reference(
    conn: AsyncConnection, insert: Any, organization_id: str, reference_id: str, now: str
) -> str:
    """The id of the account with ``reference_id``, created if there is none yet.

    Race-safe without locks: the unique (organization, reference_id) constraint
    lets exactly one concurrent insert win, and the losers read the winner's row.
    """
    params = {"org": organization_id, "ref": reference_id}
    existing = await conn.scalar(_ACCOUNT_BY_REFERENCE, params)
    if existing is not None:
        return str(existing)
    new_id = ids.new_id("act")
    row = {
        **_EMPTY_ACCOUNT,
        "id": new_id,
        "organization_id": organization_id,
        "reference_id": reference_id,
        "created_at": now,
        "updated_at": now,
    }
    if (await conn.execute(insert, row)).first() is not None:
        return new_id
    winner = await conn.scalar(_ACCOUNT_BY_REFERENCE, params)
    if winner is None:  # pragma: no cover - the conflicting row cannot vanish: no deletes
        raise RuntimeError("account for reference_id vanished after a conflict")
    return str(winner)


def inquiries_router(db: Database, reader: BodyReader) -> APIRouter:
    """The inquiry endpoints over ``db``; statements are built once, here."""
    router = APIRouter(prefix="/inquiries", tags=["inquiries"])
    insert_account = insert_unless_conflict(
        db, accounts, (accounts.c.organization_id, accounts.c.reference_id), accounts.c.id
    )
    path_id = openapi.path_parameter("inquiry_id", "An inquiry id (inq_…).")

    @router.post(
        "",
        summary="Create an inquiry",
        description="Give `reference_id` (the account with it is joined or created) or"
        " `account_id`. Counts against the organization's inquiry quota.",
        **openapi.operation(
            name="inquiries_create",
            status=201,
            schema="InquiryDocument",
            description="The new inquiry, in status created.",
            errors=(403, 404),
            write=True,
            body=("InquiryRequest", "InquiryForm"),
            headers={201: openapi.QUOTA_HEADERS, 403: openapi.QUOTA_HEADERS},
        ),
    )
    async def create_inquiry(request: Request) -> Response:
        principal = require_scope(request, "inquiries:write")
        attributes, errors = await reader.attributes(request)
        # One of reference_id and account_id, never both: INQUIRY_INPUT.either.
        values = validate(attributes, INQUIRY_INPUT, errors)
        reference_id, account_id = values.get("reference_id"), values.get("account_id")
        errors.raise_if_any()
        organization_id = principal.organization_id
        now = timestamp()
        async with db.write() as conn:
            # Every refusal comes before the first write, so a refused request leaves
            # nothing behind even inside the idempotency layer's transaction.
            if account_id is not None:
                account = (
                    await conn.execute(
                        _ACCOUNT_BY_ID, {"account": account_id, "org": organization_id}
                    )
                ).first()
                if account is None:
                    raise ApiError(
                        404,
                        "not_found",
                        f"No account {account_id} exists in your organization.",
                        pointer=_ACCOUNT_POINTER,
                    )
                reference_id = account.reference_id
            quota = (await conn.execute(_TAKE_QUOTA, {"org": organization_id})).first()
            if quota is None:
                limit, used = (await conn.execute(_QUOTA, {"org": organization_id})).one()
                raise ApiError(
                    403,
                    "quota_exceeded",
                    f"Your organization has used its quota of {limit} inquiries.",
                    headers=quota_headers(limit, used),
                )
            if account_id is None:
                assert reference_id is not None  # one of the two is given, checked above
                account_id = await _account_for_reference(
                    conn, insert_account, organization_id, reference_id, now
                )
            row = {
                "id": ids.new_id("inq"),
                "organization_id": organization_id,
                "account_id": account_id,
                "reference_id": reference_id,
                "status": "created",
                "created_at": now,
                "updated_at": now,
            }
            await conn.execute(_INSERT, row)
        return created(inquiry_resource(row), "inquiries", headers=quota_headers(*quota))

    @router.get(
        "/{inquiry_id}",
        summary="Get an inquiry",
        **openapi.operation(
            name="inquiries_get",
            status=200,
            schema="InquiryDocument",
            description="The inquiry.",
            errors=(403, 404),
            parameters=(path_id,),
            headers={200: openapi.QUOTA_HEADERS},
        ),
    )
    async def get_inquiry(request: Request) -> Response:
        principal = require_scope(request, "inquiries:read")
        inquiry_id: str = request.path_params["inquiry_id"]
        async with db.read() as conn:
            row = (
                await conn.execute(_GET, {"inquiry": inquiry_id, "org": principal.organization_id})
            ).first()
        if row is None:
            raise not_found(inquiry_id)
        return single(
            inquiry_resource(row._mapping),
            headers=quota_headers(row.inquiry_quota, row.inquiries_used),
        )

    @router.get(
        "",
        summary="List inquiries, newest first",
        **openapi.operation(
            name="inquiries_list",
            status=200,
            schema="InquiryList",
            description="One page of inquiries.",
            errors=(400, 403),
            parameters=(
                openapi.query_parameter(
                    "filter[reference_id]", openapi.TEXT_FILTER, "Only this reference id."
                ),
                openapi.query_parameter(
                    "filter[status]", {"enum": list(INQUIRY_STATUSES)}, "Only this status."
                ),
                *openapi.PAGE_PARAMETERS,
            ),
        ),
    )
    async def list_inquiries(request: Request) -> Response:
        principal = require_scope(request, "inquiries:read")
        wanted = page_request(
            request,
            id_prefix="inq",
            filters={"reference_id": any_value, "status": _valid_status},
        )
        query = select(*COLUMNS).where(inquiries.c.organization_id == principal.organization_id)
        for name, value in wanted.filters.items():
            query = query.where(inquiries.c[name] == value)
        return await newest_first(
            db, query, inquiries.c.id, wanted, inquiry_resource, request.url.path
        )

    for action, (target, sources) in TRANSITIONS.items():
        router.add_api_route(
            f"/{{inquiry_id}}/{action}",
            _transition(db, action, target, sources),
            methods=["POST"],
            summary=f"{action.capitalize()} an inquiry",
            description=f"{' or '.join(sources)} → {target}; any other status is 422.",
            **openapi.operation(
                name=f"inquiries_{action}",
                status=200,
                schema="InquiryDocument",
                description=f"The inquiry, now {target}.",
                errors=(403, 404, 422),
                write=True,
                parameters=(path_id,),
            ),
        )
    return router


def _transition(
    db: Database, action: str, target: str, sources: tuple[str, ...]
) -> Callable[[Request], Awaitable[Response]]:
    # The status check is part of the UPDATE itself, so of two concurrent
    # transitions from one status exactly one matches the row.
    statement = (
        update(inquiries)
        .where(
            inquiries.c.id == bindparam("inquiry"),
            inquiries.c.organization_id == bindparam("org"),
            inquiries.c.status.in_(sources),
        )
        .values(status=target, updated_at=bindparam("stamp"))
        .returning(*COLUMNS)
    )
    allowed = " or ".join(sources)

    async def transition(request: Request) -> Response:
        principal = require_scope(request, "inquiries:write")
        inquiry_id: str = request.path_params["inquiry_id"]
        match = {"inquiry": inquiry_id, "org": principal.organization_id}
        async with db.write() as conn:
            row = (await conn.execute(statement, {**match, "stamp": timestamp()})).first()
            current = None if row is not None else await conn.scalar(_STATUS, match)
        if row is not None:
            return single(inquiry_resource(row._mapping))
        if current is None:
            raise not_found(inquiry_id)
        raise ApiError(
            422,
            "invalid_state_transition",
            f"Inquiry {inquiry_id} is {current} and cannot become {target}:"
            f" only {allowed} inquiries can become {target}.",
        )

    transition.__name__ = f"{action}_inquiry"
    return transition
