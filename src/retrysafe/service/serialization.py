"""JSON:API response shapes, serialized once to bytes with :func:`json.dumps`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

API_PREFIX = "/api/v1"
JSON_MEDIA_TYPE = "application/json"

Resource = dict[str, Any]


def timestamp() -> str:
    """Now, in UTC, as the RFC 3339 text stored in ``*_at`` columns (sorts as time does)."""
    # isoformat is several times cheaper than strftime, and this runs on every write.
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def resource(type_: str, id_: str, attributes: Mapping[str, Any]) -> Resource:
    return {"type": type_, "id": id_, "attributes": attributes}


def _dumps(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def single(
    item: Resource, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        _dumps({"data": item}), status_code=status, headers=headers, media_type=JSON_MEDIA_TYPE
    )


def created(
    item: Resource, collection: str, *, headers: Mapping[str, str] | None = None
) -> Response:
    """201 with ``Location: /api/v1/<collection>/<id>``."""
    location = {"Location": f"{API_PREFIX}/{collection}/{item['id']}"}
    return single(item, status=201, headers={**location, **(headers or {})})


def page(items: Sequence[Resource], next_link: str | None) -> Response:
    return Response(
        _dumps({"data": items, "links": {"next": next_link}}), media_type=JSON_MEDIA_TYPE
    )
