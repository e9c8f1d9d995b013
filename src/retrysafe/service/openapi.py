"""The OpenAPI description: JSON and multipart request bodies and the error envelope.

Handlers parse bodies themselves (so both media types share one validator), which
means FastAPI cannot infer these schemas; each route states them through
:func:`operation`, and :func:`install` adds the shared component schemas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from retrysafe.envelope import reason_phrase
from retrysafe.service.pagination import MAX_FILTER_LENGTH

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
    "reference_id": _nullable_string(
        255,
        minLength=1,
        description="Joins the account with this reference id, creating it if absent.",
    ),
    "account_id": _nullable_string(64, minLength=1, description="An existing account (act_…)."),
}
_INQUIRY_TARGETS = ("reference_id", "account_id")
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
    # additionalProperties: the handlers refuse unknown attributes (400 unknown_parameter),
    # so that a misspelt name is not silently dropped.
    attrs: Schema = {
        "type": "object",
        "properties": dict(attributes),
        "additionalProperties": False,
    }
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
            _form_field(name): {"type": "string", **_without_type(schema)}
            for name, schema in attributes.items()
        },
        "additionalProperties": False,
    }


def _exactly_one(names: tuple[str, str], *, form: bool) -> list[Schema]:
    """``oneOf`` branches: exactly one of two attributes is given (a JSON null is not given)."""
    first, second = names
    branches: list[Schema] = []
    for given, other in ((first, second), (second, first)):
        if form:
            field, other_field = _form_field(given), _form_field(other)
            branches.append({"required": [field], "not": {"required": [other_field]}})
        else:
            branches.append(
                {
                    "required": [given],
                    "properties": {given: {"type": "string"}, other: {"type": "null"}},
                }
            )
    return branches


def _form_field(name: str) -> str:
    return f"data[attributes][{name}]"


def _with_one_of(schema: Schema, one_of: list[Schema], *, form: bool) -> Schema:
    if form:
        return {**schema, "oneOf": one_of}
    data = schema["properties"]["data"]
    attributes = {**data["properties"]["attributes"], "oneOf": one_of}
    data = {**data, "properties": {**data["properties"], "attributes": attributes}}
    return {**schema, "properties": {**schema["properties"], "data": data}}


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
    # The inquiry create takes reference_id or account_id, never both (400 otherwise).
    "InquiryRequest": _with_one_of(
        _json_request(INQUIRY_INPUT), _exactly_one(_INQUIRY_TARGETS, form=False), form=False
    ),
    "InquiryForm": _with_one_of(
        _form_request(INQUIRY_INPUT), _exactly_one(_INQUIRY_TARGETS, form=True), form=True
    ),
    "DocumentUpload": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "kind": {"type": "string", "minLength": 1, "maxLength": 64},
        },
        "additionalProperties": False,
    },
}

_ERROR_WHEN: Mapping[int, str] = {
    400: "Malformed body, query or Idempotency-Key (invalid_json, parameter_missing, …),"
    " or headers or query string over the size limits (headers_too_large, query_too_long).",
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
_ALWAYS = (400, 401, 429, 500, 503, 504)  # 400: any request may bring oversized headers
_WRITES = (400, 409, 413, 415, 422)
_GATED = {401, 429}
"""What a public route (no key, no rate limit) never answers."""

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


IDEMPOTENCY_KEY_PATTERN = (
    r'^(?:[!-~]|[!#-~][!-~]{1,254}|"[!-~]{0,253}[!#-~]|"(?:[!-\[\]-~]|\\["\\]){1,255}")$'
)
"""Exactly the values :func:`retrysafe.idempotency.keys.parse_idempotency_key` accepts.

