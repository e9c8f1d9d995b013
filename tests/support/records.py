"""What the observation layer hands the API-log writer, built for tests with any part replaced."""

from __future__ import annotations

import time

from retrysafe.observability import RequestRecord


def request_record(request_id: str, **fields: object) -> RequestRecord:
    """A ``POST /api/v1/accounts`` that executed and answered 201; ``fields`` replace any part."""
    values: dict[str, object] = {
        "request_id": request_id,
        "started_at": time.time(),
        "method": "POST",
        "path": "/api/v1/accounts",
        "query": "",
        "route": "/api/v1/accounts",
        "status": 201,
        "duration_ms": 1.5,
        "organization_id": "org_1",
        "api_key_id": "key_1",
        "idempotency_key": "k",
        "outcome": "executed",
        "rate_limit": "allowed",
        "error_code": None,
    }
    values.update(fields)
    return RequestRecord(**values)  # type: ignore[arg-type]
