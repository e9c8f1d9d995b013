"""API logs: an organization searches its own requests (``GET /api/v1/api-logs``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from sqlalchemy import bindparam, select
from sqlalchemy.sql import Select
from starlette.requests import Request
from starlette.responses import Response

from retrysafe.database import Database
from retrysafe.database.schema import api_logs
from retrysafe.envelope import ApiError
from retrysafe.service import openapi
from retrysafe.service.attributes import API_LOG, API_LOG_OUTCOMES
from retrysafe.service.pagination import any_value, newest_first, page_request
from retrysafe.service.scopes import require_scope
from retrysafe.service.serialization import API_PREFIX, Resource, resource, single

__all__ = ["API_LOGS_PATH", "OUTCOMES", "SCOPE", "api_logs_router", "is_logged_path"]

API_LOGS_PATH = f"{API_PREFIX}/api-logs"
SCOPE = "logs:read"
OUTCOMES = API_LOG_OUTCOMES

ATTRIBUTES = API_LOG.names
COLUMNS = (api_logs.c.id, *(api_logs.c[name] for name in ATTRIBUTES))

_STATUS = re.compile(r"[1-5](?:[0-9]{2}|xx)")
_GET = select(*COLUMNS).where(
    api_logs.c.id == bindparam("id"), api_logs.c.organization_id == bindparam("org")
)


def is_logged_path(path: str) -> bool:
    """Which requests become API-log entries: everything under ``/api/v1`` but log reads.

    Reading the API log is left out so that searching it (the dashboard polls)
    does not bury the requests one is looking for.
    """
    return path.startswith(API_PREFIX + "/") and not path.startswith(API_LOGS_PATH)


def api_log_resource(values: Mapping[Any, Any]) -> Resource:
    return resource("api_log", values["id"], {name: values[name] for name in ATTRIBUTES})


def _valid_status(value: str) -> str | None:
    if _STATUS.fullmatch(value):
        return None
    return "must be a status such as 404, or a class such as 4xx"


def _valid_outcome(value: str) -> str | None:
    return None if value in OUTCOMES else "must be one of " + ", ".join(OUTCOMES)


def _utc_text(value: str) -> str | None:
    """``value`` (RFC 3339) as the UTC text ``created_at`` holds, or None when it is no time."""
    try:
        moment = datetime.fromisoformat(value)
        # A time without an offset is read as UTC, the zone every created_at is in.
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def _valid_time(value: str) -> str | None:
    if _utc_text(value) is None:
        return "must be an RFC 3339 time such as 2026-11-25T15:41:49Z"
    return None


_FILTERS = {
    "request_id": any_value,
    "idempotency_key": any_value,
    "status": _valid_status,
    "outcome": _valid_outcome,
    "created_after": _valid_time,
    "created_before": _valid_time,
}


def _filtered(query: Select[Any], filters: Mapping[str, str]) -> Select[Any]:
    for name in ("request_id", "idempotency_key", "outcome"):
        if name in filters:
            query = query.where(api_logs.c[name] == filters[name])
    status = filters.get("status")
    if status is not None:
        if status.endswith("xx"):
            low = int(status[0]) * 100
            query = query.where(api_logs.c.status >= low, api_logs.c.status < low + 100)
        else:
            query = query.where(api_logs.c.status == int(status))
    after = filters.get("created_after")
    if after is not None:
        query = query.where(api_logs.c.created_at >= _utc_text(after))
    before = filters.get("created_before")
    if before is not None:
        query = query.where(api_logs.c.created_at < _utc_text(before))
    return query


def api_logs_router(db: Database) -> APIRouter:
    """The API-log endpoints; every query is scoped to the caller's organization."""
    router = APIRouter(prefix="/api-logs", tags=["api logs"])

    @router.get(
        "",
        summary="Search API logs, newest first",
        **openapi.operation(
            name="api_logs_list",
            status=200,
            schema="ApiLogList",
            description="One page of API-log entries of your organization.",
            errors=(400, 403),
            parameters=(
                openapi.query_parameter(
                    "filter[request_id]",
                    openapi.TEXT_FILTER,
                    "Only the request with this Request-Id.",
                ),
                openapi.query_parameter(
                    "filter[idempotency_key]",
                    openapi.TEXT_FILTER,
                    "Only requests sent with this Idempotency-Key: the original and its replays.",
                ),
                openapi.query_parameter(
                    "filter[status]",
                    {"type": "string", "pattern": f"^{_STATUS.pattern}$"},
                    "A status (404) or a class of them (4xx).",
                ),
                openapi.query_parameter(
                    "filter[outcome]", {"enum": list(OUTCOMES)}, "Only this idempotency outcome."
                ),
                openapi.query_parameter(
                    "filter[created_after]",
                    {"type": "string", "format": "date-time"},
                    "Only requests that arrived at or after this time.",
                ),
                openapi.query_parameter(
                    "filter[created_before]",
                    {"type": "string", "format": "date-time"},
                    "Only requests that arrived before this time.",
                ),
                *openapi.PAGE_PARAMETERS,
            ),
        ),
    )
    async def list_api_logs(request: Request) -> Response:
        principal = require_scope(request, SCOPE)
        wanted = page_request(request, id_prefix="log", filters=_FILTERS)
        query = select(*COLUMNS).where(api_logs.c.organization_id == principal.organization_id)
        query = _filtered(query, wanted.filters)
        return await newest_first(
            db, query, api_logs.c.id, wanted, api_log_resource, request.url.path
        )

    @router.get(
        "/{log_id}",
        summary="Get one API-log entry",
        **openapi.operation(
            name="api_logs_get",
            status=200,
            schema="ApiLogDocument",
            description="The entry.",
            errors=(403, 404),
            parameters=(openapi.path_parameter("log_id", "An API-log entry id (log_…)."),),
        ),
    )
    async def get_api_log(request: Request) -> Response:
        principal = require_scope(request, SCOPE)
        log_id: str = request.path_params["log_id"]
        async with db.read() as conn:
            row = (
                await conn.execute(_GET, {"id": log_id, "org": principal.organization_id})
            ).first()
        if row is None:
            raise ApiError(
                404, "not_found", f"No API-log entry {log_id} exists in your organization."
            )
        return single(api_log_resource(row._mapping))

    return router
