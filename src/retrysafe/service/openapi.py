"""The OpenAPI description, generated from the attribute descriptions the handlers validate by.

Handlers parse bodies themselves (so both media types share one validator), which
means FastAPI cannot infer their schemas; each route states its answers through
:func:`operation`, and :func:`install` adds the component schemas, all of them
rendered from ``retrysafe.service.attributes``: a limit is written once, in a
:class:`~retrysafe.service.validation.Field`, and both checked and documented from there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from retrysafe.envelope import reason_phrase
from retrysafe.service import attributes
from retrysafe.service.attributes import Attribute, ResourceType
from retrysafe.service.pagination import MAX_FILTER_LENGTH
from retrysafe.service.validation import Field, RequestAttributes

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# -- attributes → JSON Schema ----------------------------------------------------------


def field_schema(field: Field, *, form: bool = False) -> Schema:
    """The JSON Schema of one client-written attribute: exactly the limits it is checked by.

    A form field is always a string (an absent field is how a form says null).
    """
    nullable = field.nullable and not form
    schema: Schema = {"type": ["string", "null"] if nullable else "string"}
    if field.enum:
        schema["enum"] = [*field.enum, *((None,) if nullable else ())]
    else:
        text_format = field.format
        length = text_format.length if text_format is not None else None
        schema["maxLength"] = min(field.max_length, length or field.max_length)
        if field.min_length:
            schema["minLength"] = field.min_length
        if text_format is not None:
            if text_format.name is not None:
                schema["format"] = text_format.name
            schema["pattern"] = f"^{text_format.pattern}$"
    if field.default is not None:
        schema["default"] = field.default
    if field.description:
        schema["description"] = field.description
    return schema


def _attribute_schema(attribute: Attribute) -> Schema:
    return field_schema(attribute) if isinstance(attribute, Field) else attribute


def _resource(resource: ResourceType) -> Schema:
    return {
        "type": "object",
        "required": ["type", "id", "attributes"],
        "properties": {
            "type": {"const": resource.type},
            "id": {"type": "string"},
            "attributes": {
                "type": "object",
                "properties": {
                    name: _attribute_schema(attribute)
                    for name, attribute in resource.attributes.items()
                },
            },
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


def json_request(request: RequestAttributes) -> Schema:
    """``{"data": {"attributes": {...}}}`` with every field's limits and the request's rules."""
    # additionalProperties: the handlers refuse unknown attributes (400 unknown_parameter),
    # so that a misspelt name is not silently dropped.
    attrs: Schema = {
        "type": "object",
        "properties": {name: field_schema(field) for name, field in request.fields.items()},
        "additionalProperties": False,
    }
    if request.either is not None:
        attrs["not"] = _both_or_neither(request.either, form=False)
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


def form_request(request: RequestAttributes) -> Schema:
    """The same attributes as ``multipart/form-data`` fields named ``data[attributes][NAME]``."""
    schema: Schema = {
        "type": "object",
        "properties": {
            form_field(name): field_schema(field, form=True)
            for name, field in request.fields.items()
        },
        "additionalProperties": False,
    }
    if request.either is not None:
        schema["not"] = _both_or_neither(request.either, form=True)
    return schema


def _both_or_neither(names: tuple[str, str], *, form: bool) -> Schema:
    """Both of two attributes given, or neither (a JSON null is not given): what ``not`` refuses.

    So exactly one must be given. Written as ``not`` rather than ``oneOf``: code
    generators skip ``not`` and still make one plain model of the object, where
    ``oneOf`` branches that only require properties became an untyped body
    (openapi-python-client).
    """

    def given(name: str) -> Schema:
        if form:
            return {"required": [form_field(name)]}
        return {"required": [name], "properties": {name: {"type": "string"}}}

    both = {"allOf": [given(name) for name in names]}
    neither = {"not": {"anyOf": [given(name) for name in names]}}
    return {"anyOf": [both, neither]}


def form_field(name: str) -> str:
    return f"data[attributes][{name}]"


def _document_upload() -> Schema:
    kind = field_schema(attributes.DOCUMENT_KIND, form=True)
    return {
        "type": "object",
        "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}, "kind": kind},
        "additionalProperties": False,
    }


# -- the error envelope, one schema per status -------------------------------------------

ERROR_CODES: Mapping[int, tuple[str, ...]] = {
    # invalid_value: a body with a shape error and a value error answers 400, and every
    # object in it states the response's status (FieldErrors.raise_if_any).
    400: (
        "invalid_json",
        "parameter_missing",
        "invalid_type",
        "unknown_parameter",
        "invalid_parameter",
        "invalid_multipart",
        "invalid_idempotency_key",
        "invalid_content_length",
        "headers_too_large",
        "query_too_long",
        "invalid_value",
    ),
    401: ("unauthenticated",),
    403: ("permission_denied", "quota_exceeded"),
    404: ("not_found",),
    405: ("method_not_allowed",),
    409: ("duplicate_resource", "idempotency_request_in_progress"),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    416: ("range_not_satisfiable",),
    422: ("invalid_value", "invalid_state_transition", "idempotency_key_mismatch"),
    429: ("rate_limited",),
    500: ("internal_error",),
    502: ("bad_gateway",),
    503: ("service_unavailable",),
    504: ("gateway_timeout",),
}
"""Every ``code`` each status can carry; a test holds it to the codes the source raises."""

_ERROR_WHEN: Mapping[int, str] = {
    400: "Malformed body, query or Idempotency-Key, or headers or query string over the size"
    " limits.",
    401: "No, unknown or revoked API key.",
    403: "The key lacks the scope, or the organization's inquiry quota is spent.",
    404: "Unknown id, or an object of another organization.",
    405: "The path exists, but not for this method; see Allow.",
    409: "Duplicate resource, or the same Idempotency-Key is still in flight (see Retry-After).",
    413: "Body larger than the configured limit.",
    415: "Unsupported Content-Type.",
    416: "The range starts past the end; Content-Range names the size.",
    422: "Invalid value, invalid state transition or idempotency key mismatch.",
    429: "Rate limit exceeded; see Retry-After.",
    500: "Unexpected failure; details name the Request-Id.",
    502: "The upstream provider failed or answered nonsense.",
    503: "Database unreachable or server overloaded; see Retry-After.",
    504: "The request exceeded the server-side deadline, or the provider timed out.",
}


def _error_description(status: int) -> str:
    return (
        f"{reason_phrase(status)}: {_ERROR_WHEN[status]} Codes: {', '.join(ERROR_CODES[status])}."
    )


def _error(status: int | None) -> Schema:
    code: Schema = {"type": "string", "description": "Stable snake_case machine code."}
    status_schema: Schema = {"type": "string", "description": "The HTTP status, as a string."}
    if status is not None:
        code["enum"] = list(ERROR_CODES[status])
        status_schema["const"] = str(status)
    return {
        "type": "object",
        "required": ["title", "details", "status", "code"],
        "properties": {
            "title": {"type": "string", "description": "The HTTP reason phrase."},
            "details": {"type": "string", "description": "What to fix, in a sentence."},
            "status": status_schema,
            "code": code,
            "source": ref("ErrorSource"),
        },
    }


def _errors(item: str) -> Schema:
    return {
        "type": "object",
        "required": ["errors"],
        "properties": {"errors": {"type": "array", "items": ref(item), "minItems": 1}},
    }


def errors_schema(status: int) -> str:
    """The component name of the envelope a ``status`` answer carries."""
    return f"Errors{status}"


def _error_components() -> dict[str, Schema]:
    components = {
        "ErrorSource": {
            "type": "object",
            "properties": {"pointer": {"type": "string", "format": "json-pointer"}},
            "description": "pointer: the JSON pointer of the field this error is about.",
        },
        "Error": _error(None),
        "Errors": _errors("Error"),
    }
    for status in ERROR_CODES:
        components[f"Error{status}"] = _error(status)
        components[errors_schema(status)] = _errors(f"Error{status}")
    return components


# -- the component schemas ---------------------------------------------------------------

_RESOURCE_SCHEMAS: Mapping[str, ResourceType] = {
    "Account": attributes.ACCOUNT,
    "Inquiry": attributes.INQUIRY,
    "Document": attributes.DOCUMENT,
    "Verification": attributes.VERIFICATION,
    "ApiLog": attributes.API_LOG,
}
_LISTED = ("Account", "Inquiry", "ApiLog")
_REQUESTS: Mapping[str, RequestAttributes] = {
    "Account": attributes.ACCOUNT_INPUT,
    "Inquiry": attributes.INQUIRY_INPUT,
    "Verification": attributes.VERIFICATION_INPUT,
}


def component_schemas() -> dict[str, Schema]:
    """Every schema under ``components.schemas``, rendered from the descriptions."""
    schemas: dict[str, Schema] = _error_components()
    for name, resource in _RESOURCE_SCHEMAS.items():
        schemas[name] = _resource(resource)
        schemas[f"{name}Document"] = _single(name)
        if name in _LISTED:
            schemas[f"{name}List"] = _list(name)
    for name, request in _REQUESTS.items():
        schemas[f"{name}Request"] = json_request(request)
        schemas[f"{name}Form"] = form_request(request)
    schemas["DocumentUpload"] = _document_upload()
    return schemas


# -- response headers ----------------------------------------------------------------------


def _header(description: str, schema: Schema, *, required: bool = False) -> Schema:
    header: Schema = {"description": description, "schema": schema}
    if required:
        header["required"] = True
    return header


_COUNT = {"type": "integer", "minimum": 0}
_RETRY_AFTER = "Seconds to wait before retrying with the same Idempotency-Key."
HEADERS: Mapping[str, Schema] = {
    "Request-Id": _header(
        "Unique id of this answer; quote it to support (a 5xx's details name it too).",
        {"type": "string", "pattern": "^req_[0-9a-f]{24}$"},
        required=True,
    ),
    "RateLimit-Limit": _header("Requests allowed per window.", _COUNT),
    "RateLimit-Remaining": _header("Requests left in this window.", _COUNT),
    "RateLimit-Reset": _header("Seconds until the window ends.", _COUNT),
    "RateLimit-Policy": _header(
        'The IETF draft\'s policy field, e.g. "default";q=100;w=1.', {"type": "string"}
    ),
    "RateLimit": _header('The IETF draft\'s field, e.g. "default";r=99;t=1.', {"type": "string"}),
    "Retry-After": _header(_RETRY_AFTER, {"type": "integer", "minimum": 1}, required=True),
    "Idempotent-Replayed": _header(
        "true when this is the recorded answer to an earlier request with the same"
        " Idempotency-Key (the handler did not run again).",
        {"type": "string", "enum": ["true"]},
    ),
    "QuotaLimit-Limit": _header("The organization's inquiry quota.", {"type": "integer"}),
    "QuotaLimit-Remaining": _header("Inquiries left in the quota.", {"type": "integer"}),
    "Location": _header(
        "/api/v1/<collection>/<id> of what was created.", {"type": "string"}, required=True
    ),
}
"""``components.headers``: each response header, described once and referenced by name."""


def _headers(*names: str) -> dict[str, Schema]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


RATE_LIMIT = _headers(
    "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy", "RateLimit"
)
"""On every answer of a rate-limited route, except those sent before the limiter runs
(413, 415, a shed 503, a 400 for oversized headers or query)."""
QUOTA_HEADERS = _headers("QuotaLimit-Limit", "QuotaLimit-Remaining")
"""On inquiry answers of an organization that has a quota."""
_IN_FLIGHT_RETRY_AFTER = {
    "Retry-After": _header(
        _RETRY_AFTER + " Only on idempotency_request_in_progress.",
        {"type": "integer", "minimum": 1},
    )
}

_BEFORE_RATE_LIMIT = {413, 415}
"""Answered before the rate limiter: never with RateLimit-* (SPEC §2)."""
_RECORDED = {400, 403, 404, 409, 422, 500, 502, 504}
"""Error statuses a handler may produce, which the idempotency layer records and replays."""


def _response_headers(
    status: int, *, success: bool, write: bool, public: bool
) -> dict[str, Schema]:
    headers = _headers("Request-Id")
    if not public and status not in _BEFORE_RATE_LIMIT:
        headers.update(RATE_LIMIT)
    if status in (429, 503):
        headers.update(_headers("Retry-After"))
    elif status == 409:
        headers.update(_IN_FLIGHT_RETRY_AFTER)
    if write and (success or status in _RECORDED):
        headers.update(_headers("Idempotent-Replayed"))
    if status == 201:
        headers.update(_headers("Location"))
    return headers


# -- operations ------------------------------------------------------------------------


_ALWAYS = (400, 401, 429, 500, 503, 504)  # 400: any request may bring oversized headers
_WRITES = (400, 409, 413, 415, 422)
_GATED = {401, 429}
"""What a public route (no key, no rate limit) never answers."""


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
    name: str,
    status: int,
    schema: str | None,
    description: str,
    errors: Iterable[int] = (),
    write: bool = False,
    body: tuple[str, str] | None = None,
    form_only: bool = False,
    body_required: bool = True,
    parameters: Iterable[Schema] = (),
    headers: Mapping[int, Mapping[str, Schema]] | None = None,
    public: bool = False,
    also: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for a route decorator: operationId, responses, body and parameters.

    ``name`` is the operationId (``accounts_create``): what a generated client calls
    the method. ``body`` is ``(json_schema, form_schema)``; with ``form_only`` only
    the form is documented (uploads). ``write`` adds the errors every POST/PATCH can
    meet and the ``Idempotency-Key`` header. ``public`` marks a route that needs no
    key and is not rate limited (``/health``): no 401 or 429, and no security
    requirement. ``headers`` adds response headers by status; ``also`` names other
    success statuses (``206``) with their descriptions, answered without a body schema.
    """
    extra_headers = headers or {}
    codes = sorted({*errors, *_ALWAYS, *(_WRITES if write else ())} - (_GATED if public else set()))
    responses: dict[int | str, dict[str, Any]] = {}
    successes = {status: description, **(also or {})}
    for code in (*successes, *codes):
        success = code in successes
        response: Schema = {
            "description": successes[code] if success else _error_description(code),
            "headers": {
                **_response_headers(code, success=success, write=write, public=public),
                **extra_headers.get(code, {}),
            },
        }
        answer = (schema if code == status else None) if success else errors_schema(code)
        if answer is not None:
            response["content"] = {"application/json": {"schema": ref(answer)}}
        responses[code] = response
    extra: dict[str, Any] = {}
    if body is not None:
        json_schema, form_schema = body
        media: dict[str, Any] = {"multipart/form-data": {"schema": ref(form_schema)}}
        if not form_only:
            media = {"application/json": {"schema": ref(json_schema)}, **media}
        extra["requestBody"] = {"required": body_required, "content": media}
    all_parameters = [*parameters, *((IDEMPOTENCY_KEY_PARAMETER,) if write else ())]
    if all_parameters:
        extra["parameters"] = all_parameters
    if public:
        extra["security"] = []
    return {
        "operation_id": name,
        "status_code": status,
        "responses": responses,
        "openapi_extra": extra,
    }


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
            components.setdefault("schemas", {}).update(component_schemas())
            components.setdefault("headers", {}).update(HEADERS)
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
