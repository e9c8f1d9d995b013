"""Accounts: create, get, list and patch (SPEC §4), scoped to the caller's organization."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Update
from starlette.requests import Request
from starlette.responses import Response

from retrysafe import ids
from retrysafe.database import Database
from retrysafe.database.schema import accounts
from retrysafe.envelope import ApiError
from retrysafe.service import openapi
from retrysafe.service.attributes import ACCOUNT, ACCOUNT_INPUT
from retrysafe.service.bodies import BodyReader
from retrysafe.service.pagination import any_value, newest_first, page_request
from retrysafe.service.scopes import require_scope
from retrysafe.service.serialization import Resource, created, resource, single, timestamp
from retrysafe.service.validation import validate

_ATTRIBUTES = ACCOUNT.names
COLUMNS = (accounts.c.id, *(accounts.c[name] for name in _ATTRIBUTES))
_NO_VALUES = dict.fromkeys(ACCOUNT_INPUT.fields)
_DUPLICATE = "/data/attributes/reference_id"

_GET = select(*COLUMNS).where(
    accounts.c.id == bindparam("id"), accounts.c.organization_id == bindparam("org")
)


def account_resource(values: Mapping[Any, Any]) -> Resource:
    return resource("account", values["id"], {name: values[name] for name in _ATTRIBUTES})


def not_found(account_id: str) -> ApiError:
    return ApiError(404, "not_found", f"No account {account_id} exists in your organization.")


def duplicate(reference_id: object) -> ApiError:
    return ApiError(
        409,
        "duplicate_resource",
        f"An account with reference_id {reference_id!r} already exists in your organization.",
        pointer=_DUPLICATE,
    )


async def _apply_update(
    conn: AsyncConnection, update: Update, values: Mapping[str, object]
) -> Row[Any] | None:
    if "reference_id" not in values:
        return (await conn.execute(update)).first()
    # A savepoint, because a unique violation aborts the whole transaction on
    # PostgreSQL, and this one may be the idempotency layer's ambient one.
    try:
        async with conn.begin_nested():
            return (await conn.execute(update)).first()
    except IntegrityError:
        raise duplicate(values["reference_id"]) from None


def accounts_router(db: Database, reader: BodyReader) -> APIRouter:
    """The account endpoints over ``db``; statements are built once, here."""
    router = APIRouter(prefix="/accounts", tags=["accounts"])
    insert = db.prepare_insert(
        accounts, unless=(accounts.c.organization_id, accounts.c.reference_id)
    )
    path_id = openapi.path_parameter("account_id", "An account id (act_…).")

    @router.post(
        "",
        summary="Create an account",
        **openapi.operation(
            name="accounts_create",
            status=201,
            schema="AccountDocument",
            description="The new account.",
            errors=(403,),
            write=True,
            body=("AccountRequest", "AccountForm"),
        ),
    )
    async def create_account(request: Request) -> Response:
        principal = require_scope(request, "accounts:write")
        attributes, errors = await reader.attributes(request)
        values = validate(attributes, ACCOUNT_INPUT, errors)
        errors.raise_if_any()
        now = timestamp()
        row = {
            **_NO_VALUES,
            **values,
            "id": ids.new_id("act"),
            "organization_id": principal.organization_id,
            "created_at": now,
            "updated_at": now,
        }
        reference_id = values.get("reference_id")
        # The insert may wait for the commit (with the idempotency record, or at the
        # end of the block): a taken reference_id is then raised where it is known.
        async with db.writes() as writes:
            await writes.insert(insert, row, conflict=lambda: duplicate(reference_id))
        return created(account_resource(row), "accounts")

    @router.get(
        "/{account_id}",
        summary="Get an account",
        **openapi.operation(
            name="accounts_get",
            status=200,
            schema="AccountDocument",
            description="The account.",
            errors=(403, 404),
            parameters=(path_id,),
        ),
    )
    async def get_account(request: Request) -> Response:
        principal = require_scope(request, "accounts:read")
        account_id: str = request.path_params["account_id"]
        async with db.read() as conn:
            row = (
                await conn.execute(_GET, {"id": account_id, "org": principal.organization_id})
            ).first()
        if row is None:
            raise not_found(account_id)
        return single(account_resource(row._mapping))

    @router.get(
        "",
        summary="List accounts, newest first",
        **openapi.operation(
            name="accounts_list",
            status=200,
            schema="AccountList",
            description="One page of accounts.",
            errors=(400, 403),
            parameters=(
                openapi.query_parameter(
                    "filter[reference_id]", openapi.TEXT_FILTER, "Only this reference id."
                ),
                *openapi.PAGE_PARAMETERS,
            ),
        ),
    )
    async def list_accounts(request: Request) -> Response:
        principal = require_scope(request, "accounts:read")
        wanted = page_request(request, id_prefix="act", filters={"reference_id": any_value})
        query = select(*COLUMNS).where(accounts.c.organization_id == principal.organization_id)
        if "reference_id" in wanted.filters:
            query = query.where(accounts.c.reference_id == wanted.filters["reference_id"])
        return await newest_first(
            db, query, accounts.c.id, wanted, account_resource, request.url.path
        )

    @router.patch(
        "/{account_id}",
        summary="Update an account",
        **openapi.operation(
            name="accounts_update",
            status=200,
            schema="AccountDocument",
            description="The updated account.",
            errors=(403, 404),
            write=True,
            body=("AccountRequest", "AccountForm"),
            parameters=(path_id,),
        ),
    )
    async def update_account(request: Request) -> Response:
        principal = require_scope(request, "accounts:write")
        account_id: str = request.path_params["account_id"]
        attributes, errors = await reader.attributes(request)
        values = validate(attributes, ACCOUNT_INPUT, errors)
        errors.raise_if_any()
        organization_id = principal.organization_id
        where = (accounts.c.id == account_id, accounts.c.organization_id == organization_id)
        if not values:
            async with db.read() as conn:
                row = (await conn.execute(select(*COLUMNS).where(*where))).first()
        else:
            update = (
                accounts.update()
                .where(*where)
                .values(**values, updated_at=timestamp())
                .returning(*COLUMNS)
            )
            async with db.write() as conn:
                row = await _apply_update(conn, update, values)
        if row is None:
            raise not_found(account_id)
        return single(account_resource(row._mapping))

    return router