1 to 255 visible ASCII characters, or the same in double quotes (the IETF draft's
structured-field string, where only ``\\"`` and ``\\\\`` are escapes). A test holds
the two to agreement, so a fuzzer that sends any other value must get a 400.
"""

IDEMPOTENCY_KEY_PARAMETER: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
    "description": "Run this request at most once per key in your organization: a retry with"
    " the same key replays the recorded answer (Idempotent-Replayed: true); the same key"
    " with other parameters is 422, and while the first still runs, 409.",
}

BEARER_SCHEME = "apiKey"
SECURITY_SCHEMES: Mapping[str, Schema] = {
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer rsk_key_….<secret> (retrysafe keys create).",
    }
}

TEXT_FILTER: Schema = {"type": "string", "maxLength": MAX_FILTER_LENGTH, "pattern": "^[^\\u0000]*$"}
"""A free-text ``filter[…]`` value: anything longer, or holding NUL, is 400 invalid_parameter."""

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
    public: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for a route decorator: responses, body and parameters.

    ``body`` is ``(json_schema, form_schema)``; with ``form_only`` only the form is
    documented (uploads). ``write`` adds the errors every POST/PATCH can meet and
    the ``Idempotency-Key`` header. ``public`` marks a route that needs no key and
    is not rate limited (``/health``): no 401 or 429, and no security requirement.
    """
    success: Schema = {"description": description}
    if schema is not None:
        success["content"] = {"application/json": {"schema": ref(schema)}}
    response_headers = dict(headers or {})
    if status == 201:
        response_headers.update(_LOCATION)
    if response_headers:
        success["headers"] = response_headers
    codes = sorted({*errors, *_ALWAYS, *(_WRITES if write else ())} - (_GATED if public else set()))
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
    all_parameters = [*parameters, *((IDEMPOTENCY_KEY_PARAMETER,) if write else ())]
    if all_parameters:
        extra["parameters"] = all_parameters
    if public:
        extra["security"] = []
    return {"status_code": status, "responses": responses, "openapi_extra": extra}


RESOURCES: Mapping[str, tuple[str, str]] = {
    "Account": ("accounts", "act"),
    "Inquiry": ("inquiries", "inq"),
    "Document": ("documents", "doc"),
    "Verification": ("verifications", "ver"),
    "ApiLog": ("api-logs", "log"),
}
"""Resource schema → (collection under /api/v1, id prefix): where links lead, what cursors are."""

_ID_BODY = "[0-9a-hjkmnp-tv-z]{26}"  # retrysafe.ids: Crockford base32, lower case
_TEMPLATE = re.compile(r"\{([^}]+)\}")
_OPERATION_METHODS = ("get", "post", "patch", "put", "delete")


def install(app: FastAPI, *, api_prefix: str = "/api/v1") -> None:
    """Serve the document with the shared schemas, generated once on first request.

    Beyond what the routes state, the whole document gets the bearer security
    scheme, links from each create to the operations on what it created (so
    clients and fuzzers can follow ``201`` → ``/…/{id}``), and the exact cursor
    format of each list's ``page[after]``.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(SCHEMAS)
            components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
            document["security"] = [{BEARER_SCHEME: []}]
            _add_links(document, api_prefix)
            _constrain_cursors(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(document: Schema) -> Iterator[tuple[str, str, Schema]]:
    for path, item in document.get("paths", {}).items():
        for method in _OPERATION_METHODS:
            if method in item:
                yield path, method, item[method]


def _response_schema(operation: Schema, status: str) -> str | None:
    """The component name of ``operation``'s JSON answer for ``status``, if it names one."""
    content = operation.get("responses", {}).get(status, {}).get("content", {})
    reference = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    return reference.rpartition("/")[2] or None


def _add_links(document: Schema, api_prefix: str) -> None:
    """Link each ``201 {X}Document`` to every operation under ``/{collection}/{id}``.

    The id travels as ``$response.body#/data/id``; ``Location`` names the same path.
    """
    operations = list(_operations(document))
    for _path, _method, operation in operations:
        resource = (_response_schema(operation, "201") or "").removesuffix("Document")
        if resource not in RESOURCES:
            continue
        collection = f"{api_prefix}/{RESOURCES[resource][0]}/"
        links: dict[str, Schema] = {}
        for path, _m, target in operations:
            names = _TEMPLATE.findall(path)
            if not path.startswith(collection + "{") or not names or "operationId" not in target:
                continue
            links[target["operationId"]] = {
                "operationId": target["operationId"],
                "parameters": {names[0]: "$response.body#/data/id"},
                "description": f"{target.get('summary', '')} of the one just created.",
            }
        if links:
            operation["responses"]["201"]["links"] = links


def _constrain_cursors(document: Schema) -> None:
    """``page[after]`` is an id of the listed type (anything else is 400): say so exactly."""
    for _path, _method, operation in _operations(document):
        listed = _response_schema(operation, "200") or ""
        resource = listed.removesuffix("List")
        if resource == listed or resource not in RESOURCES:
            continue
        prefix = RESOURCES[resource][1]
        operation["parameters"] = [
            {**parameter, "schema": {"type": "string", "pattern": f"^{prefix}_{_ID_BODY}$"}}
            if parameter.get("name") == "page[after]"
            else parameter
            for parameter in operation.get("parameters", [])
        ]
