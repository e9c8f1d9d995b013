"""The OpenAPI description: JSON and multipart request bodies and the error envelope.

Handlers parse bodies themselves (so both media types share one validator), which
means FastAPI cannot infer these schemas; each route states them through
:func:`operation`, and :func:`install` adds the shared component schemas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from retrysafe.envelope import reason_phrase

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable_string(max_length: int, **extra: Any) -> Schema:
    return {"type": ["string", "null"], "maxLength": max_length, **extra}


ACCOUNT_INPUT: Mapping[str, Schema] = {
    "reference_id": _nullable_string(255, minLength=1, description="Unique per organization."),
    "name_first": _nullable_string(255),
    "name_last": _nullable_string(255),
    "email_address": _nullable_string(320, format="email"),
    "birthdate": _nullable_string(10, format="date", description="YYYY-MM-DD, not in the future."),
}
INQUIRY_INPUT: Mapping[str, Schema] = {
    "reference_id": {
        "type": "string",
        "maxLength": 255,
        "description": "Joins the account with this reference id, creating it if absent.",
    },
    "account_id": {"type": "string", "description": "An existing account (act_…)."},
}
_TIMESTAMPS: Mapping[str, Schema] = {
    "created_at": {"type": "string", "format": "date-time"},
    "updated_at": {"type": "string", "format": "date-time"},
}
INQUIRY_STATUSES = ("created", "completed", "approved", "declined", "expired")
VERIFICATION_INPUT: Mapping[str, Schema] = {
    "kind": {
        "enum": ["database", "document", None],
        "default": "database",
        "description": "database: name and birthdate against the provider's records;"
        " document: the same, and the inquiry must have a document.",
    },
}


def _resource(type_: str, *attribute_groups: Mapping[str, Schema]) -> Schema:
    attributes = {name: schema for group in attribute_groups for name, schema in group.items()}
    return {
        "type": "object",
        "required": ["type", "id", "attributes"],
        "properties": {
            "type": {"const": type_},
            "id": {"type": "string"},
            "attributes": {"type": "object", "properties": attributes},
        },
    }


def _single(name: str) -> Schema:
    return {"type": "object", "required": ["data"], "properties": {"data": ref(name)}}


def _list(name: str) -> Schema:
    return {
        "type": "object",
        "required": ["data", "links"],
        "properties": {
            "data": {"type": "array", "items": ref(name)},
            "links": {
                "type": "object",
                "properties": {"next": {"type": ["string", "null"]}},
                "description": "next: path of the following page, null on the last one.",
            },
        },
    }


def _json_request(attributes: Mapping[str, Schema], required: Iterable[str] = ()) -> Schema:
    attrs: Schema = {"type": "object", "properties": dict(attributes)}
    if required:
        attrs["required"] = list(required)
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "required": ["attributes"],
                "properties": {"attributes": attrs},
            }
        },
    }


def _form_request(attributes: Mapping[str, Schema]) -> Schema:
    return {
        "type": "object",
        "properties": {
            f"data[attributes][{name}]": {"type": "string", **_without_type(schema)}
            for name, schema in attributes.items()
        },
    }


def _without_type(schema: Schema) -> Schema:
    return {k: v for k, v in schema.items() if k != "type"}


SCHEMAS: Mapping[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["title", "details", "status", "code"],
        "properties": {
            "title": {"type": "string", "description": "The HTTP reason phrase."},
            "details": {"type": "string", "description": "What to fix, in a sentence."},
            "status": {"type": "string", "description": "The HTTP status, as a string."},
            "code": {"type": "string", "description": "Stable snake_case machine code."},
            "source": {
                "type": "object",
                "properties": {"pointer": {"type": "string", "format": "json-pointer"}},
            },
        },
    },
    "Errors": {
        "type": "object",
        "required": ["errors"],
        "properties": {"errors": {"type": "array", "items": ref("Error"), "minItems": 1}},
    },
    "Account": _resource(
        "account",
        {k: {**v, "type": ["string", "null"]} for k, v in ACCOUNT_INPUT.items()},
        _TIMESTAMPS,
    ),
    "Inquiry": _resource(
        "inquiry",
        {
            "status": {"enum": list(INQUIRY_STATUSES)},
            "account_id": {"type": "string"},
            "reference_id": {"type": ["string", "null"]},
        },
        _TIMESTAMPS,
    ),
    "Document": _resource(
        "document",
        {
            "inquiry_id": {"type": "string"},
            "kind": {"type": ["string", "null"]},
            "filename": {"type": ["string", "null"]},
            "content_type": {"type": ["string", "null"]},
            "size": {"type": "integer", "minimum": 0},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    ),
    "ApiLog": _resource(
        "api_log",
        {
            "request_id": {"type": "string", "description": "The Request-Id of the answer."},
            "created_at": {"type": "string", "format": "date-time"},
            "method": {"type": "string"},
            "path": {"type": "string"},
            "query": {"type": ["string", "null"]},
            "route": {"type": ["string", "null"], "description": "The route template."},
            "status": {"type": "integer"},
            "duration_ms": {"type": "number"},
            "api_key_id": {"type": ["string", "null"]},
            "idempotency_key": {"type": ["string", "null"]},
            "outcome": {
                "enum": ["executed", "replayed", "mismatch", "in_flight", "not_recorded", None],
                "description": "What the idempotency layer did; null without a key.",
            },
            "rate_limit": {"enum": ["allowed", "limited", None]},
            "error_code": {"type": ["string", "null"]},
            "request_body": {
                "type": ["string", "null"],
                "description": "Redacted JSON, with --api-log-bodies only.",
            },
            "response_body": {
                "type": ["string", "null"],
                "description": "Redacted JSON, with --api-log-bodies only.",
            },
        },
    ),
    "ApiLogDocument": _single("ApiLog"),
    "ApiLogList": _list("ApiLog"),
    "Verification": _resource(
        "verification",
        {
            "inquiry_id": {"type": "string"},
            "kind": {"enum": ["database", "document"]},
            "status": {"enum": ["passed", "failed"]},
            "reasons": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The provider's reasons for a failed check, e.g. underage.",
            },
            "provider_reference": {"type": "string", "description": "The provider's check id."},
            "created_at": {"type": "string", "format": "date-time"},
        },
    ),
    "VerificationDocument": _single("Verification"),
    "VerificationRequest": _json_request(VERIFICATION_INPUT),
    "VerificationForm": _form_request(VERIFICATION_INPUT),
    "AccountDocument": _single("Account"),
    "AccountList": _list("Account"),
    "InquiryDocument": _single("Inquiry"),
    "InquiryList": _list("Inquiry"),
    "DocumentDocument": _single("Document"),
    "AccountRequest": _json_request(ACCOUNT_INPUT),
    "AccountForm": _form_request(ACCOUNT_INPUT),
    "InquiryRequest": _json_request(INQUIRY_INPUT),
    "InquiryForm": _form_request(INQUIRY_INPUT),
    "DocumentUpload": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "kind": {"type": "string", "maxLength": 64},
        },
    },
}

_ERROR_WHEN: Mapping[int, str] = {
    400: "Malformed body, query or Idempotency-Key (invalid_json, parameter_missing, …).",
    401: "No, unknown or revoked API key (unauthenticated).",
    403: "The key lacks the scope (permission_denied) or the quota is spent (quota_exceeded).",
    404: "Unknown id, or an object of another organization (not_found).",
    409: "Duplicate resource, or the same Idempotency-Key is still in flight.",
    413: "Body larger than the configured limit (payload_too_large).",
    415: "Unsupported Content-Type (unsupported_media_type).",
    422: "Invalid value, invalid state transition or idempotency key mismatch.",
    429: "Rate limit exceeded (rate_limited); see Retry-After.",
    500: "Unexpected failure (internal_error); details name the Request-Id.",
    502: "The upstream provider failed or answered nonsense (bad_gateway).",
    503: "Database unreachable or server overloaded (service_unavailable); see Retry-After.",
    504: "The request exceeded the server-side deadline, or the provider timed out"
    " (gateway_timeout).",
}
_ALWAYS = (401, 429, 500, 503, 504)
_WRITES = (400, 409, 413, 415, 422)

_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "/api/v1/<type>/<id>"}}
QUOTA_HEADERS = {
    "QuotaLimit-Limit": {"schema": {"type": "integer"}, "description": "Inquiry quota."},
    "QuotaLimit-Remaining": {"schema": {"type": "integer"}, "description": "Inquiries left."},
}


def path_parameter(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def query_parameter(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


PAGE_PARAMETERS = (
    query_parameter(
        "page[size]", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "Page size."
    ),
    query_parameter("page[after]", {"type": "string"}, "Cursor: the last id of the previous page."),
)


def operation(
    *,
    status: int,
    schema: str | None,
    description: str,
    errors: Iterable[int] = (),
    write: bool = False,
    body: tuple[str, str] | None = None,
    form_only: bool = False,
    parameters: Iterable[Schema] = (),
    headers: Mapping[str, Schema] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for a route decorator: responses, body and parameters.

    ``body`` is ``(json_schema, form_schema)``; with ``form_only`` only the form is
    documented (uploads). ``write`` adds the errors every POST/PATCH can meet.
    """
    success: Schema = {"description": description}
    if schema is not None:
        success["content"] = {"application/json": {"schema": ref(schema)}}
    response_headers = dict(headers or {})
    if status == 201:
        response_headers.update(_LOCATION)
    if response_headers:
        success["headers"] = response_headers
    codes = sorted({*errors, *_ALWAYS, *(_WRITES if write else ())})
    responses: dict[int | str, dict[str, Any]] = {status: success}
    for code in codes:
        responses[code] = {
            "description": f"{reason_phrase(code)}: {_ERROR_WHEN[code]}",
            "content": {"application/json": {"schema": ref("Errors")}},
        }
    extra: dict[str, Any] = {}
    if body is not None:
        json_schema, form_schema = body
        content: dict[str, Any] = {"multipart/form-data": {"schema": ref(form_schema)}}
        if not form_only:
            content = {"application/json": {"schema": ref(json_schema)}, **content}
        extra["requestBody"] = {"required": True, "content": content}
    if parameters:
        extra["parameters"] = list(parameters)
    return {"status_code": status, "responses": responses, "openapi_extra": extra}


def install(app: FastAPI) -> None:
    """Serve the document with the shared schemas, generated once on first request."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            document.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
